"""``toolenv bench steptool`` end to end on a tiny model with tiny budgets: every algorithm runs on the same samples."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.agents.conftest import tiny_model, tiny_tokenizer


@pytest.mark.slow
def test_bench_steptool_tiny(tmp_path: Path) -> None:
    tok = tiny_tokenizer()
    model_dir = tmp_path / "tiny"
    tiny_model(len(tok)).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    out = tmp_path / "steptool"
    algorithms = ["ppo", "step-ppo", "grpo", "dpo"]
    cmd = [
        sys.executable, "-m", "toolenv.cli", "bench", "steptool", "--model", str(model_dir), "--out", str(out),
        "--train-env", "toolenv/APIChain-L1-v0", "--test-env", "toolenv/APIChain-L1-Test-v0", "--samples", "8",
        "--episodes-per-iteration", "4", "--bc-steps", "2", "--demos", "8", "--eval-episodes", "3", "--seeds", "1",
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
