"""``toolenv bench trice``: the TRICE pipeline end to end, and TRICE's table.

Stages (Qiao et al., NAACL 2024, "Making Language Models Better Tool Learners with Execution
Feedback"): zero-shot evaluation of the base model → behaviour cloning on gold tool use (stage 1)
→ evaluation → RRHF on candidates ranked by executing them (stage 2, from the BC model) →
evaluation. Training uses a mixture of train splits (ASDiv, MAWPS, GSM8K; the procedural
``toolenv/Math-v0`` when no data directory is set) and every evaluation uses the same held-out
test tasks (the first N of each test split, in file order, greedy decoding).

The output directory gets ``results.json`` (every metric of every stage and env, with timings),
``trice_table.md`` (accuracy and tool-use rate per dataset per stage) and ``trice.png``. Each
stage's model and evaluation are kept under ``{out}/{stage}``, and a stage whose results exist
is not run again, so an interrupted pipeline continues where it stopped.

Presets: ``cpu`` (default) fits 2 CPU cores in about 20 minutes with SmolLM2-135M; ``smoke`` runs
every stage on the same model at the smallest sizes (two steps, two test tasks per dataset: a check
that the pipeline runs, not a result); ``full`` is the paper-sized setting for a GPU (all test tasks,
thousands of steps).
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
from toolenv.cli import ArgumentParser
from toolenv.datasets import DataNotFoundError, resolve_data_dir

__all__ = ["PRESETS", "TricePreset", "format_trice_table", "main", "run_trice"]

logger = logging.getLogger(__name__)

STAGES = ("zero-shot", "bc", "rrhf")


@dataclass(frozen=True)
class TricePreset:
    """Sizes of one run of the pipeline."""

    model: str = "smollm2-135m"
    eval_episodes: int = 40
    eval_batch_size: int = 20
    max_new_tokens: int = 48
    bc_steps: int = 100
    bc_batch_size: int = 8
    bc_lr: float = 3e-4
    demos_per_env: int = 400
    rrhf_steps: int = 20
    rrhf_lr: float = 5e-5
    rrhf_samples: int = 3
    rrhf_tasks_per_step: int = 2
    rrhf_weight: float = 0.1  # the paper tried 0.01, 0.1 and 1; 1 let the ranking term undo BC here
    lora_r: int = 16
    seed: int = 0
    train_envs: tuple[str, ...] = field(default=())
    test_envs: tuple[str, ...] = field(default=())


PRESETS: dict[str, TricePreset] = {
    "cpu": TricePreset(),
    # every stage on the real model at the smallest size that still runs it end to end (CI runs this)
    "smoke": TricePreset(
        eval_episodes=2, eval_batch_size=2, max_new_tokens=16, bc_steps=2, bc_batch_size=2, demos_per_env=4,
        rrhf_steps=1, rrhf_samples=2, rrhf_tasks_per_step=1, lora_r=4,
    ),
    "full": TricePreset(
        eval_episodes=100_000, eval_batch_size=64, max_new_tokens=96, bc_steps=3000, bc_batch_size=32,
        demos_per_env=100_000, rrhf_steps=1000, rrhf_samples=4, rrhf_tasks_per_step=8, lora_r=64,
    ),
}

_WITH_DATA = (
    ("toolenv/ASDiv-v0", "toolenv/ASDiv-Test-v0"),
    ("toolenv/MAWPS-v0", "toolenv/MAWPS-Test-v0"),
    ("toolenv/GSM8K-v0", "toolenv/GSM8K-Test-v0"),
)


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


def _evaluate(stage: str, model: str, preset: TricePreset, out: Path, device: str) -> dict[str, dict[str, float]]:
    path = out / stage / "eval" / "metrics.json"
    if path.exists():
        logger.info("%s: evaluation exists, skipping (%s)", stage, path)
        return json.loads(path.read_text())
    logger.info("%s: evaluating %s on %s", stage, model, ", ".join(preset.test_envs))
    return evaluate_model(
        model, list(preset.test_envs), episodes=preset.eval_episodes, out_dir=out / stage / "eval",
        batch_size=preset.eval_batch_size, max_new_tokens=preset.max_new_tokens, device=device,
    )


def _trained(path: Path) -> bool:
    return (path / "toolenv_policy.json").exists()


def run_trice(preset: TricePreset, out: str | Path, *, device: str = "auto") -> dict[str, Any]:
    """Run every stage; returns ``{"stages": {stage: {env: metrics}}, "seconds": {...}, "preset": {...}}``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if not preset.train_envs:
        train, test = default_envs()
        preset = replace(preset, train_envs=train, test_envs=test)
    results: dict[str, Any] = {"preset": asdict(preset), "stages": {}, "seconds": {}}

    # 1. zero-shot: the base model, prompted with the tool description only
    start = time.perf_counter()
    results["stages"]["zero-shot"] = _evaluate("zero-shot", preset.model, preset, out, device)
    results["seconds"]["zero-shot eval"] = time.perf_counter() - start

    # 2. stage 1: behaviour cloning on gold tool use, from the training mixture
    bc_dir = out / "bc" / "model"
    start = time.perf_counter()
    if not _trained(bc_dir):
        logger.info("bc: training %d steps on %s", preset.bc_steps, ", ".join(preset.train_envs))
        bc.train(bc.Config(
            model=preset.model, env=list(preset.train_envs), out=str(bc_dir), max_steps=preset.bc_steps,
            batch_size=preset.bc_batch_size, lr=preset.bc_lr, lora_r=preset.lora_r, lora_alpha=2 * preset.lora_r,
            demos_per_env=preset.demos_per_env, seed=preset.seed, device=device, save_every=max(10, preset.bc_steps // 4),
        ))
    results["seconds"]["bc train"] = time.perf_counter() - start
    start = time.perf_counter()
    results["stages"]["bc"] = _evaluate("bc", str(bc_dir), preset, out, device)
    results["seconds"]["bc eval"] = time.perf_counter() - start

    # 3. stage 2: RRHF from the BC model, candidates scored by executing them
    rrhf_dir = out / "rrhf" / "model"
    start = time.perf_counter()
    if not _trained(rrhf_dir):
        logger.info("rrhf: training %d steps", preset.rrhf_steps)
        rrhf.train(rrhf.Config(
            model=str(bc_dir), env=list(preset.train_envs), out=str(rrhf_dir), max_steps=preset.rrhf_steps,
            lr=preset.rrhf_lr, num_samples=preset.rrhf_samples, tasks_per_step=preset.rrhf_tasks_per_step,
            rrhf_weight=preset.rrhf_weight, max_new_tokens=preset.max_new_tokens, lora_r=preset.lora_r,
            lora_alpha=2 * preset.lora_r, seed=preset.seed, device=device, save_every=max(5, preset.rrhf_steps // 4),
        ))
    results["seconds"]["rrhf train"] = time.perf_counter() - start
    start = time.perf_counter()
    results["stages"]["rrhf"] = _evaluate("rrhf", str(rrhf_dir), preset, out, device)
    results["seconds"]["rrhf eval"] = time.perf_counter() - start

    # 4. the table, the numbers, the plot
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "trice_table.md").write_text(format_trice_table(results) + "\n")
    plot_trice(results, out / "trice.png")
    return results


def _dataset(env_id: str) -> str:
    return env_id.split("/")[-1].replace("-Test-v0", "").replace("-v0", "")


def format_trice_table(results: dict[str, Any]) -> str:
    """TRICE's table: accuracy and tool-use rate per dataset (rows) per stage (columns)."""
    stages = [s for s in STAGES if s in results["stages"]]
    envs = list(next(iter(results["stages"].values())).keys())
    head = "| dataset | " + " | ".join(f"{s} acc | {s} tool" for s in stages) + " |"
    lines = [head, "|---|" + "---:|" * (2 * len(stages))]
    for env in envs:
        cells = []
        for s in stages:
            m = results["stages"][s][env]
            cells += [f"{100 * m['accuracy']:.1f}", f"{100 * m['tool_use_rate']:.1f}"]
        lines.append(f"| {_dataset(env)} | " + " | ".join(cells) + " |")
    avg = []
    for s in stages:
        ms = list(results["stages"][s].values())
        avg += [f"{100 * sum(m['accuracy'] for m in ms) / len(ms):.1f}", f"{100 * sum(m['tool_use_rate'] for m in ms) / len(ms):.1f}"]
    lines.append("| **average** | " + " | ".join(avg) + " |")
    episodes = next(iter(results["stages"]["zero-shot"].values()))["episodes"] if "zero-shot" in results["stages"] else "?"
    lines.append("")
    lines.append(f"Accuracy (%, numeric match after rounding to 2 decimals) and tool-use rate (%), greedy, first {episodes:.0f} test tasks per dataset; model {results['preset']['model']}.")
    return "\n".join(lines)


def plot_trice(results: dict[str, Any], path: str | Path) -> Path:
    """Grouped bars: accuracy and tool-use rate per dataset, one bar per stage."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = [s for s in STAGES if s in results["stages"]]
    envs = list(next(iter(results["stages"].values())).keys())
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    width = 0.8 / len(stages)
    for ax, metric, title in zip(axes, ("accuracy", "tool_use_rate"), ("Accuracy", "Tool-use rate")):
        for k, s in enumerate(stages):
            values = [100 * results["stages"][s][e][metric] for e in envs]
            xs = [i + (k - (len(stages) - 1) / 2) * width for i in range(len(envs))]
            bars = ax.bar(xs, values, width, label=s)
            ax.bar_label(bars, fmt="%.0f", fontsize=7)
        ax.set_xticks(range(len(envs)), [_dataset(e) for e in envs])
        ax.set_title(title)
        ax.set_ylim(0, 105)
        ax.set_ylabel("%")
    axes[0].legend()
    fig.suptitle(f"TRICE on {results['preset']['model']}: zero-shot → BC → RRHF")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def main(argv: Sequence[str] | None = None) -> int:
    """``toolenv bench trice [--preset cpu|full] [--out DIR] [--model NAME]``: run and print TRICE's table."""

    parser = ArgumentParser(prog="toolenv bench trice", description=__doc__.strip().splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu", help="cpu: ~20 min on 2 cores; smoke: every stage at the smallest size (~2 min); full: paper-sized, for a GPU")
    parser.add_argument("--out", default="runs/trice", help="output directory (an interrupted run continues here)")
    parser.add_argument("--model", default=None, help="base model (default: the preset's, smollm2-135m)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--train-env", action="append", default=[], metavar="ID", help="training env (repeatable; default: the mixture)")
    parser.add_argument("--test-env", action="append", default=[], metavar="ID", help="test env (repeatable)")
    for name in ("eval_episodes", "bc_steps", "rrhf_steps", "demos_per_env"):
        parser.add_argument("--" + name.replace("_", "-"), type=int, default=None, help=f"override the preset's {name}")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    preset = PRESETS[args.preset]
    overrides: dict[str, Any] = {k: v for k, v in vars(args).items() if k in ("eval_episodes", "bc_steps", "rrhf_steps", "demos_per_env") and v is not None}
    if args.model:
        overrides["model"] = args.model
    if args.train_env or args.test_env:
        train, test = default_envs()
        overrides["train_envs"] = tuple(args.train_env) or train
        overrides["test_envs"] = tuple(args.test_env) or test
    try:  # before any model or data is loaded
        for name in ("eval_episodes", "bc_steps", "rrhf_steps", "demos_per_env"):
            if name in overrides:
                check_positive(f"--{name.replace('_', '-')}", overrides[name])
        for env_id in (*overrides.get("train_envs", ()), *overrides.get("test_envs", ())):
            toolenv.check_env_args(env_id)
        resolve_device(args.device)
        check_model_name(overrides.get("model", preset.model))
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
