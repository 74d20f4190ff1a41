"""``toolenv bench rollout``: the turn table's episodes really last the asked turns, KV reuse gives the same episodes, bad flags are one line."""

from __future__ import annotations

import pytest

from benchmarks.rollout_speed import _continuing, bench_turns, format_turns_table, main
from tests.agents.conftest import tiny_policy


def test_continuing_env_never_ends_an_episode() -> None:
    env = _continuing("toolenv/APIChain-L1-v1", 1)
    for _ in range(3):
        obs, _, terminated, truncated, _ = env.step("42")
        assert not terminated and not truncated and obs.startswith("Check that once more")


def test_turn_table_rows_reuse_the_cache_and_match_reprefilling() -> None:
    rows = bench_turns(tiny_policy(), turns=(1, 3), batch_size=3, max_new_tokens=6)
    assert [r["turns"] for r in rows] == [1, 3]
    assert all(r["identical_episodes"] == 3 and r["max_logprob_gap"] < 1e-4 for r in rows)
    assert rows[1]["context_tokens"] > rows[0]["context_tokens"]
    table = format_turns_table(rows, "tiny")
    assert "| tiny | 3 | 3 |" in table and "3/3" in table


@pytest.mark.parametrize(("argv", "message"), [
    (["--turns", "1,x"], "expected --turns as comma-separated positive integers"),
    (["--turns", "0"], "expected --turns as comma-separated positive integers"),
    (["--turns", "2", "--backend", "server", "--server-url", "http://127.0.0.1:9"], "--turns measures Hugging Face generation"),
])
def test_bad_turns_flags_are_one_line(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err
