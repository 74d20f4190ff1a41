"""Tool limits and env steps under hostile input: no raise, limits that hold, the caller's state kept."""

from __future__ import annotations

import decimal
import signal
import time
from typing import Any

import gymnasium as gym
import pytest

import toolenv  # noqa: F401
from tests.conftest import require
from toolenv.tools import Tool, ToolTimeout
from toolenv.types import ToolCall


def _stubborn(seconds: float) -> str:
    """A tool that swallows every error and retries until ``seconds`` have passed.

    Args:
        seconds: How long to keep retrying.
    """
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            time.sleep(0.01)
        except Exception:  # noqa: BLE001 - the point: a tool's own broad except
            pass
    return "done"


def test_a_tool_cannot_swallow_its_timeout() -> None:
    assert issubclass(ToolTimeout, BaseException) and not issubclass(ToolTimeout, Exception)
    tool = Tool(_stubborn, timeout=0.2)
    start = time.monotonic()
    result = tool(ToolCall("_stubborn", {"seconds": 3.0}))
    assert not result.ok and result.error == "timeout"
    assert time.monotonic() - start < 1.0


def _quick(x: int) -> int:
    """Return x.

    Args:
        x: A number.
    """
    return x


def test_the_callers_own_alarm_is_kept() -> None:
    fired: list[int] = []

    def handler(signum: int, frame: Any) -> None:
        fired.append(signum)

    previous = signal.signal(signal.SIGALRM, handler)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        assert Tool(_quick, timeout=1.0)(ToolCall("_quick", {"x": 1})).ok
        remaining, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 0.0 < remaining <= 0.3  # still armed, with the time it had left
        assert signal.getsignal(signal.SIGALRM) is handler
        time.sleep(0.5)
        assert fired == [signal.SIGALRM]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _precise(digits: int) -> str:
    """Set decimal precision and divide.

    Args:
        digits: Digits of precision.
    """
    decimal.getcontext().prec = digits
    return str(decimal.Decimal(1) / decimal.Decimal(7))[:12]


def test_process_wide_numeric_state_is_restored() -> None:
    before = decimal.getcontext().prec
    assert Tool(_precise)(ToolCall("_precise", {"digits": 5000})).ok
    assert decimal.getcontext().prec == before
    mpmath = require("mpmath", "pip install mpmath")
    dps = mpmath.mp.dps

    def set_dps(n: int) -> int:
        """Set mpmath's precision.

        Args:
            n: Decimal digits.
        """
        mpmath.mp.dps = n
        return n

    assert Tool(set_dps)(ToolCall("set_dps", {"n": 100_000})).ok
    assert mpmath.mp.dps == dps


def test_huge_bfcl_math_results_are_an_error_text_not_a_raise() -> None:
    require("bfcl_eval", "pip install --no-deps bfcl-eval==2026.3.23 && pip install mpmath")
    env = gym.make("toolenv/Explore-v0", apis=["bfcl:MathAPI"])
    env.reset(options={"query": "What is 10 to the power 5000?"})
    for args in ('{"base": 10, "exponent": 5000}', '{"base": 10, "exponent": 4400}'):
        obs, reward, terminated, truncated, info = env.step(f"Thought: compute.\nAction: power\nAction Input: {args}")
        assert isinstance(obs, str) and not info["calls_ok"][0]


def test_the_rollout_records_an_env_that_raises(tmp_path: Any) -> None:
    from agents.rollout import GenerationSettings, rollout
    from tests.agents.conftest import ScriptedGenerator, tiny_policy

    env = gym.make("toolenv/Math-v0")
    original = env.unwrapped.step

    def broken(action: str) -> Any:
        if "boom" in action:
            raise RuntimeError("a bug in a custom env")
        return original(action)

    env.unwrapped.step = broken  # type: ignore[method-assign]
    policy = tiny_policy()
    [t] = rollout(policy, [env], settings=GenerationSettings(max_new_tokens=16), options=[{"index": 0}],
                  generator=ScriptedGenerator(policy.tokenizer, [["calculator(1+1)", "boom"]]))
    assert t.truncated and len(t.rewards) == 2 and t.rewards[-1] == 0.0
    assert "RuntimeError: a bug in a custom env" in t.infos[-1]["error"]


def test_repeated_alarm_is_cleared_after_the_call() -> None:
    assert Tool(_quick, timeout=0.05)(ToolCall("_quick", {"x": 2})).ok
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    time.sleep(0.1)  # no stray ToolTimeout from a repeating timer


def test_trials_file_without_a_last_newline_resumes_cleanly(tmp_path: Any) -> None:
    import json

    from agents.ste.explore import load_trials

    path = tmp_path / "trials.jsonl"
    path.write_text(json.dumps({"api": "get_city", "query": "a"}) + "\n" + json.dumps({"api": "get_city", "query": "b"}))
    assert [t["query"] for t in load_trials(path)] == ["a", "b"]
    with path.open("a") as f:  # what the next trial of a resumed run does
        f.write(json.dumps({"api": "get_city", "query": "c"}) + "\n")
    assert [t["query"] for t in load_trials(path)] == ["a", "b", "c"]
    path.write_text('{"api": "x"}\n[1, 2]\n{"api": "y"}\n')
    with pytest.raises(ValueError, match="line 2 of .*got list"):
        load_trials(path)
    path.write_text('{"api": "x"}\n{"query": "no api"}\n{"api": "y"}\n')
    with pytest.raises(ValueError, match="line 2 of .*without 'api'"):
        load_trials(path)


def test_trajectories_append_after_a_last_line_without_newline(tmp_path: Any) -> None:
    from agents.rollout import Trajectory, load_trajectories, save_trajectories

    path = tmp_path / "t.jsonl"
    save_trajectories(path, [Trajectory("e", {"id": 1})])
    path.write_bytes(path.read_bytes().rstrip(b"\n"))
    save_trajectories(path, [Trajectory("e", {"id": 2})], append=True)
    assert [t.task["id"] for t in load_trajectories(path)] == [1, 2]
    path.write_text(path.read_text() + "not json\n")
    with pytest.raises(ValueError, match=r"t\.jsonl, line 3: not a trajectory"):
        load_trajectories(path)


def _sleepy(seconds: float) -> str:
    """Sleep.

    Args:
        seconds: How long.
    """
    time.sleep(seconds)
    return "awake"


def test_the_limit_holds_off_the_main_thread() -> None:
    from concurrent.futures import ThreadPoolExecutor

    tool = Tool(_sleepy, timeout=0.2)
    with ThreadPoolExecutor(1) as pool:  # how servers and trainers call step
        start = time.monotonic()
        slow = pool.submit(tool, ToolCall("_sleepy", {"seconds": 3.0})).result()
        waited = time.monotonic() - start
        fast = pool.submit(tool, ToolCall("_sleepy", {"seconds": 0.0})).result()
    assert not slow.ok and slow.error == "timeout" and waited < 1.5
    assert fast.ok and fast.output == "awake"


def test_many_slow_calls_in_one_action_share_a_step_budget() -> None:
    from toolenv.core import STEP_BUDGET_CALLS, ToolEnv
    from toolenv.datasets import ListTaskSet
    from toolenv.protocols import make_protocol
    from toolenv.types import Task

    tasks = ListTaskSet([Task("t", "Sleep a lot.", "awake")], name="sleep", split="train")
    env = ToolEnv(tasks, [_sleepy], protocol="python", tool_timeout=0.3)
    env.reset(seed=0)
    action = make_protocol("python").format_calls([ToolCall("_sleepy", {"seconds": 0.25})] * 12)
    start = time.monotonic()
    _, _, _, _, info = env.step(action)
    elapsed = time.monotonic() - start
    assert elapsed < STEP_BUDGET_CALLS * 0.3 + 1.0  # not 12 x 0.25 s
    assert info["calls_ok"][0] and not info["calls_ok"][-1]
    assert "time budget" in info["tool_outputs"][-1]


def test_a_trials_file_does_not_choose_what_is_imported(tmp_path: Any) -> None:
    from agents.ste.exploit import trial_pool

    planted = tmp_path / "planted.py"
    planted.write_text("import pathlib\npathlib.Path(__file__).with_name('RAN').write_text('x')\n\n"
                       "def add(a: int, b: int) -> int:\n    '''Add.\n\n    Args:\n        a: a\n        b: b\n    '''\n    return a + b\n")
    trials = [{"api": "add", "source": f"custom:{planted}:add"}]
    with pytest.raises(ValueError, match="does not choose what is imported: pass the pool with --apis"):
        trial_pool(trials)
    assert not (tmp_path / "RAN").exists()
    assert [a.name for a in trial_pool(trials, [f"{planted}:add"])] == ["add"]  # named by the user: imported


def _c_level(n: int) -> int:
    """One long C-level operation (no Python bytecode runs inside it, so SIGALRM waits for it).

    Args:
        n: How far to sum.
    """
    return sum(range(n))


class _Counter:
    def __init__(self) -> None:
        self.count = 0

    def bump(self, by: int) -> int:
        """Add to the counter.

        Args:
            by: How much.
        """
        self.count += by
        if by < 0:
            time.sleep(5)  # a call that will be killed
        return self.count


def test_isolation_stops_uninterruptible_work_and_keeps_state_consistent() -> None:
    tool = Tool(_c_level, timeout=0.3, isolate=True)
    start = time.monotonic()
    result = tool(ToolCall("_c_level", {"n": 10**10}))
    assert not result.ok and result.error == "timeout" and time.monotonic() - start < 2.0
    assert tool(ToolCall("_c_level", {"n": 10})).output == "45"
    counter = _Counter()
    bump = Tool(counter.bump, timeout=0.3, isolate=True)
    assert bump(ToolCall("bump", {"by": 2})).output == "2" and counter.count == 2  # the worker's effect comes back
    assert bump(ToolCall("bump", {"by": -1})).error == "timeout" and counter.count == 2  # a killed call changes nothing
    bad = bump(ToolCall("bump", {"by": "x"}))
    assert not bad.ok and counter.count == 2


def _huge(digits: int) -> int:
    """A number with many digits.

    Args:
        digits: How many.
    """
    return 10 ** digits


def test_an_unprintable_return_value_is_text_not_a_raise() -> None:
    class Broken:
        def __str__(self) -> str:
            raise RuntimeError("no")

    def broken() -> object:
        """Return something unprintable."""
        return Broken()

    out = Tool(_huge)(ToolCall("_huge", {"digits": 5000}))
    assert not out.ok and out.error == "exception" and "<unprintable int: ValueError" in out.output
    bad = Tool(broken)(ToolCall("broken", {}))
    assert not bad.ok and "<unprintable Broken: RuntimeError" in bad.output


def test_an_isolated_tool_keeps_its_mode_in_an_env() -> None:
    env = gym.make("toolenv/Explore-v0", apis=[Tool(_c_level, isolate=True)], tool_timeout=0.3)
    env.reset(options={"query": "sum a lot"})
    assert env.unwrapped.tools["_c_level"].isolate
    start = time.monotonic()
    _, _, _, _, info = env.step('Thought: sum.\nAction: _c_level\nAction Input: {"n": 10000000000}')
    assert not info["calls_ok"][0] and time.monotonic() - start < 2.0
