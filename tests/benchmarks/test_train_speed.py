"""``toolenv bench train-speed`` end to end on a tiny model: both sides of each pair run, in alternating processes, and the table is complete."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.agents.conftest import tiny_model, tiny_tokenizer


@pytest.mark.slow
def test_bench_train_speed_tiny(tmp_path: Path) -> None:
    tok = tiny_tokenizer()
    model_dir = tmp_path / "tiny"
    tiny_model(len(tok)).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    out = tmp_path / "speed"
    cmd = [sys.executable, "-m", "toolenv.cli", "bench", "train-speed", "--model", str(model_dir), "--steps", "1", "--warmup", "1",
           "--repeats", "1", "--batch-size", "4", "--out", str(out), "--threads", "1"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    saved = json.loads((out / "train_speed.json").read_text())
    assert [r["method"] for r in saved["runs"]] == ["toolenv:sft", "trl:sft", "toolenv:dpo", "trl:dpo", "toolenv:grpo", "trl:grpo"]  # interleaved
    for pair in ("sft", "dpo", "grpo"):
        row = saved["pairs"][pair]
        assert row["ratio"] == pytest.approx(row["toolenv"]["steps_per_s"] / row["trl"]["steps_per_s"])
        assert row["toolenv"]["peak_rss_mb"] > 0 and row["trl"]["peak_rss_mb"] > 0
    assert "| bc step vs SFTTrainer |" in result.stdout and "| dpo step vs DPOTrainer |" in result.stdout
    assert "| grpo iteration vs GRPOTrainer |" in result.stdout
    # equal work per step: 4 completions (one group) on each side, prompts and completions counted
    grpo_runs = {r["method"]: r for r in saved["runs"] if r["method"].endswith("grpo")}
    assert all(len(r["step_seconds"]) == 1 and r["tokens_per_s"] > 0 for r in grpo_runs.values())
    bad = subprocess.run([sys.executable, "-m", "toolenv.cli", "bench", "train-speed", "--steps", "0"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--steps" in bad.stderr and "Traceback" not in bad.stderr
