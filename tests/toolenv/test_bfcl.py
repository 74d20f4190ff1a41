"""BFCL envs: ground-truth replay, agreement with bfcl-eval's own checkers, miss_func, safety, single turn.

Everything but the missing-package test skips cleanly without the optional bfcl-eval package.
"""

from __future__ import annotations

import collections
import itertools
import json
import sys
import types
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import pytest

import toolenv  # noqa: F401  (registers the ids)
import toolenv.datasets.bfcl as bfcl_data
from tests.conftest import require
from toolenv.datasets import DataNotFoundError
from toolenv.protocols import PythonProtocol
from toolenv.types import ToolCall

MULTI = "toolenv/BFCLMultiTurn-v0"
SINGLE = "toolenv/BFCL-v0"
PY = PythonProtocol()

#: Ground truths that cannot pass in the env, and why.
KNOWN_GROUND_TRUTH_FAILURES = {
    # BFCL's ground truth calls tail() at turn 1, but tail is held out until turn 3; BFCL's executor
    # lets any method of the instances run, the env offers only the functions given so far.
    "multi_turn_miss_func_49": "tail() used before it is offered",
}


@pytest.fixture(scope="module")
def bfcl() -> types.ModuleType:
    return require("bfcl_eval", "pip install --no-deps bfcl-eval==2026.3.23 && pip install mpmath")


# ------------------------------------------------------------------------------------ helpers
def bfcl_string(call: dict[str, Any]) -> str:
    """A call as a string for BFCL's executor (what its decoder produces)."""
    args = ", ".join(f"{k}={v!r}" for k, v in call["arguments"].items())
    return f"{call['name']}({args})"


def play(env: gym.Env, task_id: str, turns: Sequence[Sequence[ToolCall]]) -> tuple[bool, list[list[list[str]]], dict]:
    """One episode: per turn, the calls as one action (if any), then a reply. Returns success and BFCL's decoded form."""
    env.reset(options={"task_id": task_id})
    decoded: list[list[list[str]]] = []
    info: dict[str, Any] = {}
    for calls in turns:
        steps = []
        if calls:
            info = env.step(PY.format_calls(calls))[4]
            steps.append([bfcl_string(c) for c in info["calls"]])
        _, _, terminated, _, info = env.step("Done.")
        decoded.append(steps)
    assert terminated
    return bool(info["success"]), decoded, info


def truth_calls(env: gym.Env, task: Any) -> list[list[ToolCall]]:
    """The task's ground truth, per turn, as parsed calls."""
    from toolenv.envs.bfcl import _signatures_of

    signatures = {m: p for c in task.meta["involved_classes"] for m, p in _signatures_of(c).items()}
    return [env.unwrapped._parse_truth(t, signatures, task.id) for t in task.meta["ground_truth"]]


_counter = itertools.count()


def bfcl_verdict(task: Any, decoded: list[list[list[str]]]) -> bool:
    """bfcl-eval's own multi_turn_checker on a decoded trajectory (it re-executes the calls itself)."""
    from bfcl_eval.eval_checker.multi_turn_eval import multi_turn_utils
    from bfcl_eval.eval_checker.multi_turn_eval.multi_turn_checker import multi_turn_checker

    meta = task.meta
    entry = {"id": task.id, "initial_config": meta["initial_config"], "involved_classes": meta["involved_classes"]}
    name = f"toolenv_agree_{next(_counter)}"
    try:
        return bool(multi_turn_checker(decoded, meta["ground_truth"], entry, meta["category"], name)["valid"])
    finally:  # its executor caches instances in module globals, by model name
        for key in [k for k in vars(multi_turn_utils) if k.startswith(name)]:
            delattr(multi_turn_utils, key)


def perturbations(turns: list[list[ToolCall]], seed: int) -> Iterator[tuple[str, list[list[ToolCall]]]]:
    """Drop a call, change an argument's value, misname an argument (each in one turn)."""
    busy = [i for i, t in enumerate(turns) if t]
    t = busy[seed % len(busy)]
    dropped = [list(x) for x in turns]
    del dropped[t][-1]
    yield "drop", dropped
    with_args = [(i, j) for i in busy for j, c in enumerate(turns[i]) if c.arguments]
    if not with_args:
        return
    i, j = with_args[seed % len(with_args)]
    call = turns[i][j]
    key, value = next(iter(call.arguments.items()))
    if isinstance(value, bool):
        new: Any = not value
    elif isinstance(value, (int, float)):
        new = value + 1
    elif isinstance(value, str):
        new = value + "_x"
    elif isinstance(value, list):
        new = [*value, *value[:1]] if value else ["x"]
    else:
        new = {}
    changed = [list(x) for x in turns]
    changed[i][j] = ToolCall(call.name, {**call.arguments, key: new})
    yield "change", changed
    renamed = [list(x) for x in turns]
    args = dict(call.arguments)
    args[key + "_x"] = args.pop(key)
    renamed[i][j] = ToolCall(call.name, args)
    yield "rename", renamed


# --------------------------------------------------------------------------------- missing package
def test_missing_package_is_a_data_error_naming_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real = bfcl_data.importlib.util.find_spec
    monkeypatch.setattr(bfcl_data.importlib.util, "find_spec", lambda name, *a: None if name == "bfcl_eval" else real(name, *a))
    bfcl_data.load_bfcl_multi_turn.cache_clear()
    bfcl_data.load_bfcl_single_turn.cache_clear()
    try:
        for env_id in (MULTI, SINGLE):
            with pytest.raises(DataNotFoundError, match="pip install --no-deps bfcl-eval==2026.3.23"):
                gym.make(env_id)
    finally:
        bfcl_data.load_bfcl_multi_turn.cache_clear()
        bfcl_data.load_bfcl_single_turn.cache_clear()


# ------------------------------------------------------------------------------------ multi-turn
def test_ground_truth_replay_solves_every_base_entry(bfcl: types.ModuleType) -> None:
    env = gym.make(MULTI)
    solved = []
    for i in range(len(env.unwrapped.tasks)):
        env.reset(options={"index": i})
        for action in env.unwrapped.gold_actions():
            _, reward, terminated, truncated, info = env.step(action)
        assert terminated and not truncated
        solved.append(info["success"] and reward == 1.0 and all(v["valid"] for v in info["bfcl"]["turns"]))
    assert sum(solved) == len(solved) == 200


@pytest.mark.parametrize("category", ["miss_func", "miss_param", "long_context"])
@pytest.mark.parametrize("protocol", ["python", "json"])
def test_ground_truth_replay_other_categories(bfcl: types.ModuleType, category: str, protocol: str) -> None:
    env = gym.make(MULTI, category=category, protocol=protocol)
    failed = set()
    for i in range(len(env.unwrapped.tasks)):
        env.reset(options={"index": i})
        for action in env.unwrapped.gold_actions():
            info = env.step(action)[4]
        if not info["success"]:
            failed.add(env.unwrapped.task.id)
    assert failed == {k for k in KNOWN_GROUND_TRUTH_FAILURES if f"_{category}_" in k}


@pytest.mark.parametrize("category", ["base", "miss_func", "miss_param", "long_context"])
def test_checker_agrees_with_bfcl_on_truth_and_perturbations(bfcl: types.ModuleType, category: str) -> None:
    env = gym.make(MULTI, category=category)
    outcomes: collections.Counter[tuple[str, bool]] = collections.Counter()
    disagreements = set()
    for i, task in enumerate(env.unwrapped.tasks):
        truth = truth_calls(env, task)
        for kind, turns in [("truth", truth), *perturbations(truth, i)]:
            ours, decoded, _ = play(env, task.id, turns)
            theirs = bfcl_verdict(task, decoded)
            outcomes[(kind, ours)] += 1
            if ours != theirs:
                disagreements.add((task.id, kind))
    # the one known difference: BFCL runs a held-out function the env does not offer yet
    assert disagreements == {(k, "truth") for k in KNOWN_GROUND_TRUTH_FAILURES if f"_{category}_" in k}
    assert outcomes[("truth", True)] == 200 - len(disagreements)
    for kind in ("drop", "change", "rename"):  # most perturbations break the entry, in both checkers
        assert outcomes[(kind, False)] > 0.8 * (outcomes[(kind, False)] + outcomes[(kind, True)])


def test_initial_state_and_prompt_match_bfcl(bfcl: types.ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    require("filelock", "pip install filelock (a dependency of transformers)")
    monkeypatch.setenv("BFCL_PROJECT_ROOT", str(tmp_path))  # bfcl_eval.utils makes result folders on import
    from bfcl_eval.constants import default_prompts as dp
    from bfcl_eval.eval_checker.multi_turn_eval.multi_turn_checker import state_checker
    from bfcl_eval.eval_checker.multi_turn_eval.multi_turn_utils import execute_multi_turn_func_call
    from bfcl_eval.utils import load_dataset_entry

    style = dp.PROMPT_STYLE_TEMPLATES["classic"]
    for category in ("multi_turn_long_context", "multi_turn_miss_func"):
        env = gym.make(MULTI, category=category.removeprefix("multi_turn_"))
        for entry in load_dataset_entry(category):
            env.reset(options={"task_id": entry["id"]})
            base = env.unwrapped
            expected = dp._PLAINTEXT_SYSTEM_PROMPT_TEMPLATE.format(
                persona=style["persona"], task=style["task"],
                tool_call_format=style["tool_call_no_tag"].format(
                    output_format=dp.OUTPUT_FORMAT_MAPPING["python"], param_types=dp.PARAM_TYPE_MAPPING["python"]),
                multiturn_behavior=style["multiturn_behavior"],
                available_tools=style["available_tools"].format(format="json", functions=json.dumps(entry["function"], indent=4)),
            )
            assert base.system_prompt == expected
            assert base.task.meta["missed_functions"] == entry.get("missed_function", {})
            _, theirs = execute_multi_turn_func_call([], entry["initial_config"], entry["involved_classes"],
                                                     "toolenv_state", entry["id"], long_context="long_context" in category)
            assert state_checker(base._instances, theirs)["valid"]


def test_miss_func_adds_the_function_at_bfcl_turn(bfcl: types.ModuleType) -> None:
    env = gym.make(MULTI, category="miss_func")
    obs, _ = env.reset(options={"task_id": "multi_turn_miss_func_0"})  # sort is held out until turn 3
    base = env.unwrapped
    assert "sort" not in base.tools and '"name": "sort"' not in obs
    obs, *_ = env.step("[sort(file_name='final_report.pdf')]")
    assert "unknown tool 'sort'" in obs
    gold = base.gold_actions()
    for action in gold[:5]:  # turns 0-2: calls, reply, calls, reply, decline
        obs, reward, terminated, truncated, info = env.step(action)
    assert info["turn"] == 3 and "sort" in base.tools
    assert obs.endswith("I have updated some more functions you can choose from. What about now?")
    assert "'name': 'sort'" in obs and base.messages[-1] == {"role": "user", "content": obs}


def test_turn_without_calls_fails_and_terms(bfcl: types.ModuleType) -> None:
    env = gym.make(MULTI)
    env.reset(options={"index": 0})
    obs, reward, terminated, truncated, info = env.step("I will not do that.")
    assert not terminated and info["turn"] == 1
    assert info["turn_verdict"]["error_type"] == "multi_turn:empty_turn_model_response"
    assert info["reward_raw"]["turn_correct"] == 0.0 and reward == 0.0
    for action in env.unwrapped.gold_actions()[2:]:
        obs, reward, terminated, truncated, info = env.step(action)
    assert terminated and not info["success"] and reward == 0.0
    assert info["bfcl"]["error_type"] == "multi_turn:empty_turn_model_response"
    # the skipped move leaves the file system behind the ground truth's, so later turns fail too
    assert [v["valid"] for v in info["bfcl"]["turns"]] == [False, False, False, False]


def test_calls_run_on_the_env_instances_and_errors_read_as_bfcl(bfcl: types.ModuleType) -> None:
    env = gym.make(MULTI, reward_weights={"call_succeeded": 1.0})
    env.reset(options={"index": 0})
    obs, reward, *_ , info = env.step("[cd(folder='document'), cd(folder='nowhere')]")
    assert obs.splitlines()[0] == '{"current_working_directory": "document"}'
    assert "error" in obs.splitlines()[1] and reward == 0.0
    obs, reward, *_, info = env.step("[cd(folderr='x')]")
    assert obs.startswith("Error during execution: GorillaFileSystem.cd() got an unexpected keyword argument 'folderr'")
    assert info["reward_raw"]["format_error"] == 1.0
    obs, reward, *_, info = env.step("[pwd()]")
    assert reward == 1.0 and "document" in obs


def test_model_text_never_runs_as_code(bfcl: types.ModuleType, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    env = gym.make(MULTI)
    env.reset(options={"index": 0})
    for text in [
        f"[cd(folder=__import__('os').system('touch {marker}'))]",
        f"[__import__('os').system('touch {marker}')]",
        f"[exec(code=\"open('{marker}', 'w')\")]",
        "[_load_scenario(scenario={})]",
        "[__init__()]",
    ]:
        obs, *_ = env.step(text)
        assert obs.startswith(("Invalid action", "Error: unknown tool")), obs
    assert not marker.exists()


def test_long_context_observations_are_not_cut(bfcl: types.ModuleType) -> None:
    env = gym.make(MULTI, category="long_context")
    env.reset(options={"task_id": "multi_turn_long_context_86"})  # its first step returns ~16,700 characters
    obs, *_, info = env.step(env.unwrapped.gold_actions()[0])
    assert len(obs) > 16_384 and obs == "\n".join(info["tool_outputs"]) and obs in env.observation_space


def test_json_protocol_episode(bfcl: types.ModuleType) -> None:
    env = gym.make(MULTI, protocol="json")
    obs, info = env.reset(options={"index": 1})
    assert "<tools>" in obs and env.unwrapped.tool_schemas[0]["function"]["parameters"]["type"] == "object"
    actions = env.unwrapped.gold_actions()
    assert actions[0].startswith("<tool_call>")
    for action in actions:
        *_, terminated, truncated, info = env.step(action)
    assert terminated and info["success"]


# ----------------------------------------------------------------------------------- single turn
SINGLE_CATEGORIES = ["simple_python", "multiple", "parallel", "parallel_multiple", "irrelevance"]


@pytest.fixture(scope="module")
def bfcl_ast_checker(bfcl: types.ModuleType) -> Iterator[Any]:
    """bfcl-eval's own ast_checker; its module imports every model handler, so stub that one import."""
    saved = {k: v for k, v in sys.modules.items() if k.startswith("bfcl_eval.")}
    try:
        import bfcl_eval.constants.model_config  # noqa: F401  (vendor SDKs installed: the real one)
    except ImportError:
        stub = types.ModuleType("bfcl_eval.constants.model_config")
        stub.MODEL_CONFIG_MAPPING = collections.defaultdict(lambda: types.SimpleNamespace(underscore_to_dot=False))  # type: ignore[attr-defined]
        sys.modules["bfcl_eval.constants.model_config"] = stub
    from bfcl_eval.constants.enums import Language
    from bfcl_eval.eval_checker.ast_eval.ast_checker import ast_checker

    yield lambda docs, output, truth, category: ast_checker(docs, output, truth, Language.PYTHON, category, "toolenv")["valid"]
    for key in [k for k in sys.modules if k.startswith("bfcl_eval.") and k not in saved]:
        del sys.modules[key]


def single_perturbations(calls: list[dict[str, Any]], seed: int) -> Iterator[list[dict[str, Any]]]:
    yield calls[:-1]
    yield [*calls, calls[0]]
    name = next(iter(calls[seed % len(calls)]))
    yield [{(name + "_v2" if k == name else k): v for k, v in c.items()} for c in calls]
    for k, c in enumerate(calls):
        fn, args = next(iter(c.items()))
        if args:
            key = sorted(args)[seed % len(args)]
            value = args[key]
            new = (not value) if isinstance(value, bool) else value * 3 + 1 if isinstance(value, (int, float)) else (
                value + " other" if isinstance(value, str) else [] if value else ["x"] if isinstance(value, list) else "x")
            yield [*calls[:k], {fn: {**args, key: new}}, *calls[k + 1:]]
            yield [*calls[:k], {fn: {a: v for a, v in args.items() if a != key}}, *calls[k + 1:]]
            return


@pytest.mark.parametrize("category", SINGLE_CATEGORIES)
def test_single_turn_truth_passes_and_agrees_with_bfcl(bfcl_ast_checker: Any, category: str) -> None:
    from toolenv.envs.bfcl import ast_check

    env = gym.make(SINGLE, category=category)
    verdicts: collections.Counter[tuple[str, bool]] = collections.Counter()
    for i, task in enumerate(env.unwrapped.tasks):
        env.reset(options={"index": i})
        (action,) = env.unwrapped.gold_actions()
        _, reward, terminated, _, info = env.step(action)
        assert terminated and info["success"] and reward == 1.0, (task.id, info["bfcl"])
        if category == "irrelevance":
            continue
        gold = [{c.name: dict(c.arguments)} for c in task.solution]
        docs, truth = task.meta["functions"], task.meta["ground_truth"]
        for output in [gold, *single_perturbations(gold, i)]:
            ours = ast_check(docs, output, truth, category)["valid"]
            assert ours == bfcl_ast_checker(docs, output, truth, category), (task.id, output)
            verdicts[("gold" if output is gold else "perturbed", ours)] += 1
    if category != "irrelevance":
        assert verdicts[("perturbed", False)] > 0.8 * sum(v for (k, _), v in verdicts.items() if k == "perturbed")


def test_single_turn_wrong_argument_fails(bfcl: types.ModuleType) -> None:
    env = gym.make(SINGLE)
    env.reset(options={"index": 0})
    *_, terminated, truncated, info = env.step("[calculate_triangle_area(base=10, height=6)]")
    assert terminated and not info["success"] and info["bfcl"]["error_type"] == "value_error:others"
    env.reset(options={"index": 0})
    *_, info = env.step("The area is 25.")
    assert not info["success"]
    env.reset(options={"index": 0})
    *_, info = env.step("[calculate_triangle_area(10, 5)]")  # positional arguments are bound by name
    assert info["success"]


def test_irrelevance(bfcl: types.ModuleType) -> None:
    env = gym.make(SINGLE, category="irrelevance")
    env.reset(options={"index": 0})
    _, reward, terminated, _, info = env.step("None of these functions can compute a triangle's area.")
    assert terminated and info["success"] and reward == 1.0
    env.reset(options={"index": 0})
    _, reward, terminated, _, info = env.step("[determine_body_mass_index(weight=10.0, height=5.0)]")
    assert terminated and not info["success"] and info["bfcl"]["error_type"] == "irrelevance_error:decoder_success"


def test_single_turn_malformed_reply_ends_the_episode_as_a_decoder_failure(bfcl: types.ModuleType) -> None:
    env = gym.make(SINGLE)
    env.reset(options={"index": 0})
    obs, reward, terminated, truncated, info = env.step("[calculate_triangle_area(base=ten)]")
    # the one reply ends the task: BFCL's decoder failure, never also truncated
    assert terminated and not truncated and not info["success"] and reward == pytest.approx(-0.1)
    assert "must be a literal" in obs and info["bfcl"]["error_type"] == "ast_decoder:decoder_failed"
    env.reset(options={"index": 0})
    *_, terminated, truncated, info = env.step(env.unwrapped.gold_actions()[0])
    assert terminated and not truncated and info["success"]
