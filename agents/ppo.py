"""PPO for multi-turn tool use, with final or step-grained rewards (StepTool's comparison).

Rollouts come from the shared loop (:func:`agents.rollout.rollout`); a value head (a scalar on
the policy's last hidden state) is the critic. Token-level GAE runs over the model's tokens
only — observation tokens are skipped without breaking the chain — then the clipped policy
loss, the clipped value loss, and a KL to the reference (the same model with its adapter
disabled) either as a per-token penalty in the reward or as a loss term, over minibatches and
epochs, with advantage whitening.

``--reward-placement final`` (``toolenv train ppo``) puts the episode's reward on the last model
token; ``step`` (``toolenv train step-ppo``) puts each step's reward on the last token of that
step's action. That placement is the only difference between the two. With
``--reward-source hindsight`` the step rewards are those the env recomputes at the end of an
episode (``info["step_rewards"]``: StepTool's contribution, known only once later steps show
whether a result was used); otherwise each step's own reward.

Offline mode (``--data FILE``): train from stored trajectories (e.g. StepTool's pre-collected,
annotated ones) instead of new rollouts; old log-probs and values are recomputed by the current
model at each iteration.

Run: ``toolenv train step-ppo --model runs/bc --env toolenv/APIChain-v1 --out runs/step-ppo``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from torch import nn

import toolenv  # noqa: F401  (registers the env ids)
from agents.config import TrainConfig, check_in, check_positive, config_from_args
from agents.ppo_losses import (
    AdaptiveKLController,
    explained_variance,
    kl_penalty,
    masked_gae,
    masked_mean,
    masked_whiten,
    place_rewards,
    policy_loss,
    value_loss,
)
from agents.rollout import GenerationSettings, Trajectory, load_trajectories, rollout, step_rewards_of
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

__all__ = ["SETTINGS", "STEPTOOL_SETTING", "Config", "ValueHead", "main", "ppo_rewards", "step_rewards_of", "train"]

logger = logging.getLogger(__name__)


#: StepTool's PPO, from yuyq18/StepTool: ``config/*/StepTool_ppo.json`` (init_kl_coef 0.3, target 6,
#: horizon 10000, gamma 0.99) on trl 0.10.1's ``PPOConfig`` defaults (lam 0.95, vf_coef 0.1,
#: ppo_epochs 4, cliprange 0.2, cliprange_value 0.2, kl_penalty "kl" in the reward);
#: ``src/steptool/step_ppotrainer.py`` (step k's score x (n-1-k) on its last token; GAE through
#: observation tokens with zeroed values); ``src/baseline-ppo/ppo.py`` (final-reward PPO on IsSolved only).
STEPTOOL_SETTING: dict[str, object] = {
    "code_weights": True, "final_reward": "task_status", "gae": "through", "kl_controller": "adaptive",
    "kl_coef": 0.3, "kl_target": 6.0, "kl_horizon": 10_000, "kl_mode": "reward", "vf_coef": 0.1, "ppo_epochs": 4,
    "gamma": 0.99, "lam": 0.95, "clip": 0.2, "vf_clip": 0.2,
}
SETTINGS: dict[str, dict[str, object]] = {"toolenv": {}, "steptool": STEPTOOL_SETTING}


@dataclass
class Config(TrainConfig):
    """PPO with a value head; final or step-grained reward placement."""

    out: str = field(default="runs/ppo", metadata={"help": "output directory"})
    lr: float = field(default=1e-5, metadata={"help": "learning rate (AdamW)"})
    reward_placement: str = field(default="final", metadata={"help": "final: episode reward on the last token; step: each step's reward on its action's last token"})
    reward_source: str = field(default="hindsight", metadata={"help": "hindsight: the env's end-of-episode step rewards when it gives them; immediate: each step's own reward"})
    episodes_per_step: int = field(default=8, metadata={"help": "rollouts per PPO iteration (env samples)"})
    ppo_epochs: int = field(default=2, metadata={"help": "passes over each batch of rollouts"})
    minibatch_size: int = field(default=4, metadata={"help": "trajectories per gradient step"})
    clip: float = field(default=0.2, metadata={"help": "policy ratio clip"})
    vf_clip: float = field(default=0.2, metadata={"help": "value clip"})
    vf_coef: float = field(default=0.5, metadata={"help": "weight of the value loss"})
    gamma: float = field(default=0.99, metadata={"help": "discount over model tokens"})
    lam: float = field(default=0.95, metadata={"help": "GAE lambda"})
    kl_coef: float = field(default=0.05, metadata={"help": "KL to the reference (adapter disabled); 0 disables"})
    kl_mode: str = field(default="reward", metadata={"help": "reward: per-token k1 penalty in the reward; loss: k3 term in the loss"})
    whiten_advantages: bool = field(default=True, metadata={"help": "normalise advantages over the batch's model tokens"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature; log-probabilities are scored at it too"})
    max_new_tokens: int = field(default=64, metadata={"help": "tokens per action at most"})
    data: str | None = field(default=None, metadata={"help": "offline mode: JSONL of stored trajectories to train on"})
    setting: str = field(default="toolenv", metadata={"help": "toolenv: this suite's defaults; steptool: StepTool's code "
                         "(the defaults of code_weights, final_reward, gae, kl_controller, kl_coef, vf_coef, ppo_epochs "
                         "become StepTool's; see STEPTOOL_SETTING)"})
    code_weights: bool = field(default=False, metadata={"help": "step placement: step k of n weighted by n-1-k, as StepTool's StepPPOTrainer (the final IsSolved gets 0)"})
    final_reward: str = field(default="sum", metadata={"help": "final placement: sum (every step's reward) or task_status (IsSolved only, StepTool's PPO baseline)"})
    gae: str = field(default="skip", metadata={"help": "skip: GAE over model tokens only (verl); through: over every token with observations zeroed (trl 0.10.1, StepTool)"})
    kl_controller: str = field(default="fixed", metadata={"help": "fixed: kl_coef throughout; adaptive: trl 0.10.1's adaptive controller from kl_coef"})
    kl_target: float = field(default=6.0, metadata={"help": "adaptive KL: target per-sequence KL"})
    kl_horizon: int = field(default=10_000, metadata={"help": "adaptive KL: horizon"})

    def __post_init__(self) -> None:
        check_in("setting", self.setting, set(SETTINGS))
        defaults = {f.name: f.default for f in dataclasses.fields(Config)}
        for name, value in SETTINGS[self.setting].items():  # a setting changes defaults, never a value given
            if name == "code_weights" and self.reward_placement != "step":
                continue
            if name == "final_reward" and self.reward_placement != "final":
                continue
            if getattr(self, name) == defaults[name]:
                setattr(self, name, value)
        super().__post_init__()
        check_in("reward_placement", self.reward_placement, {"final", "step"})
        check_in("reward_source", self.reward_source, {"hindsight", "immediate"})
        check_in("kl_mode", self.kl_mode, {"reward", "loss"})
        check_in("final_reward", self.final_reward, {"sum", "task_status"})
        check_in("gae", self.gae, {"skip", "through"})
        check_in("kl_controller", self.kl_controller, {"fixed", "adaptive"})
        if self.code_weights and self.reward_placement != "step":
            raise ValueError("Expected code_weights only with reward_placement='step'.")
        if self.final_reward != "sum" and self.reward_placement != "final":
            raise ValueError("Expected final_reward='task_status' only with reward_placement='final'.")
        check_positive("kl_target", self.kl_target)
        check_positive("kl_horizon", self.kl_horizon)
        for name in ("episodes_per_step", "ppo_epochs", "minibatch_size", "max_new_tokens", "temperature"):
            check_positive(name, getattr(self, name))
        for name in ("clip", "vf_clip", "kl_coef", "vf_coef"):
            check_positive(name, getattr(self, name), allow_zero=True)
        if not (0 < self.gamma <= 1 and 0 <= self.lam <= 1):
            raise ValueError(f"Expected gamma in (0, 1] and lam in [0, 1], got {self.gamma} and {self.lam}.")
        if self.data is not None and not Path(self.data).exists():
            raise ValueError(f"Expected data to be an existing JSONL file, got {self.data!r}.")


def ppo_rewards(trajs: list[Trajectory], cfg: Config, width: int) -> torch.Tensor:
    """The token-level rewards the PPO loss sees (before the KL penalty): ``[batch, width]``.

    ``step`` placement: each step's reward (the env's hindsight rewards with ``reward_source
    hindsight``) on its action's last token, weighted by ``n-1-k`` with ``code_weights``.
    ``final`` placement: the episode's summed step rewards, or with ``final_reward task_status``
    only the final answer's IsSolved (raw ``task_status`` of the last step; 0 when the episode
    ended without an answer), on the last action's last token.
    """
    if cfg.reward_placement == "final" and cfg.final_reward == "task_status":
        scores = [[0.0] * (len(t.action_ends) - 1) + [float(t.infos[-1].get("reward_raw", {}).get("task_status", 0.0))]
                  if t.infos else [] for t in trajs]
    else:
        scores = [step_rewards_of(t, cfg.reward_source) for t in trajs]
    return place_rewards(scores, [t.action_ends for t in trajs], width, cfg.reward_placement,  # type: ignore[arg-type]
                         code_weights=cfg.code_weights)


class ValueHead(nn.Module):
    """The critic: a scalar read from the policy's last hidden state (zero-initialised)."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.linear = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.linear(hidden)


def _episode_stats(trajs: list[Trajectory]) -> dict[str, float]:
    stats: dict[str, float] = defaultdict(float)
    for t in trajs:
        stats["success"] += float(t.success)
        stats["return"] += t.total_reward
        stats["turns"] += len(t.actions)
        ok = [o for info in t.infos for o in info.get("calls_ok", [])]
        stats["call_success"] += (sum(ok) / len(ok)) if ok else 0.0
        for terms in t.reward_terms:
            for k, v in terms.items():
                stats[f"term/{k}"] += v
    return {k: v / max(1, len(trajs)) for k, v in stats.items()}


def train(cfg: Config) -> Path:
    """Train and save the policy (and its value head) to ``cfg.out``; returns that directory."""
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    # 1. set up: accelerator, seed, policy (a BC output continues on its adapter), critic, envs
    accelerator = Accelerator(cpu=cfg.device == "cpu")
    set_seed(cfg.seed)
    policy = load_policy_for_training(cfg, device=str(accelerator.device))
    if not policy.has_adapter:
        raise ValueError("PPO needs a LoRA adapter: the reference model is the base with the adapter disabled (set --lora-r > 0).")
    hidden = policy.model.config.hidden_size
    value_head = ValueHead(hidden).to(policy.device)
    scorer = TokenScorer(policy.model, value_head, temperature=cfg.temperature, share_prefixes=cfg.share_prefixes)
    params = [p for p in scorer.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = linear_warmup(optimizer, cfg.warmup_steps)
    scorer, optimizer = accelerator.prepare(scorer, optimizer)
    raw_scorer: TokenScorer = accelerator.unwrap_model(scorer)
    pad = policy.tokenizer.pad_token_id
    offline = load_trajectories(cfg.data) if cfg.data else None
    env_ids = [cfg.env[i % len(cfg.env)] for i in range(cfg.episodes_per_step)]
    envs = [gym.make(e, **cfg.env_kwargs) for e in env_ids] if offline is None else []
    settings = GenerationSettings(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature)
    out = Path(cfg.out)
    kl_ctl = AdaptiveKLController(cfg.kl_coef, target=cfg.kl_target, horizon=cfg.kl_horizon)

    # 2. resume from the last checkpoint of the same command, if any
    checkpointer = Checkpointer(out, cfg)
    start, run_name, episodes_seen = 0, None, 0
    if checkpointer.exists():
        start, extra = checkpointer.load(raw_scorer, optimizer, scheduler)
        run_name, episodes_seen = extra.get("run_name"), int(extra.get("episodes", 0))
        logger.info("Resuming from step %d", start)
    algo = "step-ppo" if cfg.reward_placement == "step" else "ppo"
    writer, run_name = make_writer(cfg, algo, run_name) if accelerator.is_main_process else (None, run_name)

    bar = tqdm(range(start, cfg.max_steps), initial=start, total=cfg.max_steps, desc=algo,
               disable=not (cfg.progress and accelerator.is_main_process))
    for step in bar:
        rng = np.random.default_rng([cfg.seed, step, accelerator.process_index])
        # 3. experience: new rollouts (or stored trajectories offline)
        if offline is None:
            seeds = [int(s) for s in rng.integers(0, 2**31 - 1, size=len(envs))]
            trajs = rollout(policy, envs, settings=settings, seeds=seeds, env_ids=env_ids)
        else:
            picked = rng.choice(len(offline), size=min(cfg.episodes_per_step, len(offline)), replace=False)
            trajs = [offline[i] for i in picked]
        trajs = [t for t in trajs if t.action_ends]
        episodes_seen += len(trajs)
        if not trajs:  # every prompt was longer than the context: nothing to learn from this step
            logger.warning("Step %d: no episode got to act (prompts longer than the context?); skipping the update", step)
            scheduler.step()
            continue
        batch = collate(trajs, pad, accelerator.device)
        mask = batch["loss_mask"]
        # 4. old log-probs and values (current model), reference log-probs (adapter disabled)
        scorer.eval()
        with torch.no_grad():
            old_logprobs, old_values = raw_scorer(**batch)
            with policy.reference():
                ref_logprobs, _ = raw_scorer(**batch)
        scorer.train()
        # 5. rewards on tokens, KL penalty, advantages
        width = batch["input_ids"].shape[1]
        rewards = ppo_rewards(trajs, cfg, width).to(accelerator.device)
        kl = kl_penalty(old_logprobs, ref_logprobs, "k1") * mask
        if cfg.kl_mode == "reward" and kl_ctl.value > 0:
            rewards = rewards - kl_ctl.value * kl
        advantages, returns = masked_gae(rewards, old_values, mask, gamma=cfg.gamma, lam=cfg.lam,
                                         through_observations=cfg.gae == "through")
        if cfg.whiten_advantages:
            advantages = masked_whiten(advantages, mask)
        # 6. PPO epochs over minibatches
        stats: dict[str, list[float]] = defaultdict(list)
        for _ in range(cfg.ppo_epochs):
            order = rng.permutation(len(trajs))
            for lo in range(0, len(trajs), cfg.minibatch_size):
                idx = torch.as_tensor(order[lo : lo + cfg.minibatch_size], device=accelerator.device)
                mb = {k: v[idx] for k, v in batch.items()}
                logprobs, values = scorer(**mb)
                pl, pstats = policy_loss(logprobs, old_logprobs[idx], advantages[idx], mb["loss_mask"], clip=cfg.clip)
                vl, vstats = value_loss(values, old_values[idx], returns[idx], mb["loss_mask"], clip=cfg.vf_clip)
                loss = pl + cfg.vf_coef * vl
                if cfg.kl_mode == "loss" and kl_ctl.value > 0:
                    kl_term = masked_mean(kl_penalty(logprobs, ref_logprobs[idx], "k3"), mb["loss_mask"])
                    loss = loss + kl_ctl.value * kl_term
                accelerator.backward(loss)
                if cfg.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                for k, v in {**pstats, **vstats}.items():
                    stats[k].append(v)
        if cfg.kl_controller == "adaptive":  # trl 0.10.1: mean per-sequence KL, batch size as n_steps
            kl_ctl.update(float(kl.sum(-1).mean()), len(trajs))
        # 7. log
        ep = _episode_stats(trajs)
        bar.set_postfix(success=f"{ep['success']:.2f}", ret=f"{ep['return']:.2f}")
        if writer is not None and (step % cfg.log_every == 0 or step == cfg.max_steps - 1):
            x = step + 1
            writer.add_scalar("charts/episodes", episodes_seen, x)
            writer.add_scalar("charts/success_rate", ep["success"], x)
            writer.add_scalar("charts/call_success_rate", ep["call_success"], x)
            writer.add_scalar("charts/mean_turns", ep["turns"], x)
            writer.add_scalar("rewards/episode_return", ep["return"], x)
            for k, v in ep.items():
                if k.startswith("term/"):
                    writer.add_scalar(f"rewards/{k[5:]}", v, x)
            writer.add_scalar("charts/kl", masked_mean(kl, mask).item(), x)
            writer.add_scalar("charts/kl_coef", kl_ctl.value, x)
            writer.add_scalar("charts/explained_variance", explained_variance(old_values, returns, mask), x)
            for k, vs in stats.items():
                writer.add_scalar(f"losses/{k}", float(np.mean(vs)), x)
        if (step + 1) % cfg.save_every == 0 and step + 1 < cfg.max_steps:
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                checkpointer.save(step + 1, raw_scorer, optimizer, scheduler, run_name=run_name, episodes=episodes_seen)

    # 8. check ranks agree, save the policy and the critic
    finish_run(accelerator, cfg, policy, raw_scorer, optimizer, scheduler, checkpointer, writer, agent=algo,
               run_name=run_name, extra={"episodes": episodes_seen}, files={"value_head.pt": value_head.state_dict()})
    for env in envs:
        env.close()
    return out


def main(argv: list[str] | None = None) -> int:
    cfg = config_from_args(Config, argv, prog="toolenv train ppo")
    train(cfg)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
