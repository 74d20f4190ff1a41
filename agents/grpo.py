"""GRPO: group-relative advantages over G rollouts of the same task, with final or step rewards.

For each task, ``group_size`` episodes are played from the same start (reset with
``options={"index": i}``). With ``--reward-placement final`` each episode's advantage is its
return standardised within the group, on every one of its model tokens (DeepSeekMath's GRPO).
With ``step`` (DeepSeekMath's process supervision), every step reward is standardised over the
group's step rewards and each step's advantage is the sum of the standardised rewards from that
step on, on that step's action tokens — step-grained credit without a critic. The loss is PPO's clipped surrogate plus ``kl_coef`` × the k3 KL to the reference (the
same model with its adapter disabled).

Run: ``toolenv train grpo --model runs/bc --env toolenv/APIChain-v1 --out runs/grpo``.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

import toolenv  # noqa: F401  (registers the env ids)
from agents.config import TrainConfig, check_in, check_positive, config_from_args
from agents.ppo_losses import aggregate_loss, kl_penalty, policy_loss
from agents.rollout import GenerationSettings, Trajectory, rollout, step_rewards_of
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

__all__ = ["Config", "group_advantages", "main", "token_advantages", "train"]

logger = logging.getLogger(__name__)


@dataclass
class Config(TrainConfig):
    """GRPO with final or step rewards."""

    out: str = field(default="runs/grpo", metadata={"help": "output directory"})
    lr: float = field(default=1e-5, metadata={"help": "learning rate (AdamW)"})
    group_size: int = field(default=4, metadata={"help": "rollouts per task (G)"})
    tasks_per_step: int = field(default=2, metadata={"help": "tasks per iteration; env samples = tasks x G"})
    tasks_per_env: int = field(default=10_000, metadata={"help": "tasks are drawn from the first N of each env's split"})
    reward_placement: str = field(default="final", metadata={"help": "final: episode return; step: per-step return-to-go"})
    reward_source: str = field(default="hindsight", metadata={"help": "hindsight: the env's end-of-episode step rewards when given; immediate"})
    scale_rewards: bool = field(default=True, metadata={"help": "divide by the group's standard deviation (Bessel-corrected, + 1e-4, as TRL)"})
    loss_type: str = field(default="token_mean", metadata={"help": "token_mean: over all model tokens (TRL bnpo/dapo); seq_mean: per sequence then over sequences (TRL grpo); dr_grpo: sum / (batch x max_new_tokens x max turns)"})
    epochs: int = field(default=1, metadata={"help": "passes over each batch"})
    minibatch_size: int = field(default=4, metadata={"help": "trajectories per gradient step"})
    clip: float = field(default=0.2, metadata={"help": "policy ratio clip"})
    kl_coef: float = field(default=0.04, metadata={"help": "weight of the k3 KL to the reference; 0 disables"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature; log-probabilities are scored at it too"})
    max_new_tokens: int = field(default=64, metadata={"help": "tokens per action at most"})

    def __post_init__(self) -> None:
        super().__post_init__()
        check_in("reward_placement", self.reward_placement, {"final", "step"})
        check_in("reward_source", self.reward_source, {"hindsight", "immediate"})
        check_in("loss_type", self.loss_type, {"token_mean", "seq_mean", "dr_grpo"})
        if self.group_size < 2:
            raise ValueError(f"Expected group_size >= 2 (advantages are relative to the group), got {self.group_size}.")
        for name in ("tasks_per_step", "tasks_per_env", "epochs", "minibatch_size", "max_new_tokens", "temperature"):
            check_positive(name, getattr(self, name))
        for name in ("clip", "kl_coef"):
            check_positive(name, getattr(self, name), allow_zero=True)


def _std(x: np.ndarray) -> float:
    """TRL's ``nanstd``: the Bessel-corrected standard deviation (0 for fewer than two values)."""
    return float(x.std(ddof=1)) if x.size > 1 else 0.0


def group_advantages(step_rewards: Sequence[Sequence[float]], mode: str, *, scale: bool = True) -> list[list[float]]:
    """Per-step advantages of one group of episodes on the same task (DeepSeekMath's GRPO, §4.1.2-4.1.3).

    ``final`` (outcome supervision): every step of episode i gets ``(R_i - mean R) / (std R + 1e-4)``
    over the group's returns. ``step`` (process supervision): every step reward of the group is
    normalised, ``r̃ = (r - mean) / (std + 1e-4)`` over all the group's step rewards, and step k's
    advantage is the sum of the normalised rewards from step k on. The std is Bessel-corrected
    and the 1e-4 is TRL's (``GRPOTrainer``); ``scale=False`` only subtracts the mean (TRL's
    ``scale_rewards="none"``, Dr. GRPO).

    >>> [[round(a, 3) for a in adv] for adv in group_advantages([[0.0, 1.0], [0.0]], "final")]
    [[0.707, 0.707], [-0.707]]

    Two identical episodes get identical advantages, and equal rewards are no signal:

    >>> group_advantages([[0.5, 0.5, 0.5], [0.5, 0.5, 0.5]], "step")
    [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]

    Step rewards 0.5, 1.0 and 0.0 have mean 0.5 and std 0.5, so they normalise to 0, 1 and -1:

    >>> [[round(a, 3) for a in adv] for adv in group_advantages([[0.5, 1.0], [0.0]], "step")]
    [[1.0, 1.0], [-1.0]]
    """
    if mode not in ("final", "step"):
        raise ValueError(f"Expected mode to be one of ['final', 'step'], got {mode!r}.")
    if mode == "final":
        returns = np.array([sum(r) for r in step_rewards], dtype=np.float64)
        adv = returns - returns.mean()
        if scale:
            adv = adv / (_std(returns) + 1e-4)
        return [[float(a)] * len(r) for a, r in zip(adv, step_rewards)]
    flat = np.array([x for r in step_rewards for x in r], dtype=np.float64)
    mean = flat.mean() if flat.size else 0.0
    denom = (_std(flat) + 1e-4) if scale else 1.0
    out = []
    for r in step_rewards:
        normalised = (np.asarray(r, dtype=np.float64) - mean) / denom
        out.append([float(a) for a in np.cumsum(normalised[::-1])[::-1]])
    return out


def token_advantages(step_adv: Sequence[Sequence[float]], trajectories: Sequence[Trajectory], width: int) -> torch.Tensor:
    """Spread each step's advantage over that step's action tokens (``[batch, width]``)."""
    out = torch.zeros((len(trajectories), width))
    for i, (adv, t) in enumerate(zip(step_adv, trajectories)):
        start = 0
        for a, end in zip(adv, t.action_ends):
            span = torch.tensor(t.action_mask[start : end + 1], dtype=torch.float32)
            out[i, start : end + 1] = a * span
            start = end + 1
    return out


def train(cfg: Config) -> Path:
    """Train and save the policy to ``cfg.out``; returns that directory."""
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    # 1. set up: accelerator, seed, policy, one env per rollout, the task pool
    accelerator = Accelerator(cpu=cfg.device == "cpu")
    set_seed(cfg.seed)
    policy = load_policy_for_training(cfg, device=str(accelerator.device))
    if not policy.has_adapter and cfg.kl_coef > 0:
        raise ValueError("The KL term needs a LoRA adapter (the reference is the base with the adapter disabled); set --lora-r > 0 or --kl-coef 0.")
    scorer = TokenScorer(policy.model, temperature=cfg.temperature, share_prefixes=cfg.share_prefixes)
    params = [p for p in scorer.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = linear_warmup(optimizer, cfg.warmup_steps)
    scorer, optimizer = accelerator.prepare(scorer, optimizer)
    raw_scorer: TokenScorer = accelerator.unwrap_model(scorer)
    n_envs = cfg.tasks_per_step * cfg.group_size
    probes = {e: gym.make(e, **cfg.env_kwargs) for e in cfg.env}
    pool = [(e, i) for e, env in probes.items() for i in range(min(cfg.tasks_per_env, len(env.unwrapped.tasks)))]  # type: ignore[attr-defined]
    for env in probes.values():
        env.close()
    envs: dict[str, list[gym.Env]] = {e: [gym.make(e, **cfg.env_kwargs) for _ in range(n_envs)] for e in cfg.env}
    settings = GenerationSettings(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature)
    # Dr. GRPO divides by the longest possible completion: every turn's token budget
    max_turns = max((gym.spec(e).max_episode_steps or 1) for e in cfg.env)
    max_completion = cfg.max_new_tokens * max_turns
    pad = policy.tokenizer.pad_token_id
    out = Path(cfg.out)

    # 2. resume from the last checkpoint of the same command, if any
    checkpointer = Checkpointer(out, cfg)
    start, run_name, episodes_seen = 0, None, 0
    if checkpointer.exists():
        start, extra = checkpointer.load(raw_scorer, optimizer, scheduler)
        run_name, episodes_seen = extra.get("run_name"), int(extra.get("episodes", 0))
    writer, run_name = make_writer(cfg, "grpo", run_name) if accelerator.is_main_process else (None, run_name)

    bar = tqdm(range(start, cfg.max_steps), initial=start, total=cfg.max_steps, desc="grpo",
               disable=not (cfg.progress and accelerator.is_main_process))
    for step in bar:
        rng = np.random.default_rng([cfg.seed, step, accelerator.process_index])
        # 3. groups: G rollouts of each picked task
        picked = [pool[int(k)] for k in rng.choice(len(pool), size=cfg.tasks_per_step, replace=len(pool) < cfg.tasks_per_step)]
        batch_envs, options, ids = [], [], []
        used: dict[str, int] = defaultdict(int)
        for env_id, index in picked:
            for _ in range(cfg.group_size):
                batch_envs.append(envs[env_id][used[env_id]])
                used[env_id] += 1
                options.append({"index": index})
                ids.append(env_id)
        trajs = rollout(policy, batch_envs, settings=settings, options=options, env_ids=ids)
        episodes_seen += len(trajs)
        # 4. group-relative advantages on the action tokens
        step_adv: list[list[float]] = []
        for g in range(cfg.tasks_per_step):
            group = trajs[g * cfg.group_size : (g + 1) * cfg.group_size]
            step_adv += group_advantages([step_rewards_of(t, cfg.reward_source) for t in group], cfg.reward_placement, scale=cfg.scale_rewards)
        keep = [i for i, t in enumerate(trajs) if t.action_ends]
        trajs, step_adv = [trajs[i] for i in keep], [step_adv[i] for i in keep]
        if not trajs:  # every prompt was longer than the context: nothing to learn from this step
            logger.warning("Step %d: no episode got to act (prompts longer than the context?); skipping the update", step)
            scheduler.step()
            continue
        batch = collate(trajs, pad, accelerator.device)
        advantages = token_advantages(step_adv, trajs, batch["input_ids"].shape[1]).to(accelerator.device)
        # One epoch over one minibatch: the policy has not moved since sampling, so the old log-probs
        # are the current ones (TRL's GRPO does the same when num_iterations is 1); skip that pass.
        reuse_old = cfg.epochs == 1 and cfg.minibatch_size >= len(trajs)
        scorer.eval()
        with torch.no_grad():
            old_logprobs = None if reuse_old else raw_scorer(**batch)
            if cfg.kl_coef > 0:
                with policy.reference():
                    ref_logprobs = raw_scorer(**batch)
        scorer.train()
        # 5. clipped surrogate + KL, over minibatches and epochs
        stats: dict[str, list[float]] = defaultdict(list)
        for _ in range(cfg.epochs):
            order = rng.permutation(len(trajs))
            for lo in range(0, len(trajs), cfg.minibatch_size):
                idx = torch.as_tensor(order[lo : lo + cfg.minibatch_size], device=accelerator.device)
                mb = {k: v[idx] for k, v in batch.items()}
                logprobs = scorer(**mb)
                old = logprobs.detach() if old_logprobs is None else old_logprobs[idx]
                loss, pstats = policy_loss(logprobs, old, advantages[idx], mb["loss_mask"], clip=cfg.clip,
                                           loss_type=cfg.loss_type, max_length=max_completion)  # type: ignore[arg-type]
                if cfg.kl_coef > 0:
                    kl = aggregate_loss(kl_penalty(logprobs, ref_logprobs[idx], "k3"), mb["loss_mask"], cfg.loss_type,  # type: ignore[arg-type]
                                        max_length=max_completion)
                    loss = loss + cfg.kl_coef * kl
                    pstats["kl"] = kl.item()
                accelerator.backward(loss)
                if cfg.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                for k, v in pstats.items():
                    stats[k].append(v)
        # 6. log
        success = float(np.mean([t.success for t in trajs])) if trajs else 0.0
        bar.set_postfix(success=f"{success:.2f}")
        if writer is not None and (step % cfg.log_every == 0 or step == cfg.max_steps - 1):
            x = step + 1
            writer.add_scalar("charts/episodes", episodes_seen, x)
            writer.add_scalar("charts/success_rate", success, x)
            ok = [o for t in trajs for info in t.infos for o in info.get("calls_ok", [])]
            writer.add_scalar("charts/call_success_rate", float(np.mean(ok)) if ok else 0.0, x)
            writer.add_scalar("rewards/episode_return", float(np.mean([t.total_reward for t in trajs])) if trajs else 0.0, x)
            terms: dict[str, list[float]] = defaultdict(list)
            for t in trajs:
                for k in {k for step_terms in t.reward_terms for k in step_terms}:
                    terms[k].append(sum(s.get(k, 0.0) for s in t.reward_terms))
            for k, vs in terms.items():
                writer.add_scalar(f"rewards/{k}", float(np.mean(vs)), x)
            for k, vs in stats.items():
                writer.add_scalar(f"losses/{k}" if k != "kl" else "charts/kl", float(np.mean(vs)), x)
        if (step + 1) % cfg.save_every == 0 and step + 1 < cfg.max_steps:
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                checkpointer.save(step + 1, raw_scorer, optimizer, scheduler, run_name=run_name, episodes=episodes_seen)

    # 7. check ranks agree, save
    finish_run(accelerator, cfg, policy, raw_scorer, optimizer, scheduler, checkpointer, writer, agent="grpo",
               run_name=run_name, extra={"episodes": episodes_seen})
    for group in envs.values():
        for env in group:
            env.close()
    return out


def main(argv: list[str] | None = None) -> int:
    cfg = config_from_args(Config, argv, prog="toolenv train grpo")
    train(cfg)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
