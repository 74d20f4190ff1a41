"""The env benchmark's rows are complete and its scripted episodes really solve the tasks."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import pytest

from benchmarks import env_speed
from benchmarks.env_speed import bench_env, format_table
from tests.conftest import require
from toolenv.datasets.bfcl import BFCLNotInstalledError


def test_bench_env_rows() -> None:
    rows = bench_env(["toolenv/Math-v0"], protocols=["trice", "json"], episodes=200)
    assert [r["protocol"] for r in rows] == ["trice", "json"]
    for r in rows:
        assert r["solved"] == 1.0  # the gold call and answer solve every procedural task
        assert r["episodes_per_s"] > 0 and r["steps_per_s"] == 2 * r["episodes_per_s"]
        assert r["overhead_x"] > 0
    table = format_table(rows)
    assert table.count("\n") == 3 and "| toolenv/Math-v0 | json |" in table


def test_apichain_plays_whole_gold_chains() -> None:
    rows = bench_env(["toolenv/APIChain-v1"], episodes=100)
    assert [r["protocol"] for r in rows] == ["react", "json"]  # trice cannot write its multi-argument calls
    for r in rows:
        assert r["solved"] == 1.0
        assert 3 <= r["steps_per_episode"] <= 6  # 2-5 calls, then the answer
        assert r["vector_episodes_per_s"] > 0 and r["overhead_x"] > 0


def test_bfcl_envs_are_measured() -> None:
    require("bfcl_eval", "pip install --no-deps bfcl-eval==2026.3.23 && pip install mpmath")
    rows = bench_env(["toolenv/BFCLMultiTurn-v0", "toolenv/BFCL-v0"], episodes=30)
    assert [(r["env"], r["protocol"]) for r in rows] == [
        ("toolenv/BFCLMultiTurn-v0", "python"), ("toolenv/BFCLMultiTurn-v0", "json"),
        ("toolenv/BFCL-v0", "python"), ("toolenv/BFCL-v0", "json"),
    ]
    for r in rows:
        assert r["solved"] == 1.0, r  # ground-truth replay passes BFCL's checks
        assert r["vector_episodes_per_s"] > 0 and r["reference_episodes_per_s"] > 0
    assert rows[0]["steps_per_episode"] > 2 and rows[2]["steps_per_episode"] == 1


def test_bfcl_without_the_package_is_skipped_with_a_message(monkeypatch: pytest.MonkeyPatch) -> None:
    make = gym.make

    def make_without_bfcl(env_id: str, **kwargs: Any) -> gym.Env:
        if env_id.startswith("toolenv/BFCL"):
            raise BFCLNotInstalledError("The BFCL envs need the bfcl-eval package: pip install --no-deps bfcl-eval==2026.3.23")
        return make(env_id, **kwargs)

    monkeypatch.setattr(env_speed.gym, "make", make_without_bfcl)
    rows = bench_env(["toolenv/BFCL-v0"], episodes=10)
    assert rows == [{"env": "toolenv/BFCL-v0", "protocol": "python",
                     "skipped": "The BFCL envs need the bfcl-eval package: pip install --no-deps bfcl-eval==2026.3.23"}]
    assert "| toolenv/BFCL-v0 | - | skipped: The BFCL envs need the bfcl-eval package" in format_table(rows)


def test_tool_limit_modes_are_measured_against_the_bare_function() -> None:
    from benchmarks.env_speed import bench_tool_limits, format_tool_limits

    rows = bench_tool_limits(calls=200)
    assert [r["mode"].split(" (")[0] for r in rows] == ["bare function", "tool call, main thread", "tool call, other thread",
                                                              "tool call, isolated"]
    assert all(r["calls_per_s"] > 0 for r in rows) and rows[0]["overhead_us"] == 0.0
    assert "| tool limit mode |" in format_tool_limits(rows)


@pytest.mark.slow
def test_bench_env_through_the_server() -> None:
    """``--server-sessions N``: the same gold episodes through `toolenv serve` with N OpenEnv sessions and in-process."""
    pytest.importorskip("openenv")
    from benchmarks.env_speed import bench_server

    row = bench_server("toolenv/Math-v0", sessions=2, episodes=8)
    assert row["episodes"] == 8 and row["in_process_episodes_per_s"] > 0 and row["server_episodes_per_s"] > 0
    assert row["server_steps_per_s"] * row["episodes"] / row["server_episodes_per_s"] == pytest.approx(
        row["in_process_steps_per_s"] * row["episodes"] / row["in_process_episodes_per_s"])  # the same steps were played both ways
