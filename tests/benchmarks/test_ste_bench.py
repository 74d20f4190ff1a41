"""``toolenv bench ste`` end to end on a tiny model: explore -> filter -> paraphrase -> build -> ICL / fine-tune -> eval.

The explorer is scripted (it imagines real train-split queries and calls the API right, except for a
share of broken trials the filter must drop); the evaluated and fine-tuned model is a tiny random one.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from agents.ste.chat import ScriptedChatModel
from agents.ste.exploit import PARAPHRASE_AGAIN_PROMPT
from agents.ste.prompts import IMAGINE_SYSTEM, REFLECTION_PROMPT
from benchmarks.ste import PRESETS, format_ste_table, run_ste
from tests.agents.conftest import tiny_model_dir  # noqa: F401  (fixture)
from toolenv.datasets.ste import apichain_call_tests

ROUNDS = (("apichain:find_employee",), ("apichain:get_city",))  # level-1 "city population" tasks need exactly these
APIS = ("find_employee", "get_city")


def _explorer() -> ScriptedChatModel:
    tests = {api: apichain_call_tests(12, split="train", apis=[api], multi_step=0) for api in APIS}
    queries = {t.query: t for ts in tests.values() for t in ts}
    broken = tests["get_city"][1].query

    def reply(conv: list[dict[str, str]]) -> str:
        if conv[-1]["content"] == PARAPHRASE_AGAIN_PROMPT or "New wording" in conv[-1]["content"]:
            original = next(q for q in queries if q in conv[1]["content"])
            return f"Please tell me: {original} (version {len(conv)})"
        if conv[0]["content"] == IMAGINE_SYSTEM:  # imagine: the k-th train query of the API, k = lines of memory
            api = next(a for a in APIS if a in conv[1]["content"])
            k = conv[1]["content"].count(" | solved ") + conv[1]["content"].count("Query:")
            return tests[api][k % len(tests[api])].query
        if conv[-1]["content"] == REFLECTION_PROMPT:
            return "Yes"
        if conv[-1]["role"] == "tool":
            return "Thought: I now know the final answer.\nFinal Answer: " + conv[-1]["content"][:40]
        test = next(t for q, t in queries.items() if q in conv[1]["content"])
        if test.query == broken:  # a broken trial: the filter drops it
            return "Action: get_city\nAction Input: {oops"
        call = test.gold_call()
        return f"Thought: I should call {call.name}.\nAction: {call.name}\nAction Input: {json.dumps(dict(call.arguments))}"

    return ScriptedChatModel(reply)


@pytest.mark.slow
def test_bench_ste_runs_every_stage_and_resumes(tiny_model_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    preset = replace(PRESETS["cpu"], explorer=str(tiny_model_dir), model=str(tiny_model_dir), rounds=ROUNDS, num_episodes=2,
                     num_stm_slots=2, max_turn=2, paraphrase_target=12, ft_steps=2, ft_batch_size=2, lora_r=4, tests_per_api=3,
                     e2e_tests=2, icl_k=1, max_new_tokens=8, batch_size=8, guided=False)
    explorer = _explorer()
    results = run_ste(preset, tmp_path / "ste", explorer=explorer)
    assert results["trials"] == 2 * 2 * 2
    assert 0 < results["kept"] < results["trials"]
    assert results["filter"]["trials"] == 8 and results["filter"]["final_answer"] == results["kept"]
    assert results["paraphrased"] > 0 and results["examples"] == results["kept"] + results["paraphrased"]
    assert set(results["systems"]) == {"base", "icl", "ft", "ft-no-replay"}
    for system in results["systems"].values():
        assert system["metrics"]["n"] == 6 and 0 <= system["metrics"]["correct"] <= 100
        assert system["e2e"]["n"] >= 1
    # continual learning: two rounds, the second evaluated on both rounds' tests
    for recs in results["continual"].values():
        assert [len(r["per_round"]) for r in recs] == [1, 2]
    replayed = [json.loads(x) for x in (tmp_path / "ste" / "ft" / "round2" / "train.jsonl").read_text().splitlines()]
    alone = [json.loads(x) for x in (tmp_path / "ste" / "ft-no-replay" / "round2" / "train.jsonl").read_text().splitlines()]
    assert {e["api"] for e in replayed} == set(APIS) and {e["api"] for e in alone} == {"get_city"}
    table = format_ste_table(results)
    for row in ("| base |", "| icl |", "| ft |", "| ft-no-replay |", "continual learning", "| icl − base (correct) | 6 |",
                "STE's claims at 95 % confidence:", "Replay of earlier rounds helps continual learning"):
        assert row in table
    for system, cells in results["analysis"]["cells"].items():  # a mean and its interval per metric, from the per-query outcomes
        mean, lo, hi = cells["correct"]
        assert lo <= mean <= hi and mean == pytest.approx(results["systems"][system]["metrics"]["correct"] / 100)
    assert (tmp_path / "ste" / "ste.png").stat().st_size > 0
    # a second run finds every stage done: the explorer is not asked anything again
    calls = len(explorer.calls)
    again = run_ste(preset, tmp_path / "ste", explorer=explorer)
    assert len(explorer.calls) == calls and again["systems"] == results["systems"]


def test_bench_ste_cli_rejects_bad_sizes(capsys: Any) -> None:
    from benchmarks.ste import main

    with pytest.raises(SystemExit):
        main(["--num-episodes", "0"])
    assert "--num-episodes" in capsys.readouterr().err
