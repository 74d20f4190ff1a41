"""StepTool's step-grained terms: SuccCalling, Contribution, IsSolved, their combination, judges, stored data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rewards.steps import (
    STEPTOOL_JUDGE_PROMPT,
    call_succeeded,
    calls_match,
    contribution,
    format_steps,
    llm_judge,
    load_steptool_annotations,
    parse_judge_reply,
    rescore,
    rule_judge,
    run_judge,
    step_rewards,
    task_status,
)


def step(name: str, arguments: dict, output: object, ok: bool | None = True) -> dict:
    out = {"name": name, "arguments": arguments, "output": output}
    if ok is not None:
        out["ok"] = ok
    return out


EMPLOYEE = step("find_employee", {"name": "Mei Lin"},
                {"employee_id": "E1009", "name": "Mei Lin", "department": "Engineering", "salary": 118000,
                 "currency": "SGD", "city": "Singapore"})
RATE = step("get_exchange_rate", {"base": "SGD", "target": "USD"}, {"base": "SGD", "target": "USD", "rate": 0.741})
PRODUCT = step("calculator", {"expression": "118000 * 0.741"}, "87438")
QUERY = "What is the yearly salary of Mei Lin in USD?"


# ---------------------------------------------------------------------------------- SuccCalling
@pytest.mark.parametrize(
    ("s", "expected"),
    [
        (step("f", {}, "anything", ok=True), 1.0),
        (step("f", {}, "anything", ok=False), 0.0),
        (step("f", {}, '{"country": "France"}', ok=None), 1.0),
        (step("f", {}, "Error: Unknown city 'Pariss'.", ok=None), 0.0),
        (step("f", {}, "", ok=None), 0.0),
        ({"name": "f", "response": '{"error": "Timeout", "response": ""}'}, 0.0),
        ({"name": "f", "response": '{"error": "", "response": {"status": 400, "msg": "bad"}}'}, 0.0),
        ({"name": "f", "response": '{"error": "", "response": "Please provide an email"}'}, 0.0),
        ({"name": "f", "response": '{"error": "", "response": [1, 2]}'}, 1.0),
    ],
)
def test_call_succeeded(s: dict, expected: float) -> None:
    assert call_succeeded(s) == expected


# --------------------------------------------------------------------------------- Contribution
def test_results_used_by_later_calls_or_the_answer_contribute() -> None:
    assert contribution([EMPLOYEE, RATE, PRODUCT], "It is 87,438 USD.", query=QUERY) == [1.0, 1.0, 1.0]


def test_an_unrelated_successful_call_contributes_nothing() -> None:
    city = step("get_city", {"city": "Tokyo"}, {"city": "Tokyo", "country": "Japan", "population": 13960236})
    assert contribution([EMPLOYEE, city, RATE, PRODUCT], "87438", query=QUERY) == [1.0, 0.0, 1.0, 1.0]


def test_failed_calls_contribute_nothing_even_if_gold() -> None:
    failed = step("get_exchange_rate", {"base": "SGD", "target": "USD"}, "Error: timeout", ok=False)
    gold = [{"name": "get_exchange_rate", "arguments": {"base": "SGD", "target": "USD"}}]
    assert contribution([failed], "87438", gold) == [0.0]


def test_echoed_and_query_values_are_not_credited() -> None:
    # the lookup's "Mei Lin" and "SGD" echo its own argument or the query; only new values count
    echo = step("find_employee", {"name": "Mei Lin"}, {"name": "Mei Lin", "city": "Singapore"})
    later = step("get_weather", {"city": "Mei Lin", "day": "Monday"}, {"high_c": 30})
    assert contribution([echo, later], "30", query=QUERY) == [0.0, 1.0]
    # a value already in the query is not this step's contribution either
    assert contribution([RATE], "0.741", query="Is the SGD to USD rate 0.741?") == [0.0]


def test_rounded_numbers_count_as_used_but_coarse_ones_do_not() -> None:
    rate = step("get_exchange_rate", {"base": "EUR", "target": "USD"}, {"rate": 1.0832})
    assert contribution([rate, step("calculator", {"expression": "50 * 1.08"}, "54")], "54") == [1.0, 1.0]
    tiny = step("get_exchange_rate", {"base": "JPY", "target": "USD"}, {"rate": 0.0067})
    assert contribution([tiny], "about 0.01") == [0.0]


def test_gold_calls_match_once_and_normalised() -> None:
    gold = [{"name": "calculator", "arguments": {"expression": "118000*0.741"}}]
    calc = step("calculator", {"expression": " 118000 * 0.741 "}, "87438")
    assert contribution([calc, calc], None, gold) == [1.0, 0.0]  # no answer: only the gold match counts
    assert calls_match({"name": "Convert_Units", "arguments": '{"value": "68", "from_unit": "c", "to_unit": "F"}'},
                       {"name": "convert_units", "arguments": {"value": 68.0, "from_unit": "C", "to_unit": "F"}})
    assert not calls_match(calc, {"name": "calculator", "arguments": {"expression": "118000*0.74"}})


# --------------------------------------------------------------------------------- task status
@pytest.mark.parametrize(
    ("answer_text", "steps", "expected"),
    [
        ("The salary is 87,438 USD.", [EMPLOYEE], 1.0),  # right and grounded: Solved
        ("87438", [], 0.5),  # right, but no call succeeded: Unsure
        ("87438", [step("f", {}, "Error: x", ok=False)], 0.5),
        ("Either 87438 or 90000", [EMPLOYEE], 0.5),  # the gold value among several: Unsure
        ("90000", [EMPLOYEE], 0.0),  # wrong: Unsolved
        ("", [EMPLOYEE], 0.0),
        (None, [EMPLOYEE], 0.0),
    ],
)
def test_task_status(answer_text: str | None, steps: list, expected: float) -> None:
    assert task_status(answer_text, answer="87438", steps=steps) == expected


def test_task_status_text_and_without_gold() -> None:
    assert task_status("The manager is Lucas Moreau.", answer="Lucas Moreau", steps=[EMPLOYEE]) == 1.0
    assert task_status("The manager is Lucas.", answer="Lucas Moreau", steps=[EMPLOYEE]) == 0.0
    assert task_status("-4 hours", answer="-4") == 1.0  # steps=None: grounding not checked
    assert task_status("Some answer", steps=[EMPLOYEE]) == 0.5 and task_status("Some answer", steps=[]) == 0.0


# ------------------------------------------------------------------------------- step rewards
def test_step_rewards_by_hand() -> None:
    terms = [
        {"call_succeeded": 1.0, "contribution": 1.0},
        {"call_succeeded": 1.0, "contribution": 0.0},
        {"call_succeeded": 0.0, "contribution": 0.0, "format_error": 1.0},
        {"task_status": 0.5},
    ]
    weights = {"call_succeeded": 1 / 6, "contribution": 5 / 6, "task_status": 1.0, "format_error": -0.1}
    paper = [1.0, 1 / 6, -0.1, 0.5]
    assert step_rewards(terms, weights) == pytest.approx(paper)
    # StepTool's code: score k times (n - 1 - k), n = 4; the final score is multiplied by 0
    assert step_rewards(terms, weights, steptool_code_weights=True) == pytest.approx([3.0, 2 / 6, -0.1, 0.0])
    assert step_rewards([], weights) == [] and step_rewards([{"unknown": 3.0}], weights) == [0.0]


# ------------------------------------------------------------------------------------- judges
def test_run_judge_passes_gold_only_to_judges_that_take_it() -> None:
    got = {}

    def with_gold(query, steps, final_answer, **kwargs):
        got.update(kwargs)
        return {"contribution": [1] * len(steps), "task_status": "AnswerStatus.Solved"}

    out = run_judge(with_gold, QUERY, [EMPLOYEE], "87438", answer="87438", gold_calls=[])
    assert got == {"answer": "87438", "gold_calls": []} and out == {"contribution": [1.0], "task_status": 1.0}
    assert run_judge(lambda q, s, a: {"contribution": [7], "task_status": 0.5}, QUERY, [EMPLOYEE], "x") == {
        "contribution": [1.0], "task_status": 0.5}  # values are clipped to [0, 1]
    with pytest.raises(ValueError, match="one contribution per step"):
        run_judge(lambda q, s, a: {"contribution": [], "task_status": 1}, QUERY, [EMPLOYEE], "x")
    with pytest.raises(ValueError, match="'contribution' and 'task_status'"):
        run_judge(lambda q, s, a: [1.0], QUERY, [EMPLOYEE], "x")


def test_rule_judge_uses_the_gold() -> None:
    out = rule_judge(QUERY, [EMPLOYEE, RATE, PRODUCT], "87438", answer="87438",
                     gold_calls=[{"name": "calculator", "arguments": {"expression": "118000 * 0.741"}}])
    assert out == {"contribution": [1.0, 1.0, 1.0], "task_status": 1.0}


def test_llm_judge_formats_the_prompt_and_parses_the_reply() -> None:
    prompts = []

    def generate(prompt: str) -> str:
        prompts.append(prompt)
        return ('```json\n{"succeed_tool_calling": [1, 1, 1], "contribution_to_final_answer": [5, 2.5], '
                '"final_answer_status": "Solved"}\n```')

    out = llm_judge(generate)(QUERY, [EMPLOYEE, RATE, PRODUCT], "87438")
    assert out == {"call_succeeded": [1.0, 1.0, 1.0], "contribution": [1.0, 0.5, 0.0], "task_status": 1.0}
    prompt = prompts[0]
    assert prompt.startswith(f"Query:\n{QUERY}\n\nIntermediate Steps:\nStep 1: ")
    assert "Step 3: " in prompt and "Final Answer:\n87438" in prompt and "'Solved', 'Unsure' or 'Unsolved'" in prompt
    assert "{query}" in STEPTOOL_JUDGE_PROMPT and "{query}" not in prompt
    with pytest.raises(ValueError, match="final_answer_status"):
        parse_judge_reply("I cannot judge this.", 2)
    assert format_steps([]) == "(no intermediate steps)"


# ------------------------------------------------------------------- StepTool's stored format
def _annotation_file(tmp_path: Path) -> Path:
    """A small file in the layout of StepTool's data/reward_annotation/*.json."""
    steps = [
        {"name": "find_employee", "arguments": '{"name": "Mei Lin"}',
         "response": json.dumps({"error": "", "response": {"department": "Engineering", "salary": 118000,
                                                           "currency": "SGD"}})},
        {"name": "get_city", "arguments": '{"city": "Tokyo"}',
         "response": '{"error": "", "response": {"country": "Japan", "population": 13960236, "timezone": "Asia/To...'},
        {"name": "get_exchange_rate", "arguments": '{"base":"SGD","target":"USD"}',
         "response": json.dumps({"error": "Rate limit exceeded", "response": ""})},
    ]
    final = {"name": "Finish", "arguments": json.dumps({"return_type": "give_answer", "final_answer": "About 87,438 USD."}),
             "response": ""}
    gave_up = {"name": "Finish", "arguments": '{"return_type":"give_up_and_restart"}', "response": ""}
    data = {
        "101": {
            "query": QUERY,
            "tool_names": ["find_employee", "get_city", "get_exchange_rate", "Finish"],
            "answer_steps": [f"Step {k}: {s!r}" for k, s in enumerate(steps, 1)],
            "process_reward": {
                "0": {"succeed_tool_calling": [1, 1, 0], "contributions": [5, 0, 1]},
                "1": {"succeed_tool_calling": [1, 1, 0], "contributions": [4, 1]},
            },
            "final_step": f"Final step: {final!r}",
            "is_solved": {"0": "AnswerStatus.Solved", "1": "AnswerStatus.Unsure"},
        },
        "102": {
            "query": "Where is Oslo?",
            "tool_names": ["get_city", "Finish"],
            "answer_steps": [],
            "process_reward": {"0": {"succeed_tool_calling": [], "contributions": []}},
            "final_step": f"Final step: {gave_up!r}",
            "is_solved": {"0": "AnswerStatus.Unsolved"},
        },
    }
    path = tmp_path / "G1_example.json"
    path.write_text(json.dumps(data, indent=4))
    return path


def test_load_steptool_annotations(tmp_path: Path) -> None:
    first, second = load_steptool_annotations(_annotation_file(tmp_path))
    assert first["id"] == "101" and first["query"] == QUERY and first["tool_names"][-1] == "Finish"
    assert [s["name"] for s in first["steps"]] == ["find_employee", "get_city", "get_exchange_rate"]
    assert first["steps"][2]["arguments"] == {"base": "SGD", "target": "USD"}
    assert first["steps"][1]["output"].endswith("Asia/To...")  # truncated responses stay as text
    assert first["final_answer"] == "About 87,438 USD."
    assert first["annotations"] == [
        {"call_succeeded": [1.0, 1.0, 0.0], "contribution": [1.0, 0.0, 0.2], "task_status": 1.0},
        {"call_succeeded": [1.0, 1.0, 0.0], "contribution": [0.8, 0.2, 0.0], "task_status": 0.5},  # padded
    ]
    assert second["steps"] == [] and second["final_answer"] is None
    assert second["annotations"] == [{"call_succeeded": [], "contribution": [], "task_status": 0.0}]


def test_rescore_steptool_annotations(tmp_path: Path) -> None:
    records = load_steptool_annotations(_annotation_file(tmp_path))
    first, second = rescore(records)  # the rule judge, no gold: a grounded answer is Unsure
    assert first["call_succeeded"] == [1.0, 1.0, 0.0]
    # the employee's currency is used by the (failed) rate call; Tokyo's data by nothing
    assert first["contribution"] == [1.0, 0.0, 0.0]
    assert first["task_status"] == 0.5 and second["task_status"] == 0.0
    assert first["step_terms"][-1] == {"task_status": 0.5} and len(first["step_terms"]) == 4
    weights = {"call_succeeded": 1 / 6, "contribution": 5 / 6, "task_status": 1.0}
    assert step_rewards(first["step_terms"], weights) == pytest.approx([1.0, 1 / 6, 0.0, 0.5])
    # with the gold answer in the record, the rule judge can say Solved
    (gold,) = rescore([{**records[0], "answer": "87438"}])
    assert gold["task_status"] == 1.0
    # any judge replaces the rule judge
    (custom,) = rescore(records[:1], lambda q, s, a: {"contribution": [0.2] * len(s), "task_status": "Solved"})
    assert custom["contribution"] == [0.2, 0.2, 0.2] and custom["task_status"] == 1.0


def test_load_converted_predictions(tmp_path: Path) -> None:
    """StepTool's data/model_predictions_converted/*.json: the answer_details tree of tool messages."""
    finish_args = json.dumps({"return_type": "give_answer", "final_answer": "Oslo has 709037 people."})
    tree = {"role": "system", "message": "", "next": [{"role": "user", "message": "", "next": [
        {"role": "tool", "message": {"name": "get_city", "arguments": '{"city": "Oslo"}',
                                      "response": json.dumps({"error": "", "response": {"population": 709037}})},
         "next": [{"role": "tool", "message": {"name": "Finish", "arguments": finish_args, "response": ""},
                   "next": []}]}]}]}
    data = {"7": {"query": "How many people live in Oslo?",
                  "available_tools": [{"type": "function", "function": {"name": "get_city"}},
                                      {"type": "function", "function": {"name": "Finish"}}],
                  "answer": {"method": "CoT", "final_answer": finish_args, "answer_details": [tree]}}}
    path = tmp_path / "converted.json"
    path.write_text(json.dumps(data))
    (record,) = load_steptool_annotations(path)
    assert record["tool_names"] == ["get_city", "Finish"] and record["annotations"] == []
    assert [s["name"] for s in record["steps"]] == ["get_city"]
    assert record["final_answer"] == "Oslo has 709037 people."
    (scored,) = rescore([{**record, "answer": "709037"}])
    assert scored["contribution"] == [1.0] and scored["task_status"] == 1.0


def test_load_rejects_other_json(tmp_path: Path) -> None:
    path = tmp_path / "list.json"
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="keyed by query id"):
        load_steptool_annotations(path)
