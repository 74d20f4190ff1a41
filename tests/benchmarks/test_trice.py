"""``toolenv bench trice`` end to end on a tiny model with tiny budgets: every stage runs and the table is complete."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.agents.conftest import tiny_model, tiny_tokenizer


@pytest.mark.slow
def test_bench_trice_tiny(tmp_path: Path) -> None:
    tok = tiny_tokenizer()
    model_dir = tmp_path / "tiny"
    tiny_model(len(tok)).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    out = tmp_path / "trice"
    cmd = [
        sys.executable, "-m", "toolenv.cli", "bench", "trice", "--model", str(model_dir), "--out", str(out),
        "--train-env", "toolenv/Math-v0", "--test-env", "toolenv/Math-Test-v0", "--bc-steps", "3",
        "--rrhf-steps", "1", "--eval-episodes", "3", "--demos-per-env", "8", "--rrhf-tasks-per-env", "2", "--device", "cpu",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| Accuracy % [95 % CI] | zero-shot | bc | rrhf |" in result.stdout and "| Math | " in result.stdout
    assert "| bc − zero-shot (accuracy) | 3 |" in result.stdout and "TRICE's claims at 95 % confidence:" in result.stdout
    results = json.loads((out / "results.json").read_text())
    assert set(results["stages"]) == {"zero-shot", "bc", "rrhf"}
    for stage in results["stages"].values():
        assert stage["toolenv/Math-Test-v0"]["episodes"] == 3
    # stage-1 data TRICE's way: 8 questions answered by the base model, each kept or given the gold call
    [counts] = results["stage1"].values()
    assert counts["questions"] == 8 and counts["right"] + counts["wrong"] + counts["no_gold"] == 8
    # stage-2 candidates from the base and BC models at every temperature of the preset
    assert set(results["stage2_candidates"]) == {"base@0.7", "base@1", "bc@0.7", "bc@1"}
    split = results["analysis"]["split"]
    assert split["base_right"] + split["base_wrong"] == 3
    assert (out / "trice.png").stat().st_size > 0 and (out / "trice_table.md").exists()
    # each stage's own peak memory, printed under the table
    assert set(results["peak_rss_gb"]) == set(results["seconds"]) and "Peak resident memory per stage" in result.stdout
    # a second run finds every stage done and only re-prints the table
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert again.returncode == 0 and "evaluation exists, skipping" in again.stderr


@pytest.mark.slow
def test_bench_trice_qa_task(tmp_path: Path) -> None:
    """``--task qa``: TRICE's QA task (HotpotQA with WikiSearch) through every stage, scored by its text rule."""
    if not (Path(os.environ.get("TOOLENV_DATA", "")) / "hotpotqa").is_dir():
        pytest.skip("no TOOLENV_DATA with hotpotqa/")
    tok = tiny_tokenizer()
    model_dir = tmp_path / "tiny"
    tiny_model(len(tok)).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    out = tmp_path / "trice"
    cmd = [sys.executable, "-m", "toolenv.cli", "bench", "trice", "--model", str(model_dir), "--out", str(out), "--task", "qa",
           "--bc-steps", "2", "--rrhf-steps", "1", "--eval-episodes", "2", "--demos-per-env", "4", "--rrhf-tasks-per-env", "2", "--device", "cpu"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["preset"]["train_envs"] == ["toolenv/HotpotQA-v0"]
    assert results["stages"]["rrhf"]["toolenv/HotpotQA-Test-v0"]["episodes"] == 2
    assert "| HotpotQA | " in result.stdout
    [counts] = results["stage1"].values()
    assert counts["wrong"] + counts["right"] == 4  # every HotpotQA question has gold searches
