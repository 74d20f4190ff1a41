"""Evaluation: a policy plays held-out tasks greedily; accuracy and tool-use metrics per env.

Every model is scored on exactly the same tasks: the first ``episodes`` tasks of each env's
split in file order (``reset(options={"index": i})``), decoded greedily, so two runs of one
model give the same numbers and two models can be compared row by row.

From the command line::

    toolenv eval --model smollm2-135m --env toolenv/Math-Test-v0 --episodes 100 --out eval/smollm2

From Python::

    metrics = evaluate(policy, ["toolenv/Math-Test-v0"], episodes=100, out_dir="eval/smollm2")

Reading the outputs. ``--out DIR`` (``out_dir=``) receives:

- ``metrics.md``: the table the CLI prints, one row per env. Start here.
- ``metrics.json``: ``{env_id: {metric: value}}``, for scripts and for comparing runs.
- ``run.json``: what was evaluated: model, episodes, generation settings, env kwargs, time.
- ``metrics.png``: bars of accuracy and the three tool-use rates per env.
- ``trajectories.jsonl``: every episode (tokens, decoded ``actions``, rewards, infos), one JSON
  object per line; ``agents.rollout.load_trajectories`` reads it back. Look here for *why*
  a model fails: its actions and the env's ``infos[k]["action_kind"]`` / ``"error"``.
- ``runs/<name>/``: TensorBoard scalars ``eval/<env_id>/<metric>``
  (``tensorboard --logdir DIR/runs``). During training, pass the trainer's ``writer`` and
  ``step`` instead and the scalars land in the training run.

The metrics (:data:`EVAL_METRICS`, all per env):

- ``accuracy``: share of episodes solved (TRICE: the answer's number equals the gold answer
  after rounding to 2 decimals; the env decides this as ``info["success"]``).
- ``tool_use_rate``: share of episodes with at least one tool call.
- ``call_wellformed_rate``: among actions that were not final answers (tool calls and
  malformed actions), the share whose calls parsed, named real tools and bound their arguments.
- ``call_success_rate``: among tool-call actions, the share whose calls all ran without error.
- ``mean_turns``: actions per episode; ``mean_tokens``: model-generated tokens per episode.
- ``episodes``: how many episodes were played.

Extra keys: ``mean_reward`` (return per episode), ``reward/<term>`` (each reward term
summed over the episode, averaged over episodes) and, where tasks have gold solutions,
``gold_api_recall`` (StepTool's recall: the share of a task's gold APIs the episode called,
averaged over episodes); with ``--strategy dfsdt``, ``search_queries`` (actions sampled per
task) and ``search_answered_rate`` (searches that reached a final answer within the budget).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import gymnasium as gym

import toolenv  # registers the toolenv/... ids
from agents.policy import Policy
from agents.rollout import GenerationSettings, Generator, Trajectory, rollout, save_trajectories

__all__ = [
    "EVAL_METRICS",
    "episode_metrics",
    "evaluate",
    "evaluate_model",
    "format_metrics_table",
    "main",
    "make_eval_env",
]

logger = logging.getLogger(__name__)

#: The metrics every evaluation reports, per env.
EVAL_METRICS = (
    "accuracy",
    "tool_use_rate",
    "call_wellformed_rate",
    "call_success_rate",
    "mean_turns",
    "mean_tokens",
    "episodes",
)

#: Metrics that are shares in [0, 1]: the bars of ``metrics.png``.
RATE_METRICS = ("accuracy", "tool_use_rate", "call_wellformed_rate", "call_success_rate")


def _share(hits: float, total: float) -> float:
    return hits / total if total else 0.0


def _gold_api_recall(t: Trajectory) -> float | None:
    """StepTool's recall: the share of the task's gold APIs (distinct names) the episode called; ``None`` without a gold solution."""
    gold = {c.get("name") for c in (t.task.get("solution") or []) if isinstance(c, dict)}
    gold.discard(None)
    if not gold:
        return None
    called = {c.get("name") for info in t.infos for c in (info.get("calls") or []) if isinstance(c, dict)}
    return len(gold & called) / len(gold)


def episode_metrics(trajectories: Sequence[Trajectory]) -> dict[str, float]:
    """Accuracy and tool-use metrics of finished episodes (a pure function).

    Args:
        trajectories: Episodes from :func:`agents.rollout.rollout` (or loaded from JSONL).

    Returns:
        The keys of :data:`EVAL_METRICS`, plus ``mean_reward`` and ``reward/<term>`` for each
        reward term seen (the term summed over each episode, averaged over episodes).
        A rate or mean with nothing to average over is reported as ``0.0``, not NaN:
        ``call_wellformed_rate`` when no action was a call or malformed, ``call_success_rate``
        when no action was a call, and every key (``episodes`` = 0) for an empty input.

    >>> t = Trajectory(env_id="e", task={}, action_mask=[0, 1, 1], rewards=[1.0],
    ...                reward_terms=[{"answer_correct": 1.0}],
    ...                infos=[{"action_kind": "answer", "success": True, "tool_used": False,
    ...                        "reward_raw": {"call_wellformed": 0.0, "call_succeeded": 0.0}}],
    ...                actions=["42"])
    >>> m = episode_metrics([t])
    >>> m["accuracy"], m["tool_use_rate"], m["call_wellformed_rate"], m["mean_tokens"], m["episodes"]
    (1.0, 0.0, 0.0, 2.0, 1.0)
    """
    n = len(trajectories)
    attempted = wellformed = calls = succeeded = 0
    for t in trajectories:
        for info in t.infos:
            kind = info.get("action_kind")
            raw = info.get("reward_raw") or {}
            if kind in ("call", "invalid"):
                attempted += 1
                wellformed += raw.get("call_wellformed", 0.0) == 1.0
            if kind == "call":
                calls += 1
                succeeded += raw.get("call_succeeded", 0.0) == 1.0
    metrics: dict[str, float] = {
        "accuracy": _share(sum(t.success for t in trajectories), n),
        "tool_use_rate": _share(sum(bool(t.infos and t.infos[-1].get("tool_used")) for t in trajectories), n),
        "call_wellformed_rate": _share(wellformed, attempted),
        "call_success_rate": _share(succeeded, calls),
        "mean_turns": _share(sum(len(t.actions) for t in trajectories), n),
        "mean_tokens": _share(sum(t.num_model_tokens for t in trajectories), n),
        "episodes": float(n),
        "mean_reward": _share(sum(t.total_reward for t in trajectories), n),
    }
    recalls = [_gold_api_recall(t) for t in trajectories]
    recalls = [r for r in recalls if r is not None]
    if recalls:
        metrics["gold_api_recall"] = sum(recalls) / len(recalls)
    searches = [t.infos[-1]["search"] for t in trajectories if t.infos and isinstance(t.infos[-1].get("search"), dict)]
    if searches:  # DFSDT (agents.search): actions sampled per task, and how many searches reached an answer
        metrics["search_queries"] = sum(s["queries"] for s in searches) / len(searches)
        metrics["search_answered_rate"] = sum(bool(s["answered"]) for s in searches) / len(searches)
    terms = sorted({k for t in trajectories for step in t.reward_terms for k in step})
    for term in terms:
        total = sum(step.get(term, 0.0) for t in trajectories for step in t.reward_terms)
        metrics[f"reward/{term}"] = total / n
    return metrics


def make_eval_env(env_id: str, env_kwargs: dict[str, Any] | None = None) -> gym.Env:
    """``gym.make(env_id, **env_kwargs)``, with a "Did you mean …?" for an unknown id.

    Raises:
        ValueError: ``env_id`` is not registered.
        FileNotFoundError: the env's dataset is missing (the message names the setting and path).
    """
    if env_id not in gym.registry:
        from toolenv.tools.base import did_you_mean

        raise ValueError(f"Unknown env id {env_id!r}.{did_you_mean(env_id, toolenv.ENV_INFO)} See `toolenv list`.")
    return gym.make(env_id, **(env_kwargs or {}))


def _num_tasks(env: gym.Env) -> int:
    tasks = getattr(env.unwrapped, "tasks", None)
    if tasks is None:
        raise TypeError(f"Expected a toolenv env with a task set, got {type(env.unwrapped).__name__}.")
    return len(tasks)


def evaluate(
    policy: Policy,
    env_ids: Sequence[str],
    *,
    episodes: int = 100,
    batch_size: int = 16,
    settings: GenerationSettings | None = None,
    env_kwargs: dict[str, Any] | None = None,
    out_dir: str | Path | None = None,
    generator: Generator | None = None,
    progress: bool = True,
    step: int = 0,
    writer: Any = None,
    model_name: str | None = None,
    strategy: str = "cot",
    search: Any = None,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Play the first ``episodes`` tasks of each env greedily and report :func:`episode_metrics`.

    Args:
        policy: The model to evaluate.
        env_ids: Registered ids, e.g. ``["toolenv/Math-Test-v0"]``.
        episodes: Tasks per env: the first ``min(episodes, len(split))`` in file order.
        batch_size: Episodes played at once.
        settings: Generation settings (default: greedy, 96 new tokens per action).
        env_kwargs: Keyword arguments of every ``gym.make`` (``protocol=``, ``data_dir=``, ...).
        out_dir: Where to write the files the module docstring lists; ``None`` writes nothing.
        generator: Generation backend for :func:`agents.rollout.rollout` (default: ``HFGenerator``).
        progress: Show a progress bar per env.
        step: Global step of the TensorBoard scalars.
        writer: A ``SummaryWriter`` to log to (not closed here). Without one, a writer under
            ``out_dir/runs/<name>`` is made when ``out_dir`` is given.
        model_name: What the report calls the model (default: the policy's base model).
        strategy: ``"cot"``: one rollout per task (StepTool's CoT); ``"dfsdt"``: a depth-first
            search decision tree per task (:func:`agents.search.dfsdt`), sampling at
            ``settings.temperature``, with its result's ``search`` record in the last info.
        search: :class:`agents.search.DFSDTSettings` for ``"dfsdt"`` (width, query budget).
        seed: Seeds sampling per batch (DFSDT, or sampled settings), so a rerun gives the same episodes.

    Returns:
        ``{env_id: metrics}`` in the order of ``env_ids``.
    """
    from tqdm.auto import tqdm

    if episodes < 1:
        raise ValueError(f"Expected episodes >= 1, got {episodes}.")
    if batch_size < 1:
        raise ValueError(f"Expected batch_size >= 1, got {batch_size}.")
    if strategy not in ("cot", "dfsdt"):
        raise ValueError(f"Expected strategy to be one of ['cot', 'dfsdt'], got {strategy!r}.")
    if strategy == "dfsdt":
        from agents.search import DFSDTSettings, dfsdt

        search = search or DFSDTSettings()
        settings = settings or GenerationSettings(temperature=1.0, max_new_tokens=96)
        if settings.greedy:
            raise ValueError("DFSDT samples its candidate actions: expected settings with greedy=False (a temperature).")
    settings = settings or GenerationSettings(greedy=True, max_new_tokens=96)
    results: dict[str, dict[str, float]] = {}
    all_trajectories: list[Trajectory] = []
    for env_id in env_ids:
        first = make_eval_env(env_id, env_kwargs)
        n = min(episodes, _num_tasks(first))
        envs = [first] + [make_eval_env(env_id, env_kwargs) for _ in range(min(batch_size, n) - 1)]
        trajectories: list[Trajectory] = []
        with tqdm(total=n, desc=env_id, unit="ep", disable=not progress) as bar:
            for start in range(0, n, batch_size):
                indices = list(range(start, min(start + batch_size, n)))
                if not settings.greedy:
                    import torch

                    torch.manual_seed(seed * 1_000_003 + start)
                play = functools.partial(dfsdt, search=search) if strategy == "dfsdt" else rollout
                batch = play(
                    policy, envs[: len(indices)], settings=settings, options=[{"index": i} for i in indices],
                    env_ids=[env_id] * len(indices), generator=generator,
                )
                trajectories.extend(batch)
                bar.update(len(indices))
                bar.set_postfix(acc=f"{episode_metrics(trajectories)['accuracy']:.3f}")
        for env in envs:
            env.close()
        results[env_id] = episode_metrics(trajectories)
        all_trajectories.extend(trajectories)
        m = results[env_id]
        logger.info("%s: accuracy %.3f, tool use %.3f over %d episodes", env_id, m["accuracy"], m["tool_use_rate"], n)

    meta = {
        "model": model_name or policy.base_name,
        "base_model": policy.base_name,
        "episodes": episodes,
        "batch_size": batch_size,
        "settings": asdict(settings),
        "strategy": strategy,
        **({"search": asdict(search), "seed": seed} if strategy == "dfsdt" else {}),
        "env_kwargs": env_kwargs or {},
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    own_writer = None
    if writer is None and out_dir is not None:
        from torch.utils.tensorboard import SummaryWriter

        own_writer = SummaryWriter(str(Path(out_dir) / "runs" / _run_name(meta["model"])))
    tb = writer if writer is not None else own_writer
    if tb is not None:
        _log_tensorboard(tb, results, meta, step)
    if own_writer is not None:
        own_writer.close()
    if out_dir is not None:
        _write_outputs(Path(out_dir), results, meta, all_trajectories)
    return results


def _run_name(model: str) -> str:
    name = Path(model.rstrip("/")).name or "model"
    return f"eval__{name}__{int(time.time())}"


def _log_tensorboard(writer: Any, results: dict[str, dict[str, float]], meta: dict[str, Any], step: int) -> None:
    for env_id, metrics in results.items():
        for key, value in metrics.items():
            writer.add_scalar(f"eval/{env_id}/{key}", value, step)
    rows = "\n".join(f"|{k}|{json.dumps(v, default=repr)}|" for k, v in meta.items())
    writer.add_text("eval/settings", f"|param|value|\n|-|-|\n{rows}", step)
    writer.add_text("eval/metrics", format_metrics_table(results), step)
    writer.flush()


def _write_outputs(out: Path, results: dict[str, dict[str, float]], meta: dict[str, Any], trajectories: list[Trajectory]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "run.json").write_text(json.dumps(meta, indent=2, default=repr) + "\n")
    title = f"# Evaluation of {meta['model'] or 'a model'}\n\nGreedy decoding; first {meta['episodes']} tasks of each env.\n\n"
    (out / "metrics.md").write_text(title + format_metrics_table(results) + "\n")
    plot_metrics(results, out / "metrics.png", title=f"{Path(str(meta['model'])).name or 'model'}: evaluation")
    save_trajectories(out / "trajectories.jsonl", trajectories)
    logger.info("Wrote metrics.md, metrics.json, run.json, metrics.png and trajectories.jsonl to %s", out)


def plot_metrics(results: dict[str, dict[str, float]], path: str | Path, *, title: str = "Evaluation") -> Path:
    """A bar chart of the rate metrics per env (Agg backend; no display needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    env_ids = list(results)
    labels = {"accuracy": "accuracy", "tool_use_rate": "tool use", "call_wellformed_rate": "well-formed calls",
              "call_success_rate": "successful calls"}
    width = 0.8 / len(RATE_METRICS)
    fig = Figure(figsize=(max(6.0, 1.8 * len(env_ids) + 3), 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for k, metric in enumerate(RATE_METRICS):
        xs = [i + (k - (len(RATE_METRICS) - 1) / 2) * width for i in range(len(env_ids))]
        values = [results[e].get(metric, math.nan) for e in env_ids]
        bars = ax.bar(xs, values, width, label=labels[metric])
        ax.bar_label(bars, fmt="%.2f", fontsize=8, padding=1)
    ax.set_xticks(range(len(env_ids)), [e.removeprefix("toolenv/") for e in env_ids],
                  rotation=20 if len(env_ids) > 3 else 0)
    ax.set_ylim(0, 1.12)
    ax.set_ylabel("share")
    ax.set_title(title)
    ax.legend(loc="upper left", ncols=len(RATE_METRICS), fontsize=8, frameon=False)
    ax.grid(axis="y", alpha=0.3)
    p = Path(path)
    fig.savefig(p, dpi=120)
    return p


def format_metrics_table(metrics: dict[str, dict[str, float]]) -> str:
    """A Markdown table, one row per env.

    >>> print(format_metrics_table({"toolenv/Math-v0": {"accuracy": 0.5, "tool_use_rate": 1.0,
    ...     "call_wellformed_rate": 0.75, "call_success_rate": 0.5, "mean_turns": 2.0,
    ...     "mean_tokens": 30.5, "episodes": 4.0, "mean_reward": 0.45}}))
    | env | accuracy | tool use | well-formed calls | successful calls | turns | tokens | reward | episodes |
    |---|---:|---:|---:|---:|---:|---:|---:|---:|
    | toolenv/Math-v0 | 0.500 | 1.000 | 0.750 | 0.500 | 2.00 | 30.5 | 0.450 | 4 |
    """
    header = "| env | accuracy | tool use | well-formed calls | successful calls | turns | tokens | reward | episodes |"
    lines = [header, "|---|" + "---:|" * 8]
    for env_id, m in metrics.items():
        cells = [f"{m.get(k, math.nan):.3f}" for k in RATE_METRICS]
        cells += [f"{m.get('mean_turns', math.nan):.2f}", f"{m.get('mean_tokens', math.nan):.1f}",
                  f"{m.get('mean_reward', math.nan):.3f}", f"{int(m.get('episodes', 0))}"]
        lines.append(f"| {env_id} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def evaluate_model(
    model: str,
    env_ids: Sequence[str],
    *,
    episodes: int = 100,
    out_dir: str | Path | None = None,
    batch_size: int = 16,
    max_new_tokens: int = 96,
    device: str = "auto",
    dtype: str = "auto",
    env_kwargs: dict[str, Any] | None = None,
    progress: bool = True,
    strategy: str = "cot",
    width: int = 2,
    max_queries: int = 20,
    temperature: float = 1.0,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """What ``toolenv eval`` does: check the envs, load the model (no new adapter), :func:`evaluate`.

    A bad env id, missing data, bad kwargs or a model that cannot be loaded end the program
    with a one-line message (``SystemExit``), before any model is loaded where possible.
    """
    if not env_ids:
        raise SystemExit("error: expected at least one --env ID")
    if episodes < 1 or batch_size < 1 or max_new_tokens < 1:
        raise SystemExit(
            f"error: expected --episodes, --batch-size and --max-new-tokens >= 1, got {episodes}, {batch_size}, {max_new_tokens}"
        )
    for env_id in env_ids:  # fail fast, before the model loads
        try:
            make_eval_env(env_id, env_kwargs).close()
        except (FileNotFoundError, ValueError, TypeError, gym.error.Error) as e:
            raise SystemExit(f"error: cannot make {env_id}: {_one_line(e)}") from None
    try:
        policy = Policy.load(model, device=device, dtype=dtype, trainable=False)
    except (OSError, ValueError) as e:
        raise SystemExit(f"error: cannot load model {model!r}: {_one_line(e)}") from None
    logger.info("Evaluating %s on %s", model, ", ".join(env_ids))
    search = None
    if strategy == "dfsdt":
        from agents.search import DFSDTSettings

        search = DFSDTSettings(width=width, max_queries=max_queries)
        settings = GenerationSettings(temperature=temperature, max_new_tokens=max_new_tokens)
    else:
        settings = GenerationSettings(greedy=True, max_new_tokens=max_new_tokens)
    return evaluate(policy, env_ids, episodes=episodes, batch_size=batch_size, settings=settings, env_kwargs=env_kwargs,
                    out_dir=out_dir, progress=progress, model_name=model, strategy=strategy, search=search, seed=seed)


def _one_line(e: BaseException) -> str:
    text = str(e).strip()
    if isinstance(e, KeyError) and len(e.args) == 1:
        text = str(e.args[0])
    return " ".join(line.strip() for line in text.splitlines() if line.strip())[:500] or type(e).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m agents.evaluate ARGS`` is ``toolenv eval ARGS`` (the arguments live in :mod:`toolenv.cli`)."""
    import sys

    from toolenv.cli import main as cli_main

    return cli_main(["eval", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
