"""DPO on preference pairs built from the policy's own rollouts (ETO; StepTool's DPO baseline).

Each iteration samples ``tasks_per_step`` training tasks and plays each one ``group_size`` times
with the current policy (one batched :func:`agents.rollout.rollout` call, every env reset with
``{"index": i}`` so a group shares its task). With ``include_gold`` the task's gold solution,
played through the env (:func:`agents.rollout.scripted_trajectory`), joins the group as one more
candidate, so pairs exist even while the policy never succeeds (ETO's expert-vs-failure pairs).
Pairs within a group (:func:`preference_pairs`):

- when the env's success splits the group, every (successful, failed) pair: success is preferred;
- otherwise (no success, or all succeed) pairs are ranked by episode return: chosen has the
  higher ``total_reward``, rejected the lower; ties give no pair;
- at most ``max_pairs_per_task`` per task, least-used trajectories first, then the widest return gap.

``--pairing eto`` builds ETO's pairs instead (:func:`eto_pair`, from ``construct_preference.py`` in
Yifan-Song793/ETO): the gold trajectory against each exploration, the higher final outcome chosen,
ties dropped, a losing exploration cut to the gold length plus 5 rounds; with ``group_size 1``
that is ETO's one pair per task. The default differs on purpose: it also pairs explorations with
each other, so a group of samples gives signal beyond the gold one (and, when every candidate
succeeds, prefers the higher return, i.e. more rewarded calls).

Offline mode (``--data FILE``): no rollouts; the stored trajectories (as saved by
:func:`agents.rollout.save_trajectories`, tokens used as stored, like BC and PPO offline) are
grouped by ``(env_id, task id)`` and paired the same way; ``include_gold`` does not apply.

Loss (:func:`dpo_loss`, the sigmoid loss of Rafailov et al. 2023, as TRL's ``loss_type="sigmoid"``):
with sequence log-probs summed over the model's tokens only (:func:`sequence_logps`; prompt and
tool outputs are masked), ``-log σ(β((π_c − π_ref,c) − (π_r − π_ref,r)))`` averaged over pairs.
The reference is the same model with its LoRA adapter disabled (:meth:`agents.policy.Policy.reference`),
computed without gradients; there is no second copy of the model. When ``--model`` is a saved agent
output (e.g. ``runs/bc``), its adapter is folded into the weights and a new adapter is trained on top
(:meth:`agents.policy.Policy.load`), so the reference is that BC policy, as in ETO and TRL.

Run: ``toolenv train dpo --model runs/bc --env toolenv/Math-v0 --out runs/dpo``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F

import toolenv  # noqa: F401  (registers the env ids)
from agents.config import TrainConfig, check_in, check_positive, config_from_args
from agents.policy import Policy
from agents.rollout import GenerationSettings, Trajectory, load_trajectories, rollout_groups, scripted_trajectory
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

__all__ = [
    "Config",
    "PairSource",
    "PreferencePair",
    "cut_to_actions",
    "dpo_loss",
    "eto_pair",
    "final_outcome",
    "group_by_task",
    "main",
    "preference_pairs",
    "sequence_logps",
    "train",
]

logger = logging.getLogger(__name__)


@dataclass
class Config(TrainConfig):
    """DPO on (chosen, rejected) trajectory pairs of the same task, from rollouts or stored data."""

    out: str = field(default="runs/dpo", metadata={"help": "output directory"})
    lr: float = field(default=5e-5, metadata={"help": "learning rate (AdamW) of the LoRA adapter"})
    batch_size: int = field(default=8, metadata={"help": "pairs per forward pass; a step's pairs are split into such micro-batches whose gradients accumulate"})
    beta: float = field(default=0.1, metadata={"help": "DPO beta: strength of the implicit KL to the reference (adapter disabled)"})
    label_smoothing: float = field(default=0.0, metadata={"help": "conservative DPO: assumed probability that a pair's preference is flipped, in [0, 0.5)"})
    group_size: int = field(default=4, metadata={"help": "rollouts of the current policy per task"})
    tasks_per_step: int = field(default=2, metadata={"help": "tasks (groups of rollouts) per optimiser step"})
    tasks_per_env: int = field(default=500, metadata={"help": "training tasks per env (the first N of its split)"})
    include_gold: bool = field(default=True, metadata={"help": "add the gold solution, played through the env, to each task's candidates"})
    max_pairs_per_task: int = field(default=4, metadata={"help": "preference pairs per task at most"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature of the rollouts"})
    max_new_tokens: int = field(default=64, metadata={"help": "tokens per action at most"})
    data: str | None = field(default=None, metadata={"help": "offline mode: JSONL of stored trajectories, paired within (env_id, task id)"})
    pairing: str = field(default="toolenv", metadata={"help": "toolenv: every success over every failure, else by return; eto: "
                         "ETO's construct_preference (gold against each exploration by final outcome, ties dropped, a rejected "
                         "exploration cut to the gold length + eto_extra_rounds); with group_size 1, one pair per task as in ETO"})
    eto_extra_rounds: int = field(default=5, metadata={"help": "eto pairing: rounds a rejected exploration may run past the gold length"})

    def __post_init__(self) -> None:
        check_in("pairing", self.pairing, {"toolenv", "eto"})
        check_positive("eto_extra_rounds", self.eto_extra_rounds, allow_zero=True)
        if self.pairing == "eto" and (not self.include_gold or self.data is not None):
            raise ValueError("Expected pairing='eto' with include_gold and online rollouts: ETO pairs the gold trajectory "
                             "against the policy's explorations.")
        super().__post_init__()
        for name in ("beta", "group_size", "tasks_per_step", "tasks_per_env", "max_pairs_per_task", "temperature", "max_new_tokens"):
            check_positive(name, getattr(self, name))
        if not 0.0 <= self.label_smoothing < 0.5:
            raise ValueError(f"Expected label_smoothing in [0, 0.5), got {self.label_smoothing!r}.")
        if self.data is not None and not Path(self.data).exists():
            raise ValueError(f"Expected data to be an existing JSONL file, got {self.data!r}.")
        if self.data is None and self.group_size + int(self.include_gold) < 2:
            raise ValueError(
                f"Expected at least 2 candidates per task from group_size + include_gold, got "
                f"{self.group_size + int(self.include_gold)} (group_size={self.group_size}, include_gold={self.include_gold}); "
                "a pair needs two."
            )


# ------------------------------------------------------------------------------------- loss
def sequence_logps(token_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Each sequence's log-probability: token log-probs summed where ``mask`` is 1 (the model's tokens).

    >>> sequence_logps(torch.tensor([[-9.0, -1.0, -2.0], [-9.0, -0.5, -9.0]]), torch.tensor([[0, 1, 1], [0, 1, 0]]))
    tensor([-3.0000, -0.5000])
    """
    if token_logprobs.shape != mask.shape:
        raise ValueError(f"Expected token_logprobs and mask of the same shape, got {tuple(token_logprobs.shape)} and {tuple(mask.shape)}.")
    return (token_logprobs * mask.to(token_logprobs.dtype)).sum(-1)


def dpo_loss(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    *,
    beta: float,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The DPO sigmoid loss over a batch of pairs, averaged, with TRL's reward statistics.

    With ``d = (π_c − π_ref,c) − (π_r − π_ref,r)`` (sequence log-probs):
    ``loss = −(1 − ε) log σ(β d) − ε log σ(−β d)``; ``ε = label_smoothing`` is conservative DPO
    (ε = 0, the default, is plain DPO and TRL's ``loss_type="sigmoid"``). The implicit rewards are
    ``β (π − π_ref)``; ``rewards/accuracies`` is the fraction of pairs whose chosen reward is higher.

    Args:
        chosen_logps: ``[n]`` policy log-probs of the chosen sequences.
        rejected_logps: ``[n]`` policy log-probs of the rejected sequences.
        ref_chosen_logps: ``[n]`` reference log-probs of the chosen sequences (no gradient needed).
        ref_rejected_logps: ``[n]`` reference log-probs of the rejected sequences.
        beta: Inverse temperature of the implicit reward.
        label_smoothing: Assumed flip probability of the preferences, in ``[0, 0.5)``.

    >>> loss, stats = dpo_loss(torch.tensor([-1.0]), torch.tensor([-2.0]), torch.tensor([-1.5]), torch.tensor([-1.5]), beta=1.0)
    >>> round(loss.item(), 4), stats["rewards/chosen"], stats["rewards/rejected"], stats["rewards/margins"], stats["rewards/accuracies"]
    (0.3133, 0.5, -0.5, 1.0, 1.0)
    """
    shapes = {tuple(t.shape) for t in (chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)}
    if len(shapes) != 1 or chosen_logps.dim() != 1:
        raise ValueError(
            f"Expected four log-prob tensors of the same shape [n], got "
            f"{[tuple(t.shape) for t in (chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)]}."
        )
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"Expected label_smoothing in [0, 0.5), got {label_smoothing!r}.")
    chosen_logratios = chosen_logps - ref_chosen_logps
    rejected_logratios = rejected_logps - ref_rejected_logps
    logits = beta * (chosen_logratios - rejected_logratios)
    losses = -F.logsigmoid(logits)
    if label_smoothing > 0:
        losses = (1 - label_smoothing) * losses - label_smoothing * F.logsigmoid(-logits)
    loss = losses.mean()
    chosen_rewards = beta * chosen_logratios.detach()
    rejected_rewards = beta * rejected_logratios.detach()
    stats = {
        "loss": loss.item(),
        "rewards/chosen": chosen_rewards.mean().item(),
        "rewards/rejected": rejected_rewards.mean().item(),
        "rewards/margins": (chosen_rewards - rejected_rewards).mean().item(),
        "rewards/accuracies": (chosen_rewards > rejected_rewards).float().mean().item(),
        "logps/chosen": chosen_logps.detach().mean().item(),
        "logps/rejected": rejected_logps.detach().mean().item(),
    }
    return loss, stats


# ------------------------------------------------------------------------------------ pairs
@dataclass
class PreferencePair:
    """Two trajectories of one task; ``reason`` is ``"success"`` or ``"return"`` (what decided the preference)."""

    chosen: Trajectory
    rejected: Trajectory
    reason: str


def preference_pairs(candidates: Sequence[Trajectory], *, max_pairs: int | None = None) -> list[PreferencePair]:
    """Preference pairs among the trajectories of one task.

    When some candidates succeeded and some failed, every (successful, failed) pair; otherwise
    (none succeeded, or all did) every pair with different returns, the higher one chosen.
    Candidates without model tokens and pairs with identical tokens give no pair. With
    ``max_pairs``, pairs are taken greedily: those whose two trajectories have been used least so
    far, then the widest return gap, then candidate order, so a cap keeps as many distinct
    trajectories as it can.

    >>> def ep(success, ret, tok):
    ...     return Trajectory("e", {"id": "t"}, token_ids=[0, tok], action_mask=[0, 1], rewards=[ret], infos=[{"success": success}])
    >>> pairs = preference_pairs([ep(False, 0.0, 1), ep(True, 1.0, 2), ep(False, 0.5, 3)])
    >>> [(p.chosen.token_ids[1], p.rejected.token_ids[1], p.reason) for p in pairs]
    [(2, 1, 'success'), (2, 3, 'success')]
    """
    cands = [t for t in candidates if t.num_model_tokens > 0]
    successes = [t.success for t in cands]
    by_success = any(successes) and not all(successes)
    valid: list[tuple[int, int, float]] = []
    for i, a in enumerate(cands):
        for j, b in enumerate(cands):
            if i == j or a.token_ids == b.token_ids:
                continue
            gap = a.total_reward - b.total_reward
            if (by_success and successes[i] and not successes[j]) or (not by_success and gap > 0):
                valid.append((i, j, gap))
    reason = "success" if by_success else "return"
    if max_pairs is None or len(valid) <= max_pairs:
        picked = valid
    else:
        uses = [0] * len(cands)
        picked = []
        remaining = list(valid)
        while remaining and len(picked) < max_pairs:
            k = min(range(len(remaining)), key=lambda k: (uses[remaining[k][0]] + uses[remaining[k][1]], -remaining[k][2], k))
            i, j, gap = remaining.pop(k)
            uses[i] += 1
            uses[j] += 1
            picked.append((i, j, gap))
    return [PreferencePair(cands[i], cands[j], reason) for i, j, _ in picked]


def final_outcome(trajectory: Trajectory) -> float:
    """The episode's final reward in ETO's sense: the last step's task status (APIChain's IsSolved:
    1, 0.5, 0) when the env gives one, else 1.0 for success and 0.0 otherwise.

    >>> final_outcome(Trajectory("e", {}, infos=[{"reward_raw": {"task_status": 0.5}, "success": False}]))
    0.5
    """
    if not trajectory.infos:
        return 0.0
    raw = trajectory.infos[-1].get("reward_raw") or {}
    return float(raw["task_status"]) if "task_status" in raw else float(trajectory.success)


def cut_to_actions(trajectory: Trajectory, n: int) -> Trajectory:
    """The trajectory up to and including its ``n``-th action (its tokens, masks, rewards and infos).

    >>> t = Trajectory("e", {}, token_ids=[0, 1, 2, 3, 4, 5], action_mask=[0, 1, 0, 1, 0, 1], logprobs=[0.0] * 6,
    ...                action_ends=[1, 3, 5], rewards=[0.0, 0.0, 1.0], reward_terms=[{}, {}, {}], infos=[{}, {}, {}],
    ...                actions=["a", "b", "c"])
    >>> cut = cut_to_actions(t, 2); cut.token_ids, cut.action_ends, cut.truncated
    ([0, 1, 2, 3], [1, 3], True)
    """
    if n >= len(trajectory.action_ends):
        return trajectory
    end = trajectory.action_ends[n - 1] + 1
    return dataclasses.replace(
        trajectory, token_ids=trajectory.token_ids[:end], action_mask=trajectory.action_mask[:end],
        logprobs=trajectory.logprobs[:end], action_ends=trajectory.action_ends[:n], rewards=trajectory.rewards[:n],
        reward_terms=trajectory.reward_terms[:n], infos=trajectory.infos[:n], actions=trajectory.actions[:n],
        terminated=False, truncated=True,
    )


def eto_pair(gold: Trajectory, exploration: Trajectory, *, extra_rounds: int = 5) -> PreferencePair | None:
    """ETO's preference pair (``construct_preference.py``): the gold trajectory against one exploration.

    The higher final outcome (:func:`final_outcome`) is chosen; a tie gives no pair. When the
    gold one wins, the exploration is cut to the gold's number of actions plus ``extra_rounds``
    (ETO: "we limit the length of failed trajectories to not exceed the successful ones by more
    than 5 rounds"); when the exploration wins, the gold one is rejected whole.
    """
    g, e = final_outcome(gold), final_outcome(exploration)
    if exploration.num_model_tokens == 0 or g == e:
        return None
    if e < g:
        return PreferencePair(gold, cut_to_actions(exploration, len(gold.action_ends) + extra_rounds), "eto")
    return PreferencePair(exploration, gold, "eto")


def group_by_task(trajectories: Sequence[Trajectory]) -> dict[tuple[str, str], list[Trajectory]]:
    """Trajectories grouped by ``(env_id, task id)``, in first-seen order.

    >>> trajs = [Trajectory("a", {"id": 1}), Trajectory("b", {"id": 1}), Trajectory("a", {"id": 1})]
    >>> {k: len(v) for k, v in group_by_task(trajs).items()}
    {('a', '1'): 2, ('b', '1'): 1}
    """
    groups: dict[tuple[str, str], list[Trajectory]] = {}
    for t in trajectories:
        groups.setdefault((t.env_id, str(t.task.get("id"))), []).append(t)
    return groups


class PairSource:
    """Preference pairs of a step: from fresh rollouts (plus gold solutions), or from stored trajectories.

    Online, it holds the envs (``group_size × tasks_per_step`` per env id, made once, more when a
    step's tasks crowd into one env), the training tasks (the first ``tasks_per_env`` of each env's
    split, as ``(env_id, index)``) and a cache of gold trajectories. Offline, it holds the stored
    groups that give at least one pair.
    """

    def __init__(self, cfg: Config, tokenizer: Any) -> None:
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.settings = GenerationSettings(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature)
        self.envs: dict[str, list[gym.Env]] = {}
        self.tasks: list[tuple[str, int]] = []
        self.offline: list[list[PreferencePair]] = []
        self._gold: dict[tuple[str, int], Trajectory] = {}
        if cfg.data is not None:
            groups = group_by_task(load_trajectories(cfg.data))
            self.offline = [p for p in (preference_pairs(g, max_pairs=cfg.max_pairs_per_task) for g in groups.values()) if p]
            logger.info("%s: %d tasks, %d with preference pairs", cfg.data, len(groups), len(self.offline))
            if not self.offline:
                raise ValueError(f"Expected stored trajectories in {cfg.data} to give preference pairs, got none "
                                 "(each (env_id, task id) needs two trajectories that differ in success or return).")
            return
        for env_id in cfg.env:
            self.envs[env_id] = [gym.make(env_id, **cfg.env_kwargs) for _ in range(cfg.group_size * cfg.tasks_per_step)]
            n_tasks = min(cfg.tasks_per_env, len(self.envs[env_id][0].unwrapped.tasks))  # type: ignore[attr-defined]
            self.tasks.extend((env_id, i) for i in range(n_tasks))

    @property
    def num_groups(self) -> int:
        """How many tasks a step can draw from."""
        return len(self.offline) if self.cfg.data is not None else len(self.tasks)

    def gold(self, env_id: str, index: int) -> Trajectory:
        """The task's gold solution played through the env (once, then cached)."""
        key = (env_id, index)
        if key not in self._gold:
            self._gold[key] = scripted_trajectory(self.envs[env_id][0], None, self.tokenizer, options={"index": index}, env_id=env_id)
        return self._gold[key]

    def sample(self, policy: Policy, picked: Sequence[int]) -> tuple[list[PreferencePair], list[Trajectory]]:
        """The pairs of the picked groups (indices into the tasks, or the offline groups) and the episodes sampled."""
        if self.cfg.data is not None:
            return [p for g in picked for p in self.offline[g]], []
        tasks = [self.tasks[g] for g in picked]
        samples = rollout_groups(policy, self.envs, tasks, self.cfg.group_size, settings=self.settings,
                                 env_kwargs=self.cfg.env_kwargs)
        pairs: list[PreferencePair] = []
        k = self.cfg.group_size
        for g, (env_id, index) in enumerate(tasks):
            group = samples[g * k : (g + 1) * k]
            if self.cfg.pairing == "eto":
                gold = self.gold(env_id, index)
                pairs.extend(p for p in (eto_pair(gold, t, extra_rounds=self.cfg.eto_extra_rounds) for t in group) if p)
                continue
            if self.cfg.include_gold:
                group = [self.gold(env_id, index), *group]
            pairs.extend(preference_pairs(group, max_pairs=self.cfg.max_pairs_per_task))
        return pairs, samples

    def close(self) -> None:
        for pool in self.envs.values():
            for env in pool:
                env.close()


# ------------------------------------------------------------------------------------ train
def _pair_logps(scorer: Any, raw_scorer: TokenScorer, policy: Policy, pairs: Sequence[PreferencePair], pad: int,
                device: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Policy and reference sequence log-probs of chosen and rejected, one forward each on [chosen..., rejected...]."""
    batch = collate([p.chosen for p in pairs] + [p.rejected for p in pairs], pad, device)
    with torch.no_grad(), policy.reference():
        ref = sequence_logps(raw_scorer(**batch), batch["loss_mask"])
    logps = sequence_logps(scorer(**batch), batch["loss_mask"])
    n = len(pairs)
    return logps[:n], logps[n:], ref[:n], ref[n:]


def train(cfg: Config) -> Path:
    """Train and save the policy to ``cfg.out``; returns that directory."""
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    # 1. set up: accelerator, seed, policy (a BC output continues on its adapter), pair source
    accelerator = Accelerator(cpu=cfg.device == "cpu")
    set_seed(cfg.seed)
    policy = load_policy_for_training(cfg, device=str(accelerator.device))
    if not policy.has_adapter:
        raise ValueError("DPO needs a LoRA adapter: the reference model is the base with the adapter disabled (set --lora-r > 0).")
    source = PairSource(cfg, policy.tokenizer)
    pad = policy.tokenizer.pad_token_id
    scorer = TokenScorer(policy.model, share_prefixes=cfg.share_prefixes)
    optimizer = torch.optim.AdamW(policy.trainable_parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = linear_warmup(optimizer, cfg.warmup_steps)
    # accelerate may wrap the scorer (DDP); generation and the reference use the unwrapped model
    scorer, optimizer = accelerator.prepare(scorer, optimizer)
    raw_scorer: TokenScorer = accelerator.unwrap_model(scorer)
    out = Path(cfg.out)

    # 2. resume from the last checkpoint of the same command, if any
    checkpointer = Checkpointer(out, cfg)
    start, run_name, episodes_seen = 0, None, 0
    if checkpointer.exists():
        start, extra = checkpointer.load(policy.model, optimizer, scheduler)
        run_name, episodes_seen = extra.get("run_name"), int(extra.get("episodes", 0))
        logger.info("Resuming from step %d", start)
    writer, run_name = make_writer(cfg, "dpo", run_name) if accelerator.is_main_process else (None, run_name)

    scorer.train()
    bar = tqdm(range(start, cfg.max_steps), initial=start, total=cfg.max_steps, desc="dpo",
               disable=not (cfg.progress and accelerator.is_main_process))
    for step in bar:
        # 3. pick this step's tasks from a generator seeded by (seed, step, rank), so a resumed run
        #    sees the tasks it would have seen; roll them out and build the preference pairs
        rng = np.random.default_rng([cfg.seed, step, accelerator.process_index])
        picked = rng.choice(source.num_groups, size=min(cfg.tasks_per_step, source.num_groups), replace=False)
        pairs, samples = source.sample(policy, [int(g) for g in picked])
        episodes_seen += len(samples)

        # 4. DPO loss over micro-batches of pairs (reference log-probs with the adapter disabled,
        #    no gradient); gradients accumulate so the step's loss is the mean over all its pairs
        stats: dict[str, float] = {}
        chunks = [pairs[lo : lo + cfg.batch_size] for lo in range(0, len(pairs), cfg.batch_size)]
        for c, chunk in enumerate(chunks):
            sync = contextlib.nullcontext() if c == len(chunks) - 1 else accelerator.no_sync(scorer)
            with sync:
                logps = _pair_logps(scorer, raw_scorer, policy, chunk, pad, accelerator.device)
                loss, chunk_stats = dpo_loss(*logps, beta=cfg.beta, label_smoothing=cfg.label_smoothing)
                accelerator.backward(loss * len(chunk) / len(pairs))
            for k, v in chunk_stats.items():
                stats[k] = stats.get(k, 0.0) + v * len(chunk) / len(pairs)
        if not pairs:
            logger.warning("Step %d: no preference pairs (every candidate scored alike); skipping the update", step)

        # 5. update
        if pairs:
            if cfg.max_grad_norm > 0:
                accelerator.clip_grad_norm_(scorer.parameters(), cfg.max_grad_norm)
            optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)

        # 6. log
        success = float(np.mean([t.success for t in samples])) if samples else float("nan")
        if stats:
            bar.set_postfix(loss=f"{stats['loss']:.3f}", margin=f"{stats['rewards/margins']:.3f}", pairs=len(pairs))
        if writer is not None and (step % cfg.log_every == 0 or step == cfg.max_steps - 1):
            x = step + 1
            if stats:
                writer.add_scalar("losses/dpo", stats["loss"], x)
                for k in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen", "logps/rejected"):
                    writer.add_scalar(k, stats[k], x)
            writer.add_scalar("charts/pairs", len(pairs), x)
            writer.add_scalar("charts/episodes", episodes_seen, x)
            if samples:
                writer.add_scalar("charts/success_rate", success, x)  # of the rollouts, as PPO and GRPO log it
            writer.add_scalar("charts/learning_rate", scheduler.get_last_lr()[0], x)

        # 7. checkpoint
        if (step + 1) % cfg.save_every == 0 and step + 1 < cfg.max_steps:
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                checkpointer.save(step + 1, policy.model, optimizer, scheduler, run_name=run_name, episodes=episodes_seen)

    # 8. check data-parallel ranks agree, then save where `toolenv eval --model OUT` finds it
    source.close()
    return finish_run(accelerator, cfg, policy, policy.model, optimizer, scheduler, checkpointer, writer, agent="dpo",
                      run_name=run_name, extra={"episodes": episodes_seen})


def main(argv: list[str] | None = None) -> int:
    cfg = config_from_args(Config, argv, prog="toolenv train dpo")
    train(cfg)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
