"""Evaluation: metrics by hand on built trajectories, the output files, determinism, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agents.evaluate import EVAL_METRICS, episode_metrics, evaluate, format_metrics_table
from agents.policy import Policy
from agents.rollout import GenerationSettings, Trajectory, load_trajectories

ENV = "toolenv/Math-v0"


def step(kind: str, *, wellformed: float = 0.0, succeeded: float = 0.0, tool_used: bool = False,
         success: bool = False) -> dict:
    return {
        "action_kind": kind, "success": success, "tool_used": tool_used,
        "reward_raw": {"call_wellformed": wellformed, "call_succeeded": succeeded, "format_error": 0.0,
                       "answer_correct": float(success), "step_cost": 1.0},
    }


def traj(infos: list[dict], mask: list[int], terms: list[dict[str, float]]) -> Trajectory:
    return Trajectory(env_id=ENV, task={"id": "t"}, action_mask=mask, infos=infos,
                      actions=["a"] * len(infos), reward_terms=terms,
                      rewards=[sum(t.values()) for t in terms])


def test_episode_metrics_by_hand() -> None:
    # 1: good call, failed call, right answer -> solved, tool used
    a = traj([step("call", wellformed=1, succeeded=1, tool_used=True),
              step("call", wellformed=1, succeeded=0, tool_used=True),
              step("answer", tool_used=True, success=True)],
             [0, 0, 1, 1, 0, 1, 1, 1, 0, 1], [{"answer_correct": 0.0}, {"answer_correct": 0.0}, {"answer_correct": 1.0}])
    # 2: a malformed action, then a wrong answer -> not solved, no tool used
    b = traj([step("invalid"), step("answer")], [0, 1, 1, 1, 0, 1],
             [{"format_error": -0.1, "answer_correct": 0.0}, {"answer_correct": 0.0}])
    # 3: a call to an unknown tool (not well-formed), then truncated
    c = traj([step("call", wellformed=0, succeeded=0, tool_used=True)], [0, 1, 1, 1, 1, 1, 1],
             [{"format_error": -0.1}])
    m = episode_metrics([a, b, c])
    assert set(EVAL_METRICS) <= set(m)
    assert m["accuracy"] == pytest.approx(1 / 3)
    assert m["tool_use_rate"] == pytest.approx(2 / 3)
    # attempted non-answers: a's two calls, b's invalid, c's call -> 2 of 4 well-formed
    assert m["call_wellformed_rate"] == pytest.approx(2 / 4)
    # calls: a's two, c's one -> 1 of 3 succeeded
    assert m["call_success_rate"] == pytest.approx(1 / 3)
    assert m["mean_turns"] == pytest.approx((3 + 2 + 1) / 3)
    assert m["mean_tokens"] == pytest.approx((6 + 4 + 6) / 3)
    assert m["episodes"] == 3
    assert m["mean_reward"] == pytest.approx((1.0 - 0.1 - 0.1) / 3)
    assert m["reward/answer_correct"] == pytest.approx(1 / 3)
    assert m["reward/format_error"] == pytest.approx(-0.2 / 3)


def test_episode_metrics_zero_division_is_zero() -> None:
    # only answers: no calls and no malformed actions -> both call rates 0.0, not NaN
    only_answers = [traj([step("answer", success=True)], [0, 1], [{"answer_correct": 1.0}]),
                    traj([step("answer")], [0, 1, 1], [{"answer_correct": 0.0}])]
    m = episode_metrics(only_answers)
    assert m["call_wellformed_rate"] == 0.0 and m["call_success_rate"] == 0.0
    assert m["accuracy"] == 0.5 and m["tool_use_rate"] == 0.0 and m["mean_tokens"] == 1.5
    # only malformed actions: well-formed rate is 0/1, success rate has no calls -> 0.0
    m = episode_metrics([traj([step("invalid")], [0, 1], [{"format_error": -0.1}])])
    assert m["call_wellformed_rate"] == 0.0 and m["call_success_rate"] == 0.0
    # an episode cut before any action, and no episodes at all
    m = episode_metrics([Trajectory(env_id=ENV, task={})])
    assert m["accuracy"] == 0.0 and m["tool_use_rate"] == 0.0 and m["mean_turns"] == 0.0 and m["episodes"] == 1
    empty = episode_metrics([])
    assert all(empty[k] == 0.0 for k in EVAL_METRICS) and empty["mean_reward"] == 0.0


def test_format_metrics_table_has_a_row_per_env() -> None:
    m = episode_metrics([traj([step("answer", success=True)], [0, 1], [{"answer_correct": 1.0}])])
    table = format_metrics_table({"toolenv/Math-v0": m, "toolenv/Math-Test-v0": m})
    lines = table.splitlines()
    assert len(lines) == 4 and lines[0].startswith("| env | accuracy")
    assert lines[2].startswith("| toolenv/Math-v0 | 1.000 |")


def test_evaluate_writes_outputs_and_is_deterministic(policy: Policy, tmp_path: Path) -> None:
    settings = GenerationSettings(greedy=True, max_new_tokens=8)
    out = tmp_path / "eval"
    metrics = evaluate(policy, [ENV], episodes=6, batch_size=4, settings=settings, out_dir=out, progress=False)
    again = evaluate(policy, [ENV], episodes=6, batch_size=4, settings=settings, progress=False)
    assert metrics == again
    assert set(metrics) == {ENV}
    assert set(EVAL_METRICS) <= set(metrics[ENV]) and metrics[ENV]["episodes"] == 6

    saved = json.loads((out / "metrics.json").read_text())
    assert set(saved) == {ENV} and set(EVAL_METRICS) <= set(saved[ENV]) and saved[ENV]["episodes"] == 6
    run = json.loads((out / "run.json").read_text())
    assert run["model"] == "tiny" and run["settings"]["greedy"] and run["episodes"] == 6
    assert f"| {ENV} |" in (out / "metrics.md").read_text()
    png = (out / "metrics.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 1000
    trajs = load_trajectories(out / "trajectories.jsonl")
    assert len(trajs) == 6
    # the first 6 tasks of the split, in file order
    import gymnasium as gym

    tasks = gym.make(ENV).unwrapped.tasks
    assert [t.task["id"] for t in trajs] == [tasks[i].id for i in range(6)]
    assert list((out / "runs").glob("*/events.out.tfevents.*"))


def test_evaluate_logs_to_a_given_writer(policy: Policy, tmp_path: Path) -> None:
    class Recorder:
        def __init__(self) -> None:
            self.scalars: dict[str, tuple[float, int]] = {}

        def add_scalar(self, tag: str, value: float, step: int) -> None:
            self.scalars[tag] = (value, step)

        def add_text(self, *args: object) -> None:
            pass

        def flush(self) -> None:
            pass

    rec = Recorder()
    evaluate(policy, [ENV], episodes=2, batch_size=2, settings=GenerationSettings(greedy=True, max_new_tokens=4),
             out_dir=tmp_path, progress=False, writer=rec, step=7)
    assert rec.scalars[f"eval/{ENV}/episodes"] == (2.0, 7)
    assert all(f"eval/{ENV}/{k}" in rec.scalars for k in EVAL_METRICS)
    assert not (tmp_path / "runs").exists()


def test_evaluate_unknown_env_suggests(policy: Policy) -> None:
    with pytest.raises(ValueError, match="Did you mean 'toolenv/Math-v0'"):
        evaluate(policy, ["toolenv/Mat-v0"], episodes=1, progress=False)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "TOOLENV_DATA"}
    return subprocess.run([sys.executable, "-m", "toolenv.cli", "eval", *args],
                          capture_output=True, text=True, timeout=300, env=env)


def test_cli_eval_smoke(tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = _cli("--model", str(tiny_model_dir), "--env", ENV, "--episodes", "3", "--out", str(out),
               "--max-new-tokens", "8", "--device", "cpu")
    assert res.returncode == 0, res.stderr
    assert "| env | accuracy" in res.stdout and f"| {ENV} |" in res.stdout
    saved = json.loads((out / "metrics.json").read_text())
    assert saved[ENV]["episodes"] == 3


def test_cli_eval_errors_are_one_line(tiny_model_dir: Path, tmp_path: Path) -> None:
    res = _cli("--model", str(tiny_model_dir), "--env", "toolenv/Mat-v0", "--out", str(tmp_path))
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert "Did you mean 'toolenv/Math-v0'?" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    res = _cli("--model", str(tiny_model_dir), "--env", "toolenv/GSM8K-Test-v0", "--out", str(tmp_path))
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert "TOOLENV_DATA" in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_gold_api_recall_is_the_share_of_gold_apis_called(policy: Policy) -> None:
    """StepTool's recall, from episodes played through the real env by the rollout loop (a scripted generator as the model)."""
    import gymnasium as gym

    import toolenv  # noqa: F401
    from agents.rollout import rollout
    from tests.agents.conftest import ScriptedGenerator

    env_id = "toolenv/APIChain-L1-v1"
    envs = [gym.make(env_id, protocol="trice") for _ in range(3)]
    envs[0].reset(options={"index": 0})
    base = envs[0].unwrapped
    gold = base.gold_actions()  # find_employee, get_department, answer
    scripts = [gold, [gold[0], "get_city(London)", "3"], ["I do not know"]]
    trajs = rollout(policy, envs, options=[{"index": 0}] * 3, env_ids=[env_id] * 3,
                    generator=ScriptedGenerator(policy.tokenizer, scripts), settings=GenerationSettings(max_new_tokens=32))
    assert [t.actions for t in trajs] == scripts
    m = episode_metrics(trajs)
    assert m["gold_api_recall"] == pytest.approx((1 + 0.5 + 0) / 3)  # all gold APIs; find_employee only; none
    # tasks without a gold solution give no recall key
    assert "gold_api_recall" not in episode_metrics([Trajectory(env_id="e", task={}, infos=[{"action_kind": "answer"}])])


def test_cli_eval_dfsdt_is_reproducible(tiny_model_dir: Path, tmp_path: Path) -> None:
    runs = []
    for name in ("a", "b"):
        out = tmp_path / name
        res = _cli("--model", str(tiny_model_dir), "--env", ENV, "--episodes", "3", "--out", str(out), "--max-new-tokens", "8",
                   "--device", "cpu", "--strategy", "dfsdt", "--width", "2", "--max-queries", "3", "--seed", "5")
        assert res.returncode == 0, res.stderr
        runs.append(json.loads((out / "metrics.json").read_text())[ENV])
        run = json.loads((out / "run.json").read_text())
        assert run["strategy"] == "dfsdt" and run["search"]["max_queries"] == 3
    assert runs[0] == runs[1]  # the same seed samples the same trees
    assert 1.0 <= runs[0]["search_queries"] <= 3.0 and 0.0 <= runs[0]["search_answered_rate"] <= 1.0
    res = _cli("--model", str(tiny_model_dir), "--env", ENV, "--out", str(tmp_path / "c"), "--strategy", "dfsdt", "--width", "0")
    assert res.returncode != 0 and "width" in res.stderr and "Traceback" not in res.stderr
