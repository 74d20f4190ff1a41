"""The env benchmark's rows are complete and its scripted episodes really solve the tasks."""

from __future__ import annotations

from benchmarks.env_speed import bench_env, format_table


def test_bench_env_rows() -> None:
    rows = bench_env(["toolenv/Math-v0"], protocols=["trice", "json"], episodes=200)
    assert [r["protocol"] for r in rows] == ["trice", "json"]
    for r in rows:
        assert r["solved"] == 1.0  # the gold call and answer solve every procedural task
        assert r["episodes_per_s"] > 0 and r["steps_per_s"] == 2 * r["episodes_per_s"]
        assert r["overhead_x"] > 0
    table = format_table(rows)
    assert table.count("\n") == 3 and "| toolenv/Math-v0 | json |" in table
