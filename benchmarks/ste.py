"""``toolenv bench ste``: STE end to end — explore, filter, paraphrase, then ICL vs fine-tuning vs no replay.

Simulated trial and error (Wang et al. 2024) on the APIs of a few rounds:

1. **explore** every API with the explorer model (imagined queries, ReAct trials against the real
   tool, reflection, long- and short-term memory) — ``trials.jsonl``;
2. **filter** the trials with the rule checks (and a judge model with ``--judge``) — ``kept.jsonl``;
3. **paraphrase** the kept queries towards the per-API target — ``paraphrased.jsonl``;
4. **build** the fine-tuning examples (chat, real tool outputs) — ``examples.jsonl``;
5. evaluate on held-out queries with ground truth (STE's well-formed / API match / correct % on the
   first action, plus end-to-end success on multi-step APIChain tasks that use the explored APIs):
   - **base**: the model as it is;
   - **ICL**: the base model with the nearest explored examples (BM25) in its prompt;
   - **FT**: continual fine-tuning, round by round, with replay of earlier rounds;
   - **FT, no replay**: the same without replay, to show forgetting.

Everything is kept under ``{out}`` and each stage is skipped when its output exists, so an
interrupted benchmark continues where it stopped. Prints one table, writes ``results.json``,
``ste_table.md`` and ``ste.png``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from agents.config import usage_error
from toolenv.cli import ArgumentParser

__all__ = ["PRESETS", "STEPreset", "format_ste_table", "main", "plot_ste", "run_ste"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class STEPreset:
    """Sizes of one benchmark run."""

    explorer: str = "smollm2-135m"
    model: str = "smollm2-135m"  # the model evaluated, given demonstrations and fine-tuned
    # APIs arrive in rounds (continual learning); level-1 APIChain tasks need exactly these four
    rounds: tuple[tuple[str, ...], ...] = (("apichain:find_employee", "apichain:get_department"),
                                           ("apichain:get_city", "apichain:get_weather"))
    num_episodes: int = 6  # per API and memory slot: 48 trials over the four APIs
    num_stm_slots: int = 2
    temperature: float = 0.7  # of queries and actions; a 135M explorer writes fewer broken calls than at 1.0
    max_turn: int = 2
    query_max_tokens: int = 40
    action_max_tokens: int = 64
    guided: bool = True  # a 135M explorer writes no well-formed ReAct action unguided (see `toolenv ste explore --guided`)
    judge: bool = False  # ask the explorer whether each kept trial fulfils its query
    paraphrase_target: int = 24  # examples per API after paraphrasing (STE: 150)
    ft_steps: int = 16  # bc steps per continual-learning round
    ft_batch_size: int = 4
    lr: float = 3e-4
    lora_r: int = 16
    replay: float = 0.1
    tests_per_api: int = 25  # 100 held-out first-action queries over the four APIs
    e2e_tests: int = 30
    e2e_max_turns: int = 4  # level-1 tasks take three actions
    icl_k: int = 2
    icl_layout: str = "chat"  # demonstrations as earlier chat turns, which a small model follows better than a long system prompt
    max_new_tokens: int = 64
    batch_size: int = 32


PRESETS: dict[str, STEPreset] = {
    "cpu": STEPreset(),
    # a GPU and a 7B-class explorer / learner, STE's sizes
    "full": STEPreset(explorer="mistralai/Mistral-7B-Instruct-v0.2", model="mistralai/Mistral-7B-Instruct-v0.2",
                      rounds=(("apichain:find_employee", "apichain:get_department", "apichain:get_city"),
                              ("apichain:get_country", "apichain:get_weather", "apichain:get_exchange_rate"),
                              ("apichain:lookup_product", "apichain:convert_units", "apichain:get_distance", "calculator")),
                      num_episodes=15, num_stm_slots=4, max_turn=4, query_max_tokens=96, action_max_tokens=192, guided=False, judge=True,
                      paraphrase_target=150, ft_steps=500, ft_batch_size=32, lr=2e-4, lora_r=64, tests_per_api=50, e2e_tests=200, e2e_max_turns=8,
                      icl_k=8, max_new_tokens=192, batch_size=64),
}

SYSTEMS = ("base", "icl", "ft", "ft-no-replay")


def _cached(path: Path, compute: Any) -> Any:
    if path.exists():
        return json.loads(path.read_text())
    value = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2))
    return value


def _api_name(spec: str) -> str:
    return spec.split(":", 1)[-1].split(".")[-1]


def run_ste(preset: STEPreset, out: str | Path, *, explorer: Any = None) -> dict[str, Any]:
    """Run the benchmark; returns the results written to ``{out}/results.json``.

    ``explorer`` is a :class:`~agents.ste.chat.ChatModel` to explore, judge and paraphrase with
    instead of loading ``preset.explorer`` (tests pass a scripted one).
    """
    from agents.policy import Policy
    from agents.ste.chat import LocalChatModel
    from agents.ste.continual import ContinualConfig, continual_learning
    from agents.ste.evaluate import evaluate_calls, evaluate_end_to_end
    from agents.ste.exploit import build_examples, filter_trials, paraphrase_trials, read_jsonl, write_jsonl
    from agents.ste.explore import ExploreConfig, explore, load_trials
    from agents.ste.retrieval import Retriever
    from toolenv.datasets.ste import apichain_call_tests
    from toolenv.tools.pool import api_pool

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    specs = [s for r in preset.rounds for s in r]
    pool = api_pool(specs)

    def explorer_model() -> Any:
        nonlocal explorer
        if explorer is None:
            explorer = LocalChatModel(Policy.load(preset.explorer), batch_size=preset.batch_size)
        return explorer

    # 1. explore every API (explore() resumes an interrupted trials file by itself)
    start = time.perf_counter()
    trials_file = out / "trials.jsonl"
    expected = len(specs) * preset.num_episodes * preset.num_stm_slots
    if not trials_file.exists() or len(load_trials(trials_file)) < expected:
        explore(ExploreConfig(apis=specs, model=preset.explorer, out=str(trials_file), num_episodes=preset.num_episodes,
                              num_stm_slots=preset.num_stm_slots, max_turn=preset.max_turn, batch_size=preset.batch_size,
                              query_max_tokens=preset.query_max_tokens, action_max_tokens=preset.action_max_tokens,
                              guided=preset.guided, temperature=preset.temperature),
                model=explorer_model())
    trials = load_trials(trials_file)
    seconds["explore"] = time.perf_counter() - start

    # 2. filter: rule checks, then the judge when asked
    start = time.perf_counter()
    kept_file, report_file = out / "kept.jsonl", out / "filter_report.json"
    if not kept_file.exists():
        kept, report = filter_trials(trials, pool, judge=explorer_model() if preset.judge else None)
        write_jsonl(kept_file, kept)
        report_file.write_text(json.dumps(report, indent=2))
    kept = read_jsonl(kept_file)
    report = json.loads(report_file.read_text())

    # 3. paraphrase the kept queries towards the per-API target, 4. build the chat examples
    para_file = out / "paraphrased.jsonl"
    if not para_file.exists():
        write_jsonl(para_file, paraphrase_trials(kept, explorer_model(), target=preset.paraphrase_target) if kept else [])
    paraphrased = read_jsonl(para_file)
    examples_file = out / "examples.jsonl"
    if not examples_file.exists():
        write_jsonl(examples_file, build_examples(kept + paraphrased, pool))
    examples = read_jsonl(examples_file)
    seconds["filter+paraphrase+build"] = time.perf_counter() - start
    explorer = None  # free the explorer's memory before evaluation and fine-tuning

    # 5. held-out tests: single-API queries per round, and multi-step tasks for end-to-end success
    tests = [apichain_call_tests(preset.tests_per_api, apis=list(r), multi_step=0) for r in preset.rounds]
    all_tests = [t for r in tests for t in r]
    e2e = [t for t in apichain_call_tests(0, apis=specs, multi_step=preset.e2e_tests) if t.env_id is not None]

    results: dict[str, Any] = {"preset": asdict(preset), "filter": report, "trials": len(trials), "kept": len(kept),
                               "paraphrased": len(paraphrased), "examples": len(examples),
                               "examples_per_api": {_api_name(s): sum(e.get("api") == _api_name(s) for e in examples) for s in specs},
                               "systems": {}, "continual": {}, "seconds": seconds}

    def evaluate(model_dir: str, name: str, *, icl: bool = False) -> dict[str, Any]:
        def compute() -> dict[str, Any]:
            chat = LocalChatModel(Policy.load(model_dir), batch_size=preset.batch_size)
            retriever = Retriever(examples) if icl and examples else None
            demos = (lambda q: retriever.nearest(q, preset.icl_k)) if retriever is not None else None
            calls = evaluate_calls(chat, all_tests, demonstrations=demos, max_new_tokens=preset.max_new_tokens, layout=preset.icl_layout)
            e2e_out = evaluate_end_to_end(chat, e2e, demonstrations=demos, max_new_tokens=preset.max_new_tokens,
                                          max_turns=preset.e2e_max_turns, layout=preset.icl_layout)
            outcomes = {m: [float(r[m]) for r in calls["results"]] for m in ("well_formed", "api_match", "correct")}
            outcomes["e2e"] = [float(e["success"]) for e in e2e_out["episodes"]]
            return {"metrics": calls["metrics"], "per_api": calls["per_api"], "e2e": {"success": e2e_out["success"], "n": e2e_out["n"]},
                    "outcomes": outcomes}

        start = time.perf_counter()
        value = _cached(out / "eval" / f"{name}.json", compute)
        seconds[f"eval {name}"] = time.perf_counter() - start
        return value

    # 6. base and ICL
    results["systems"]["base"] = evaluate(preset.model, "base")
    results["systems"]["icl"] = evaluate(preset.model, "icl", icl=True)

    # 7. continual fine-tuning with and without replay (round 1 is the same run: no earlier rounds)
    rounds_data = [[e for e in examples if e.get("api") in {_api_name(s) for s in r}] for r in preset.rounds]
    if any(not r for r in rounds_data):
        empty = [i + 1 for i, r in enumerate(rounds_data) if not r]
        logger.warning("Rounds %s have no explored examples: no fine-tuning (the table reports base and ICL)", empty)
    else:
        for system, replay in (("ft", preset.replay), ("ft-no-replay", 0.0)):
            start = time.perf_counter()
            cl_out = out / system
            if system == "ft-no-replay" and not (cl_out / "round1").exists() and (out / "ft" / "round1" / "model").exists():
                shutil.copytree(out / "ft" / "round1", cl_out / "round1")
            cfg = ContinualConfig(model=preset.model, out=str(cl_out), replay=replay, steps=preset.ft_steps,
                                  batch_size=preset.ft_batch_size, lr=preset.lr, lora_r=preset.lora_r)
            cl = continual_learning(cfg, rounds_data, tests,
                                    evaluate=lambda m, ts: evaluate_calls(LocalChatModel(Policy.load(m), batch_size=preset.batch_size), ts,
                                                                          max_new_tokens=preset.max_new_tokens))
            results["continual"][system] = [{"round": r["round"], "per_round": [m["correct"] for m in r["per_round"]],
                                             "seen": r["seen"]} for r in cl["rounds"]]
            seconds[f"train {system}"] = time.perf_counter() - start
            results["systems"][system] = evaluate(cl["rounds"][-1]["model"], system)

    # 8. intervals, paired comparisons and STE's claims; the table and the plot
    results["analysis"] = analyse_ste(results)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "ste_table.md").write_text(format_ste_table(results) + "\n")
    plot_ste(results, out / "ste.png")
    return results


METRICS = ("well_formed", "api_match", "correct", "e2e")


def analyse_ste(results: dict[str, Any]) -> dict[str, Any]:
    """95 % intervals per system and metric, paired comparisons on the same queries and tasks, and STE's claims."""
    from benchmarks.stats import bootstrap_ci, claim_line, compare

    systems = {n: s["outcomes"] for n, s in results["systems"].items() if "outcomes" in s}
    cells = {n: {m: list(bootstrap_ci(o[m])) if o[m] else [float("nan")] * 3 for m in METRICS} for n, o in systems.items()}
    comparisons, claims = [], []
    claim_text = {("icl", "base"): "In-context examples from exploration improve tool use over the base model",
                  ("ft", "base"): "Fine-tuning on explored examples improves tool use over the base model",
                  ("ft", "icl"): "Fine-tuning beats in-context learning with the same examples",
                  ("ft", "ft-no-replay"): "Replay of earlier rounds helps continual learning"}
    for a, b in claim_text:
        if a in systems and b in systems:
            for m in ("correct", "e2e"):
                if systems[a][m] and len(systems[a][m]) == len(systems[b][m]):
                    c = compare(systems[a][m], systems[b][m], names=(a, b))
                    comparisons.append({"metric": m, **c.as_dict()})
                    if m == "correct":
                        claims.append(claim_line(claim_text[(a, b)] + " (first-action correctness)", c, source="STE, Tables 2 and 4"))
    return {"cells": cells, "comparisons": comparisons, "claims": claims}


def format_ste_table(results: dict[str, Any]) -> str:
    """One row per system (STE's metrics with 95 % intervals), comparisons, claims, the filter counts and the continual-learning rounds."""
    from benchmarks.stats import COMPARISON_HEADER, Comparison, format_ci, format_comparison

    cells = (results.get("analysis") or {}).get("cells", {})
    lines = ["| system | well-formed % | API match % | correct % | end-to-end success % |", "|---|---:|---:|---:|---:|"]
    for name in SYSTEMS:
        if name in results["systems"]:
            s = results["systems"][name]
            m = s["metrics"]
            if name in cells:
                lines.append(f"| {name} | " + " | ".join(format_ci(*cells[name][k]) for k in METRICS) + " |")
            else:
                lines.append(f"| {name} | {m['well_formed']:.1f} | {m['api_match']:.1f} | {m['correct']:.1f} | {s['e2e']['success']:.1f} |")
    analysis = results.get("analysis") or {}
    if analysis.get("comparisons"):
        lines += ["", COMPARISON_HEADER.replace("| comparison |", "| comparison (metric) |")]
        for c in analysis["comparisons"]:
            lines.append(format_comparison(Comparison.from_dict(c), label=c["metric"]))
        lines += ["", "STE's claims at 95 % confidence:", *analysis["claims"]]
    p = results["preset"]
    n_tests = next(iter(results["systems"].values()))["metrics"]["n"] if results["systems"] else 0
    e2e_n = next(iter(results["systems"].values()))["e2e"]["n"] if results["systems"] else 0
    lines += ["", f"{int(n_tests)} held-out first-action queries over {sum(len(r) for r in p['rounds'])} APIs; "
              f"{int(e2e_n)} multi-step APIChain tasks end to end; model {p['model']}, explorer {p['explorer']}. "
              "Intervals: bootstrap over queries (tasks); comparisons paired on the same queries.", ""]
    lines.append(f"Exploration: {results['trials']} trials -> " + " -> ".join(f"{k} {v}" for k, v in results["filter"].items())
                 + f"; +{results['paraphrased']} paraphrases; {results['examples']} fine-tuning examples "
                 + "(" + ", ".join(f"{k} {v}" for k, v in results["examples_per_api"].items()) + ").")
    if results["continual"]:
        rounds = len(p["rounds"])
        lines += ["", "| continual learning | " + " | ".join(f"after round {r + 1}: " + ", ".join(f"R{j + 1}" for j in range(r + 1))
                                                          for r in range(rounds)) + " |",
                  "|---|" + "---|" * rounds]
        for system, recs in results["continual"].items():
            cells = [" / ".join(f"{c:.1f}" for c in rec["per_round"]) for rec in recs]
            lines.append(f"| {system} (correct %) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_ste(results: dict[str, Any], path: str | Path) -> Path:
    """Left: STE's metrics per system. Right: correct % on each round's APIs after each round."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    names = [n for n in SYSTEMS if n in results["systems"]]
    metrics = ("well_formed", "api_match", "correct")
    width = 0.8 / (len(metrics) + 1)
    x = np.arange(len(names))
    for k, metric in enumerate(metrics):
        ax.bar(x + k * width, [results["systems"][n]["metrics"][metric] for n in names], width, label=metric.replace("_", " "))
    ax.bar(x + len(metrics) * width, [results["systems"][n]["e2e"]["success"] for n in names], width, label="end-to-end")
    ax.set_xticks(x + 1.5 * width, names)
    ax.set_ylabel("%")
    ax.set_ylim(0, 102)
    ax.set_title("STE on held-out queries")
    ax.legend(fontsize=8)
    for k, (system, recs) in enumerate(results["continual"].items()):
        rounds = len(recs)
        for j in range(rounds):
            ys = [rec["per_round"][j] for rec in recs[j:]]
            ax2.plot(range(j + 1, rounds + 1), ys, marker="o", color=f"C{j}", linestyle="-" if k == 0 else "--",
                     label=f"round-{j + 1} APIs, {system}")
    ax2.set_xlabel("after round")
    ax2.set_ylabel("correct %")
    ax2.set_ylim(-2, 102)
    ax2.set_title("Continual learning: replay vs none")
    if results["continual"]:
        ax2.set_xticks(range(1, len(next(iter(results["continual"].values()))) + 1))
        ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def main(argv: Sequence[str] | None = None) -> int:
    """``toolenv bench ste [--preset cpu|full] [--out DIR] ...``: run and print the table."""
    import argparse

    parser = ArgumentParser(prog="toolenv bench ste", description=__doc__.strip().splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu", help="cpu: ~30 min on 2 cores; full: a GPU and a 7B model")
    parser.add_argument("--out", default="runs/ste", help="output directory (an interrupted run continues here)")
    parser.add_argument("--explorer", default=None, help="explorer model (default: the preset's)")
    parser.add_argument("--model", default=None, help="model to evaluate and fine-tune (default: the preset's)")
    parser.add_argument("--judge", action=argparse.BooleanOptionalAction, default=None, help="filter with the explorer as judge")
    parser.add_argument("--guided", action=argparse.BooleanOptionalAction, default=None, help="guided exploration (preset cpu: on)")
    for name in ("num_episodes", "num_stm_slots", "max_turn", "paraphrase_target", "ft_steps", "tests_per_api", "e2e_tests", "icl_k"):
        parser.add_argument("--" + name.replace("_", "-"), type=int, default=None, help=f"override the preset's {name}")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    overrides = {k: v for k, v in vars(args).items() if k not in ("preset", "out") and v is not None}
    preset = replace(PRESETS[args.preset], **overrides)
    for name in ("num_episodes", "num_stm_slots", "max_turn", "paraphrase_target", "ft_steps", "tests_per_api", "icl_k"):
        if getattr(preset, name) < 1:
            usage_error(parser, f"expected --{name.replace('_', '-')} >= 1, got {getattr(preset, name)}")
    try:  # before the explorer loads
        from agents.config import check_out_dir
        from agents.policy import check_model_name

        for name in ("explorer", "model"):
            check_model_name(getattr(preset, name))
        check_out_dir(args.out, "--out")
    except (ValueError, FileNotFoundError) as e:
        usage_error(parser, str(e))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    start = time.perf_counter()
    results = run_ste(preset, args.out)
    print(format_ste_table(results))
    print(f"\n{(time.perf_counter() - start) / 60:.1f} min; wrote results.json, ste_table.md and ste.png to {args.out}")
    return 0
