"""``toolenv bench steptool``: final-reward PPO vs step-PPO vs DPO vs GRPO vs RFT vs ArCHer on the same tasks and samples.

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

import argparse
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
)
from toolenv.cli import ArgumentParser

__all__ = ["ALGORITHMS", "PRESETS", "StepToolPreset", "format_paired_comparisons", "format_steptool_table", "format_strategy_table", "main", "solution_of", "win_rates",
           "paired_comparisons", "run_env_kwargs", "run_steptool"]

logger = logging.getLogger(__name__)

ALGORITHMS = ("ppo", "step-ppo", "dpo", "grpo", "rft", "archer")


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
    # iterations per algorithm (20.4 min and 2.9 GB at its peak, measured, six algorithms); `--seeds 3` adds the spread, `--preset full` is the real size.
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
    # The proxy scale (benchmarks.proxy): a tiny model built in the run, warm-started on a noisy expert,
    # evaluated by sampling the same episodes for every model.
    proxy: bool = False
    bc_data: str = "gold"  # "gold": gold call sequences; "noisy" / "noisy-calls": the noisy expert, with wrong calls too (benchmarks.proxy)
    bc_lr: float = 3e-4
    bc_lora_r: int | None = None  # None: lora_r; 0 trains every weight
    budgets: tuple[int, ...] = ()  # smaller sample budgets also run (rows "ppo@64"): how fast each algorithm learns
    eval_sampled: bool = False  # sampled evaluation (temperature 1, eval_episodes over the tasks in turn) instead of greedy
    # "steptool": PPO and step-PPO as StepTool's code runs them (agents.ppo.STEPTOOL_SETTING: step k's
    # score x (n-1-k), IsSolved-only final reward, GAE through observation tokens, adaptive KL from 0.3,
    # vf_coef 0.1, 4 epochs) and DPO with ETO's pairs. "toolenv" (the CPU preset): this suite's defaults
    # with the preset's gamma / lam, because two updates cannot carry StepTool's setting: its final
    # IsSolved gets weight 0 in step-PPO, its adaptive KL starts at 0.3 (six times ours), and its
    # 0.99 / 0.95 through ~150-token observations fades the answer's credit before the first call
    # while the critic is still cold (see gamma above).
    setting: str = "toolenv"
    # Inference strategies every model is evaluated with (StepTool's two columns): "cot", one episode
    # per task; "dfsdt", ToolBench's depth-first search decision tree (agents.search), sampling at
    # dfsdt_temperature, dfsdt_width children per node, dfsdt_queries sampled actions per task at most.
    strategies: tuple[str, ...] = ("cot",)
    dfsdt_width: int = 2
    dfsdt_queries: int = 12
    dfsdt_temperature: float = 1.0
    # Every training stage recomputes decoder activations in its backward pass (agents' --gradient-checkpointing)
    gradient_checkpointing: bool = False
    # Allocations from this size (MB) up get their own mapping, returned when freed (benchmarks.memory.
    # cap_heap_retention); 0 leaves glibc's default, under which DPO's stage peaked at 6.7 GB, 2.3 GB at 4.
    mmap_threshold_mb: int = 0


PRESETS: dict[str, StepToolPreset] = {
    "cpu": StepToolPreset(gradient_checkpointing=True, mmap_threshold_mb=4),
    # every algorithm end to end at the smallest sizes: one iteration of 4 episodes each, 2 test tasks
    "smoke": StepToolPreset(samples=4, episodes_per_iteration=4, bc_steps=2, bc_batch_size=2, demos=8, eval_episodes=2,
                            eval_batch_size=2, max_new_tokens=24, dpo_pairs_per_task=1, lora_r=4),
    # every algorithm at equal samples on a model small enough for 5 seeds on 2 cores (benchmarks.proxy); the
    # learning rate, samples and warm start were chosen with tests/agents/test_learning.py on the same four tasks
    "proxy": StepToolPreset(model="proxy", proxy=True, train_env="toolenv/APIChain-L1-v1", test_env="toolenv/APIChain-L1-v1",
                            env_kwargs={"size": 4, "protocol": "trice"}, seeds=(0, 1, 2, 3, 4), bc_steps=60, bc_batch_size=8, bc_lr=3e-3,
                            bc_lora_r=0, bc_data="noisy-calls", samples=240, episodes_per_iteration=8, ppo_epochs=2, eval_episodes=128,
                            eval_batch_size=128, eval_sampled=True, budgets=(64,), temperature=1.0, max_new_tokens=16, lr=1e-3, gamma=0.99, lam=0.95,
                            lora_r=8, dpo_pairs_per_task=2, strategies=("cot", "dfsdt")),
    "full": StepToolPreset(train_env="toolenv/APIChain-v1", test_env="toolenv/APIChain-Test-v1", env_kwargs={}, seeds=(0, 1, 2), bc_steps=1000,
                           bc_batch_size=32, demos=20_000, samples=20_000, episodes_per_iteration=64, ppo_epochs=2, dpo_pairs_per_task=4,
                           eval_episodes=1000, eval_batch_size=64, temperature=1.0, max_new_tokens=128, lora_r=64, gamma=0.99,
                           lam=0.95, setting="steptool", strategies=("cot", "dfsdt"), dfsdt_queries=200),
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
        "gradient_checkpointing": preset.gradient_checkpointing,
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
    if algo == "rft":  # StepTool's RFT baseline: the passed samples of each round, fine-tuned on
        from agents import rft

        return rft, rft.Config(**common, samples_per_task=group, tasks_per_round=max(1, preset.episodes_per_iteration // group),
                               epochs=float(preset.ppo_epochs))
    if algo == "archer":  # StepTool's ArCHer baseline: an off-policy turn-level critic, the same episodes per iteration
        from agents import archer

        return archer, archer.Config(**common, episodes_per_step=preset.episodes_per_iteration)
    raise ValueError(f"Unknown algorithm {algo!r}: expected one of {list(ALGORITHMS)}.")


def _evaluate(model: Path, preset: StepToolPreset, env_kwargs: dict[str, Any], out: Path, strategy: str = "cot") -> dict[str, float]:
    """The model's metrics on the test env under ``strategy`` (cached in ``out``)."""
    path = out / "metrics.json"
    if path.exists():
        saved = json.loads(path.read_text())[preset.test_env]
        episodes = out / "trajectories.jsonl"
        if episodes.exists():  # metrics added since the run was evaluated (gold API recall) come from its episodes
            from agents.evaluate import episode_metrics
            from agents.rollout import load_trajectories

            saved = {**episode_metrics(load_trajectories(episodes)), **saved}
        return saved
    search = None
    if strategy == "dfsdt":
        from agents.search import DFSDTSettings

        search = DFSDTSettings(width=preset.dfsdt_width, max_queries=preset.dfsdt_queries)
    if preset.eval_sampled:
        from benchmarks.proxy import sampled_evaluation

        return sampled_evaluation(model, preset.test_env, dict(env_kwargs), episodes=preset.eval_episodes, max_new_tokens=preset.max_new_tokens,
                                  out_dir=out, temperature=preset.dfsdt_temperature if search else 1.0, search=search)[preset.test_env]
    extra: dict[str, Any] = ({"strategy": "dfsdt", "width": preset.dfsdt_width, "max_queries": preset.dfsdt_queries,
                              "temperature": preset.dfsdt_temperature} if search else {})
    metrics = evaluate_model(str(model), [preset.test_env], episodes=preset.eval_episodes, out_dir=out, batch_size=preset.eval_batch_size,
                             max_new_tokens=preset.max_new_tokens, env_kwargs=dict(env_kwargs), **extra)
    return metrics[preset.test_env]


def _eval_dir(strategy: str) -> str:
    """Where a run's evaluation under ``strategy`` lives: ``eval`` (CoT, as before strategies) or ``eval-dfsdt``."""
    return "eval" if strategy == "cot" else f"eval-{strategy}"


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
    cap_heap_retention(preset.mmap_threshold_mb)
    peaks = StagePeaks()
    with peaks.stage("bc"):
        _warm_start(preset, env_kwargs, out, results)
    for algo in preset.algorithms:
        with peaks.stage(algo):
            _train_and_evaluate(algo, preset, env_kwargs, out, results)
    results["peak_rss_gb"], results["peak_rss_per_stage"] = peaks.gb, peaks.per_stage
    _summarise(preset, out, results)
    return results


def _warm_start(preset: StepToolPreset, env_kwargs: dict[str, Any], out: Path, results: dict[str, Any]) -> None:
    """Behaviour cloning from the preset's model (the proxy's built first), evaluated like every algorithm."""
    bc_dir = out / "bc" / "model"
    start = time.perf_counter()
    model = preset.model
    if preset.proxy:
        from benchmarks.proxy import build_proxy_model

        model = str(out / "base")
        if not (out / "base" / "config.json").exists():
            build_proxy_model(out / "base", preset.train_env, {k: v for k, v in env_kwargs.items() if k != "reward_weights"})
    if not (bc_dir / "toolenv_policy.json").exists():
        data = None
        if preset.bc_data in ("noisy", "noisy-calls"):
            from agents.policy import Policy
            from agents.rollout import save_trajectories
            from benchmarks.proxy import noisy_expert

            tokenizer = Policy.load(model, device="cpu", trainable=False).tokenizer
            data = str(save_trajectories(out / "bc" / "noisy_expert.jsonl", noisy_expert(preset.train_env, dict(env_kwargs), tokenizer,
                                                                                                   wrong_call=preset.bc_data == "noisy-calls")))
        bc_r = preset.lora_r if preset.bc_lora_r is None else preset.bc_lora_r
        bc.train(bc.Config(model=model, env=[preset.train_env], env_kwargs=dict(env_kwargs), out=str(bc_dir), max_steps=preset.bc_steps,
                           batch_size=preset.bc_batch_size, demos_per_env=preset.demos, lora_r=bc_r, lora_alpha=max(1, 2 * bc_r),
                           lr=preset.bc_lr, data=data, successful_only=data is None, seed=0, save_every=max(10, preset.bc_steps // 3),
                           gradient_checkpointing=preset.gradient_checkpointing))
    results["runs"]["bc"] = [_evaluate(bc_dir, preset, env_kwargs, out / "bc" / "eval")]
    other_strategies = [x for x in preset.strategies if x != "cot"]
    results["strategies"] = {x: {"bc": [_evaluate(bc_dir, preset, env_kwargs, out / "bc" / _eval_dir(x), x)]} for x in other_strategies}
    results["seconds"]["bc"] = time.perf_counter() - start


def _train_and_evaluate(algo: str, preset: StepToolPreset, env_kwargs: dict[str, Any], out: Path, results: dict[str, Any]) -> None:
    """One algorithm at each budget and seed from the warm start (finished runs are read back), each model evaluated."""
    bc_dir = out / "bc" / "model"
    other_strategies = [x for x in preset.strategies if x != "cot"]
    start = time.perf_counter()
    for budget in (*(b for b in preset.budgets if b < preset.samples), preset.samples):
        key = _run_key(algo, budget, preset)
        results["runs"][key], results["curves"][key] = [], []
        for seed in preset.seeds:
            run = _run_dir(out, key, seed)
            model_dir = run / "model"
            if not (model_dir / "toolenv_policy.json").exists():
                logger.info("%s seed %d: training on %d samples", algo, seed, budget)
                module, cfg = _agent_config(algo, replace(preset, samples=budget), env_kwargs, bc_dir, model_dir, seed)
                module.train(cfg)
            results["runs"][key].append(_evaluate(model_dir, preset, env_kwargs, run / "eval"))
            for x in other_strategies:
                results["strategies"][x].setdefault(key, []).append(_evaluate(model_dir, preset, env_kwargs, run / _eval_dir(x), x))
            results["curves"][key].append(_training_curve(model_dir))
    results["seconds"][algo] = time.perf_counter() - start


def _summarise(preset: StepToolPreset, out: Path, results: dict[str, Any]) -> None:
    """Intervals, paired comparisons, win rates; ``results.json``, the table and the plot."""
    other_strategies = [x for x in preset.strategies if x != "cot"]
    outcomes = {key: _outcomes(out, results, key) for key in results["runs"]}
    results["success_ci"] = {key: list(bootstrap_ci(o[1])) for key, o in outcomes.items() if o is not None}
    results["comparisons"] = paired_comparisons(out, results, outcomes)
    results["win_rate"] = win_rates(out, results)
    results["strategy_ci"], results["strategy_comparisons"] = {}, []
    for x in other_strategies:  # each run under the search against the same run under CoT, on the same episodes
        searched = {key: _outcomes(out, results, key, _eval_dir(x)) for key in results["runs"]}
        results["strategy_ci"][x] = {key: list(bootstrap_ci(o[1])) for key, o in searched.items() if o is not None}
        for key in results["runs"]:
            row = _paired(searched.get(key), outcomes.get(key), (f"{key} [{x}]", f"{key} [cot]"))
            if row is not None:
                results["strategy_comparisons"].append(row)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "steptool_table.md").write_text(format_steptool_table(results) + "\n")
    plot_steptool(results, out / "steptool.png")


def _mean_std(values: Sequence[float]) -> str:
    arr = np.asarray(values, dtype=np.float64)
    return f"{100 * arr.mean():.1f} ± {100 * arr.std():.1f}" if arr.size > 1 else f"{100 * arr.mean():.1f}"


def format_steptool_table(results: dict[str, Any]) -> str:
    """One row per algorithm: success, call success, mean reward terms (mean ± std over seeds)."""
    runs: dict[str, list[dict[str, float]]] = results["runs"]
    terms = sorted({k for ms in runs.values() for m in ms for k in m if k.startswith("reward/")})
    head = ("| algorithm | samples | success % [95 % CI] | success % (mean ± std over seeds) | call success % | gold API recall % | "
            "win rate vs warm start % | turns | " + " | ".join(t[len("reward/"):] for t in terms) + " |")
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|" + "---:|" * len(terms)]
    samples = results["preset"]["samples"]
    for algo, ms in runs.items():
        ci = results.get("success_ci", {}).get(algo)
        cells = [
            algo, "0 (warm start)" if algo == "bc" else (algo.partition("@")[2] or str(samples)), format_ci(*ci) if ci else "–", _mean_std([m["accuracy"] for m in ms]),
            _mean_std([m["call_success_rate"] for m in ms]),
            _mean_std([m["gold_api_recall"] for m in ms]) if all("gold_api_recall" in m for m in ms) else "–",
            _mean_std(results["win_rate"][algo]) if results.get("win_rate", {}).get(algo) else "–",
            f"{np.mean([m['mean_turns'] for m in ms]):.2f}",
        ]
        cells += [f"{np.mean([m.get(t, 0.0) for m in ms]):.3f}" for t in terms]
        lines.append("| " + " | ".join(cells) + " |")
    p = results["preset"]
    lines.append("")
    evaluation = (f"Sampled evaluation (temperature 1, the same {p['eval_episodes']} episodes for every model: the training tasks in turn, "
                  f"fixed seeds) on {p['test_env']}, a measure of optimisation, not of generalisation"
                  if p.get("eval_sampled") else f"Greedy evaluation on the first {p['eval_episodes']} tasks of {p['test_env']}")
    lines.append(f"{evaluation}; trained on {p['train_env']} "
                 f"({json.dumps(results.get('env_kwargs', p.get('env_kwargs')) or {})}) from one BC warm start; {len(p['seeds'])} seed(s); model {p['model']}. "
                 "Intervals: bootstrap over held-out tasks and seeds. Win rate: each episode against the warm start's on the same "
                 "task and seed, the one that passed preferred, ties half (rewards.preference; mean ± std over seeds).")
    if results.get("comparisons"):
        lines += ["", format_paired_comparisons(results["comparisons"])]
    if results.get("strategies"):
        lines += ["", format_strategy_table(results)]
    if results.get("peak_rss_gb"):
        lines += ["", format_peaks(results["peak_rss_gb"], results.get("peak_rss_per_stage", True))]
    return "\n".join(lines)


def format_strategy_table(results: dict[str, Any]) -> str:
    """StepTool's two columns: success per run under CoT and under each search strategy, and the paired difference."""
    runs = results["runs"]
    others = list(results["strategies"])
    head = "| algorithm | CoT success % [95 % CI] | " + " | ".join(f"{x.upper()} success % [95 % CI] | {x.upper()} actions sampled per task" for x in others) + " |"
    lines = [head, "|---|---:|" + "---:|---:|" * len(others)]
    def cell(ms: list[dict[str, float]], ci: Any) -> str:
        if not ms:
            return "–"
        spread = f" (± {100 * np.std([m['accuracy'] for m in ms]):.1f})" if len(ms) > 1 else ""
        return (format_ci(*ci) if ci else _mean_std([m["accuracy"] for m in ms])) + spread

    for key, ms in runs.items():
        cells = [key, cell(ms, results.get("success_ci", {}).get(key))]
        for x in others:
            sm = results["strategies"][x].get(key, [])
            cells.append(cell(sm, results.get("strategy_ci", {}).get(x, {}).get(key)))
            cells.append(f"{np.mean([m.get('search_queries', 0.0) for m in sm]):.1f}" if sm else "–")
        lines.append("| " + " | ".join(cells) + " |")
    p = results["preset"]
    lines += ["", f"DFSDT: up to {p['dfsdt_width']} children per node and {p['dfsdt_queries']} sampled actions per task, at temperature "
                  f"{p['dfsdt_temperature']}, on the same episodes as CoT. Each cell: success with its 95 % interval (± the std over seeds)."]
    if results.get("strategy_comparisons"):
        comps = [Comparison.from_dict(r) for r in results["strategy_comparisons"]]
        lines += ["", COMPARISON_HEADER, *[format_comparison(c) for c in comps]]
    return "\n".join(lines)


def plot_steptool(results: dict[str, Any], path: str | Path) -> Path:
    """Training success against env samples per algorithm (mean over seeds), with evaluated success and its 95 % interval as markers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    samples = results["preset"]["samples"]
    where = "sampled" if results["preset"].get("eval_sampled") else "held-out"
    bc_success = 100 * results["runs"]["bc"][0]["accuracy"]
    ax.axhline(bc_success, color="gray", linestyle=":", label=f"BC warm start ({where} {bc_success:.0f}%)")
    algos = [a for a in results["runs"] if a != "bc" and "@" not in a]
    cis = results.get("success_ci", {})
    for k, algo in enumerate(algos):
        color, style = f"C{k}", ("-", "--", "-.", ":")[k % 4]
        curves = [dict(c) for c in results["curves"].get(algo, []) if c]
        if curves:  # the seeds share their x points (episodes after each iteration)
            xs = sorted(set.intersection(*(set(c) for c in curves)))
            ax.plot(xs, [100 * float(np.mean([c[x] for c in curves])) for x in xs], color=color, linestyle=style, alpha=0.6, marker=".")
        for key in [a for a in results["runs"] if a.partition("@")[0] == algo]:
            budget = int(key.partition("@")[2] or samples)
            mean = 100 * float(np.mean([m["accuracy"] for m in results["runs"][key]]))
            lo, hi = (100 * cis[key][1], 100 * cis[key][2]) if key in cis else (mean, mean)
            ax.errorbar([budget + (k - len(algos) / 2) * samples / 120], [mean], yerr=[[mean - lo], [hi - mean]], color=color, marker="o",
                        capsize=3, zorder=3, label=f"{algo} ({where}, 95 % CI)" if key == algo else None)
    seeds = len(results["preset"]["seeds"])
    ax.set_xlabel("env samples (episodes)")
    ax.set_ylabel("success rate (%)")
    ax.set_title(f"StepTool comparison: training success (lines, mean of {seeds} seed(s)) and evaluation (markers)")
    ax.title.set_fontsize(9)
    ax.set_ylim(-2, 102)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def solution_of(traj: Any) -> dict[str, Any]:
    """A trajectory as :mod:`rewards.preference` reads a solution: query, calls with their outputs, answer, passed."""
    steps = []
    for info in traj.infos:
        for call, output in zip(info.get("calls") or [], info.get("tool_outputs") or []):
            steps.append({"name": call.get("name", ""), "arguments": call.get("arguments") or call.get("positional") or {}, "output": output})
    answer = next((info.get("answer") for info in reversed(traj.infos) if info.get("answer") is not None), None)
    return {"query": str(traj.task.get("question", "")), "steps": steps, "answer": answer, "passed": traj.success}


def _episodes(path: Path) -> dict[str, Any]:
    """Trajectories keyed ``"{task id}#{k}"`` for the k-th episode of that task (sampled evaluation repeats tasks)."""
    from agents.rollout import load_trajectories

    seen: dict[str, int] = {}
    out = {}
    for t in load_trajectories(path):
        task = str(t.task.get("id"))
        out[f"{task}#{seen.get(task, 0)}"] = t
        seen[task] = seen.get(task, 0) + 1
    return out


def win_rates(out: str | Path, results: dict[str, Any], preference: Any = None) -> dict[str, list[float]]:
    """Each run's win rate against the warm start per seed (StepTool's third metric): the mean
    :mod:`rewards.preference` verdict over the episodes both played, ties counted half.

    ``preference`` defaults to :func:`rewards.preference.rule_preference` (the one that passed wins);
    :func:`rewards.preference.llm_preference` asks a model instead.
    """
    from rewards.preference import rule_preference, win_rate

    out = Path(out)
    preference = preference or rule_preference
    reference_path = out / "bc" / "eval" / "trajectories.jsonl"
    if not reference_path.exists():
        return {}
    reference = _episodes(reference_path)
    rates: dict[str, list[float]] = {}
    for key in results["runs"]:
        if key == "bc":
            continue
        for seed in results["preset"]["seeds"]:
            path = _run_dir(out, key, seed) / "eval" / "trajectories.jsonl"
            if not path.exists():
                continue
            mine = _episodes(path)
            pairs = [(solution_of(mine[k]), solution_of(reference[k])) for k in sorted(set(mine) & set(reference))]
            rates.setdefault(key, []).append(win_rate(pairs, preference))
    return rates


def _successes(path: Path) -> dict[str, float]:
    """Success per episode, keyed ``"{task id}#{k}"`` for the k-th episode of that task (sampled evaluation repeats tasks)."""
    return {key: float(t.success) for key, t in _episodes(path).items()}


def _run_key(algo: str, budget: int, preset: StepToolPreset) -> str:
    """``"ppo"`` at the preset's sample budget, ``"ppo@64"`` at a smaller one."""
    return algo if budget == preset.samples else f"{algo}@{budget}"


def _run_dir(out: Path, key: str, seed: int) -> Path:
    algo, _, budget = key.partition("@")
    return out / algo / (f"samples{budget}" if budget else "") / f"seed{seed}"


def _outcomes(out: Path, results: dict[str, Any], algo: str, eval_dir: str = "eval") -> tuple[list[str], np.ndarray] | None:
    """``(task ids, [seeds, tasks] successes)`` of an algorithm's held-out episodes (the warm start: one row)."""
    paths = ([out / "bc" / eval_dir / "trajectories.jsonl"] if algo == "bc"
             else [_run_dir(out, algo, s) / eval_dir / "trajectories.jsonl" for s in results["preset"]["seeds"]])
    rows = [_successes(p) for p in paths if p.exists()]
    if not rows:
        return None
    ids = sorted(set.intersection(*(set(r) for r in rows)))
    return ids, np.array([[r[i] for i in ids] for r in rows])


def paired_comparisons(out: str | Path, results: dict[str, Any], outcomes: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Each run against the warm start, and step-PPO against every other algorithm at its budget, paired on the same tasks.

    Outcomes are ``[seeds, tasks]`` (``outcomes``: each run's :func:`_outcomes`, read here when not
    given); the warm start (one model) is paired with every seed of the other. The interval
    resamples seeds and tasks (:func:`benchmarks.stats.compare`); the McNemar test pools the
    (seed, task) pairs, which treats them as independent.
    """
    out = Path(out)
    if outcomes is None:
        outcomes = {key: _outcomes(out, results, key) for key in results["runs"]}
    rows = []
    pairs = [(key, "bc") for key in results["runs"] if key != "bc"]
    for key in results["runs"]:  # step-PPO against every other algorithm at the same budget (StepTool's table)
        algo, _, budget = key.partition("@")
        if algo == "step-ppo":
            pairs += [(key, other) for other in results["runs"]
                      if other not in ("bc", key) and other.partition("@")[2] == budget and other.partition("@")[0] != "step-ppo"]
    for a, b in pairs:
        row = _paired(outcomes.get(a), outcomes.get(b), (a, "warm start" if b == "bc" else b))
        if row is not None:
            rows.append(row)
    return rows


def _paired(oa: Any, ob: Any, names: tuple[str, str]) -> dict[str, Any] | None:
    """:func:`benchmarks.stats.compare` of two runs' outcomes on the episodes both played (``None`` if either is missing)."""
    if oa is None or ob is None:
        return None
    ids = sorted(set(oa[0]) & set(ob[0]))
    col_a, col_b = {i: k for k, i in enumerate(oa[0])}, {i: k for k, i in enumerate(ob[0])}
    xa = oa[1][:, [col_a[i] for i in ids]]
    xb = ob[1][:, [col_b[i] for i in ids]]
    if xb.shape[0] == 1:
        xb = np.repeat(xb, xa.shape[0], axis=0)
    if xa.shape != xb.shape:  # unequal seed counts: compare seed means per task
        xa, xb = xa.mean(axis=0), xb.mean(axis=0)
    return compare(xa, xb, names=names).as_dict()


def format_paired_comparisons(rows: Sequence[dict[str, Any]]) -> str:
    """The paired comparisons as a Markdown table, saying where a difference is noise, then the claim lines."""
    lines = [COMPARISON_HEADER]
    comps = [Comparison.from_dict(r) for r in rows]
    lines += [format_comparison(c) for c in comps]
    claims = []
    for c in comps:
        if c.b == "warm start":
            claims.append(claim_line(f"{c.a} improves on its behaviour-cloning warm start", c, source="StepTool, Table 2 (SFT row)"))
        elif c.a.partition("@")[0] == "step-ppo":
            budget = f" at {c.a.partition('@')[2]} samples" if "@" in c.a else ""
            other = c.b.partition("@")[0]
            text = (f"Step-grained rewards beat a final reward (step-PPO over PPO{budget})" if other == "ppo"
                    else f"Step-PPO beats {other.upper()}{budget}")
            claims.append(claim_line(text, c, source="StepTool, Table 2"))
    if claims:
        lines += ["", "Claims at 95 % confidence:", *claims]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``toolenv bench steptool [--preset cpu|full] [--out DIR] ...``: run and print the table."""

    parser = ArgumentParser(prog="toolenv bench steptool", description=__doc__.strip().splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu", help="cpu: ~20 min on 2 cores; proxy: a tiny model built in the run, 5 seeds of every algorithm (~15 min); "
                                                                          "smoke: every algorithm for one iteration; full: for a GPU")
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
    parser.add_argument("--bc-data", choices=["gold", "noisy", "noisy-calls"], default=None,
                        help="warm-start data: gold call sequences, or the noisy expert with wrong answers (and wrong calls) (preset proxy: noisy-calls)")
    parser.add_argument("--strategy", action="append", choices=["cot", "dfsdt"], default=[],
                        help="inference strategies to evaluate every model with (repeatable; preset cpu: cot; proxy and full: cot and dfsdt)")
    parser.add_argument("--dfsdt-queries", type=int, default=None, help="DFSDT: sampled actions per task at most (preset proxy: 12; full: 200)")
    parser.add_argument("--kw", action="append", default=[], metavar="KEY=VALUE", help="env kwarg of the train and test envs (repeatable)")
    parser.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=None,
                        help="recompute activations in every training stage's backward pass (preset cpu: on)")
    add_mmap_threshold_argument(parser, "preset cpu: 4")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    overrides: dict[str, Any] = {k: v for k, v in vars(args).items()
                                 if k in ("samples", "bc_steps", "eval_episodes", "episodes_per_iteration", "demos", "model", "train_env", "test_env",
                                          "temperature", "lr", "max_new_tokens", "setting", "bc_data")
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
        if preset.proxy and "model" in overrides:
            raise ValueError("--model cannot be used with --preset proxy: the proxy builds its own tiny model (benchmarks.proxy)")
        if not preset.proxy:
            check_model_name(overrides.get("model", preset.model))
        check_mmap_threshold(args.mmap_threshold_mb)
        check_out_dir(args.out, "--out")
    except (ValueError, FileNotFoundError) as e:
        usage_error(parser, str(e))
    if args.kw or args.protocol:
        overrides["env_kwargs"] = env_kwargs
    if args.steptool_weights:
        overrides["useless_call_cost"] = False
    if args.algorithm:
        overrides["algorithms"] = tuple(args.algorithm)
    if args.strategy:
        overrides["strategies"] = tuple(dict.fromkeys(["cot", *args.strategy]))  # CoT is the table's main column
    if args.gradient_checkpointing is not None:
        overrides["gradient_checkpointing"] = args.gradient_checkpointing
    if args.mmap_threshold_mb is not None:
        overrides["mmap_threshold_mb"] = args.mmap_threshold_mb
    if args.dfsdt_queries is not None:
        if args.dfsdt_queries < 1:
            usage_error(parser, f"Expected --dfsdt-queries >= 1, got {args.dfsdt_queries}.")
        overrides["dfsdt_queries"] = args.dfsdt_queries
    if args.seeds:
        overrides["seeds"] = tuple(range(args.seeds))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    results = run_steptool(replace(PRESETS[args.preset], **overrides), args.out)
    print(format_steptool_table(results))
    total = sum(results["seconds"].values())
    print(f"\n{total / 60:.1f} min; wrote results.json, steptool_table.md and steptool.png to {args.out}")
    return 0
