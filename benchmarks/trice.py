"""``toolenv bench trice``: the TRICE pipeline end to end, and TRICE's table with confidence intervals.

Stages (Qiao et al., NAACL 2024, "Making Language Models Better Tool Learners with Execution
Feedback"), each evaluated greedily on the same held-out test tasks:

1. **zero-shot**: the base model, prompted with the tool's description only. Its episodes also
   split the test questions into those the base model answers right without a call and those it
   does not, for the selective-tool-use metrics.
2. **stage-1 data, TRICE's way** (``stage1="trice"``): a chosen model (the base model by default,
   ``--split-model`` for any other) answers each training question; a right answer given without
   a call is kept as the target (TRICE's ``*_right`` file: "use the response of the LM as the
   output directly"), every other question gets the gold tool call (``*_wrong``). The share of
   each is reported. ``stage1="gold"`` gives every question the gold call.
3. **bc**: behaviour cloning on that data.
4. **stage-2 candidates** from several sources, as TRICE's RLEF data (five responses per question
   from four models and the stage-1 output): samples of the base model and of the BC model at
   each of ``candidate_temperatures``, the gold response, any stored responses (``--rrhf-data``),
   and, during training, the policy's own samples; every candidate is scored by executing it.
5. **rrhf**: RRHF from the BC model on those candidates.

Training uses a mixture of train splits (ASDiv, MAWPS, GSM8K; the procedural ``toolenv/Math-v0``
without a data directory); ``--task qa`` / ``lama`` runs TRICE's other tasks and ``--task mix`` all of
them together (TRICE-MIX), each scored by TRICE's own rule for that task. Every evaluation plays the first ``eval_episodes`` tasks of each test
split in file order (all of ASDiv's 266 and MAWPS's 238 on the CPU preset, GSM8K's first
``gsm8k_eval_episodes``).

The report (:mod:`benchmarks.stats`): accuracy and tool-use rate per dataset and stage with
bootstrap 95 % intervals; the same on questions the base model answers right and wrong; paired
comparisons between stages on the same tasks (McNemar); one line per TRICE claim saying whether
this run shows it. The output directory gets ``results.json``, ``trice_table.md`` and
``trice.png``; each stage's data, model and evaluation are kept under ``{out}/{stage}``, and a
finished stage is not run again, so an interrupted pipeline continues where it stopped.

Presets: ``cpu`` (default) takes 30 minutes on 2 quiet CPU cores with SmolLM2-135M (5.0 GB at its peak); ``smoke`` runs
every stage on the same model at the smallest sizes (a check that the pipeline runs, not a
result); ``full`` is the paper-sized setting for a GPU (all test tasks, thousands of steps).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import toolenv
from agents import bc, rrhf
from agents.config import check_out_dir, check_positive, usage_error
from agents.evaluate import evaluate_model
from agents.policy import check_model_name, resolve_device
from benchmarks.memory import (
    StagePeaks,
    add_mmap_threshold_argument,
    cap_heap_retention,
    check_mmap_threshold,
    format_peaks,
)
from benchmarks.stats import (
    COMPARISON_HEADER,
    Comparison,
    bootstrap_ci,
    claim_line,
    compare,
    format_ci,
    format_comparison,
    unpaired_compare,
)
from toolenv.cli import ArgumentParser
from toolenv.datasets import DataNotFoundError, resolve_data_dir

__all__ = ["PRESETS", "TASK_ENVS", "TricePreset", "analyse", "build_stage1_data", "format_trice_table", "gather_candidates", "main", "run_trice"]

logger = logging.getLogger(__name__)

STAGES = ("zero-shot", "bc", "rrhf")
STAGE1_MODES = ("trice", "gold")


@dataclass(frozen=True)
class TricePreset:
    """Sizes of one run of the pipeline."""

    model: str = "smollm2-135m"
    eval_episodes: int = 266  # per test dataset: all of ASDiv (266) and MAWPS (238)
    gsm8k_eval_episodes: int = 60  # GSM8K's 1,319 test problems cost ~15 min per stage on 2 cores
    # 128 MAWPS training questions on 2 cores, batch 16 / 32 / 64 / 128: base model 66 / 46 / 41 / 42 s, a BC model
    # 70 / 62 / 54 / 53 s (rows leave the batch as they end, prefill grouped by length); `toolenv eval --model M
    # --env toolenv/MAWPS-v0 --episodes 128 --max-new-tokens 48 --batch-size B` times the same (one-off script, model load included)
    eval_batch_size: int = 64
    max_new_tokens: int = 48
    stage1: str = "trice"
    split_model: str | None = None  # whose direct answers split the stage-1 data (default: model)
    bc_steps: int = 100
    bc_batch_size: int = 8
    bc_lr: float = 3e-4
    demos_per_env: int = 150
    rrhf_steps: int = 40
    rrhf_lr: float = 5e-5
    rrhf_samples: int = 2  # the policy's own samples per task and step
    rrhf_tasks_per_step: int = 2
    rrhf_tasks_per_env: int = 32  # training tasks whose stored candidates are gathered
    candidate_temperatures: tuple[float, ...] = (0.7, 1.0)
    rrhf_data: str | None = None  # stored responses (trajectories JSONL) added to the candidates
    rrhf_weight: float = 0.1  # the paper tried 0.01, 0.1 and 1; 1 let the ranking term undo BC here
    lora_r: int = 16
    seed: int = 0
    mmap_threshold_mb: int = 4  # benchmarks.memory.cap_heap_retention; 0 leaves glibc's default
    train_envs: tuple[str, ...] = field(default=())
    test_envs: tuple[str, ...] = field(default=())


PRESETS: dict[str, TricePreset] = {
    "cpu": TricePreset(),
    # every stage on the real model at the smallest size that still runs it end to end (CI runs this)
    "smoke": TricePreset(
        eval_episodes=2, gsm8k_eval_episodes=2, eval_batch_size=2, max_new_tokens=16, bc_steps=2, bc_batch_size=2, demos_per_env=4,
        rrhf_steps=1, rrhf_samples=1, rrhf_tasks_per_step=1, rrhf_tasks_per_env=2, candidate_temperatures=(1.0,), lora_r=4,
    ),
    "full": TricePreset(
        eval_episodes=100_000, gsm8k_eval_episodes=100_000, eval_batch_size=64, max_new_tokens=96, bc_steps=3000, bc_batch_size=32,
        demos_per_env=100_000, rrhf_steps=1000, rrhf_samples=4, rrhf_tasks_per_step=8, rrhf_tasks_per_env=100_000,
        candidate_temperatures=(0.7, 1.0), lora_r=64, mmap_threshold_mb=0,
    ),
}

_WITH_DATA = (
    ("toolenv/ASDiv-v0", "toolenv/ASDiv-Test-v0"),
    ("toolenv/MAWPS-v0", "toolenv/MAWPS-Test-v0"),
    ("toolenv/GSM8K-v0", "toolenv/GSM8K-Test-v0"),
)


#: TRICE's tasks as env pairs (train, test) that work from the data directory alone; ``mix`` is TRICE-MIX.
#: QA is HotpotQA (the one QA set whose passages ship with the data); WebQuestions, NQ and TriviaQA need a
#: Wikipedia corpus (``--kw corpus=...`` with ``--train-env`` / ``--test-env``), MLQA a translation model.
TASK_ENVS: dict[str, tuple[tuple[str, str], ...]] = {
    "math": _WITH_DATA,
    "qa": (("toolenv/HotpotQA-v0", "toolenv/HotpotQA-Test-v0"),),
    "lama": (("toolenv/LAMA-v0", "toolenv/LAMA-Test-v0"),),
}


def task_envs(tasks: Sequence[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The train and test envs of TRICE's ``tasks`` (``"mix"``: all of them, TRICE-MIX).

    >>> task_envs(["qa"])
    (('toolenv/HotpotQA-v0',), ('toolenv/HotpotQA-Test-v0',))
    >>> len(task_envs(["mix"])[0])
    5
    """
    names = list(TASK_ENVS) if "mix" in tasks else list(dict.fromkeys(tasks))
    for name in names:
        if name not in TASK_ENVS:
            raise ValueError(f"Expected --task to be one of {[*TASK_ENVS, 'mix']}, got {name!r}.")
    pairs = [pair for name in names for pair in TASK_ENVS[name]]
    return tuple(t for t, _ in pairs), tuple(e for _, e in pairs)


def default_envs(data_dir: str | None = None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The training mixture and test envs: the datasets when a data directory is set, else procedural math."""
    try:
        root = resolve_data_dir(data_dir)
    except DataNotFoundError:
        return ("toolenv/Math-v0",), ("toolenv/Math-Test-v0",)
    if not (root / "gsm8k").is_dir():
        return ("toolenv/Math-v0",), ("toolenv/Math-Test-v0",)
    train = tuple(t for t, _ in _WITH_DATA)
    test = tuple(e for _, e in _WITH_DATA)
    if (root / "svamp" / "SVAMP.json").exists():
        test += ("toolenv/SVAMP-Test-v0",)
    return train, test


def _dataset(env_id: str) -> str:
    return env_id.split("/")[-1].replace("-Test-v0", "").replace("-v0", "")


def _eval_episodes(preset: TricePreset, env_id: str) -> int:
    return preset.gsm8k_eval_episodes if _dataset(env_id) == "GSM8K" else preset.eval_episodes


def _evaluate(stage: str, model: str, preset: TricePreset, out: Path, device: str) -> dict[str, dict[str, float]]:
    """Each test env into ``{out}/{stage}/eval/{dataset}/`` (its own episode count); merged metrics."""
    path = out / stage / "eval" / "metrics.json"
    if path.exists():
        logger.info("%s: evaluation exists, skipping (%s)", stage, path)
        return json.loads(path.read_text())
    logger.info("%s: evaluating %s on %s", stage, model, ", ".join(preset.test_envs))
    metrics: dict[str, dict[str, float]] = {}
    for env_id in preset.test_envs:
        metrics.update(evaluate_model(
            model, [env_id], episodes=_eval_episodes(preset, env_id), out_dir=out / stage / "eval" / _dataset(env_id),
            batch_size=preset.eval_batch_size, max_new_tokens=preset.max_new_tokens, device=device,
        ))
    path.write_text(json.dumps(metrics, indent=2))
    return metrics


def _trained(path: Path) -> bool:
    return (path / "toolenv_policy.json").exists()


def _answered_right(traj: Any) -> bool:
    """TRICE's ``*_right``: solved with a direct answer, no tool call."""
    return bool(traj.success) and not any(i.get("tool_used") for i in traj.infos)


def build_stage1_data(answers: Sequence[Any], train_envs: Sequence[str], demos_per_env: int, tokenizer: Any, path: Path,
                      *, env_kwargs: dict[str, Any] | None = None) -> dict[str, dict[str, int]]:
    """TRICE's stage-1 data: a right direct answer kept as the target, the gold call for the rest.

    Args:
        answers: A model's episodes on the first ``demos_per_env`` tasks of each train env
            (``[]`` gives every question the gold call: ``stage1="gold"``).
        train_envs: The training env ids.
        demos_per_env: Questions per env (the first N of its split).
        tokenizer: The trained policy's tokenizer (gold episodes are played through the env with it).
        path: Where the trajectories JSONL goes (``toolenv train bc --data`` reads it).

    Returns:
        ``{env_id: {"questions", "right", "wrong", "no_gold"}}``: questions looked at, kept
        direct answers, gold-call targets, and wrong questions dropped for want of a gold call.
    """
    import gymnasium as gym

    from agents.rollout import save_trajectories, scripted_trajectory

    by_task = {(t.env_id, str(t.task.get("id"))): t for t in answers}
    data, report = [], {}
    for env_id in train_envs:
        env = gym.make(env_id, **(env_kwargs or {}))
        tasks = env.unwrapped.tasks  # type: ignore[attr-defined]
        counts = {"questions": 0, "right": 0, "wrong": 0, "no_gold": 0}
        for i in range(min(demos_per_env, len(tasks))):
            counts["questions"] += 1
            answer = by_task.get((env_id, str(tasks[i].id)))
            if answer is not None and _answered_right(answer):
                data.append(answer)
                counts["right"] += 1
                continue
            if not tasks[i].solution:
                counts["no_gold"] += 1
                continue
            gold = scripted_trajectory(env, None, tokenizer, options={"index": i}, env_id=env_id)
            if gold.success:
                data.append(gold)
                counts["wrong"] += 1
            else:
                counts["no_gold"] += 1
        env.close()
        report[env_id] = counts
    if not data:
        raise ValueError(f"No stage-1 data from {list(train_envs)}: no right answers and no gold tool calls.")
    save_trajectories(path, data)
    return report


def gather_candidates(sources: Sequence[tuple[str, str]], preset: TricePreset, path: Path, *, device: str = "auto") -> dict[str, int]:
    """Stored stage-2 candidates: each ``(name, model)`` samples every task once per temperature.

    The tasks are the first ``rrhf_tasks_per_env`` of each train env (those RRHF trains on);
    each trajectory's task gets ``"origin": "{name}@{temperature}"``. Sampling is seeded by
    ``preset.seed``, the source and the temperature, so a rerun draws the same candidates.
    Returns the number of candidates per origin.
    """
    import gymnasium as gym

    from agents.policy import Policy
    from agents.rollout import GenerationSettings, rollout_groups, save_trajectories
    from agents.utils import set_seed

    tasks = []
    for env_id in preset.train_envs:
        env = gym.make(env_id)
        tasks += [(env_id, i) for i in range(min(preset.rrhf_tasks_per_env, len(env.unwrapped.tasks)))]  # type: ignore[attr-defined]
        env.close()
    counts: dict[str, int] = {}
    all_trajs = []
    pools: dict[str, list[gym.Env]] = {}  # envs made once, reused by every batch, model and temperature
    for k, (name, model) in enumerate(sources):
        policy = Policy.load(model, device=device, trainable=False)
        for j, temperature in enumerate(preset.candidate_temperatures):
            set_seed(preset.seed * 1000 + 10 * k + j)
            settings = GenerationSettings(temperature=temperature, max_new_tokens=preset.max_new_tokens)
            origin = f"{name}@{temperature:g}"
            for start in range(0, len(tasks), preset.eval_batch_size):
                trajs = rollout_groups(policy, pools, tasks[start : start + preset.eval_batch_size], 1, settings=settings)
                for t in trajs:
                    t.task["origin"] = origin
                all_trajs += trajs
            counts[origin] = len(tasks)
            logger.info("stage-2 candidates: %d from %s", len(tasks), origin)
        del policy
    for pool in pools.values():
        for env in pool:
            env.close()
    save_trajectories(path, all_trajs)
    return counts


def run_trice(preset: TricePreset, out: str | Path, *, device: str = "auto") -> dict[str, Any]:
    """Run every stage; returns ``{"stages": {stage: {env: metrics}}, "analysis", "stage1", "seconds", "preset"}``."""
    from agents.policy import Policy

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if not preset.train_envs:
        train, test = default_envs()
        preset = replace(preset, train_envs=train, test_envs=test)
    results: dict[str, Any] = {"preset": asdict(preset), "stages": {}, "seconds": {}}
    cap_heap_retention(preset.mmap_threshold_mb)
    peaks = StagePeaks()

    def timed(name: str, fn: Any) -> Any:
        start = time.perf_counter()
        with peaks.stage(name):
            value = fn()
        results["seconds"][name] = time.perf_counter() - start
        results["peak_rss_gb"], results["peak_rss_per_stage"] = peaks.gb, peaks.per_stage
        return value

    # 1. zero-shot: the base model, prompted with the tool description only
    results["stages"]["zero-shot"] = timed("zero-shot eval", lambda: _evaluate("zero-shot", preset.model, preset, out, device))

    # 2. stage-1 data: the split model's direct answers on the training questions, right ones kept
    bc_dir = out / "bc" / "model"
    data_path, report_path = out / "bc" / "data.jsonl", out / "bc" / "stage1.json"

    def stage1() -> dict[str, Any]:
        if report_path.exists():
            return json.loads(report_path.read_text())
        answers: list[Any] = []
        if preset.stage1 == "trice":
            from agents.rollout import load_trajectories

            answers_dir = out / "bc" / "answers"
            if not (answers_dir / "trajectories.jsonl").exists():
                logger.info("stage-1 data: %s answers %d questions per train env", preset.split_model or preset.model, preset.demos_per_env)
                evaluate_model(preset.split_model or preset.model, list(preset.train_envs), episodes=preset.demos_per_env, out_dir=answers_dir,
                               batch_size=preset.eval_batch_size, max_new_tokens=preset.max_new_tokens, device=device)
            answers = load_trajectories(answers_dir / "trajectories.jsonl")
        tokenizer = Policy.load(preset.model, device="cpu", trainable=False).tokenizer
        report = build_stage1_data(answers, preset.train_envs, preset.demos_per_env, tokenizer, data_path)
        report_path.write_text(json.dumps(report, indent=2))
        return report

    results["stage1"] = timed("stage-1 data", stage1)

    # 3. stage 1: behaviour cloning on that data
    def train_bc() -> None:
        if not _trained(bc_dir):
            logger.info("bc: training %d steps on %s", preset.bc_steps, data_path)
            bc.train(bc.Config(
                model=preset.model, env=list(preset.train_envs), data=str(data_path), out=str(bc_dir), max_steps=preset.bc_steps,
                batch_size=preset.bc_batch_size, lr=preset.bc_lr, lora_r=preset.lora_r, lora_alpha=2 * preset.lora_r,
                seed=preset.seed, device=device, save_every=max(10, preset.bc_steps // 4),
            ))

    timed("bc train", train_bc)
    results["stages"]["bc"] = timed("bc eval", lambda: _evaluate("bc", str(bc_dir), preset, out, device))

    # 4. stage-2 candidates from several sources, then RRHF from the BC model
    rrhf_dir = out / "rrhf" / "model"
    candidates_path = out / "rrhf" / "candidates.jsonl"

    def candidates() -> dict[str, int]:
        counts_path = out / "rrhf" / "candidates.json"
        if counts_path.exists():
            return json.loads(counts_path.read_text())
        if _trained(rrhf_dir):
            return {}
        counts = gather_candidates([("base", preset.model), ("bc", str(bc_dir))], preset, candidates_path, device=device)
        if preset.rrhf_data:  # stored responses from any other model
            from agents.rollout import load_trajectories, save_trajectories

            stored = load_trajectories(preset.rrhf_data)
            save_trajectories(candidates_path, stored, append=True)
            counts["data"] = len(stored)
        counts_path.write_text(json.dumps(counts, indent=2))
        return counts

    results["stage2_candidates"] = timed("stage-2 candidates", candidates)

    def train_rrhf() -> None:
        if not _trained(rrhf_dir):
            logger.info("rrhf: training %d steps", preset.rrhf_steps)
            rrhf.train(rrhf.Config(
                model=str(bc_dir), env=list(preset.train_envs), out=str(rrhf_dir), max_steps=preset.rrhf_steps, data=str(candidates_path),
                lr=preset.rrhf_lr, num_samples=preset.rrhf_samples, tasks_per_step=preset.rrhf_tasks_per_step,
                tasks_per_env=preset.rrhf_tasks_per_env, rrhf_weight=preset.rrhf_weight, max_new_tokens=preset.max_new_tokens,
                lora_r=preset.lora_r, lora_alpha=2 * preset.lora_r, seed=preset.seed, device=device, save_every=max(5, preset.rrhf_steps // 4),
            ))

    timed("rrhf train", train_rrhf)
    results["stages"]["rrhf"] = timed("rrhf eval", lambda: _evaluate("rrhf", str(rrhf_dir), preset, out, device))

    # 5. confidence, comparisons and claims; the table, the numbers, the plot
    results["analysis"] = analyse(out, preset)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "trice_table.md").write_text(format_trice_table(results) + "\n")
    plot_trice(results, out / "trice.png")
    return results


# ------------------------------------------------------------------------------------ analysis
def _episodes(out: Path, stage: str, env_id: str) -> list[Any]:
    from agents.rollout import load_trajectories

    return load_trajectories(out / stage / "eval" / _dataset(env_id) / "trajectories.jsonl")


def _tool_used(traj: Any) -> float:
    return float(any(i.get("tool_used") for i in traj.infos))


def analyse(out: str | Path, preset: TricePreset) -> dict[str, Any]:
    """Intervals, the base-right / base-wrong split, paired comparisons and claim verdicts from the stages' episodes.

    Every stage's episodes are aligned by task id on the zero-shot stage's order; a question is
    "base-right" when the zero-shot episode solved it with no call.
    """
    out = Path(out)
    stages = [s for s in STAGES if (out / s / "eval" / "metrics.json").exists()]
    acc: dict[str, dict[str, list[float]]] = {s: {} for s in stages}
    tool: dict[str, dict[str, list[float]]] = {s: {} for s in stages}
    right: dict[str, list[bool]] = {}
    for env_id in preset.test_envs:
        episodes = {s: _episodes(out, s, env_id) for s in stages}
        base = episodes["zero-shot"]
        ids = [str(t.task.get("id")) for t in base]
        right[env_id] = [_answered_right(t) for t in base]
        for s in stages:
            by_id = {str(t.task.get("id")): t for t in episodes[s]}
            if set(by_id) != set(ids):
                raise ValueError(f"Expected the {s} stage to be evaluated on the zero-shot stage's tasks of {env_id}; rerun it with the same preset.")
            acc[s][env_id] = [float(by_id[i].success) for i in ids]
            tool[s][env_id] = [_tool_used(by_id[i]) for i in ids]

    def ci(values: Any = None, strata: Any = None) -> list[float]:
        return list(bootstrap_ci(values, strata=strata))

    envs = list(preset.test_envs)
    cells = {s: {"accuracy": {e: ci(acc[s][e]) for e in envs}, "tool_use_rate": {e: ci(tool[s][e]) for e in envs}} for s in stages}
    for s in stages:
        cells[s]["accuracy"]["average"] = ci(strata=[acc[s][e] for e in envs])
        cells[s]["tool_use_rate"]["average"] = ci(strata=[tool[s][e] for e in envs])

    def pooled(d: dict[str, list[float]], want: bool) -> list[float]:
        return [v for e in envs for v, r in zip(d[e], right[e]) if r == want]

    split = {"base_right": sum(sum(r) for r in right.values()), "base_wrong": sum(len(r) - sum(r) for r in right.values()), "stages": {}}
    for s in stages:
        split["stages"][s] = {}
        for m, d in (("accuracy", acc[s]), ("tool_use_rate", tool[s])):
            for side, want in (("right", True), ("wrong", False)):
                values = pooled(d, want)
                split["stages"][s][f"{m}_{side}"] = ci(values) if values else [float("nan")] * 3

    comparisons, claims = [], []
    pairs = [(a, b) for a, b in (("bc", "zero-shot"), ("rrhf", "bc"), ("rrhf", "zero-shot")) if a in stages and b in stages]
    for a, b in pairs:
        for metric, d in (("accuracy", acc), ("tool_use_rate", tool)):
            c = compare(None, None, names=(a, b), strata=[(d[a][e], d[b][e]) for e in envs])
            comparisons.append({"metric": metric, **c.as_dict()})
            if metric == "accuracy" and (a, b) in (("bc", "zero-shot"), ("rrhf", "bc")):
                text = ("Stage 1 (behaviour cloning on tool use) raises accuracy over the base model" if a == "bc"
                        else "Stage 2 (RRHF on execution feedback) raises accuracy over stage 1")
                claims.append(claim_line(text, c, source="TRICE, Table 2"))
    final = stages[-1]
    if final != "zero-shot":
        c = unpaired_compare(pooled(tool[final], False), pooled(tool[final], True), names=(f"{final} on base-wrong", f"{final} on base-right"))
        comparisons.append({"metric": "tool_use_rate", **c.as_dict()})
        claims.append(claim_line(f"The trained model ({final}) uses the tool selectively: more on questions the base model gets wrong "
                                 "than on those it answers right", c, source="TRICE, §4.3"))
    if "rrhf" in stages and "bc" in stages and split["base_right"]:
        c = compare(pooled(tool["bc"], True), pooled(tool["rrhf"], True), names=("bc", "rrhf"))
        comparisons.append({"metric": "tool_use_rate, base-right", **c.as_dict()})
        claims.append(claim_line("Stage 2 reduces needless calls: fewer calls on questions the base model answers right", c,
                                 source="TRICE, §4.3"))
    return {"cells": cells, "split": split, "comparisons": comparisons, "claims": claims}


def format_trice_table(results: dict[str, Any]) -> str:
    """TRICE's table with 95 % intervals, the base-right / base-wrong split, paired comparisons and claims."""
    a = results["analysis"]
    stages = [s for s in STAGES if s in a["cells"]]
    envs = [*results["preset"]["test_envs"], "average"]
    lines = []
    s1 = results.get("stage1") or {}
    if s1:
        right, total = sum(v["right"] for v in s1.values()), sum(v["questions"] for v in s1.values())
        wrong = sum(v["wrong"] for v in s1.values())
        lines += [f"Stage-1 data ({results['preset']['stage1']}): {total} training questions, {right} answered right by "
                  f"{results['preset'].get('split_model') or results['preset']['model']} and kept as direct answers ({100 * right / max(total, 1):.1f} %), "
                  f"{wrong} given the gold tool call ({100 * wrong / max(total, 1):.1f} %).", ""]
    if results.get("stage2_candidates"):
        lines += ["Stage-2 stored candidates: " + ", ".join(f"{k} {v}" for k, v in results["stage2_candidates"].items())
                  + "; plus gold and the policy's own samples each step.", ""]
    for metric, title in (("accuracy", "Accuracy"), ("tool_use_rate", "Tool-use rate")):
        lines += [f"| {title} % [95 % CI] | " + " | ".join(stages) + " |", "|---|" + "---:|" * len(stages)]
        for e in envs:
            name = "**average**" if e == "average" else _dataset(e)
            lines.append(f"| {name} | " + " | ".join(format_ci(*a["cells"][s][metric][e]) for s in stages) + " |")
        lines.append("")
    sp = a["split"]
    lines += [f"| On questions the base model answers right ({sp['base_right']}) / wrong ({sp['base_wrong']}) | "
              + " | ".join(stages) + " |", "|---|" + "---:|" * len(stages)]
    for key, label in (("tool_use_rate_right", "tool use, base-right"), ("tool_use_rate_wrong", "tool use, base-wrong"),
                       ("accuracy_right", "accuracy, base-right"), ("accuracy_wrong", "accuracy, base-wrong")):
        lines.append(f"| {label} | " + " | ".join(format_ci(*sp["stages"][s][key]) for s in stages) + " |")
    lines += ["", COMPARISON_HEADER.replace("| comparison |", "| comparison (metric) |")]
    for c in a["comparisons"]:
        lines.append(format_comparison(Comparison.from_dict(c), label=c["metric"]))
    lines += ["", "TRICE's claims at 95 % confidence:", *a["claims"], ""]
    p = results["preset"]
    counts = {_dataset(e): int(results["stages"][stages[0]][e]["episodes"]) for e in p["test_envs"]}
    lines.append("Greedy decoding; accuracy = the answer's number equals the gold answer after rounding to 2 decimals; tool use = at "
                 "least one call. Test tasks: " + ", ".join(f"{k} {v}" for k, v in counts.items()) + " (the first N of each test split). "
                 f"Intervals: bootstrap over test tasks (the average resamples within each dataset); comparisons paired on the same tasks. "
                 f"Model {p['model']}, seed {p['seed']}.")
    if results.get("peak_rss_gb"):
        lines += ["", format_peaks(results["peak_rss_gb"], results.get("peak_rss_per_stage", True))]
    return "\n".join(lines)


def plot_trice(results: dict[str, Any], path: str | Path) -> Path:
    """Grouped bars with 95 % intervals: accuracy and tool-use rate per dataset, one bar per stage; and the split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a = results["analysis"]
    stages = [s for s in STAGES if s in a["cells"]]
    envs = [*results["preset"]["test_envs"], "average"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    width = 0.8 / len(stages)
    for ax, metric, title in zip(axes, ("accuracy", "tool_use_rate"), ("Accuracy", "Tool-use rate")):
        for k, s in enumerate(stages):
            m, lo, hi = zip(*(a["cells"][s][metric][e] for e in envs))
            xs = [i + (k - (len(stages) - 1) / 2) * width for i in range(len(envs))]
            ys = [100 * v for v in m]
            err = [[100 * (v - low) for v, low in zip(m, lo)], [100 * (h - v) for v, h in zip(m, hi)]]
            bars = ax.bar(xs, ys, width, yerr=err, capsize=2, label=s)
            ax.bar_label(bars, fmt="%.0f", fontsize=7)
        ax.set_xticks(range(len(envs)), [e if e == "average" else _dataset(e) for e in envs])
        ax.set_title(title + " (95 % CI)")
        ax.set_ylim(0, 110)
        ax.set_ylabel("%")
    axes[0].legend()
    ax = axes[2]
    sp = a["split"]
    labels = ["tool use\nbase-right", "tool use\nbase-wrong", "accuracy\nbase-right", "accuracy\nbase-wrong"]
    keys = ("tool_use_rate_right", "tool_use_rate_wrong", "accuracy_right", "accuracy_wrong")
    for k, s in enumerate(stages):
        vals = [sp["stages"][s][key] for key in keys]
        xs = [i + (k - (len(stages) - 1) / 2) * width for i in range(len(keys))]
        ys = [0 if v[0] != v[0] else 100 * v[0] for v in vals]
        err = [[0 if v[0] != v[0] else 100 * (v[0] - v[1]) for v in vals], [0 if v[0] != v[0] else 100 * (v[2] - v[0]) for v in vals]]
        ax.bar(xs, ys, width, yerr=err, capsize=2, label=s)
    ax.set_xticks(range(len(keys)), labels, fontsize=8)
    ax.set_title(f"Selective tool use (base right {sp['base_right']} / wrong {sp['base_wrong']})")
    ax.set_ylim(0, 110)
    fig.suptitle(f"TRICE on {results['preset']['model']}: zero-shot → BC → RRHF")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def main(argv: Sequence[str] | None = None) -> int:
    """``toolenv bench trice [--preset cpu|smoke|full] [--out DIR] [--model NAME] ...``: run and print TRICE's table."""

    parser = ArgumentParser(prog="toolenv bench trice", description=__doc__.strip().splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu",
                        help="cpu: ~30 min on 2 cores; smoke: every stage at the smallest size (~2 min); full: paper-sized, for a GPU")
    parser.add_argument("--out", default="runs/trice", help="output directory (an interrupted run continues here)")
    parser.add_argument("--model", default=None, help="base model (default: the preset's, smollm2-135m)")
    parser.add_argument("--split-model", default=None, help="model whose direct answers split the stage-1 data (default: --model)")
    parser.add_argument("--stage1", choices=list(STAGE1_MODES), default=None,
                        help="trice: right direct answers kept, gold calls for the rest (default); gold: the gold call for every question")
    parser.add_argument("--rrhf-data", default=None, metavar="FILE", help="stored responses (trajectories JSONL) added to the stage-2 candidates")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--seed", type=int, default=None, help="seed of training and of the sampled candidates (default 0)")
    parser.add_argument("--task", action="append", default=[], choices=[*TASK_ENVS, "mix"],
                        help="TRICE's tasks to train and test on (repeatable; default math; mix: math, qa and lama together, TRICE-MIX)")
    parser.add_argument("--train-env", action="append", default=[], metavar="ID", help="training env (repeatable; default: the mixture)")
    parser.add_argument("--test-env", action="append", default=[], metavar="ID", help="test env (repeatable)")
    add_mmap_threshold_argument(parser, "presets cpu and smoke: 4")
    counts = ("eval_episodes", "gsm8k_eval_episodes", "bc_steps", "rrhf_steps", "demos_per_env", "rrhf_tasks_per_env")
    for name in counts:
        parser.add_argument("--" + name.replace("_", "-"), type=int, default=None, help=f"override the preset's {name}")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    preset = PRESETS[args.preset]
    overrides: dict[str, Any] = {k: v for k, v in vars(args).items()
                                 if k in (*counts, "model", "split_model", "stage1", "rrhf_data", "seed", "mmap_threshold_mb") and v is not None}
    if args.task:
        try:
            overrides["train_envs"], overrides["test_envs"] = task_envs(args.task)
        except ValueError as e:
            usage_error(parser, str(e))
    if args.train_env or args.test_env:
        train, test = overrides.get("train_envs") or default_envs()[0], overrides.get("test_envs") or default_envs()[1]
        overrides["train_envs"] = tuple(args.train_env) or train
        overrides["test_envs"] = tuple(args.test_env) or test
    try:  # before any model or data is loaded
        for name in counts:
            if name in overrides:
                check_positive(f"--{name.replace('_', '-')}", overrides[name])
        for env_id in (*overrides.get("train_envs", ()), *overrides.get("test_envs", ())):
            toolenv.check_env_args(env_id)
        resolve_device(args.device)
        for name in ("model", "split_model"):
            if overrides.get(name) or name == "model":
                check_model_name(overrides.get(name, getattr(preset, name)))
        if args.rrhf_data is not None and not Path(args.rrhf_data).is_file():
            raise ValueError(f"expected --rrhf-data to be an existing trajectories JSONL file, got {args.rrhf_data!r}")
        check_mmap_threshold(args.mmap_threshold_mb)
        check_out_dir(args.out)
    except (ValueError, FileNotFoundError) as e:
        usage_error(parser, str(e))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    results = run_trice(replace(preset, **overrides), args.out, device=args.device)
    print(format_trice_table(results))
    total = sum(results["seconds"].values())
    print(f"\n{total / 60:.1f} min ({', '.join(f'{k} {v / 60:.1f}' for k, v in results['seconds'].items())}); "
          f"wrote results.json, trice_table.md and trice.png to {args.out}")
    return 0
