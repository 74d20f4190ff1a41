"""Every built-in agent under ``accelerate launch``: two CPU processes on the gloo backend end with identical weights.

``--multi_gpu`` is accelerate's torchrun launcher; with ``--device cpu`` the processes form a gloo
(MULTI_CPU) group, as on a machine with no GPU. (``--cpu`` would start a single process.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agents.policy import Policy

AGENT_ARGS = {
    "bc": ["--batch-size", "2", "--demos-per-env", "16"],
    "rrhf": ["--num-samples", "2", "--tasks-per-step", "1", "--max-new-tokens", "6", "--tasks-per-env", "8"],
    # round 0 from gold trajectories (a random model passes nothing), rounds 1-2 sampled online
    "archer": ["--episodes-per-step", "2", "--batch-size", "2", "--max-new-tokens", "6", "--tasks-per-env", "8", "--critic-epochs", "1",
               "--actor-epochs", "1"],
    "ppo": ["--episodes-per-step", "2", "--minibatch-size", "1", "--max-new-tokens", "6"],
    "step-ppo": ["--episodes-per-step", "2", "--minibatch-size", "1", "--max-new-tokens", "6"],
    "grpo": ["--group-size", "2", "--tasks-per-step", "1", "--minibatch-size", "1", "--max-new-tokens", "6", "--tasks-per-env", "8"],
    "dpo": ["--group-size", "2", "--tasks-per-step", "1", "--max-new-tokens", "6", "--tasks-per-env", "8"],
    "rft": ["--tasks-per-round", "1", "--samples-per-task", "2", "--max-new-tokens", "6", "--tasks-per-env", "8", "--batch-size", "2"],
}


@pytest.mark.slow
@pytest.mark.parametrize("agent", sorted(AGENT_ARGS))
def test_two_processes_identical_weights(agent: str, tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    port = {"bc": "29517", "rrhf": "29519", "rft": "29521", "archer": "29523", "ppo": "29525", "step-ppo": "29527", "grpo": "29529",
            "dpo": "29531"}[agent]
    extra = []
    if agent == "rft":
        import gymnasium as gym

        from agents.rollout import save_trajectories, scripted_trajectory

        tok = Policy.load(str(tiny_model_dir), device="cpu").tokenizer
        gold = [scripted_trajectory(gym.make("toolenv/Math-v0"), None, tok, options={"index": i}) for i in range(6)]
        extra = ["--data", str(save_trajectories(tmp_path / "gold.jsonl", gold))]
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", port,
        "-m", "toolenv.cli", "train", agent, "--model", str(tiny_model_dir), "--env", "toolenv/Math-v0",
        "--out", str(out), "--max-steps", "3", "--lora-r", "4", "--device", "cpu", "--no-progress", "--lr", "1e-2",
        *AGENT_ARGS[agent], *extra,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    sums = json.loads((out / "rank_checksums.json").read_text())
    assert len(sums) == 2 and sums[0] == pytest.approx(sums[1], rel=1e-9)
    # the saved result is the trained adapter, loadable for evaluation
    policy = Policy.load(str(out), device="cpu")
    assert policy.has_adapter
