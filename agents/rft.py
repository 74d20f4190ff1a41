"""RFT: rejection-sampling fine-tuning, StepTool's ``baseline-rft`` (after Yuan et al. 2023, "Scaling relationship...").

Each round samples ``samples_per_task`` episodes of ``tasks_per_round`` training tasks with the
current policy, keeps those the judge says passed (the env's ``success``: the task was solved),
drops duplicates (the same task answered with the same tokens), and fine-tunes on every kept
trajectory so far with behaviour cloning's loss (:func:`agents.bc.bc_loss`: the model's tokens
only, prompt and tool outputs masked). ``--data FILE`` supplies round 0's samples from saved
trajectories instead (offline RFT: ``--max-steps 1 --data FILE``); later rounds sample online.

Deliberate differences from StepTool's ``src/baseline-rft/rft.py``, which fine-tunes ToolBench's
Trainer on a file of passed trajectories split per step (each instance trains only its last
assistant turn, with the history as the instruction): here a trajectory trains all its assistant
turns at once, which is the same set of targets with one shared token average instead of one
per step; and sampling and filtering are part of the loop rather than a separate inference run.

``max_steps`` counts rounds; each round takes ``ceil(epochs x kept / batch_size)`` optimiser steps
over the pool (at least one). Under ``accelerate launch`` every rank samples its own tasks (or reads
its share of ``--data``) and the ranks pool what passed, so they train on the same data in step.

Run: ``toolenv train rft --model runs/bc --env toolenv/APIChain-v1 --out runs/rft --max-steps 3``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

import toolenv  # noqa: F401  (registers the env ids)
from agents.bc import sft_step
from agents.config import TrainConfig, check_positive, config_from_args
from agents.rollout import GenerationSettings, Trajectory, load_trajectories, rollout_groups, save_trajectories
from agents.utils import (
    Checkpointer,
    TokenScorer,
    finish_run,
    linear_warmup,
    load_policy_for_training,
    make_writer,
    set_seed,
)

__all__ = ["Config", "keep_passed", "main", "train"]

logger = logging.getLogger(__name__)


@dataclass
class Config(TrainConfig):
    """Rejection-sampling fine-tuning: sample, keep what passed, fine-tune, repeat."""

    out: str = field(default="runs/rft", metadata={"help": "output directory"})
    max_steps: int = field(default=2, metadata={"help": "rounds of sample, filter, fine-tune"})
    lr: float = field(default=1e-4, metadata={"help": "learning rate (AdamW)"})
    tasks_per_round: int = field(default=16, metadata={"help": "training tasks sampled per round"})
    samples_per_task: int = field(default=4, metadata={"help": "episodes per task and round; env samples per round = tasks x this"})
    tasks_per_env: int = field(default=10_000, metadata={"help": "tasks are drawn from the first N of each env's split"})
    epochs: float = field(default=2.0, metadata={"help": "passes over the kept pool per round (optimiser steps = ceil(epochs x kept / batch))"})
    accumulate: bool = field(default=True, metadata={"help": "fine-tune on every round's kept trajectories (false: this round's only)"})
    dedupe: bool = field(default=True, metadata={"help": "keep one copy of a task answered with the same tokens"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature"})
    max_new_tokens: int = field(default=64, metadata={"help": "tokens per action at most"})
    data: str | None = field(default=None, metadata={"help": "JSONL of saved trajectories: round 0's samples instead of sampling (offline RFT)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("tasks_per_round", "samples_per_task", "tasks_per_env", "epochs", "temperature", "max_new_tokens"):
            check_positive(name, getattr(self, name))
        if self.data is not None and not Path(self.data).exists():
            raise ValueError(f"Expected data to be an existing JSONL file of trajectories, got {self.data!r}.")


def keep_passed(samples: Sequence[Trajectory], seen: set[tuple[str, str, tuple[int, ...]]] | None = None) -> list[Trajectory]:
    """The trajectories that solved their task, each ``(env, task, model tokens)`` once.

    ``seen`` (updated in place) carries the keys kept in earlier rounds, so a round adds only new
    solutions; pass ``None`` to keep duplicates.

    >>> ok = Trajectory(env_id="e", task={"id": "1"}, token_ids=[5, 6, 7], action_mask=[0, 1, 1], infos=[{"success": True}])
    >>> bad = Trajectory(env_id="e", task={"id": "1"}, token_ids=[5, 8], action_mask=[0, 1], infos=[{"success": False}])
    >>> len(keep_passed([ok, bad, ok], set())), len(keep_passed([ok, bad, ok], None))
    (1, 2)
    """
    kept = []
    for t in samples:
        if not t.success:
            continue
        if seen is not None:
            key = (t.env_id, str(t.task.get("id", t.task.get("question", ""))), tuple(x for x, m in zip(t.token_ids, t.action_mask) if m))
            if key in seen:
                continue
            seen.add(key)
        kept.append(t)
    return kept


def _pool_across_ranks(accelerator: object, kept: list[Trajectory]) -> list[Trajectory]:
    """Every rank's kept trajectories, in rank order, on every rank (one rank: ``kept``)."""
    if getattr(accelerator, "num_processes", 1) == 1:
        return kept
    from accelerate.utils import gather_object

    per_rank = gather_object([[t.to_dict() for t in kept]])
    return [Trajectory.from_dict(d) for rank in per_rank for d in rank]


def train(cfg: Config) -> Path:
    """Train and save the policy to ``cfg.out``; returns that directory."""
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    # 1. set up: accelerator, seed, policy, the task pool
    accelerator = Accelerator(cpu=cfg.device == "cpu")
    set_seed(cfg.seed)
    policy = load_policy_for_training(cfg, device=str(accelerator.device))
    scorer = TokenScorer(policy.model, share_prefixes=cfg.share_prefixes)
    optimizer = torch.optim.AdamW(policy.trainable_parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = linear_warmup(optimizer, cfg.warmup_steps)
    scorer, optimizer = accelerator.prepare(scorer, optimizer)
    probes = {e: gym.make(e, **cfg.env_kwargs) for e in cfg.env}
    tasks = [(e, i) for e, env in probes.items() for i in range(min(cfg.tasks_per_env, len(env.unwrapped.tasks)))]  # type: ignore[attr-defined]
    for env in probes.values():
        env.close()
    pools: dict[str, list[gym.Env]] = {}
    settings = GenerationSettings(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature)
    pad = policy.tokenizer.pad_token_id
    out = Path(cfg.out)
    samples_dir = out / "samples"

    # 2. resume: the checkpoint's round, and the trajectories kept before it (each round's samples are on disk)
    checkpointer = Checkpointer(out, cfg)
    start, run_name, episodes_seen = 0, None, 0
    if checkpointer.exists():
        start, extra = checkpointer.load(policy.model, optimizer, scheduler)
        run_name, episodes_seen = extra.get("run_name"), int(extra.get("episodes", 0))
        logger.info("Resuming from round %d", start)
    writer, run_name = make_writer(cfg, "rft", run_name) if accelerator.is_main_process else (None, run_name)
    seen: set[tuple[str, str, tuple[int, ...]]] | None = set() if cfg.dedupe else None
    pool: list[Trajectory] = []
    for past in range(start):
        samples = load_trajectories(samples_dir / f"round{past}.rank{accelerator.process_index}.jsonl")
        kept = keep_passed(_pool_across_ranks(accelerator, [t for t in samples if t.success]), seen)
        pool = pool + kept if cfg.accumulate else kept

    bar = tqdm(range(start, cfg.max_steps), initial=start, total=cfg.max_steps, desc="rft",
               disable=not (cfg.progress and accelerator.is_main_process))
    optimiser_steps = 0
    for rnd in bar:
        # 3. sample (or read round 0 from --data), then keep what passed and was not kept before
        rng = np.random.default_rng([cfg.seed, rnd, accelerator.process_index])
        path = samples_dir / f"round{rnd}.rank{accelerator.process_index}.jsonl"
        if rnd == 0 and cfg.data is not None:
            samples = load_trajectories(cfg.data)[accelerator.process_index :: accelerator.num_processes]
        else:
            torch.manual_seed(int(rng.integers(2**31)))
            picked = [tasks[int(k)] for k in rng.choice(len(tasks), size=cfg.tasks_per_round, replace=len(tasks) < cfg.tasks_per_round)]
            samples = rollout_groups(policy, pools, picked, cfg.samples_per_task, settings=settings, env_kwargs=cfg.env_kwargs)
            episodes_seen += len(samples)
        save_trajectories(path, samples)
        kept = keep_passed(_pool_across_ranks(accelerator, [t for t in samples if t.success]), seen)
        pool = pool + kept if cfg.accumulate else kept
        # 4. fine-tune on the pool: epochs x pool / batch steps of BC's loss
        nll: list[float] = []
        if pool:
            scorer.train()
            for k in range(max(1, math.ceil(cfg.epochs * len(pool) / cfg.batch_size))):
                step_rng = np.random.default_rng([cfg.seed, rnd, k, accelerator.process_index])
                nll.append(sft_step(scorer, pool, step_rng, cfg, pad, accelerator, optimizer, scheduler)["nll"])
                optimiser_steps += 1
        else:
            logger.warning("Round %d: no sampled episode passed; nothing to fine-tune on yet", rnd)
        # 5. log
        success = float(np.mean([t.success for t in samples])) if samples else 0.0
        bar.set_postfix(passed=f"{success:.2f}", pool=len(pool))
        if writer is not None:
            x = rnd + 1
            writer.add_scalar("charts/episodes", episodes_seen, x)
            writer.add_scalar("charts/success_rate", success, x)
            writer.add_scalar("charts/kept", len(kept), x)
            writer.add_scalar("charts/pool", len(pool), x)
            writer.add_scalar("charts/optimiser_steps", optimiser_steps, x)
            if nll:
                writer.add_scalar("losses/nll", float(np.mean(nll)), x)
        if (rnd + 1) % cfg.save_every == 0 and rnd + 1 < cfg.max_steps:
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                checkpointer.save(rnd + 1, policy.model, optimizer, scheduler, run_name=run_name, episodes=episodes_seen)

    # 6. check ranks agree, save
    finish_run(accelerator, cfg, policy, policy.model, optimizer, scheduler, checkpointer, writer, agent="rft",
               run_name=run_name, extra={"episodes": episodes_seen})
    for group in pools.values():
        for env in group:
            env.close()
    return out


def main(argv: list[str] | None = None) -> int:
    cfg = config_from_args(Config, argv, prog="toolenv train rft")
    train(cfg)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
