"""Every benchmark stage gives the same numbers when rerun with the same seed on the same machine (sampling included)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.agents.conftest import tiny_model, tiny_tokenizer

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "toolenv.cli", *cmd], capture_output=True, text=True, timeout=1200, env=ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_bench_trice_twice_gives_the_same_numbers(tmp_path: Path) -> None:
    tok = tiny_tokenizer()
    model_dir = tmp_path / "tiny"
    tiny_model(len(tok)).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    runs = []
    for name in ("a", "b"):
        out = tmp_path / name
        _run(["bench", "trice", "--model", str(model_dir), "--out", str(out), "--train-env", "toolenv/Math-v0", "--test-env",
              "toolenv/Math-Test-v0", "--bc-steps", "3", "--rrhf-steps", "2", "--eval-episodes", "4", "--demos-per-env", "6",
              "--rrhf-tasks-per-env", "2", "--device", "cpu"])
        runs.append(out)
    a, b = (json.loads((out / "results.json").read_text()) for out in runs)
    assert a["stages"] == b["stages"] and a["analysis"] == b["analysis"] and a["stage1"] == b["stage1"]
    # the sampled stage-2 candidates are the same episodes, token for token
    assert (runs[0] / "rrhf" / "candidates.jsonl").read_text() == (runs[1] / "rrhf" / "candidates.jsonl").read_text()
    assert (runs[0] / "rrhf" / "eval" / "Math" / "trajectories.jsonl").read_text() == \
        (runs[1] / "rrhf" / "eval" / "Math" / "trajectories.jsonl").read_text()


@pytest.mark.slow
def test_bench_steptool_proxy_twice_gives_the_same_numbers(tmp_path: Path) -> None:
    results = []
    for name in ("a", "b"):
        out = tmp_path / name
        printed = _run(["bench", "steptool", "--preset", "proxy", "--seeds", "1", "--samples", "16", "--episodes-per-iteration", "8",
                        "--eval-episodes", "16", "--bc-steps", "5", "--algorithm", "step-ppo", "--algorithm", "grpo", "--out", str(out)])
        results.append(json.loads((out / "results.json").read_text()))
        assert "| step-ppo − warm start | 16 |" in printed.stdout and "| step-ppo@64 | 64 |" not in printed.stdout
    a, b = results
    assert a["runs"] == b["runs"] and a["success_ci"] == b["success_ci"] and a["comparisons"] == b["comparisons"]
    assert set(a["runs"]) == {"bc", "step-ppo", "grpo"}  # budgets above --samples are not run
