"""The README's plug-in agent (examples/reinforce.py) trains through ``toolenv train`` and evaluates with ``toolenv eval``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from agents.policy import Policy
from agents.registry import load_agent, register_agent


def test_agent_by_module_path_and_by_registered_name() -> None:
    assert load_agent("examples.reinforce").Config().group_size == 4
    register_agent("reinforce", "examples.reinforce")
    assert load_agent("reinforce").__name__ == "examples.reinforce"


def test_train_then_eval_through_the_cli(tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "reinforce"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    train = subprocess.run(
        [sys.executable, "-m", "toolenv.cli", "train", "examples.reinforce", "--model", str(tiny_model_dir),
         "--env", "toolenv/Math-v0", "--out", str(out), "--max-steps", "2", "--group-size", "2",
         "--max-new-tokens", "6", "--lora-r", "4", "--device", "cpu", "--lr", "1e-2"],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert train.returncode == 0, train.stderr[-2000:]
    assert Policy.load(str(out), device="cpu").has_adapter
    evaluated = subprocess.run(
        [sys.executable, "-m", "toolenv.cli", "eval", "--model", str(out), "--env", "toolenv/Math-Test-v0",
         "--episodes", "2", "--out", str(tmp_path / "eval"), "--max-new-tokens", "6", "--device", "cpu"],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["toolenv/Math-Test-v0"]["episodes"] == 2


def _shorter_is_better(completions: list[str], **kwargs: object) -> list[float]:
    return [1.0 / (1.0 + len(c)) for c in completions]


def test_reinforce_updates_the_adapter_when_returns_differ(tiny_model_dir: Path, tmp_path: Path) -> None:
    from examples import reinforce
    from tests.agents.test_bc import OneTaskEnv  # noqa: F401  (registers test/OneTask-v0)

    cfg = reinforce.Config(
        model=str(tiny_model_dir), env=["test/OneTask-v0"], env_kwargs={"answer_reward": _shorter_is_better},
        out=str(tmp_path / "r"), max_steps=3, group_size=3, max_new_tokens=8, lora_r=4, device="cpu", lr=1e-2,
    )
    out = reinforce.train(cfg)
    trained = Policy.load(str(out), device="cpu")
    assert any(p.abs().sum() > 0 for n, p in trained.model.named_parameters() if "lora_B" in n)
    base = Policy.load(str(tiny_model_dir), device="cpu").model.state_dict()
    for n, p in trained.model.get_base_model().named_parameters():
        if "lora_" not in n:
            assert torch.equal(p, base[n.replace(".base_layer", "")]), n
