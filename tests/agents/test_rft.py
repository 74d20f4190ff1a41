"""RFT through real rollouts: the loss sees exactly the passed, de-duplicated samples; offline data; exact resume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import pytest
import torch

from agents import rft
from agents.policy import Policy
from agents.rollout import load_trajectories, save_trajectories, scripted_trajectory
from tests.agents.test_bc import OneTaskEnv  # noqa: F401  (registers test/OneTask-v0)


def _odd_length_passes(completions: list[str], **kwargs: object) -> list[float]:
    """About half of a random model's answers pass: enough of both kinds in a few samples."""
    return [float(len(c) % 2 == 1) for c in completions]


def _config(model_dir: Path, out: Path, **kw: Any) -> rft.Config:
    base: dict[str, Any] = {
        "model": str(model_dir), "env": ["test/OneTask-v0"], "env_kwargs": {"answer_reward": _odd_length_passes}, "out": str(out),
        "max_steps": 2, "tasks_per_round": 2, "samples_per_task": 3, "max_new_tokens": 6, "batch_size": 2, "epochs": 1.0,
        "lora_r": 4, "lora_alpha": 8, "device": "cpu", "lr": 1e-2, "progress": False, "save_every": 1,
    }
    base.update(kw)
    return rft.Config(**base)


def _model_tokens(t: Any) -> tuple[int, ...]:
    return tuple(x for x, m in zip(t.token_ids, t.action_mask) if m)


def test_loss_sees_exactly_the_passed_unique_samples(tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen_by_loss: list[list[Any]] = []
    real_step = rft.sft_step

    def recording_step(scorer: Any, demos: list[Any], *args: Any) -> dict[str, float]:
        seen_by_loss.append(list(demos))
        return real_step(scorer, demos, *args)

    monkeypatch.setattr(rft, "sft_step", recording_step)
    out = rft.train(_config(tiny_model_dir, tmp_path / "rft"))
    rounds = [load_trajectories(tmp_path / "rft" / "samples" / f"round{r}.rank0.jsonl") for r in range(2)]
    assert [len(r) for r in rounds] == [6, 6]
    passed = [t for r in rounds for t in r if t.success]
    failed = [t for r in rounds for t in r if not t.success]
    assert passed and failed, "the reward should pass some samples and fail others"
    # the pool after round 1 is every passed sample, each distinct answer once, and nothing else
    final_pool = seen_by_loss[-1]
    assert all(t.success for t in final_pool)
    assert {_model_tokens(t) for t in final_pool} == {_model_tokens(t) for t in passed}
    assert len(final_pool) == len({_model_tokens(t) for t in passed})
    # optimiser steps per round: ceil(epochs x pool / batch), the pool growing round by round
    first = len({_model_tokens(t) for t in rounds[0] if t.success})
    expected_steps = (-(-first // 2) if first else 0) + -(-len(final_pool) // 2)
    assert len(seen_by_loss) == expected_steps
    trained = Policy.load(str(out), device="cpu")
    assert any(p.abs().sum() > 0 for n, p in trained.model.named_parameters() if "lora_B" in n)


def test_offline_round_reads_the_file_and_keeps_successes(tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    policy = Policy.load(str(tiny_model_dir), device="cpu")
    gold = scripted_trajectory(gym.make("test/OneTask-v0"), None, policy.tokenizer)
    wrong = scripted_trajectory(gym.make("test/OneTask-v0"), ["41"], policy.tokenizer)
    assert gold.success and not wrong.success
    data = save_trajectories(tmp_path / "data.jsonl", [gold, wrong, gold])
    pools: list[list[Any]] = []
    monkeypatch.setattr(rft, "sft_step", lambda scorer, demos, *a: pools.append(list(demos)) or {"nll": 0.0})
    monkeypatch.setattr(rft, "rollout_groups", lambda *a, **k: pytest.fail("an offline round must not sample"))
    rft.train(_config(tiny_model_dir, tmp_path / "off", max_steps=1, data=str(data)))
    assert len(pools) == 1 and [t.actions for t in pools[0]] == [gold.actions]  # the duplicate and the failure dropped


def test_resume_continues_exactly(tiny_model_dir: Path, tmp_path: Path) -> None:
    straight = rft.train(_config(tiny_model_dir, tmp_path / "a"))
    rft.train(_config(tiny_model_dir, tmp_path / "b", max_steps=1))  # a run stopped after round 1
    resumed = rft.train(_config(tiny_model_dir, tmp_path / "b"))
    a = Policy.load(str(straight), device="cpu").model.state_dict()
    b = Policy.load(str(resumed), device="cpu").model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_config_errors_name_the_field(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="samples_per_task"):
        _config(tiny_model_dir, tmp_path / "x", samples_per_task=0)
    with pytest.raises(ValueError, match="data"):
        _config(tiny_model_dir, tmp_path / "x", data=str(tmp_path / "missing.jsonl"))
