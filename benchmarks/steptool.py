"""``toolenv bench steptool``: final-reward PPO vs step-PPO vs DPO vs GRPO on the same tasks and samples.

StepTool's comparison (Yu et al. 2024): from one behaviour-cloning warm start, each algorithm trains
on the same env with the same number of env samples (episodes) and the same reward functions, then
all are evaluated greedily on the same held-out tasks. The table reports success rate, call success
rate and the mean reward terms (mean ± std over seeds); the plot shows training success against
env samples, with the final held-out success as markers.

Everything is kept under ``{out}``: ``bc/`` (warm start and its evaluation), ``{algo}/seed{s}/``
(model, evaluation, TensorBoard), ``results.json``, ``steptool_table.md`` and ``steptool.png``.
Finished runs are not repeated, so an interrupted benchmark continues where it stopped.
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

import gymnasium as gym
import numpy as np
from gymnasium.envs.registration import load_env_creator

import toolenv
from agents import bc
from agents.config import check_out_dir, check_positive, usage_error
from agents.evaluate import evaluate_model
from agents.policy import check_model_name
from benchmarks.stats import (
    COMPARISON_HEADER,
    Comparison,
    bootstrap_ci,
    claim_line,
    compare,
    format_ci,
    format_comparison,
)
from toolenv.cli import ArgumentParser

__all__ = ["ALGORITHMS", "PRESETS", "StepToolPreset", "format_paired_comparisons", "format_steptool_table", "main",
           "paired_comparisons", "run_env_kwargs", "run_steptool"]

logger = logging.getLogger(__name__)

ALGORITHMS = ("ppo", "step-ppo", "dpo", "grpo")


@dataclass(frozen=True)
class StepToolPreset:
    """Sizes of one benchmark run."""

    model: str = "smollm2-135m"
    # Level 1 (two dependent calls, three tools) in the ReAct protocol keeps an episode near 420 tokens
    # (600 with JSON tool schemas); the full task family lists ten tools, which is for a GPU.
    train_env: str = "toolenv/APIChain-L1-v1"
    test_env: str = "toolenv/APIChain-L1-Test-v1"
    env_kwargs: dict[str, Any] = field(default_factory=lambda: {"protocol": "react"})
    useless_call_cost: bool = True  # a step cost of twice the call reward: see run_env_kwargs
    algorithms: tuple[str, ...] = ALGORITHMS
    # On 2 CPU cores a SmolLM2-135M update costs ~100 tokens/s, so the CPU preset is one seed and two
    # iterations per algorithm (19.8 min measured); `--seeds 3` adds the spread, `--preset full` is the real size.
    seeds: tuple[int, ...] = (0,)
    bc_steps: int = 10  # a short warm start: 40 steps already solve level 1, leaving RL nothing to show
    bc_batch_size: int = 4
    demos: int = 400
    samples: int = 16  # env episodes per algorithm and seed
    episodes_per_iteration: int = 8
    ppo_epochs: int = 1
    dpo_pairs_per_task: int = 2  # each pair is two sequences through the policy and the reference
    eval_episodes: int = 20
    eval_batch_size: int = 20  # one batch: batched decoding is ~10x faster per sequence on CPU
    max_new_tokens: int = 48
    # Sampling temperature of every algorithm's rollouts (and of PPO's and GRPO's scoring). The 10-step
    # warm start (80 % greedy) succeeded in 0/16 sampled training episodes at 1.0, 1/16 at 0.7, 7/16 at
    # 0.5 and 5/16 at 0.3: with no success in the samples every return differs only in step costs, and
    # at 1.0 final-reward PPO learnt to answer early (greedy success 5 %).
    temperature: float = 0.5
    lr: float = 1e-4  # LoRA; at 5e-5 nothing moved in 16 samples (DPO loss 0.6931 -> 0.6926, KL < 1e-3)
    # PPO's discount and GAE lambda over model tokens. With 2-4 iterations the critic stays near its
    # zero init, and at 0.99 / 0.95 the first action of a ~150-token episode gets ~0.2x the last one's
    # advantage, so whitening pushes the first calls of successful episodes down: PPO learnt to answer
    # before calling (2.25 turns, 0 % held-out at lr 1e-4). 1 / 1 is Monte-Carlo return minus the
    # value baseline; the full preset, whose critic has time to learn, keeps 0.99 / 0.95.
    gamma: float = 1.0
    lam: float = 1.0
    lora_r: int = 16
    # "steptool": PPO and step-PPO as StepTool's code runs them (agents.ppo.STEPTOOL_SETTING: step k's
    # score x (n-1-k), IsSolved-only final reward, GAE through observation tokens, adaptive KL from 0.3,
    # vf_coef 0.1, 4 epochs) and DPO with ETO's pairs. "toolenv" (the CPU preset): this suite's defaults
    # with the preset's gamma / lam, because two updates cannot carry StepTool's setting: its final
    # IsSolved gets weight 0 in step-PPO, its adaptive KL starts at 0.3 (six times ours), and its
    # 0.99 / 0.95 through ~150-token observations fades the answer's credit before the first call
    # while the critic is still cold (see gamma above).
    setting: str = "toolenv"


PRESETS: dict[str, StepToolPreset] = {
    "cpu": StepToolPreset(),
    # every algorithm end to end at the smallest sizes: one iteration of 4 episodes each, 2 test tasks
    "smoke": StepToolPreset(samples=4, episodes_per_iteration=4, bc_steps=2, bc_batch_size=2, demos=8, eval_episodes=2,
                            eval_batch_size=2, max_new_tokens=24, dpo_pairs_per_task=1, lora_r=4),
    "full": StepToolPreset(train_env="toolenv/APIChain-v1", test_env="toolenv/APIChain-Test-v1", env_kwargs={}, seeds=(0, 1, 2), bc_steps=1000,
                           bc_batch_size=32, demos=20_000, samples=20_000, episodes_per_iteration=64, ppo_epochs=2, dpo_pairs_per_task=4,
                           eval_episodes=1000, eval_batch_size=64, temperature=1.0, max_new_tokens=128, lora_r=64, gamma=0.99,
                           lam=0.95, setting="steptool"),
}


def run_env_kwargs(preset: StepToolPreset) -> dict[str, Any]:
    """The env kwargs every algorithm trains and is scored with.

    With ``preset.useless_call_cost`` the train env's reward weights get a step cost of twice their
    ``call_succeeded`` weight ``w``, so a successful call that contributes nothing costs ``w``.
    Under StepTool's weights alone (APIChain-v1: ``w`` = 1/2, contribution 1/2, solved 1) calling
    a useless tool until the step limit — six extra ``get_city`` calls on level 1 — earns
    1 + 1 + 6/2 = 5, more than solving the task (1 + 1 + 1 = 3); under APIChain-v0's weights
    (1/6, 5/6) it earned as much as solving, and on the CPU preset step-PPO learnt exactly that
    (4.75 turns per episode, held-out success 80 % -> 45 %). A cost of ``c`` per step (answer
    included) makes ``n`` useful calls then spam to the step limit ``L`` worth
    ``n(1-c) + (L-n)(w-c)`` against ``n(1-c) - c`` for a wrong answer; spam is the worse of the two
    when ``c > w(L-n)/(L-n-1)``, at most ``1.5w`` on APIChain (``L`` = 8, ``n`` <= 5). With v0's
    weights a cost of exactly ``w`` left spam above a wrong answer (level 1: 1.67 vs 1.5), and PPO
    learnt to stop answering (6.1 turns per episode after one update). At ``c = 2w`` = 1 on v1, a
    level-1 episode is worth 0 solved, -1 answered wrong and -3 spamming. Envs without a call
    reward (BFCL) are
    unchanged; weights given in ``preset.env_kwargs["reward_weights"]`` take precedence.
    """
    kwargs = dict(preset.env_kwargs)
    if preset.useless_call_cost:
        creator = gym.spec(preset.train_env).entry_point
        env_cls = load_env_creator(creator) if isinstance(creator, str) else creator
        call_weight = float(getattr(env_cls, "reward_weights_defaults", {}).get("call_succeeded", 0.0))
        if call_weight:
            kwargs["reward_weights"] = {"step_cost": -2 * call_weight, **kwargs.get("reward_weights", {})}
    return kwargs


def _agent_config(algo: str, preset: StepToolPreset, env_kwargs: dict[str, Any], bc_dir: Path, out: Path, seed: int) -> tuple[Any, Any]:
    """The agent module and its config for one run, all with the same sample budget."""
    iterations = max(1, preset.samples // preset.episodes_per_iteration)
    common: dict[str, Any] = {
        "model": str(bc_dir), "env": [preset.train_env], "env_kwargs": dict(env_kwargs), "out": str(out), "max_steps": iterations, "seed": seed,
        "lr": preset.lr, "lora_r": preset.lora_r, "lora_alpha": 2 * preset.lora_r, "max_new_tokens": preset.max_new_tokens,
        "temperature": preset.temperature, "save_every": max(1, iterations // 3),
    }
    group = 4
    if algo in ("ppo", "step-ppo"):
        from agents import ppo

        placement = "step" if algo == "step-ppo" else "final"
        if preset.setting == "steptool":  # StepTool's coefficients, epochs and discounting
            return ppo, ppo.Config(**common, reward_placement=placement, episodes_per_step=preset.episodes_per_iteration,
                                   minibatch_size=min(2, preset.episodes_per_iteration), setting="steptool")
        return ppo, ppo.Config(**common, reward_placement=placement, episodes_per_step=preset.episodes_per_iteration, gamma=preset.gamma, lam=preset.lam,
                               minibatch_size=min(4, preset.episodes_per_iteration), ppo_epochs=preset.ppo_epochs)
    if algo == "grpo":
        from agents import grpo

        return grpo, grpo.Config(**common, group_size=group, tasks_per_step=max(1, preset.episodes_per_iteration // group))
    if algo == "dpo":
        from agents import dpo  # type: ignore[attr-defined]

        if preset.setting == "steptool":  # ETO: one exploration per task against the gold trajectory
            return dpo, dpo.Config(**common, group_size=1, tasks_per_step=preset.episodes_per_iteration, pairing="eto")
        return dpo, dpo.Config(**common, group_size=group, tasks_per_step=max(1, preset.episodes_per_iteration // group),
                               max_pairs_per_task=preset.dpo_pairs_per_task)
    raise ValueError(f"Unknown algorithm {algo!r}: expected one of {list(ALGORITHMS)}.")


def _evaluate(model: Path, preset: StepToolPreset, env_kwargs: dict[str, Any], out: Path) -> dict[str, float]:
    path = out / "metrics.json"
    if path.exists():
        return json.loads(path.read_text())[preset.test_env]
    metrics = evaluate_model(str(model), [preset.test_env], episodes=preset.eval_episodes, out_dir=out,
                             batch_size=preset.eval_batch_size, max_new_tokens=preset.max_new_tokens, env_kwargs=dict(env_kwargs))
    return metrics[preset.test_env]


def _training_curve(run_dir: Path) -> list[tuple[float, float]]:
    """(episodes, training success rate) pairs from a run's TensorBoard events."""
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:  # pragma: no cover - tensorboard is a dependency
        return []
    events = sorted((run_dir / "runs").rglob("events.out.tfevents*"))
    if not events:
        return []
    logging.getLogger("tensorboard").setLevel(logging.WARNING)  # "No path found after ..." at the end of every file
    acc = EventAccumulator(str(events[-1].parent))
    acc.Reload()
    tags = acc.Tags().get("scalars", [])
    if "charts/episodes" not in tags or "charts/success_rate" not in tags:
        return []
    episodes = {e.step: e.value for e in acc.Scalars("charts/episodes")}
    return [(episodes[e.step], e.value) for e in acc.Scalars("charts/success_rate") if e.step in episodes]


def run_steptool(preset: StepToolPreset, out: str | Path) -> dict[str, Any]:
    """Run the benchmark; returns ``{"preset", "runs": {algo: [per-seed metrics]}, "curves", "seconds"}``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    env_kwargs = run_env_kwargs(preset)  # the same envs and reward weights for every run
    results: dict[str, Any] = {"preset": asdict(preset), "env_kwargs": env_kwargs, "runs": {}, "curves": {}, "seconds": {}}

    # 1. the warm start: behaviour cloning on gold call sequences, evaluated like every algorithm
    bc_dir = out / "bc" / "model"
    start = time.perf_counter()
    if not (bc_dir / "toolenv_policy.json").exists():
        bc.train(bc.Config(model=preset.model, env=[preset.train_env], env_kwargs=dict(env_kwargs), out=str(bc_dir), max_steps=preset.bc_steps,
                           batch_size=preset.bc_batch_size, demos_per_env=preset.demos, lora_r=preset.lora_r,
                           lora_alpha=2 * preset.lora_r, lr=3e-4, save_every=max(10, preset.bc_steps // 3)))
    results["runs"]["bc"] = [_evaluate(bc_dir, preset, env_kwargs, out / "bc" / "eval")]
    results["seconds"]["bc"] = time.perf_counter() - start

    # 2. every algorithm from the same warm start, the same samples, each seed
    for algo in preset.algorithms:
        start = time.perf_counter()
        results["runs"][algo], results["curves"][algo] = [], []
        for seed in preset.seeds:
            run = out / algo / f"seed{seed}"
            model_dir = run / "model"
            if not (model_dir / "toolenv_policy.json").exists():
                logger.info("%s seed %d: training on %d samples", algo, seed, preset.samples)
                module, cfg = _agent_config(algo, preset, env_kwargs, bc_dir, model_dir, seed)
                module.train(cfg)
            results["runs"][algo].append(_evaluate(model_dir, preset, env_kwargs, run / "eval"))
            results["curves"][algo].append(_training_curve(model_dir))
        results["seconds"][algo] = time.perf_counter() - start

    # 3. intervals and paired comparisons; the table, the numbers, the plot
    results["success_ci"] = {}
    for algo in results["runs"]:
        outcomes = _outcomes(out, results, algo)
        if outcomes is not None:
            results["success_ci"][algo] = list(bootstrap_ci(outcomes[1]))
    results["comparisons"] = paired_comparisons(out, results)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "steptool_table.md").write_text(format_steptool_table(results) + "\n")
    plot_steptool(results, out / "steptool.png")
    return results


def _mean_std(values: Sequence[float]) -> str:
    arr = np.asarray(values, dtype=np.float64)
    return f"{100 * arr.mean():.1f} ± {100 * arr.std():.1f}" if arr.size > 1 else f"{100 * arr.mean():.1f}"


def format_steptool_table(results: dict[str, Any]) -> str:
    """One row per algorithm: success, call success, mean reward terms (mean ± std over seeds)."""
    runs: dict[str, list[dict[str, float]]] = results["runs"]
    terms = sorted({k for ms in runs.values() for m in ms for k in m if k.startswith("reward/")})
    head = ("| algorithm | samples | success % [95 % CI] | success % (mean ± std over seeds) | call success % | turns | "
            + " | ".join(t[len("reward/"):] for t in terms) + " |")
    lines = [head, "|---|---:|---:|---:|---:|---:|" + "---:|" * len(terms)]
    samples = results["preset"]["samples"]
    for algo, ms in runs.items():
        ci = results.get("success_ci", {}).get(algo)
        cells = [
            algo, "0 (warm start)" if algo == "bc" else str(samples), format_ci(*ci) if ci else "–", _mean_std([m["accuracy"] for m in ms]),
            _mean_std([m["call_success_rate"] for m in ms]), f"{np.mean([m['mean_turns'] for m in ms]):.2f}",
        ]
        cells += [f"{np.mean([m.get(t, 0.0) for m in ms]):.3f}" for t in terms]
        lines.append("| " + " | ".join(cells) + " |")
    p = results["preset"]
    lines.append("")
    lines.append(f"Greedy evaluation on the first {p['eval_episodes']} tasks of {p['test_env']}; trained on {p['train_env']} "
                 f"({json.dumps(results.get('env_kwargs', p.get('env_kwargs')) or {})}) from one BC warm start; {len(p['seeds'])} seed(s); model {p['model']}. "
                 "Intervals: bootstrap over held-out tasks and seeds.")
    if results.get("comparisons"):
        lines += ["", format_paired_comparisons(results["comparisons"])]
    return "\n".join(lines)


def plot_steptool(results: dict[str, Any], path: str | Path) -> Path:
    """Training success against env samples per algorithm, with held-out success as markers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    samples = results["preset"]["samples"]
    bc_success = 100 * results["runs"]["bc"][0]["accuracy"]
    ax.axhline(bc_success, color="gray", linestyle=":", label=f"BC warm start (held-out {bc_success:.0f}%)")
    for k, algo in enumerate(a for a in results["runs"] if a != "bc"):
        color = f"C{k}"
        for curve in results["curves"].get(algo, []):
            if curve:
                xs, ys = zip(*curve)
                # runs from one warm start and seed share their first batch: styles keep them apart
                ax.plot(xs, [100 * y for y in ys], color=color, alpha=0.7, linestyle=("-", "--", "-.", ":")[k % 4], marker=".")
        held_out = [100 * m["accuracy"] for m in results["runs"][algo]]
        ax.scatter([samples] * len(held_out), held_out, color=color, marker="o", zorder=3, label=f"{algo} (held-out)")
    ax.set_xlabel("env samples (episodes)")
    ax.set_ylabel("success rate (%)")
    ax.set_title("StepTool comparison: training success vs samples")
    ax.set_ylim(-2, 102)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def _successes(path: Path) -> dict[str, float]:
    from agents.rollout import load_trajectories

    return {str(t.task.get("id")): float(t.success) for t in load_trajectories(path)}


def _outcomes(out: Path, results: dict[str, Any], algo: str) -> tuple[list[str], np.ndarray] | None:
    """``(task ids, [seeds, tasks] successes)`` of an algorithm's held-out episodes (the warm start: one row)."""
    paths = ([out / "bc" / "eval" / "trajectories.jsonl"] if algo == "bc"
             else [out / algo / f"seed{s}" / "eval" / "trajectories.jsonl" for s in results["preset"]["seeds"]])
    rows = [_successes(p) for p in paths if p.exists()]
    if not rows:
        return None
    ids = sorted(set.intersection(*(set(r) for r in rows)))
    return ids, np.array([[r[i] for i in ids] for r in rows])


def paired_comparisons(out: str | Path, results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each algorithm against the warm start, and step-PPO against final-reward PPO, paired on the same held-out tasks.

    Outcomes are ``[seeds, tasks]``; the warm start (one model) is paired with every seed of the
    other. The interval resamples seeds and tasks (:func:`benchmarks.stats.compare`); the
    McNemar test pools the (seed, task) pairs, which treats them as independent.
    """
    out = Path(out)
    warm = _outcomes(out, results, "bc")
    rows = []
    pairs = [(algo, "bc") for algo in results["runs"] if algo != "bc"]
    if "step-ppo" in results["runs"] and "ppo" in results["runs"]:
        pairs.append(("step-ppo", "ppo"))
    for a, b in pairs:
        oa, ob = _outcomes(out, results, a), (warm if b == "bc" else _outcomes(out, results, b))
        if oa is None or ob is None:
            continue
        ids = sorted(set(oa[0]) & set(ob[0]))
        xa = oa[1][:, [oa[0].index(i) for i in ids]]
        xb = ob[1][:, [ob[0].index(i) for i in ids]]
        if xb.shape[0] == 1:
            xb = np.repeat(xb, xa.shape[0], axis=0)
        if xa.shape != xb.shape:  # unequal seed counts: compare seed means per task
            xa, xb = xa.mean(axis=0), xb.mean(axis=0)
        rows.append(compare(xa, xb, names=(a, "warm start" if b == "bc" else b)).as_dict())
    return rows


def format_paired_comparisons(rows: Sequence[dict[str, Any]]) -> str:
    """The paired comparisons as a Markdown table, saying where a difference is noise, then the claim lines."""
    lines = [COMPARISON_HEADER]
    comps = [Comparison(r["a"], r["b"], r["n"], r["difference"], r["ci95"][0], r["ci95"][1], r["p"], r["test"], r["only_a"], r["only_b"])
             for r in rows]
    lines += [format_comparison(c) for c in comps]
    claims = []
    for c in comps:
        if c.b == "warm start":
            claims.append(claim_line(f"{c.a} improves on its behaviour-cloning warm start", c, source="StepTool, Table 2 (SFT row)"))
        elif (c.a, c.b) == ("step-ppo", "ppo"):
            claims.append(claim_line("Step-grained rewards beat a final reward (step-PPO over PPO)", c, source="StepTool, Table 2"))
    if claims:
        lines += ["", "Claims at 95 % confidence:", *claims]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``toolenv bench steptool [--preset cpu|full] [--out DIR] ...``: run and print the table."""

    parser = ArgumentParser(prog="toolenv bench steptool", description=__doc__.strip().splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu", help="cpu: ~20 min on 2 cores; smoke: every algorithm for one iteration (a few minutes on a tiny model); full: for a GPU")
    parser.add_argument("--out", default="runs/steptool", help="output directory (an interrupted run continues here)")
    parser.add_argument("--model", default=None, help="base model (default: smollm2-135m)")
    parser.add_argument("--train-env", default=None, help="training env id (preset cpu: toolenv/APIChain-L1-v1; full: toolenv/APIChain-v1)")
    parser.add_argument("--test-env", default=None, help="held-out env id (preset cpu: toolenv/APIChain-L1-Test-v1; full: toolenv/APIChain-Test-v1)")
    parser.add_argument("--algorithm", action="append", choices=list(ALGORITHMS), default=[], help="repeatable; default all")
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds")
    parser.add_argument("--temperature", type=float, default=None, help="sampling temperature of the rollouts (preset cpu: 0.5)")
    parser.add_argument("--lr", type=float, default=None, help="learning rate of every algorithm (LoRA)")
    parser.add_argument("--protocol", default=None, choices=["trice", "react", "json", "python"], help="action protocol of the envs (preset cpu: react; full: the env's default)")
    parser.add_argument("--steptool-weights", action="store_true",
                        help="StepTool's reward weights alone: a successful but useless call earns 1/2 (see run_env_kwargs)")
    for name in ("samples", "bc_steps", "eval_episodes", "episodes_per_iteration", "demos"):
        parser.add_argument("--" + name.replace("_", "-"), type=int, default=None, help=f"override the preset's {name}")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="tokens per action at most (preset cpu: 48)")
    parser.add_argument("--setting", choices=["toolenv", "steptool"], default=None,
                        help="PPO/step-PPO/DPO as this suite runs them, or as StepTool's code does (preset cpu: toolenv; full: steptool)")
    parser.add_argument("--kw", action="append", default=[], metavar="KEY=VALUE", help="env kwarg of the train and test envs (repeatable)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    overrides: dict[str, Any] = {k: v for k, v in vars(args).items()
                                 if k in ("samples", "bc_steps", "eval_episodes", "episodes_per_iteration", "demos", "model", "train_env", "test_env",
                                          "temperature", "lr", "max_new_tokens", "setting")
                                 and v is not None}
    try:  # every mistake that shows before a model loads
        for name in ("samples", "bc_steps", "eval_episodes", "episodes_per_iteration", "demos", "max_new_tokens", "seeds"):
            if getattr(args, name, None) is not None:
                check_positive(f"--{name.replace('_', '-')}", getattr(args, name))
        for name in ("temperature", "lr"):
            if getattr(args, name) is not None:
                check_positive(f"--{name}", getattr(args, name))
        kw = toolenv.parse_kw(args.kw)
        preset = PRESETS[args.preset]
        env_kwargs = {**preset.env_kwargs, **kw, **({"protocol": args.protocol} if args.protocol else {})}
        for key in ("train_env", "test_env"):
            toolenv.check_env_args(overrides.get(key, getattr(preset, key)), env_kwargs)
        check_model_name(overrides.get("model", preset.model))
        check_out_dir(args.out, "--out")
    except (ValueError, FileNotFoundError) as e:
        usage_error(parser, str(e))
    if args.kw or args.protocol:
        overrides["env_kwargs"] = env_kwargs
    if args.steptool_weights:
        overrides["useless_call_cost"] = False
    if args.algorithm:
        overrides["algorithms"] = tuple(args.algorithm)
    if args.seeds:
        overrides["seeds"] = tuple(range(args.seeds))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    results = run_steptool(replace(PRESETS[args.preset], **overrides), args.out)
    print(format_steptool_table(results))
    total = sum(results["seconds"].values())
    print(f"\n{total / 60:.1f} min; wrote results.json, steptool_table.md and steptool.png to {args.out}")
    return 0
