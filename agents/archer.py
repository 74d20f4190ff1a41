"""ArCHer: a hierarchical actor-critic, StepTool's ``baseline-archer`` (Zhou et al. 2024, "ArCHer").

The high level is an utterance-level, off-policy critic: every turn of every episode goes into a
replay buffer as a transition ``(s, a, r, s', done)`` — the context before the model's turn, the
turn's tokens, the step reward, the context before the next turn. A double critic holds two Q
heads on ``[f(s), f(s ⊕ a)]`` and two V heads on ``f(s)``, with a target copy. Per batch of
transitions (ArCHer's ``critic_loss``), with ``a'`` a fresh sample of the policy at ``s`` and
bars for the target critic::

    Q_i(s, a) -> r + gamma (1 - done) V̄_i(s')        V_i(s) -> Q̄_i(s, a')        (MSE, summed)

and after each critic step the target moves by ``tau`` (``θ̄ <- (1 - tau) θ̄ + tau θ``). The low
level is a token-level policy gradient with the critic's advantage of the turn (ArCHer's
``actor_loss`` as StepTool runs it): at buffer states ``s``, sample ``a'`` and minimise
``-mean( A(s, a') · Σ_t log π(a'_t | s, a'_<t) )`` with ``A = min(Q1, Q2)(s, a') - min(V1, V2)(s)``.
The actor waits ``warmup_iterations`` iterations while the critic learns.

Deliberate differences from ``src/baseline-archer`` in yuyq18/StepTool:

* The critic's features ``f`` are the last hidden state of the policy's own base model (adapter
  disabled, or a frozen copy when every weight trains), not a fine-tuned RoBERTa-base: nothing to
  download, and one forward over an episode gives ``f`` at every turn. ``f(s ⊕ a)`` is read in
  context (the hidden state at the action's last token) rather than from the action encoded alone.
* Transitions come from online rollouts each iteration (ArCHer's own loop); StepTool's copy trains
  on a replay buffer collected beforehand.
* One optimiser step per critic and actor epoch on ``batch_size`` transitions (ArCHer accumulates
  ``grad_accum_steps`` batches per step; set ``batch_size`` to their product).
* Log-probabilities are scored at the sampling temperature, as every agent here does (ArCHer
  scores at 1; the default temperature 1 makes them equal).

Run: ``toolenv train archer --model runs/bc --env toolenv/APIChain-v1 --out runs/archer``.
"""

from __future__ import annotations

import copy
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

import toolenv  # noqa: F401  (registers the env ids)
from agents.config import TrainConfig, check_positive, config_from_args
from agents.policy import Policy
from agents.rollout import (
    GenerationSettings,
    HFGenerator,
    Trajectory,
    load_trajectories,
    rollout,
    save_trajectories,
    step_rewards_of,
)
from agents.utils import (
    Checkpointer,
    TokenScorer,
    collate,
    finish_run,
    linear_warmup,
    load_policy_for_training,
    make_writer,
    set_seed,
)

__all__ = ["Config", "DoubleCritic", "ReplayBuffer", "actor_loss", "critic_loss", "main", "soft_update", "train", "turn_transitions"]

logger = logging.getLogger(__name__)


@dataclass
class Config(TrainConfig):
    """ArCHer: an off-policy utterance-level critic and a token-level policy gradient."""

    out: str = field(default="runs/archer", metadata={"help": "output directory"})
    lr: float = field(default=1e-5, metadata={"help": "actor learning rate (ArCHer's lm_lr)"})
    critic_lr: float = field(default=1e-3, metadata={"help": "critic learning rate"})
    max_grad_norm: float = field(default=0.01, metadata={"help": "gradient clipping norm of each update (ArCHer: 0.01)"})
    episodes_per_step: int = field(default=8, metadata={"help": "episodes rolled out per iteration into the replay buffer"})
    tasks_per_env: int = field(default=10_000, metadata={"help": "tasks are drawn from the first N of each env's split"})
    capacity: int = field(default=100_000, metadata={"help": "replay buffer size in turns (oldest dropped first)"})
    gamma: float = field(default=0.9, metadata={"help": "discount per turn"})
    tau: float = field(default=0.1, metadata={"help": "soft update rate of the target critic"})
    critic_epochs: int = field(default=3, metadata={"help": "critic steps per iteration (ArCHer's epochs)"})
    actor_epochs: int = field(default=3, metadata={"help": "actor steps per iteration"})
    warmup_iterations: int = field(default=1, metadata={"help": "iterations that train only the critic"})
    reward_source: str = field(default="hindsight", metadata={"help": "hindsight: the env's end-of-episode step rewards when given; immediate"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature; log-probabilities are scored at it too"})
    max_new_tokens: int = field(default=64, metadata={"help": "tokens per action at most"})

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("critic_lr", "episodes_per_step", "tasks_per_env", "capacity", "critic_epochs", "temperature", "max_new_tokens"):
            check_positive(name, getattr(self, name))
        for name in ("actor_epochs", "warmup_iterations"):
            check_positive(name, getattr(self, name), allow_zero=True)
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"Expected gamma in [0, 1], got {self.gamma!r}.")
        if not 0.0 < self.tau <= 1.0:
            raise ValueError(f"Expected tau in (0, 1], got {self.tau!r}.")
        from agents.config import check_in

        check_in("reward_source", self.reward_source, {"hindsight", "immediate"})


def _mlp(d_in: int, d: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d), nn.ReLU(), nn.Linear(d, d), nn.ReLU(), nn.Linear(d, 1))


class DoubleCritic(nn.Module):
    """ArCHer's ``DoubleCritic`` heads: Q1, Q2 on ``[f(s), f(s ⊕ a)]`` and V1, V2 on ``f(s)``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.q1, self.q2 = _mlp(2 * dim, dim), _mlp(2 * dim, dim)
        self.v1, self.v2 = _mlp(dim, dim), _mlp(dim, dim)

    def forward(self, f_s: torch.Tensor, f_sa: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        sa = torch.cat([f_s, f_sa], dim=-1)
        return self.q1(sa).squeeze(-1), self.q2(sa).squeeze(-1), self.v1(f_s).squeeze(-1), self.v2(f_s).squeeze(-1)


def critic_loss(critic: nn.Module, target: nn.Module, f_s: torch.Tensor, f_sa: torch.Tensor, f_next: torch.Tensor, f_spi: torch.Tensor,
                reward: torch.Tensor, done: torch.Tensor, gamma: float) -> tuple[torch.Tensor, dict[str, float]]:
    """ArCHer's critic loss: ``MSE(Q_i(s,a), r + γ(1-done)V̄_i(s')) + MSE(V_i(s), Q̄_i(s,a'))`` over i = 1, 2.

    ``f_spi`` are the features of ``s ⊕ a'`` for a fresh policy sample ``a'``; barred heads are the target's.
    """
    q1, q2, v1, v2 = critic(f_s, f_sa)
    with torch.no_grad():
        target_q1, target_q2, _, _ = target(f_s, f_spi)
        _, _, next_v1, next_v2 = target(f_next, f_sa)  # the action is a placeholder: V reads the state only
        y1 = reward + (1.0 - done) * gamma * next_v1
        y2 = reward + (1.0 - done) * gamma * next_v2
    mse = nn.functional.mse_loss
    losses = {"q1": mse(q1, y1), "q2": mse(q2, y2), "v1": mse(v1, target_q1), "v2": mse(v2, target_q2)}
    total = losses["q1"] + losses["q2"] + losses["v1"] + losses["v2"]
    stats = {f"{k}_loss": v.item() for k, v in losses.items()}
    stats.update(q_mean=float(torch.minimum(q1, q2).mean().item()), v_mean=float(torch.minimum(v1, v2).mean().item()))
    return total, stats


def advantages(critic: nn.Module, f_s: torch.Tensor, f_spi: torch.Tensor) -> torch.Tensor:
    """``min(Q1, Q2)(s, a') - min(V1, V2)(s)``, without gradient."""
    with torch.no_grad():
        q1, q2, v1, v2 = critic(f_s, f_spi)
        return torch.minimum(q1, q2) - torch.minimum(v1, v2)


def actor_loss(token_logprobs: torch.Tensor, loss_mask: torch.Tensor, advantage: torch.Tensor) -> torch.Tensor:
    """``-mean_b( A_b · Σ_t log π(a_t) )``: each turn's summed log-probability times its advantage.

    >>> lp = torch.log(torch.tensor([[1.0, 0.5, 0.5], [1.0, 0.25, 1.0]]))
    >>> mask = torch.tensor([[0.0, 1.0, 1.0], [0.0, 1.0, 0.0]])
    >>> round(actor_loss(lp, mask, torch.tensor([1.0, -2.0])).item(), 4)  # -(1·2ln.5 - 2·ln.25) / 2
    -0.6931
    """
    return -((token_logprobs * loss_mask).sum(-1) * advantage).mean()


@torch.no_grad()
def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """``θ̄ <- (1 - tau) θ̄ + tau θ`` for every parameter."""
    for t, s in zip(target.parameters(), source.parameters()):
        t.mul_(1.0 - tau).add_(s, alpha=tau)


@dataclass
class Turn:
    """One transition of the replay buffer: token positions in its episode, reward, done."""

    state_end: int  # tokens [0, state_end) are s: everything before the turn's first token
    action_end: int  # index of the turn's last token
    next_end: int  # tokens [0, next_end) are s' (the whole episode after its last turn)
    reward: float
    done: float


def turn_transitions(traj: Trajectory, reward_source: str = "hindsight") -> list[Turn]:
    """The episode's turns as transitions; ``done`` is 1 only on the last turn of an episode that terminated.

    A truncated episode's last turn bootstraps from V(s'), as the episode did not end there.
    """
    rewards = step_rewards_of(traj, reward_source)
    starts, prev = [], -1
    for end in traj.action_ends:
        k = prev + 1
        while k <= end and not traj.action_mask[k]:
            k += 1
        starts.append(k)
        prev = end
    turns = []
    for k, (start, end) in enumerate(zip(starts, traj.action_ends)):
        last = k == len(traj.action_ends) - 1
        turns.append(Turn(start, end, len(traj.token_ids) if last else starts[k + 1], float(rewards[k]), float(last and traj.terminated)))
    return turns


class _Features:
    """The critic's frozen features: the base model's last hidden state at chosen positions."""

    def __init__(self, policy: Policy, batch_size: int) -> None:
        self.policy = policy
        self.batch_size = batch_size
        # every weight trains: keep a frozen copy of the start; otherwise the base with the adapter off
        self.frozen = None if policy.has_adapter else copy.deepcopy(policy.model).requires_grad_(False)

    def _decoder(self, model: Any) -> Any:
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        return getattr(base, base.base_model_prefix)

    @torch.no_grad()
    def __call__(self, sequences: Sequence[Sequence[int]], positions: Sequence[Sequence[int]]) -> list[torch.Tensor]:
        """For each sequence, ``[len(positions), dim]``: the hidden state at each position."""
        device = self.policy.device
        pad = self.policy.tokenizer.pad_token_id
        out: list[torch.Tensor] = []
        for lo in range(0, len(sequences), self.batch_size):
            chunk = sequences[lo : lo + self.batch_size]
            width = max(len(s) for s in chunk)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for i, s in enumerate(chunk):
                ids[i, : len(s)] = torch.tensor(list(s), dtype=torch.long)
                mask[i, : len(s)] = 1
            if self.frozen is not None:
                hidden = self._run(self.frozen, ids.to(device), mask.to(device))
            else:
                with self.policy.reference() as model:
                    hidden = self._run(model, ids.to(device), mask.to(device))
            for i, pos in enumerate(positions[lo : lo + self.batch_size]):
                out.append(hidden[i, torch.as_tensor(list(pos), dtype=torch.long)].float().cpu())
        return out

    def _run(self, model: Any, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        was_training = model.training
        model.eval()
        try:
            return self._decoder(model)(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
        finally:
            if was_training:
                model.train()


class ReplayBuffer:
    """Turns with their states' tokens and frozen features; uniform sampling, oldest dropped beyond ``capacity``."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.states: list[list[int]] = []
        self.f_s: list[torch.Tensor] = []
        self.f_sa: list[torch.Tensor] = []
        self.f_next: list[torch.Tensor] = []
        self.rewards: list[float] = []
        self.dones: list[float] = []

    def __len__(self) -> int:
        return len(self.rewards)

    def add(self, trajectories: Sequence[Trajectory], features: _Features, reward_source: str) -> int:
        """Add every turn of ``trajectories`` (one forward per episode gives all its features); returns the count."""
        turns = [turn_transitions(t, reward_source) for t in trajectories]
        positions = [[p for turn in ts for p in (turn.state_end - 1, turn.action_end, turn.next_end - 1)] for ts in turns]
        keep = [i for i, ts in enumerate(turns) if ts]
        feats = features([trajectories[i].token_ids for i in keep], [positions[i] for i in keep])
        added = 0
        for i, f in zip(keep, feats):
            for k, turn in enumerate(turns[i]):
                self.states.append(list(trajectories[i].token_ids[: turn.state_end]))
                self.f_s.append(f[3 * k])
                self.f_sa.append(f[3 * k + 1])
                self.f_next.append(f[3 * k + 2])
                self.rewards.append(turn.reward)
                self.dones.append(turn.done)
                added += 1
        extra = len(self) - self.capacity
        if extra > 0:
            for name in ("states", "f_s", "f_sa", "f_next", "rewards", "dones"):
                del getattr(self, name)[:extra]
        return added

    def sample(self, rng: np.random.Generator, size: int) -> list[int]:
        return [int(i) for i in rng.choice(len(self), size=min(size, len(self)), replace=False)]


def _fresh_turns(generator: HFGenerator, features: _Features, states: list[list[int]], settings: GenerationSettings,
                 stop: Sequence[str]) -> tuple[list[list[int]], torch.Tensor]:
    """A new policy turn ``a'`` at each state, and the features ``f(s ⊕ a')``."""
    fresh = [ids for ids, _ in generator.generate(states, settings, stop)]
    f = features([s + a for s, a in zip(states, fresh)], [[len(s) + len(a) - 1] for s, a in zip(states, fresh)])
    return fresh, torch.stack([x[0] for x in f])


def train(cfg: Config) -> Path:
    """Train and save the policy (and the critic, ``critic.pt``) to ``cfg.out``; returns that directory."""
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    # 1. set up: accelerator, seed, policy, critic and target, one optimiser with a group for each
    accelerator = Accelerator(cpu=cfg.device == "cpu")
    set_seed(cfg.seed)
    policy = load_policy_for_training(cfg, device=str(accelerator.device))
    dim = int(policy.model.config.hidden_size)
    critic = DoubleCritic(dim).to(accelerator.device)
    target = copy.deepcopy(critic)  # trainable flag kept so checkpoints carry it; it is never given gradients
    scorer = TokenScorer(policy.model, temperature=cfg.temperature, share_prefixes=cfg.share_prefixes)
    policy_params = [p for p in policy.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW([{"params": policy_params, "lr": cfg.lr}, {"params": list(critic.parameters()), "lr": cfg.critic_lr}],
                                  weight_decay=cfg.weight_decay)
    scheduler = linear_warmup(optimizer, cfg.warmup_steps)
    scorer, critic_ddp, optimizer = accelerator.prepare(scorer, critic, optimizer)
    state = nn.ModuleDict({"policy": policy.model, "critic": critic, "target": target})  # what checkpoints save
    scorer.train()  # as every agent's update runs (activation checkpointing, when asked, acts only in training mode)
    features = _Features(policy, cfg.batch_size)
    generator = HFGenerator(policy)
    probes = {e: gym.make(e, **cfg.env_kwargs) for e in cfg.env}
    tasks = [(e, i) for e, env in probes.items() for i in range(min(cfg.tasks_per_env, len(env.unwrapped.tasks)))]  # type: ignore[attr-defined]
    stop = tuple(next(iter(probes.values())).unwrapped.protocol.stop)  # type: ignore[attr-defined]
    for env in probes.values():
        env.close()
    envs = {e: [gym.make(e, **cfg.env_kwargs) for _ in range(cfg.episodes_per_step)] for e in cfg.env}
    settings = GenerationSettings(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature)
    pad = policy.tokenizer.pad_token_id
    out = Path(cfg.out)
    samples_dir = out / "samples"

    # 2. resume: the checkpoint's iteration; the replay buffer rebuilt from the episodes on disk
    checkpointer = Checkpointer(out, cfg)
    start, run_name, episodes_seen = 0, None, 0
    if checkpointer.exists():
        start, extra = checkpointer.load(state, optimizer, scheduler)
        run_name, episodes_seen = extra.get("run_name"), int(extra.get("episodes", 0))
        logger.info("Resuming from iteration %d", start)
    writer, run_name = make_writer(cfg, "archer", run_name) if accelerator.is_main_process else (None, run_name)
    buffer = ReplayBuffer(cfg.capacity)
    for past in range(start):
        buffer.add(load_trajectories(samples_dir / f"iter{past}.rank{accelerator.process_index}.jsonl"), features, cfg.reward_source)

    bar = tqdm(range(start, cfg.max_steps), initial=start, total=cfg.max_steps, desc="archer",
               disable=not (cfg.progress and accelerator.is_main_process))
    for it in bar:
        # 3. roll out, store every turn in the buffer
        rng = np.random.default_rng([cfg.seed, it, accelerator.process_index])
        torch.manual_seed(int(rng.integers(2**31)))
        picked = [tasks[int(k)] for k in rng.choice(len(tasks), size=cfg.episodes_per_step, replace=len(tasks) < cfg.episodes_per_step)]
        used: dict[str, int] = defaultdict(int)
        batch_envs, options, ids = [], [], []
        for env_id, index in picked:
            batch_envs.append(envs[env_id][used[env_id]])
            used[env_id] += 1
            options.append({"index": index})
            ids.append(env_id)
        trajs = rollout(policy, batch_envs, settings=settings, options=options, env_ids=ids)
        episodes_seen += len(trajs)
        save_trajectories(samples_dir / f"iter{it}.rank{accelerator.process_index}.jsonl", trajs)
        buffer.add(trajs, features, cfg.reward_source)
        stats: dict[str, list[float]] = defaultdict(list)
        if not len(buffer):
            logger.warning("Iteration %d: no episode got to act; nothing in the replay buffer yet", it)
            continue
        raw_critic: DoubleCritic = accelerator.unwrap_model(critic_ddp)
        # 4. critic: TD targets from the target's V at s', V towards the target's Q at a fresh policy turn
        for _ in range(cfg.critic_epochs):
            idx = buffer.sample(rng, cfg.batch_size)
            states = [buffer.states[i] for i in idx]
            _, f_spi = _fresh_turns(generator, features, states, settings, stop)
            dev = accelerator.device
            loss, cstats = critic_loss(critic_ddp, target, torch.stack([buffer.f_s[i] for i in idx]).to(dev),
                                       torch.stack([buffer.f_sa[i] for i in idx]).to(dev), torch.stack([buffer.f_next[i] for i in idx]).to(dev),
                                       f_spi.to(dev), torch.tensor([buffer.rewards[i] for i in idx], device=dev),
                                       torch.tensor([buffer.dones[i] for i in idx], device=dev), cfg.gamma)
            accelerator.backward(loss)
            if cfg.max_grad_norm > 0:
                accelerator.clip_grad_norm_(raw_critic.parameters(), cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            soft_update(target, raw_critic, cfg.tau)
            for k, v in cstats.items():
                stats[k].append(v)
        # 5. actor: REINFORCE on fresh turns at buffer states, weighted by the critic's advantage
        if it >= cfg.warmup_iterations:
            for _ in range(cfg.actor_epochs):
                idx = buffer.sample(rng, cfg.batch_size)
                states = [buffer.states[i] for i in idx]
                fresh, f_spi = _fresh_turns(generator, features, states, settings, stop)
                adv = advantages(raw_critic, torch.stack([buffer.f_s[i] for i in idx]).to(accelerator.device), f_spi.to(accelerator.device))
                turns = [Trajectory(env_id="", task={}, token_ids=s + a, action_mask=[0] * len(s) + [1] * len(a)) for s, a in zip(states, fresh)]
                batch = collate(turns, pad, accelerator.device)
                loss = actor_loss(scorer(**batch), batch["loss_mask"], adv)
                accelerator.backward(loss)
                if cfg.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(policy_params, cfg.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                stats["pg_loss"].append(loss.item())
                stats["advantage_mean"].append(float(adv.mean().item()))
        # 6. log
        success = float(np.mean([t.success for t in trajs])) if trajs else 0.0
        bar.set_postfix(success=f"{success:.2f}", buffer=len(buffer))
        if writer is not None and (it % cfg.log_every == 0 or it == cfg.max_steps - 1):
            x = it + 1
            writer.add_scalar("charts/episodes", episodes_seen, x)
            writer.add_scalar("charts/success_rate", success, x)
            writer.add_scalar("charts/buffer", len(buffer), x)
            writer.add_scalar("rewards/episode_return", float(np.mean([t.total_reward for t in trajs])) if trajs else 0.0, x)
            for k, vs in stats.items():
                writer.add_scalar(f"losses/{k}" if k.endswith("loss") else f"charts/{k}", float(np.mean(vs)), x)
        if (it + 1) % cfg.save_every == 0 and it + 1 < cfg.max_steps:
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                checkpointer.save(it + 1, state, optimizer, scheduler, run_name=run_name, episodes=episodes_seen)

    # 7. check ranks agree, save the policy and the critic
    finish_run(accelerator, cfg, policy, state, optimizer, scheduler, checkpointer, writer, agent="archer", run_name=run_name,
               extra={"episodes": episodes_seen}, files={"critic.pt": {"critic": critic.state_dict(), "target": target.state_dict()}})
    for group in envs.values():
        for env in group:
            env.close()
    return out


def main(argv: list[str] | None = None) -> int:
    cfg = config_from_args(Config, argv, prog="toolenv train archer")
    train(cfg)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
