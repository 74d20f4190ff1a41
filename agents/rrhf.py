"""RRHF (TRICE stage 2): rank the policy's own responses by execution feedback, and clone the best.

TRICE (Qiao et al., NAACL 2024) trains tool use in two stages: behaviour cloning on gold
demonstrations (:mod:`agents.bc`), then reinforcement learning with execution feedback, done
with RRHF (Yuan et al., 2023): for each task, several candidate responses are executed, scored,
and the policy learns to give higher (length-normalised) log-likelihood to better responses,
plus an ordinary NLL on the best one. No reward model, value function or reference model.

Candidates of a task (a "group"), in this order (TRICE's: the gold response first, so that on a
tie of scores the SFT target is the gold one):

- the gold solution played through the env (``include_gold``), as in :mod:`agents.bc`;
- with ``--data FILE``: trajectories saved by :func:`agents.rollout.save_trajectories` for the
  same ``(env_id, task id)``. Their actions are replayed through the env, so their tokens follow
  this policy's tokenizer and their tool outputs are real executions. A trajectory whose task has
  an ``"origin"`` (TRICE's field: which model wrote it, e.g. ``"bc@0.7"``) is logged under it;
- ``num_samples`` episodes sampled from the current policy on that task (all tasks of a step go
  through one batched :func:`agents.rollout.rollout` call, each env reset with ``{"index": i}``).

TRICE's stage-2 candidates also come from other models (ChatGPT, InstructGPT, Vicuna, Alpaca and the
stage-1 data); here they are the policy's samples, the gold one and any stored ones (``--data``):
``toolenv bench trice`` stores the base and BC models' samples at several temperatures there.

Score: :func:`rewards.trice_score` over the group (TRICE's execution-feedback ladder 20/15/10/5/0),
from each candidate's final answer, whether it used a tool, and the last successful tool output
when its answer states no number (:func:`candidate_scores`).

Loss of a group of ``n`` candidates with token log-probs ``lp`` and model-token masks ``m``
(:func:`rrhf_loss`): ``p_i = Σ lp_i m_i / |y_i|``;
``L_rank = Σ_{score_i > score_j} max(0, p_j - p_i)``; ``L_sft`` is the NLL of the best-scored
candidate ``b``, normalised by its own length (``length_norm="response"``, the paper) or by the
padded length ``T`` of the group's tensor (``"padded"``, TRICE's code, which averages over
padded labels and, through an in-place edit of the labels, also divides every ``p_i`` by ``T``);
``loss = rrhf_weight * L_rank + L_sft``, averaged over the step's groups.

Run: ``toolenv train rrhf --model runs/bc --env toolenv/Math-v0 --out runs/rrhf`` (``--model``
may be a BC output directory: training continues on its adapter).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

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
from rewards.math import extract_number, trice_score

__all__ = ["CandidateGroup", "Candidates", "Config", "candidate_scores", "final_answer", "main", "rrhf_loss", "train"]

logger = logging.getLogger(__name__)

LENGTH_NORMS = ("response", "padded")


@dataclass
class Config(TrainConfig):
    """RRHF on candidates ranked by execution feedback (TRICE stage 2)."""

    out: str = field(default="runs/rrhf", metadata={"help": "output directory"})
    lr: float = field(default=5e-5, metadata={"help": "learning rate (AdamW); smaller than BC's, the policy starts cloned"})
    batch_size: int = field(default=8, metadata={"help": "unused by rrhf: a step is tasks_per_step groups of candidates"})
    num_samples: int = field(default=4, metadata={"help": "episodes sampled from the current policy per task"})
    include_gold: bool = field(default=True, metadata={"help": "add the gold solution, played through the env, to each group"})
    data: str | None = field(default=None, metadata={"help": "JSONL of stored trajectories added to the groups of their (env, task id)"})
    tasks_per_env: int = field(default=500, metadata={"help": "training tasks per env (the first N of its split)"})
    tasks_per_step: int = field(default=2, metadata={"help": "tasks (candidate groups) per optimiser step"})
    rrhf_weight: float = field(default=1.0, metadata={"help": "weight of the ranking loss (paper: 0.01-1; TRICE's code: 100)"})
    length_norm: str = field(default="response", metadata={"help": "SFT normalisation: response (own length, paper) or padded (padded length, TRICE code)"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature of the candidates"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling mass of the candidates"})
    max_new_tokens: int = field(default=64, metadata={"help": "tokens per action at most"})

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive("num_samples", self.num_samples, allow_zero=True)
        for name in ("tasks_per_env", "tasks_per_step", "temperature", "max_new_tokens"):
            check_positive(name, getattr(self, name))
        check_positive("rrhf_weight", self.rrhf_weight, allow_zero=True)
        check_in("length_norm", self.length_norm, LENGTH_NORMS)
        if not 0 < self.top_p <= 1:
            raise ValueError(f"Expected top_p in (0, 1], got {self.top_p!r}.")
        if self.data is not None and not Path(self.data).exists():
            raise ValueError(f"Expected data to be an existing JSONL file, got {self.data!r}.")
        live = self.num_samples + int(self.include_gold)
        if self.data is None and live < 2:
            raise ValueError(
                f"Expected at least 2 candidates per task from num_samples + include_gold, got {live} "
                f"(num_samples={self.num_samples}, include_gold={self.include_gold}); ranking needs two, or pass data."
            )
        if self.data is not None and live < 1:
            raise ValueError(f"Expected num_samples > 0 or include_gold with data, got num_samples={self.num_samples}, include_gold=False.")


# ---------------------------------------------------------------------------------- scoring
def final_answer(trajectory: Trajectory) -> str:
    """The answer text the episode ended with, or ``""`` when it ended without one (truncated)."""
    last = trajectory.infos[-1] if trajectory.infos else {}
    if last.get("action_kind") == "answer" and last.get("answer") is not None:
        return str(last["answer"])
    return ""


def _last_successful_output(trajectory: Trajectory) -> str | None:
    """The output of the episode's last tool call that ran without error, or ``None``."""
    value = None
    for info in trajectory.infos:
        outputs = info.get("tool_outputs") or []
        step_ok = bool((info.get("reward_raw") or {}).get("call_succeeded"))
        for out in outputs:
            # call_succeeded covers the whole step; with several calls, an error output says which failed
            if step_ok or (len(outputs) > 1 and not str(out).startswith("Error")):
                value = str(out)
    return value


def candidate_scores(trajectories: Sequence[Trajectory], task: Mapping[str, Any]) -> list[float]:
    """TRICE's execution-feedback scores of a group of candidate episodes for one task.

    Tasks with text answers (``meta["aliases"]``: the QA, LAMA and MLQA envs) are scored with
    :func:`rewards.qa.trice_text_score`, TRICE's ladder for those tasks. Otherwise each candidate
    is judged by :func:`rewards.trice_score` from its final answer text (``""``
    when the episode ended without one), whether it used a tool, and, when that answer states
    no number, the output of its last successful tool call (TRICE judges a response that is a
    call by its executed value). ``gold_tool_used`` is whether the task's gold solution has calls.

    Args:
        trajectories: The candidates, all played on ``task``.
        task: The task as a dict (``Trajectory.task``): needs ``answer`` and ``solution``.

    >>> task = {"answer": "42", "solution": [{"name": "calculator"}]}
    >>> call = {"action_kind": "call", "tool_outputs": ["42"], "reward_raw": {"call_succeeded": 1.0}, "tool_used": True}
    >>> def answered(text, *steps):
    ...     return Trajectory("e", task, infos=[*steps, {"action_kind": "answer", "answer": text, "tool_used": bool(steps)}])
    >>> candidate_scores([answered("42", call), answered("It is 42"), answered("40"), answered("I am done", call)], task)
    [20.0, 15.0, 10.0, 20.0]
    """
    completions = [final_answer(t) for t in trajectories]
    tool_used = [any(bool(i.get("tool_used")) for i in t.infos) for t in trajectories]
    aliases = (task.get("meta") or {}).get("aliases")
    if aliases:  # a text answer (TRICE's QA, LAMA, MLQA tasks): the text ladder, no numbers
        from rewards.qa import trice_text_score

        return trice_text_score(completions, aliases=list(aliases), tool_used=tool_used, gold_tool_used=bool(task.get("solution")))
    tool_value = [_last_successful_output(t) if extract_number(c) is None else None for t, c in zip(trajectories, completions)]
    return trice_score(completions, answer=str(task["answer"]), tool_used=tool_used,
                       gold_tool_used=bool(task.get("solution")), tool_value=tool_value)


# ------------------------------------------------------------------------------------- loss
def rrhf_loss(
    token_logprobs: torch.Tensor,
    loss_mask: torch.Tensor,
    scores: torch.Tensor,
    *,
    rrhf_weight: float,
    length_norm: str,
) -> tuple[torch.Tensor, dict[str, float]]:
    """RRHF loss of one group of ``n`` candidates: ranking hinge plus NLL of the best one.

    ``p_i = Σ_t lp_i m_i / |y_i|`` (length-normalised log-likelihood, ``|y_i| = Σ_t m_i``; with
    ``"padded"``, ``/ T`` for every candidate, the padded length of the tensor, as TRICE's code
    computes it: RRHF issue 37); ``L_rank = Σ_{(i, j): s_i > s_j} max(0, p_j - p_i)``; with ``b``
    the first candidate of the highest score (``torch.argmax``), ``L_sft = -Σ_t lp_b m_b / |y_b|``
    (``"response"``) or ``/ T`` (``"padded"``); ``loss = rrhf_weight * L_rank + L_sft``.

    Args:
        token_logprobs: ``[n, T]`` log-probability of each token (from :class:`agents.utils.TokenScorer`).
        loss_mask: ``[n, T]`` 1 on the model's tokens.
        scores: ``[n]`` the candidates' scores (higher is better).
        rrhf_weight: Weight of the ranking term.
        length_norm: ``"response"`` or ``"padded"``.

    >>> lp = torch.tensor([[0.0, -1.0, -1.0, -1.0], [0.0, -0.5, -0.5, 0.0]])
    >>> mask = torch.tensor([[0.0, 1.0, 1.0, 1.0], [0.0, 1.0, 1.0, 0.0]])
    >>> loss, stats = rrhf_loss(lp, mask, torch.tensor([1.0, 0.0]), rrhf_weight=1.0, length_norm="response")
    >>> round(loss.item(), 4), stats["rank_loss"], stats["sft_loss"], stats["pairs_violated"]
    (1.5, 0.5, 1.0, 1.0)
    """
    check_in("length_norm", length_norm, LENGTH_NORMS)
    if token_logprobs.shape != loss_mask.shape or scores.shape != token_logprobs.shape[:1]:
        raise ValueError(
            f"Expected token_logprobs and loss_mask of shape [n, T] and scores of shape [n], "
            f"got {tuple(token_logprobs.shape)}, {tuple(loss_mask.shape)} and {tuple(scores.shape)}."
        )
    mask = loss_mask.to(token_logprobs.dtype)
    seq_logprob = (token_logprobs * mask).sum(-1)  # [n]
    lengths = mask.sum(-1).clamp_min(1.0)
    # TRICE's get_score divides by (labels != -100).sum(-1), but gather_logits_labels has already
    # set every -100 label to 0 in place, so its "length" is the padded length T for every candidate
    p = seq_logprob / (lengths if length_norm == "response" else float(token_logprobs.shape[-1]))
    scores = scores.to(p.device)
    better = scores[:, None] > scores[None, :]  # [i, j]: candidate i scored above candidate j
    gap = p[None, :] - p[:, None]  # [i, j]: p_j - p_i, > 0 when the worse one is more likely
    violated = better & (gap > 0)
    rank = torch.where(violated, gap, torch.zeros_like(gap)).sum()
    best = int(torch.nonzero(scores == scores.max())[0, 0])  # first on ties
    denom = lengths[best] if length_norm == "response" else float(token_logprobs.shape[-1])
    sft = -seq_logprob[best] / denom
    loss = rrhf_weight * rank + sft
    stats = {
        "loss": loss.item(),
        "rank_loss": rank.item(),
        "sft_loss": sft.item(),
        "pairs_violated": float(violated.sum().item()),
        "best_score": float(scores[best].item()),
        "mean_score": float(scores.float().mean().item()),
    }
    return loss, stats


# ------------------------------------------------------------------------------- candidates
@dataclass
class CandidateGroup:
    """The candidates of one task, with where each came from (``"sample"``, ``"gold"`` or ``"data"``)."""

    env_id: str
    index: int
    task: dict[str, Any]
    candidates: list[Trajectory]
    sources: list[str]

    def scores(self) -> list[float]:
        return candidate_scores(self.candidates, self.task)


class Candidates:
    """Gathers candidate groups: samples of the current policy, the gold solution, stored trajectories.

    Holds the envs (``num_samples × tasks_per_step`` per env id, made once), the training tasks
    (the first ``tasks_per_env`` of each env's split, as ``(env_id, index)`` pairs), and caches
    of the gold and replayed stored trajectories, which do not change during training.
    """

    def __init__(self, cfg: Config, tokenizer: Any) -> None:
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.settings = GenerationSettings(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p)
        self.envs: dict[str, list[gym.Env]] = {}
        self.tasks: list[tuple[str, int]] = []
        for env_id in cfg.env:
            n_envs = max(1, cfg.num_samples * cfg.tasks_per_step)
            self.envs[env_id] = [gym.make(env_id, **cfg.env_kwargs) for _ in range(n_envs)]
            n_tasks = min(cfg.tasks_per_env, len(self.envs[env_id][0].unwrapped.tasks))  # type: ignore[attr-defined]
            self.tasks.extend((env_id, i) for i in range(n_tasks))
        self.stored: dict[tuple[str, str], list[Trajectory]] = {}
        if cfg.data is not None:
            for t in load_trajectories(cfg.data):
                self.stored.setdefault((t.env_id, str(t.task.get("id"))), []).append(t)
            logger.info("Loaded stored trajectories for %d (env, task) pairs from %s", len(self.stored), cfg.data)
        self._fixed: dict[tuple[str, int], tuple[list[Trajectory], list[str]]] = {}

    def task(self, env_id: str, index: int) -> dict[str, Any]:
        return self.envs[env_id][0].unwrapped.tasks[index].to_dict()  # type: ignore[attr-defined]

    def fixed_candidates(self, env_id: str, index: int) -> tuple[list[Trajectory], list[str]]:
        """The gold and stored candidates of a task (played through the env once, then cached)."""
        key = (env_id, index)
        if key not in self._fixed:
            env = self.envs[env_id][0]
            trajs: list[Trajectory] = []
            sources: list[str] = []
            if self.cfg.include_gold:
                trajs.append(scripted_trajectory(env, None, self.tokenizer, options={"index": index}, env_id=env_id))
                sources.append("gold")
            for stored in self.stored.get((env_id, str(self.task(env_id, index)["id"])), []):
                trajs.append(scripted_trajectory(env, stored.actions, self.tokenizer, options={"index": index}, env_id=env_id))
                sources.append(str(stored.task.get("origin") or "data"))
            self._fixed[key] = (trajs, sources)
        trajs, sources = self._fixed[key]
        return list(trajs), list(sources)

    def gather(self, policy: Policy, picked: Sequence[tuple[str, int]]) -> list[CandidateGroup]:
        """One group per picked task; all sampled episodes of the step come from one rollout call.

        Candidates without model tokens (an episode cut before its first action) are dropped:
        they have no likelihood to rank.
        """
        samples = rollout_groups(policy, self.envs, picked, self.cfg.num_samples, settings=self.settings,
                                 env_kwargs=self.cfg.env_kwargs)
        groups = []
        k = self.cfg.num_samples
        for g, (env_id, index) in enumerate(picked):
            trajs, sources = self.fixed_candidates(env_id, index)
            # gold (and stored) first, as in TRICE's data: on a tie the SFT target is the gold one
            trajs = trajs + samples[g * k : (g + 1) * k]
            sources = sources + ["sample"] * k
            kept = [(t, s) for t, s in zip(trajs, sources) if t.num_model_tokens > 0]
            if kept:
                groups.append(CandidateGroup(env_id, index, self.task(env_id, index),
                                             [t for t, _ in kept], [s for _, s in kept]))
        return groups

    def close(self) -> None:
        for pool in self.envs.values():
            for env in pool:
                env.close()


# ------------------------------------------------------------------------------------ train
def train(cfg: Config) -> Path:
    """Train and save the policy to ``cfg.out``; returns that directory."""
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    # 1. set up: accelerator, seed, policy (a BC output continues on its adapter), candidate sources
    accelerator = Accelerator(cpu=cfg.device == "cpu")
    set_seed(cfg.seed)
    policy = load_policy_for_training(cfg, device=str(accelerator.device))
    candidates = Candidates(cfg, policy.tokenizer)
    pad = policy.tokenizer.pad_token_id
    scorer = TokenScorer(policy.model, share_prefixes=cfg.share_prefixes)
    optimizer = torch.optim.AdamW(policy.trainable_parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = linear_warmup(optimizer, cfg.warmup_steps)
    # accelerate may wrap the scorer (DDP); generation uses `policy`, whose model stays unwrapped
    scorer, optimizer = accelerator.prepare(scorer, optimizer)
    out = Path(cfg.out)

    # 2. resume from the last checkpoint of the same command, if any
    checkpointer = Checkpointer(out, cfg)
    start, run_name = 0, None
    if checkpointer.exists():
        start, extra = checkpointer.load(policy.model, optimizer, scheduler)
        run_name = extra.get("run_name")
        logger.info("Resuming from step %d", start)
    writer, run_name = make_writer(cfg, "rrhf", run_name) if accelerator.is_main_process else (None, run_name)

    # 3. train: each step draws tasks from a generator seeded by (seed, step, rank), samples
    #    candidates from the current policy, scores them by execution feedback and ranks them
    scorer.train()
    bar = tqdm(range(start, cfg.max_steps), initial=start, total=cfg.max_steps, desc="rrhf",
               disable=not (cfg.progress and accelerator.is_main_process))
    for step in bar:
        # 3a. pick this step's tasks and gather their candidate groups
        rng = np.random.default_rng([cfg.seed, step, accelerator.process_index])
        picked_idx = rng.choice(len(candidates.tasks), size=min(cfg.tasks_per_step, len(candidates.tasks)), replace=False)
        picked = [candidates.tasks[i] for i in picked_idx]
        groups = candidates.gather(policy, picked)

        # 3b. score each group, then one forward and backward per group (gradients accumulate)
        all_stats: list[dict[str, float]] = []
        all_scores: list[float] = []
        sampled_success: list[bool] = []
        source_scores: dict[str, list[float]] = {}
        for g, group in enumerate(groups):
            scores = group.scores()
            all_scores.extend(scores)
            for source, score in zip(group.sources, scores):
                source_scores.setdefault(source, []).append(score)
            sampled_success.extend(t.success for t, s in zip(group.candidates, group.sources) if s == "sample")
            sync = contextlib.nullcontext() if g == len(groups) - 1 else accelerator.no_sync(scorer)
            with sync:
                batch = collate(group.candidates, pad, accelerator.device)
                token_lp = scorer(batch["input_ids"], batch["attention_mask"], batch["loss_mask"])
                loss, stats = rrhf_loss(token_lp, batch["loss_mask"], torch.tensor(scores, device=accelerator.device),
                                        rrhf_weight=cfg.rrhf_weight, length_norm=cfg.length_norm)
                accelerator.backward(loss / len(groups))
            all_stats.append(stats)
        if not groups:
            logger.warning("Step %d: no candidate had model tokens; skipping the update", step)

        # 3c. update
        if groups and cfg.max_grad_norm > 0:
            accelerator.clip_grad_norm_(scorer.parameters(), cfg.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)

        # 3d. log
        mean = {k: float(np.mean([s[k] for s in all_stats])) for k in all_stats[0]} if all_stats else {}
        mean_score = float(np.mean(all_scores)) if all_scores else float("nan")
        if mean:
            bar.set_postfix(loss=f"{mean['loss']:.3f}", rank=f"{mean['rank_loss']:.3f}", score=f"{mean_score:.1f}")
        if writer is not None and mean and (step % cfg.log_every == 0 or step == cfg.max_steps - 1):
            writer.add_scalar("losses/rank", mean["rank_loss"], step + 1)
            writer.add_scalar("losses/sft", mean["sft_loss"], step + 1)
            writer.add_scalar("losses/total", mean["loss"], step + 1)
            writer.add_scalar("rewards/mean_trice_score", mean_score, step + 1)
            writer.add_scalar("rewards/best_trice_score", mean["best_score"], step + 1)
            if sampled_success:
                writer.add_scalar("rewards/sample_success_rate", float(np.mean(sampled_success)), step + 1)
            writer.add_scalar("charts/pairs_violated", mean["pairs_violated"], step + 1)
            writer.add_scalar("charts/candidates_per_task", len(all_scores) / len(groups), step + 1)
            for source, values in source_scores.items():
                writer.add_scalar(f"rewards/trice_score/{source}", float(np.mean(values)), step + 1)
            writer.add_scalar("charts/learning_rate", scheduler.get_last_lr()[0], step + 1)

        # 3e. checkpoint
        if (step + 1) % cfg.save_every == 0 and step + 1 < cfg.max_steps:
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                checkpointer.save(step + 1, policy.model, optimizer, scheduler, run_name=run_name)

    # 4. check data-parallel ranks agree, then save where `toolenv eval --model OUT` finds it
    candidates.close()
    return finish_run(accelerator, cfg, policy, policy.model, optimizer, scheduler, checkpointer, writer, agent="rrhf", run_name=run_name)


def main(argv: list[str] | None = None) -> int:
    cfg = config_from_args(Config, argv, prog="toolenv train rrhf")
    train(cfg)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
