"""STE exploration driven by a scripted explorer: memories, reflection, the max-turn cut, hostile actions, resume."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agents.ste.chat import LocalChatModel, ScriptedChatModel
from agents.ste.explore import ExploreConfig, api_targets, explore, load_trials, split_list_args
from agents.ste.prompts import (
    GUIDED_ANSWER,
    GUIDED_DEMO_QUERY,
    IMAGINE_SYSTEM,
    REFLECTION_PROMPT,
    clean_query,
    close_json,
    guided_call_prefill,
    guided_imagine_messages,
    imagine_messages,
    ltm_line,
    parse_reflection,
)

Conv = list[dict[str, str]]
KEYS = {"api", "source", "episode", "trial", "query", "steps", "final_answer", "reflection", "reflection_text",
        "ltm", "stm", "truncated", "guided", "explorer", "time"}
VERDICTS = ["Yes.", "no, it failed", "I am not sure"]  # -> yes, no, None; by query number


def kind_of(conv: Conv) -> str:
    if conv[0]["content"] == IMAGINE_SYSTEM:
        return "imagine"
    if conv[-1]["content"] == REFLECTION_PROMPT:
        return "reflect"
    return "act"


def query_number(conv: Conv) -> int:
    return int(re.search(r"#(\d+)", conv[1]["content"]).group(1))  # type: ignore[union-attr]


def script(conv: Conv, *, action: Callable[[Conv], str] | None = None) -> str:
    """Queries numbered by the long-term memory's length; one call, then the tool output as the answer."""
    kind = kind_of(conv)
    if kind == "imagine":
        n = conv[1]["content"].count(" | solved ")
        return f'User Query: "Use the tool, request #{n}."\n\nThis explores the API.'
    if kind == "reflect":
        return VERDICTS[query_number(conv) % 3]
    if action is not None:
        return action(conv)
    if conv[-1]["role"] == "tool":
        return f"Thought: done\nFinal Answer: got {conv[-1]['content'][:20]}\nObservation: made up"
    if "get_city" in conv[0]["content"]:
        return 'Thought: look up\nAction: get_city\nAction Input: {"city": "Oslo"}'
    return f'Thought: add\nAction: calculator\nAction Input: {{"expression": "{query_number(conv)}+1"}}\nObservation: 99'


def run(tmp_path: Path, model: Any, name: str = "trials.jsonl", **kw: Any) -> list[dict[str, Any]]:
    cfg = ExploreConfig(**{"apis": ["calculator"], "out": str(tmp_path / name), "progress": False, **kw})
    return load_trials(explore(cfg, model=model))


# --------------------------------------------------------------------------- prompts
@pytest.mark.parametrize(("text", "verdict"), [
    ("Yes", "yes"), ("yes.", "yes"), ("**Yes**, it worked", "yes"), ("Y", "yes"), ("No", "no"),
    ("no; yes later", "no"), ("I think the answer is no.", "no"), ("n", "no"),
    ("", None), ("Nope", None), ("Yesterday it rained", None), ("maybe", None),
])
def test_parse_reflection(text: str, verdict: str | None) -> None:
    assert parse_reflection(text) == verdict


@pytest.mark.parametrize(("text", "query"), [
    ("How far is Oslo from Rome?", "How far is Oslo from Rome?"),
    ('User Query: "What is 2+2?"', "What is 2+2?"),
    ("New query: What is the weather\nin Lima?\n\nExplanation: tests the API", "What is the weather in Lima?"),
    ("Here is a query:\n\n`Convert 3 miles to km`", "Convert 3 miles to km"),
    ('A user could ask: "Who manages the Sales department?', "Who manages the Sales department?"),
    ("Write one! Question: How far is Oslo?", "How far is Oslo?"), ("Is it sunny in Rome: yes or no?", "Is it sunny in Rome: yes or no?"),
    ("", ""), ("\n\n  \n", ""), ('""', ""),
])
def test_clean_query(text: str, query: str) -> None:
    assert clean_query(text) == query


def test_imagine_prompt_sections() -> None:
    first = imagine_messages("API: f\nDescription: d", [], [])[1]["content"]
    assert "API: f\nDescription: d" in first and "already explored" not in first and "In this session" not in first
    later = imagine_messages("API: f", ["q1 | solved yes", "q2 | solved no"], [{"query": "q2", "final_answer": None,
                                                                                  "reflection": None}])[1]["content"]
    assert "q1 | solved yes\nq2 | solved no" in later
    assert "Query 1: q2\nFinal answer: (none)\nSolved: unsure" in later
    assert later.endswith("User Query:")


# --------------------------------------------------------------------------- memories
def test_long_term_memory_lines_and_reflections(tmp_path: Path) -> None:
    model = ScriptedChatModel(script)
    trials = run(tmp_path, model, num_episodes=2, num_stm_slots=3)
    assert [(t["episode"], t["trial"]) for t in trials] == [(e, k) for e in range(2) for k in range(3)]
    expected_verdicts = ["yes", "no", None] * 2
    assert [t["reflection"] for t in trials] == expected_verdicts
    assert [t["reflection_text"] for t in trials] == VERDICTS * 2
    for i, t in enumerate(trials):
        assert set(t) == KEYS
        assert t["query"] == f"Use the tool, request #{i}."
        assert t["ltm"] == [f"Use the tool, request #{j}. | solved {'yes' if j % 3 == 0 else 'no'}" for j in range(i)]
        assert t["ltm"] == [ltm_line(p["query"], p["reflection"]) for p in trials[:i]]
    imagine_prompts = [c[1]["content"] for c in model.conversations if kind_of(c) == "imagine"]
    assert len(imagine_prompts) == 6
    for t, prompt in zip(trials, imagine_prompts):
        assert ("\n".join(t["ltm"]) in prompt) and (("already explored" in prompt) == bool(t["ltm"]))


def test_short_term_memory_slots(tmp_path: Path) -> None:
    model = ScriptedChatModel(script)
    trials = run(tmp_path, model, num_episodes=2, num_stm_slots=4)
    imagine_prompts = [c[1]["content"] for c in model.conversations if kind_of(c) == "imagine"]
    for t, prompt in zip(trials, imagine_prompts):
        same = [p for p in trials if p["episode"] == t["episode"] and p["trial"] < t["trial"]]
        assert t["stm"] == [{"query": p["query"], "final_answer": p["final_answer"], "reflection": p["reflection"]}
                            for p in same]
        assert len(t["stm"]) == t["trial"] <= 3
        assert ("In this session" in prompt) == (t["trial"] > 0)
        for k, p in enumerate(same, 1):
            assert f"Query {k}: {p['query']}\nFinal answer: {p['final_answer']}" in prompt
    assert trials[4]["stm"] == [] and len(trials[4]["ltm"]) == 4  # a new episode: empty STM, full LTM


def test_trial_record_and_lockstep_batching(tmp_path: Path) -> None:
    model = ScriptedChatModel(script)
    trials = run(tmp_path, model, apis=["calculator", "apichain:get_city"], num_episodes=1, num_stm_slots=2)
    assert [(t["api"], t["trial"]) for t in trials] == [("calculator", 0), ("get_city", 0), ("calculator", 1), ("get_city", 1)]
    calc, city = trials[0], trials[1]
    assert calc["source"] == "calculator" and city["source"] == "apichain" and calc["explorer"] == "scripted"
    call, answer = calc["steps"]
    assert call == {"kind": "call", "text": 'Thought: add\nAction: calculator\nAction Input: {"expression": "0+1"}',
                    "thought": "add", "call": {"name": "calculator", "arguments": {"expression": "0+1"}},
                    "observation": "1", "ok": True}  # the reply was cut at "\nObservation:"; the real output is kept
    assert answer == {"kind": "answer", "text": "Thought: done\nFinal Answer: got 1", "thought": "done", "call": None,
                      "observation": None, "ok": None}
    assert calc["final_answer"] == "got 1" and calc["truncated"] is False
    assert '"Oslo"' in city["steps"][0]["observation"] and city["steps"][0]["ok"] is True
    # one batched call per phase for both APIs: imagine, act, act, reflect
    assert [c["n"] for c in model.calls] == [2, 2, 2, 2] * 2
    assert model.calls[0]["stop"] and model.calls[3]["temperature"] == 0.0
    act = [c for c in model.conversations if kind_of(c) == "act"][0]
    assert act[0]["role"] == "system" and "Action Input" in act[0]["content"] and act[1]["content"].endswith("request #0.")


# --------------------------------------------------------------------------- guided mode
def guided_script(conv: Conv) -> str:
    """Continuations of prefilled replies: argument values that run on, then an answer; the first calculator call fails."""
    kind = kind_of(conv)
    if kind == "imagine":
        assert "Example call: " in conv[-1]["content"] and conv[-2]["role"] == "assistant"  # after the demonstration
        return script(conv)
    if kind != "act":
        return script(conv)
    assert conv[-1]["role"] == "assistant"  # every action turn is prefilled
    prefix = conv[-1]["content"]
    if prefix == GUIDED_ANSWER:
        return f" it is {conv[-2]['content'][:10]}\nObservation: made up"
    if prefix.endswith('"city": "'):
        return 'Oslo", "country": "NO"}'  # cut at the closing quote
    assert prefix == guided_call_prefill("calculator") + '"expression": "'
    return "2*3" if conv[-2]["role"] == "tool" else "2*"


def test_guided_prefills_a_call_of_the_explored_api_then_the_answer(tmp_path: Path) -> None:
    model = ScriptedChatModel(guided_script)
    trials = run(tmp_path, model, apis=["calculator", "apichain:get_city"], num_episodes=1, num_stm_slots=2, max_turn=3,
                 guided=True)
    assert [t["guided"] for t in trials] == [True] * 4
    for t in trials:
        api = t["api"]
        *calls, answer = t["steps"]
        for s in calls:  # each step parses as a call of the explored API; its text is the prefixes and the values
            assert s["kind"] == "call" and s["call"]["name"] == api
            assert s["text"].startswith(guided_call_prefill(api)) and s["text"].endswith('"}')
        assert calls[-1]["ok"] is True and all(s["ok"] is False for s in calls[:-1])
        assert answer["kind"] == "answer" and answer["text"].startswith(GUIDED_ANSWER)
        assert t["final_answer"] == answer["text"][len(GUIDED_ANSWER):].strip() and t["truncated"] is False
    calc, city = trials[0], trials[1]
    assert [s["call"]["arguments"] for s in calc["steps"][:-1]] == [{"expression": "2*"}, {"expression": "2*3"}]
    assert city["steps"][0]["text"] == guided_call_prefill("get_city") + '"city": "Oslo"}'
    assert calc["final_answer"] == "it is 6"  # a failed call is retried; a successful one is answered
    acts = [c for c in model.conversations if kind_of(c) == "act"]
    assert all(c[-1]["role"] == "assistant" for c in acts)
    assert [c[-1]["content"] for c in acts[:2]] == [guided_call_prefill("calculator") + '"expression": "',
                                                    guided_call_prefill("get_city") + '"city": "']
    assert model.calls[1]["stop"] == ('"', "\n")  # a string value ends at its closing quote
    reflect = [c for c in model.conversations if kind_of(c) == "reflect"][0]  # reflection: no prefill
    assert reflect[-1]["role"] == "user" and reflect[-2]["content"] == calc["steps"][-1]["text"]
    imagine = [c for c in model.conversations if kind_of(c) == "imagine"]  # the memories are shown as without guidance
    assert trials[2]["ltm"] == [ltm_line(calc["query"], calc["reflection"])] and trials[2]["ltm"][0] in imagine[2][-1]["content"]
    assert f"session (ask another one of the same kind):\n{calc['query']}" in imagine[2][-1]["content"]


def test_guided_answers_at_the_turn_limit(tmp_path: Path) -> None:
    def always_fails(conv: Conv) -> str:
        if kind_of(conv) == "act" and conv[-1]["content"] != GUIDED_ANSWER:
            return "1/0"
        return guided_script(conv)

    (t,) = run(tmp_path, ScriptedChatModel(always_fails), num_episodes=1, num_stm_slots=1, max_turn=2, guided=True)
    assert [s["kind"] for s in t["steps"]] == ["call", "call", "answer"]
    assert [s["ok"] for s in t["steps"]] == [False, False, None] and t["final_answer"] and not t["truncated"]


GUIDED_TOOLS = '''
def power(base: float, exp: int, label: str) -> str:
    """Raise a number to a power.

    Args:
        base: The base, e.g. 2.
        exp: The exponent.
        label: A name, e.g. "x".
    """
    return f"{label}={base ** exp}"


def total(xs: list[int]) -> int:
    """Add numbers.

    Args:
        xs: The numbers.
    """
    return sum(xs)
'''


def test_guided_values_one_parameter_at_a_time_and_whole_objects(tmp_path: Path) -> None:
    module = tmp_path / "gtools.py"
    module.write_text(GUIDED_TOOLS)
    values = {'"base": ': " 3, 4", '"exp": ': "2}", '"label": "': 'a\\"b'}  # cut at "," / "}" / the quote

    def fill(conv: Conv) -> str:
        if kind_of(conv) == "imagine":
            return "Use the tool, request #1."
        if kind_of(conv) != "act":
            return "Yes"
        prefix = conv[-1]["content"]
        if prefix == GUIDED_ANSWER:
            return " done"
        if prefix.endswith("{"):
            return '"xs": [1, 2]} and more'
        return next(v for k, v in values.items() if prefix.endswith(k))

    model = ScriptedChatModel(fill)
    power, total = run(tmp_path, model, apis=[f"{module}:*"], num_episodes=1, num_stm_slots=1, guided=True)
    step = power["steps"][0]
    assert step["text"] == guided_call_prefill("power") + '"base": 3, "exp": 2, "label": "a\\\\"}'  # escaped
    assert step["call"]["arguments"] == {"base": 3, "exp": 2, "label": "a\\"}
    assert step["observation"] == "a\\=9" and power["final_answer"] == "done"
    assert total["steps"][0]["text"] == guided_call_prefill("total") + '"xs": [1, 2]}'  # a list: the whole object
    assert total["steps"][0]["observation"] == "3"
    imagine = [c for c in model.conversations if kind_of(c) == "imagine"]
    assert 'Example call: power {"base": 2, "exp": 1, "label": "x"}' in imagine[0][-1]["content"]


def test_guided_drops_a_copy_of_the_demonstration(tmp_path: Path) -> None:
    model = ScriptedChatModel(lambda c: GUIDED_DEMO_QUERY if kind_of(c) == "imagine" else guided_script(c))
    (t,) = run(tmp_path, model, num_episodes=1, num_stm_slots=1, guided=True)
    assert t["query"] == "" and t["steps"] == [] and t["reflection"] is None
    assert guided_imagine_messages("f", "API: f", {}, [], [])[2] == {"role": "assistant", "content": GUIDED_DEMO_QUERY}


def test_unguided_conversations_are_not_prefilled(tmp_path: Path) -> None:
    model = ScriptedChatModel(script)
    (t,) = run(tmp_path, model, num_episodes=1, num_stm_slots=1)
    assert t["guided"] is False
    assert all(c[-1]["role"] != "assistant" for c in model.conversations)


@pytest.mark.parametrize(("continuation", "kept"), [
    ('"a": 1}', '"a": 1}'), ('"a": {"b": [1, "}"]}} tail', '"a": {"b": [1, "}"]}}'), ("}\n}", "}"),
    ('"a": 1', '"a": 1'), ("not json}", "not json}"), ("", ""), ('"a": ' + "[" * 5000, '"a": ' + "[" * 5000),
])
def test_close_json(continuation: str, kept: str) -> None:
    assert close_json(continuation) == kept


# --------------------------------------------------------------------------- the turn limit and hostile text
def test_max_turn_cut(tmp_path: Path) -> None:
    model = ScriptedChatModel(lambda c: script(c, action=lambda _: 'Action: calculator\nAction Input: {"expression": "2*3"}'))
    (t,) = run(tmp_path, model, num_episodes=1, num_stm_slots=1, max_turn=2)
    assert [s["kind"] for s in t["steps"]] == ["call", "call", "call"]
    assert [s["observation"] for s in t["steps"]] == ["6", "6", None]  # the third call is not run
    assert [s["ok"] for s in t["steps"]] == [True, True, None]
    assert t["steps"][2]["call"] == {"name": "calculator", "arguments": {"expression": "2*3"}}
    assert t["truncated"] is True and t["final_answer"] is None and t["reflection"] == "yes"
    reflect = [c for c in model.conversations if kind_of(c) == "reflect"][0]
    assert [m["role"] for m in reflect[2:]] == ["assistant", "tool", "assistant", "tool", "assistant", "user"]
    assert [c["n"] for c in model.calls] == [1, 1, 1, 1, 1]  # imagine, 3 actions, reflect


HOSTILE = [
    "", "   ", "Action:", "Action: calculator\nAction Input: {not json", "Action: calculator\nAction Input: [1, 2]",
    "Action: nope\nAction Input: {}", 'Action: calculator\nAction Input: {"expression": "9**9**9**9"}',
    "Final Answer:", "\x00\ud800 broken \udfff", "Thought: " + "x" * 40_000, "Observation: nothing\nFinal Answer: 1",
    '{"name": "calculator", "arguments": {"expression": "1"}}', "Action: calculator\nAction Input: {}}}{",
]


def test_malformed_actions_and_queries_never_crash(tmp_path: Path) -> None:
    counter = iter(range(10**6))

    def hostile(conv: Conv) -> str:
        i = next(counter)
        if kind_of(conv) == "imagine":
            return ["", "\n\n", "Query:", "A real query #0", "\ud800?"][i % 5]
        if kind_of(conv) == "reflect":
            return HOSTILE[i % len(HOSTILE)]
        return HOSTILE[i % len(HOSTILE)]

    trials = run(tmp_path, ScriptedChatModel(hostile), apis=["calculator", "apichain:get_city"], num_episodes=3,
                 num_stm_slots=3, max_turn=3)
    assert len(trials) == 18
    kinds = {s["kind"] for t in trials for s in t["steps"]}
    assert "invalid" in kinds
    for t in trials:
        assert set(t) == KEYS
        if not t["query"]:
            assert t["steps"] == [] and t["reflection"] is None and t["final_answer"] is None
        for s in t["steps"]:
            assert s["kind"] in ("call", "answer", "invalid")
            if s["kind"] == "invalid" and s["observation"] is not None:
                assert s["ok"] is False and s["observation"].startswith("Invalid action")
    assert any(t["query"] == "\ud800?" for t in trials)  # lone surrogates survive the file round trip
    assert all(" | solved " in line for t in trials for line in t["ltm"])


# --------------------------------------------------------------------------- resume
def _without_time(trials: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in t.items() if k != "time"} for t in trials]


def test_resume_after_a_kill_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    kw = {"apis": ["calculator", "apichain:get_city"], "num_episodes": 2, "num_stm_slots": 3, "max_turn": 2}
    full = run(tmp_path, ScriptedChatModel(script), "full.jsonl", **kw)
    assert len(full) == 12

    calls = {"n": 0}

    def dies(conv: Conv) -> str:
        calls["n"] += 1
        if calls["n"] > 30:  # in the middle of the fourth batch of trials
            raise RuntimeError("killed")
        return script(conv)

    with pytest.raises(RuntimeError, match="killed"):
        run(tmp_path, ScriptedChatModel(dies), "resumed.jsonl", **kw)
    partial = load_trials(tmp_path / "resumed.jsonl")
    assert 0 < len(partial) < 12 and len(partial) % 2 == 0
    with (tmp_path / "resumed.jsonl").open("a") as f:
        f.write('{"api": "calculator", "episode": 1, "tri')  # a line cut short by the kill
    again = ScriptedChatModel(script)
    resumed = run(tmp_path, again, "resumed.jsonl", **kw)
    assert _without_time(resumed) == _without_time(full)
    assert sum(kind_of(c) == "imagine" for c in again.conversations) == 12 - len(partial)
    # a finished file is left alone: nothing to do, no model needed
    untouched = ScriptedChatModel([])
    assert _without_time(run(tmp_path, untouched, "resumed.jsonl", **kw)) == _without_time(full)
    assert untouched.calls == []


def test_a_bad_line_in_the_middle_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text('{"api": "a", "episode": 0, "trial": 0}\nnot json\n{"api": "a", "episode": 0, "trial": 1}\n')
    with pytest.raises(ValueError, match="bad line 2"):
        load_trials(path)


# --------------------------------------------------------------------------- pool specs and config
def test_group_specs_explore_each_api_alone(tmp_path: Path) -> None:
    targets = api_targets(["apichain", "calculator"])
    assert len(targets) == 10
    assert [s for _, s in targets][:2] == ["apichain:find_employee", "apichain:get_department"]
    module = tmp_path / "mytools.py"
    module.write_text(
        "def shout(text: str) -> str:\n    '''Upper-case a text.\n\n    Args:\n        text: The text.\n    '''\n"
        "    return text.upper()\n\n\n"
        "def count(text: str) -> int:\n    '''Count words.\n\n    Args:\n        text: The text.\n    '''\n"
        "    return len(text.split())\n"
    )
    targets = api_targets([f"{module}:*"])
    assert [(a.name, s) for a, s in targets] == [("shout", f"{module}:shout"), ("count", f"{module}:count")]

    def custom(conv: Conv) -> str:
        if kind_of(conv) == "act" and conv[-1]["role"] != "tool":
            name = "shout" if "shout" in conv[0]["content"] else "count"
            return f'Action: {name}\nAction Input: {{"text": "to be or not"}}'
        return script(conv)

    trials = run(tmp_path, ScriptedChatModel(custom), apis=[f"{module}:*"], num_episodes=1, num_stm_slots=1)
    assert [t["steps"][0]["observation"] for t in trials] == ["TO BE OR NOT", "4"]


def test_config_validation_names_the_field() -> None:
    with pytest.raises(ValueError, match="num_episodes"):
        ExploreConfig(num_episodes=0)
    with pytest.raises(ValueError, match="max_turn"):
        ExploreConfig(max_turn=0)
    with pytest.raises(ValueError, match="backend"):
        ExploreConfig(backend="tgi")
    with pytest.raises(ValueError, match="Did you mean 'get_city'"):
        ExploreConfig(apis=["apichain:get_cty"])
    assert ExploreConfig(apis="calculator").apis == ["calculator"]
    assert ExploreConfig().guided is False


def test_cli_arguments() -> None:
    from agents.config import config_from_args

    argv = split_list_args(["--apis", "apichain:get_city", "calculator", "--num-episodes", "3", "--apis", "apichain:get_weather"])
    cfg = config_from_args(ExploreConfig, argv)
    assert cfg.apis == ["apichain:get_city", "calculator", "apichain:get_weather"] and cfg.num_episodes == 3
    assert cfg.guided is False and config_from_args(ExploreConfig, ["--guided"]).guided is True
    with pytest.raises(SystemExit):
        config_from_args(ExploreConfig, ["--num-stm-slots", "0"])


def test_toolenv_ste_forwards(capsys: pytest.CaptureFixture[str]) -> None:
    from toolenv.cli import main

    assert main(["ste"]) == 0 and "explore" in capsys.readouterr().out
    assert main(["ste", "--help"]) == 0
    assert main(["ste", "explor"]) == 2  # one line, status 2
    assert "Did you mean 'explore'" in capsys.readouterr().err


# --------------------------------------------------------------------------- a real (tiny) model
def test_tiny_model_end_to_end(tmp_path: Path) -> None:
    from tests.agents.conftest import tiny_policy

    model = LocalChatModel(tiny_policy(lora=False), name="tiny")
    trials = run(tmp_path, model, apis=["calculator", "apichain:get_city"], num_episodes=1, num_stm_slots=2, max_turn=1,
                 query_max_tokens=12, action_max_tokens=12, reflection_max_tokens=3)
    assert [(t["api"], t["trial"]) for t in trials] == [("calculator", 0), ("get_city", 0), ("calculator", 1), ("get_city", 1)]
    for t in trials:
        assert set(t) == KEYS and t["explorer"] == "tiny"
        assert len(t["steps"]) <= 2 and t["reflection"] in ("yes", "no", None)
        if t["query"]:
            assert isinstance(t["reflection_text"], str)


@pytest.mark.slow
def test_cli_smoke(tmp_path: Path, tiny_model_dir: Path) -> None:
    out = tmp_path / "trials.jsonl"
    cmd = [sys.executable, "-m", "toolenv.cli", "ste", "explore", "--apis", "calculator", "apichain:get_city",
           "--model", str(tiny_model_dir), "--device", "cpu", "--out", str(out), "--num-episodes", "1",
           "--num-stm-slots", "1", "--max-turn", "1", "--query-max-tokens", "4", "--action-max-tokens", "4",
           "--reflection-max-tokens", "2", "--no-progress"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "2 trials in" in done.stdout
    assert [json.loads(line)["api"] for line in out.read_text().splitlines()] == ["calculator", "get_city"]
