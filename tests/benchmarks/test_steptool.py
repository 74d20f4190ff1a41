"""``toolenv bench steptool`` end to end on a tiny model with tiny budgets: every algorithm runs on the same samples."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import gymnasium as gym
import pytest

import toolenv  # noqa: F401  (registers the env ids)
from benchmarks.steptool import ALGORITHMS, PRESETS, run_env_kwargs
from tests.agents.conftest import tiny_model, tiny_tokenizer


@pytest.mark.slow
def test_bench_steptool_tiny(tmp_path: Path) -> None:
    tok = tiny_tokenizer()
    model_dir = tmp_path / "tiny"
    tiny_model(len(tok)).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    out = tmp_path / "steptool"
    algorithms = list(ALGORITHMS)
    cmd = [
        sys.executable, "-m", "toolenv.cli", "bench", "steptool", "--preset", "smoke", "--model", str(model_dir),
        "--out", str(out), "--samples", "8", "--eval-episodes", "3", "--max-new-tokens", "16", "--strategy", "dfsdt", "--dfsdt-queries", "3",
        *[a for algo in algorithms for a in ("--algorithm", algo)],
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert set(results["runs"]) == {"bc", *algorithms}
    for algo in algorithms:
        [metrics] = results["runs"][algo]
        assert metrics["episodes"] == 3
        policy = json.loads((out / algo / "seed0" / "model" / "toolenv_policy.json").read_text())
        assert policy["episodes"] == 8  # the same env-sample budget for every algorithm
    for algo in algorithms:
        assert f"| {algo} | 8 |" in result.stdout
    assert (out / "steptool.png").stat().st_size > 0
    # each algorithm against the warm start and step-PPO against PPO, paired on the same held-out tasks, with claims
    for algo in algorithms:
        assert f"| {algo} − warm start | 3 |" in result.stdout
    assert "| step-ppo − ppo | 3 |" in result.stdout and "Step-grained rewards beat a final reward" in result.stdout
    assert {c["a"] for c in results["comparisons"]} == set(algorithms)
    # every model also searched with DFSDT on the same tasks, and compared with its CoT episodes
    assert set(results["strategies"]["dfsdt"]) == {"bc", *algorithms}
    for algo in ("bc", *algorithms):
        [m] = results["strategies"]["dfsdt"][algo]
        assert m["episodes"] == 3 and 1.0 <= m["search_queries"] <= 3.0
    assert {c["a"] for c in results["strategy_comparisons"]} == {f"{a} [dfsdt]" for a in ("bc", *algorithms)}
    assert "DFSDT success % [95 % CI]" in result.stdout and "| ppo [dfsdt] − ppo [cot] | 3 |" in result.stdout
    # win rate against the warm start (rule preference): 1/2 + (share only this run solved - share only the warm start solved) / 2
    from agents.rollout import load_trajectories

    warm = [t.success for t in load_trajectories(out / "bc" / "eval" / "trajectories.jsonl")]
    for algo in algorithms:
        mine = [t.success for t in load_trajectories(out / algo / "seed0" / "eval" / "trajectories.jsonl")]
        expected = 0.5 + sum(a - b for a, b in zip(mine, warm)) / (2 * len(warm))
        assert results["win_rate"][algo] == [pytest.approx(expected)]
    assert "win rate vs warm start %" in result.stdout
    lo, hi = results["success_ci"]["bc"][1:]
    assert 0.0 <= lo <= results["runs"]["bc"][0]["accuracy"] <= hi <= 1.0


def _episode_return(env_kwargs: dict, actions: list[str]) -> tuple[float, bool]:
    env = gym.make("toolenv/APIChain-L1-v1", **env_kwargs)
    env.reset(seed=0, options={"index": 0})
    total, done = 0.0, False
    for action in actions:
        _, reward, terminated, truncated, info = env.step(action)
        total += float(reward)
        if terminated or truncated:
            done = True
            break
    assert done
    return total, bool(info.get("success"))


def test_preset_rewards_make_useless_calls_worth_less_than_solving() -> None:
    """The hack step-PPO found under StepTool's weights: spam a useless tool to the step limit."""
    kwargs = run_env_kwargs(PRESETS["cpu"])
    env = gym.make("toolenv/APIChain-L1-v1", **kwargs)
    env.reset(seed=0, options={"index": 0})
    gold = env.unwrapped.gold_actions()
    useless = 'Thought: I should use get_city.\nAction: get_city\nAction Input: {"city": "Oslo"}'
    spam = gold[:-1] + [useless] * 20  # truncated by the 8-step limit
    wrong = gold[:-1] + ["Thought: I now know the final answer.\nFinal Answer: 123456789"]

    solved, ok = _episode_return(kwargs, gold)
    hacked, hacked_ok = _episode_return(kwargs, spam)
    answered_wrong, wrong_ok = _episode_return(kwargs, wrong)
    assert ok and not hacked_ok and not wrong_ok
    assert hacked < answered_wrong < solved  # not answering is never better than answering wrong
    # StepTool's weights alone pay the spam more than the solution (5 against 3)
    plain = {k: v for k, v in kwargs.items() if k != "reward_weights"}
    assert _episode_return(plain, spam)[0] == pytest.approx(5.0)
    assert _episode_return(plain, gold)[0] == pytest.approx(3.0)
    assert (solved, answered_wrong, hacked) == pytest.approx((0.0, -1.0, -3.0))


def test_useless_call_cost_follows_the_env_call_reward() -> None:
    cpu = PRESETS["cpu"]
    assert run_env_kwargs(cpu)["reward_weights"] == {"step_cost": pytest.approx(-1.0)}
    assert "reward_weights" not in run_env_kwargs(replace(cpu, useless_call_cost=False))
    given = replace(cpu, env_kwargs={"reward_weights": {"step_cost": -0.5}})
    assert run_env_kwargs(given)["reward_weights"] == {"step_cost": -0.5}
    # BFCL multi-turn has no call reward, so there is nothing to cancel
    bfcl = replace(cpu, train_env="toolenv/BFCLMultiTurn-v0", test_env="toolenv/BFCLMultiTurn-v0")
    assert "reward_weights" not in run_env_kwargs(bfcl)


def test_bad_mmap_threshold_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.steptool import main

    with pytest.raises(SystemExit) as exc:
        main(["--mmap-threshold-mb", "-1", "--out", str(tmp_path / "run")])
    assert exc.value.code == 2 and "--mmap-threshold-mb >= 0" in capsys.readouterr().err
    assert PRESETS["cpu"].mmap_threshold_mb > 0 and PRESETS["full"].mmap_threshold_mb == 0
