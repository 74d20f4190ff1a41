"""APIChain: the APIs, the task generator, and scripted episodes with StepTool's step rewards."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import gymnasium as gym
import pytest

import toolenv  # noqa: F401  (registers the ids)
from rewards.steps import contribution, step_rewards
from toolenv.datasets.apichain import APIChainTasks, is_heldout
from toolenv.envs.apichain import APIChainEnv
from toolenv.protocols import make_protocol
from toolenv.tools import Tool, apis
from toolenv.tools.calculator import format_number
from toolenv.types import ToolCall

PROTOCOLS = ["json", "react"]
CALLS_PER_LEVEL = {1: {2}, 2: {2, 3}, 3: {3, 4}, 4: {4, 5}}
TOOLS = {name: Tool(fn) for name, fn in apis.API_TOOLS.items()}


# ------------------------------------------------------------------------------------- tools
def test_every_api_has_a_described_schema() -> None:
    for name, tool in TOOLS.items():
        fn = tool.schema["function"]
        assert fn["name"] == name and fn["description"]
        props = fn["parameters"]["properties"]
        assert props and fn["parameters"]["required"] == list(props)
        for prop in props.values():
            assert prop["type"] in ("string", "number") and prop["description"]
            assert ">>>" not in prop["description"]  # doctests stay out of the schema
    assert TOOLS["convert_units"].parameters["properties"]["value"]["type"] == "number"
    assert TOOLS["get_exchange_rate"].parameters["required"] == ["base", "target"]


def test_outputs_are_json_and_lookups_ignore_case() -> None:
    for value in (apis.get_city("new  york"), apis.find_employee("MEI LIN"), apis.get_weather("Oslo", "fri"),
                  apis.get_exchange_rate("jpy", "usd"), apis.convert_units(3, "miles", "km"),
                  apis.lookup_product("desk lamp"), apis.get_department("sales"), apis.get_country("japan"),
                  apis.get_distance("Lima", "Cairo")):
        assert json.loads(json.dumps(value)) == value
    assert apis.get_city("new  york")["city"] == "New York"
    assert apis.get_weather("Oslo", "Friday") == apis.get_weather("oslo", "fri")
    assert apis.get_exchange_rate("EUR", "EUR")["rate"] == 1.0
    assert apis.convert_units(212, "F", "C") == {"value": 100.0, "unit": "C"}


@pytest.mark.parametrize(
    ("name", "arguments", "message"),
    [
        ("get_city", {"city": "Pariss"}, "Error: Unknown city 'Pariss'. Did you mean 'Paris'?"),
        ("find_employee", {"name": "Mei Ling"}, "Unknown employee 'Mei Ling'. Did you mean 'Mei Lin'?"),
        ("get_exchange_rate", {"base": "EUX", "target": "USD"}, "Unknown currency 'EUX'. Did you mean 'EUR'?"),
        ("get_weather", {"city": "Oslo", "day": "Someday"}, "Unknown day 'Someday'. Did you mean 'Sunday'?"),
        ("get_department", {"department": "Accounting"}, "Known department names: Engineering, Finance"),
        ("convert_units", {"value": 3, "from_unit": "km", "to_unit": "kg"}, "Cannot convert km (length) to kg (mass)."),
        ("convert_units", {"value": 3, "from_unit": "kilometres", "to_unit": "parsecs"}, "Unknown unit 'parsecs'"),
    ],
)
def test_unknown_keys_are_helpful_errors(name: str, arguments: dict, message: str) -> None:
    result = TOOLS[name](ToolCall(name, arguments))
    assert not result.ok and result.error == "exception"
    assert message in result.output


def test_unknown_key_error_is_a_key_error_and_a_value_error() -> None:
    with pytest.raises(KeyError, match="Did you mean 'Paris'"):
        apis.get_city("Pariss")
    with pytest.raises(ValueError):
        apis.lookup_product(42)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------- datasets
def _digest(split: str, level: int | None, n: int) -> str:
    tasks = APIChainTasks(split, level=level)
    dump = [tasks[i].to_dict() for i in range(n)]
    return hashlib.sha256(json.dumps(dump, sort_keys=True).encode()).hexdigest()


def test_generation_is_deterministic_across_processes() -> None:
    here = _digest("train", None, 200)
    script = "from tests.toolenv.test_apichain import _digest; print(_digest('train', None, 200))"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONHASHSEED": "321"})
    assert out.stdout.strip() == here


def test_mixed_levels_ids_and_lookup() -> None:
    mixed, l3 = APIChainTasks("train"), APIChainTasks("train", level=3)
    assert len(mixed) == 10_000 and len(APIChainTasks("test")) == 1_000
    assert mixed[6] == l3[6] and mixed[6].id == "apichain-train-L3-6"
    assert mixed.index_of("apichain-train-L3-6") == 6
    with pytest.raises(KeyError, match="Did you mean 'apichain-train-L3-6'"):
        mixed.index_of("apichain-train-L1-6")
    with pytest.raises(ValueError, match="Did you mean 'test'"):
        APIChainTasks("tset")
    with pytest.raises(ValueError, match="level"):
        APIChainTasks("train", level=5)


def _execute(task) -> list[str]:
    outputs = []
    for call in task.solution:
        result = TOOLS[call.name](call)
        assert result.ok, (task.id, call, result.output)
        outputs.append(result.output)
    return outputs


@pytest.mark.parametrize("level", [1, 2, 3, 4])
def test_gold_sequences_reproduce_the_answers(level: int) -> None:
    for split, n in (("train", 2_000), ("test", 500)):
        tasks = APIChainTasks(split, level=level)
        for i in range(n):
            task = tasks[i]
            assert len(task.solution) in CALLS_PER_LEVEL[level] and task.meta["num_calls"] == len(task.solution)
            outputs = _execute(task)
            field = task.meta["answer_field"]
            final = outputs[-1] if field is None else format_number(json.loads(outputs[-1])[field])
            assert final == task.answer, task
            # every call's result is used: by a later call or in the answer (the chain is dependent)
            steps = [{"name": c.name, "arguments": dict(c.arguments), "output": o, "ok": True}
                     for c, o in zip(task.solution, outputs)]
            assert contribution(steps, task.answer, query=task.question) == [1.0] * len(steps), task


@pytest.mark.parametrize("level", [1, 2, 3, 4])
def test_test_split_never_repeats_a_train_question(level: int) -> None:
    train, test = APIChainTasks("train", level=level), APIChainTasks("test", level=level)
    n_train = 10_000 if level == 1 else 3_000
    train_q = {train[i].question for i in range(n_train)}
    test_tasks = [test[i] for i in range(1_000)]
    assert not train_q & {t.question for t in test_tasks}
    assert all(is_heldout(t.meta["key"]) for t in test_tasks)
    assert not any(is_heldout(train[i].meta["key"]) for i in range(n_train))
    assert len({t.question for t in test_tasks}) >= 20


# ---------------------------------------------------------------------------------- episodes
def make(protocol: str = "json", env_id: str = "toolenv/APIChain-L1-v1", index: int = 0, **kwargs) -> gym.Env:
    env = gym.make(env_id, protocol=protocol, **kwargs)
    env.reset(seed=0, options={"index": index})
    return env


def act(protocol: str, tool: str, /, **arguments: object) -> str:
    return make_protocol(protocol).format_call(ToolCall(tool, arguments))


def answer(protocol: str, text: str) -> str:
    return make_protocol(protocol).format_answer(text)


@pytest.fixture(params=PROTOCOLS)
def protocol(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.mark.parametrize("env_id", ["toolenv/APIChain-L1-v1", "toolenv/APIChain-v1"])
def test_gold_actions_succeed_with_full_step_rewards(protocol: str, env_id: str) -> None:
    env = make(protocol, env_id, index=3)
    task = env.unwrapped.task
    actions = env.unwrapped.gold_actions()
    assert len(actions) == len(task.solution) + 1
    for action in actions[:-1]:
        obs, reward, terminated, truncated, info = env.step(action)
        assert not terminated and info["action_kind"] == "call"
        raw = info["reward_raw"]
        assert raw["call_succeeded"] == 1.0 and raw["contribution"] == 1.0 and raw["format_error"] == 0.0
        assert reward == pytest.approx(1.0) and "step_reward_terms" not in info
    obs, reward, terminated, truncated, info = env.step(actions[-1])
    assert terminated and not truncated and info["success"]
    assert info["reward_raw"]["task_status"] == 1.0 and info["reward_raw"]["answer_correct"] == 1.0
    assert info["reward_terms"]["answer_correct"] == 0.0 and reward == pytest.approx(1.0)
    terms = info["step_reward_terms"]
    assert len(terms) == len(actions) and [t["contribution"] for t in terms] == [1.0] * len(task.solution) + [0.0]
    assert [t["task_status"] for t in terms] == [0.0] * len(task.solution) + [1.0]
    assert info["step_rewards"] == pytest.approx([1.0] * len(actions))
    n = len(actions)
    code = step_rewards(terms, env.unwrapped.reward_weights, steptool_code_weights=True)
    assert code == pytest.approx([float(n - 1 - k) for k in range(n)])  # the final score weighs 0


def test_wrong_answer(protocol: str) -> None:
    env = make(protocol)
    wrong = str(float(env.unwrapped.task.answer) + 1)
    obs, reward, terminated, truncated, info = env.step(answer(protocol, wrong))
    assert terminated and reward == 0.0 and not info["success"]
    assert info["reward_raw"]["task_status"] == 0.0 and info["step_rewards"] == [0.0]


def test_right_answer_without_a_call_is_unsure(protocol: str) -> None:
    env = make(protocol)
    obs, reward, terminated, truncated, info = env.step(answer(protocol, env.unwrapped.task.answer))
    assert terminated and info["reward_raw"]["task_status"] == 0.5 and reward == 0.5 and not info["success"]


def test_failing_call_is_wellformed_but_not_succeeded(protocol: str) -> None:
    env = make(protocol)
    obs, reward, terminated, truncated, info = env.step(act(protocol, "get_city", city="Pariss"))
    assert "Unknown city 'Pariss'. Did you mean 'Paris'?" in obs
    raw = info["reward_raw"]
    assert raw["call_wellformed"] == 1.0 and raw["call_succeeded"] == 0.0 and raw["format_error"] == 0.0
    assert raw["contribution"] == 0.0 and reward == 0.0 and not terminated


def test_malformed_action_and_unknown_tool(protocol: str) -> None:
    env = make(protocol)
    bad = {"react": "Action: get_city\nAction Input: {oops", "json": "<tool_call>{not json}</tool_call>"}[protocol]
    obs, reward, terminated, truncated, info = env.step(bad)
    assert obs.startswith("Invalid action:") and reward == pytest.approx(-0.1) and info["num_format_errors"] == 1
    obs, reward, *_, info = env.step(act(protocol, "get_citty", city="Paris"))
    assert "Did you mean 'get_city'?" in obs and info["reward_raw"]["format_error"] == 1.0


def test_truncation_and_hindsight_without_an_answer(protocol: str) -> None:
    env = make(protocol)
    first = env.unwrapped.task.solution[0]
    steps = env.spec.max_episode_steps
    assert steps == 8
    for _ in range(steps):
        obs, reward, terminated, truncated, info = env.step(act(protocol, first.name, **first.arguments))
    assert truncated and not terminated and not info["success"] and "step_reward_terms" not in info
    late = env.unwrapped.hindsight()
    assert env.unwrapped.end_info() == late  # what the rollout adds to a truncated episode's last step
    assert len(late["step_reward_terms"]) == steps
    assert [t["task_status"] for t in late["step_reward_terms"]] == [0.0] * steps
    # the gold call counts once; its repeats only earn call_succeeded
    assert late["step_rewards"] == pytest.approx([1.0] + [1 / 2] * (steps - 1))
    assert [t["contribution"] for t in late["step_reward_terms"]] == [1.0] + [0.0] * (steps - 1)


def _check_hindsight(env: gym.Env, colleague: str, dept: str) -> None:
    immediate = []
    for action in (act("json", "find_employee", name=colleague),  # not gold, but its department is used later
                   act("json", "get_city", city="Tokyo"),  # succeeds, unrelated
                   act("json", "get_department", department=dept)):  # gold
        *_, info = env.step(action)
        immediate.append(info["reward_raw"]["contribution"])
    *_, info = env.step(env.unwrapped.task.answer)
    assert immediate == [0.0, 0.0, 1.0]
    assert [t["contribution"] for t in info["step_reward_terms"]] == [1.0, 0.0, 1.0, 0.0]
    assert [t["call_succeeded"] for t in info["step_reward_terms"]] == [1.0, 1.0, 1.0, 0.0]
    assert info["step_rewards"] == pytest.approx([1.0, 1 / 2, 1.0, 1.0]) and info["success"]


def test_hindsight_contribution_credits_results_used_later() -> None:
    env = gym.make("toolenv/APIChain-L1-v1")
    tasks = env.unwrapped.tasks
    index = next(i for i in range(100) if tasks[i].solution[1].name == "get_department")
    env.reset(options={"index": index})
    name = tasks[index].solution[0].arguments["name"]
    dept = apis.EMPLOYEES[name][0]
    colleague = next(e for e, (d, *_) in apis.EMPLOYEES.items() if d == dept and e != name)
    _check_hindsight(env, colleague, dept)


def test_parallel_calls_sum_their_contributions() -> None:
    env = make("json", "toolenv/APIChain-v1", index=2)  # level 3
    task = env.unwrapped.task
    fmt = make_protocol("json").format_call
    both = fmt(task.solution[0]) + fmt(task.solution[1])
    *_, info = env.step(both)
    assert len(info["calls"]) == 2 and info["reward_raw"]["contribution"] == 2.0
    for action in env.unwrapped.gold_actions()[2:]:
        *_, info = env.step(action)
    assert info["success"] and info["step_reward_terms"][0]["contribution"] == 2.0


# -------------------------------------------------------------------------------- judge, kwargs
def test_a_custom_judge_replaces_the_rule_judge() -> None:
    seen = {}

    def judge(query, steps, final_answer, *, answer=None):
        seen.update(query=query, n=len(steps), final=final_answer, answer=answer)
        return {"contribution": [0.5] * len(steps), "task_status": "Unsure"}

    env = make("json", judge=judge)
    for action in env.unwrapped.gold_actions():
        *_, reward, terminated, truncated, info = env.step(action)
    task = env.unwrapped.task
    assert seen == {"query": task.question, "n": 2, "final": task.answer, "answer": task.answer}
    assert reward == 0.5 and not info["success"]
    assert [t["contribution"] for t in info["step_reward_terms"]] == [0.5, 0.5, 0.0]

    def three_args(query, steps, final_answer):
        return {"contribution": [], "task_status": 1.0}

    env = make("json", judge=three_args)
    *_, info = env.step(env.unwrapped.task.answer)  # no calls: an empty contribution list is right
    assert info["success"]
    env = make("json", judge=three_args)
    env.step(env.unwrapped.gold_actions()[0])
    with pytest.raises(ValueError, match="one contribution per step"):
        env.step(env.unwrapped.task.answer)


def test_kwargs_are_checked() -> None:
    with pytest.raises(ValueError, match=r"Unknown tool 'get_citty'.*Did you mean 'get_city'"):
        APIChainEnv(tools=["get_citty"])
    with pytest.raises(ValueError, match="which the gold solutions of apichain/L2 use"):
        APIChainEnv(level=2, tools=["find_employee", "get_department", "get_city"])
    with pytest.raises(ValueError, match="Did you mean 'contribution'"):
        APIChainEnv(reward_weights={"contributon": 1.0})
    env = APIChainEnv(level=1, tools=["find_employee", "get_department", "get_city"], reward_weights={"step_cost": -1 / 2})
    env.reset(seed=0)
    _, reward, *_ = env.step(act("json", "get_city", city="Tokyo"))  # a useless successful call is worth 0
    assert reward == pytest.approx(0.0)
    assert "APIChainEnv(split='train', level=1" in repr(env)


def test_llm_judge_from_a_model_name(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """``judge="chat:MODEL"`` loads the model as StepTool's LLM judge; a name that is no model form is a clear error."""
    from tests.agents.conftest import tiny_model, tiny_tokenizer

    tok = tiny_tokenizer()
    tiny_model(len(tok)).save_pretrained(tmp_path / "judge")
    tok.save_pretrained(tmp_path / "judge")
    env = gym.make("toolenv/APIChain-L1-v1", judge=f"chat:{tmp_path / 'judge'}")
    assert callable(env.unwrapped.judge) and env.unwrapped.judge.__name__ == "judge"
    with pytest.raises(ValueError, match="judge to be 'chat:MODEL'"):
        gym.make("toolenv/APIChain-L1-v1", judge="gpt-4")
