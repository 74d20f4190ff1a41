"""GRPO: group-relative advantages (final and step) by hand, token spreading, a training run on a tiny model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agents import grpo
from agents.policy import Policy
from agents.rollout import Trajectory
from tests.agents.test_bc import OneTaskEnv  # noqa: F401  (registers test/OneTask-v0)


def test_final_advantages_are_group_standardised() -> None:
    adv = grpo.group_advantages([[1.0], [0.0, 0.0], [0.0]], "final")
    # returns 1, 0, 0: mean 1/3, std sqrt(2)/3
    expected_hi = (1 - 1 / 3) / (2**0.5 / 3)
    assert adv[0] == [pytest.approx(expected_hi, rel=1e-5)]
    assert adv[1] == [pytest.approx(-(1 / 3) / (2**0.5 / 3), rel=1e-5)] * 2
    assert grpo.group_advantages([[1.0], [1.0]], "final") == [[0.0], [0.0]]  # no signal in a uniform group
    assert grpo.group_advantages([[2.0], [0.0]], "final", scale=False) == [[1.0], [-1.0]]


def test_step_advantages_use_returns_to_go() -> None:
    adv = grpo.group_advantages([[0.2, 0.0, 1.0], [0.0]], "step", scale=False)
    # returns-to-go: [1.2, 1.0, 1.0] and [0.0]; mean 0.8
    assert adv[0] == pytest.approx([0.4, 0.2, 0.2]) and adv[1] == pytest.approx([-0.8])


def test_token_advantages_cover_each_actions_tokens_only() -> None:
    t = Trajectory(env_id="x", task={}, token_ids=list(range(8)), action_mask=[0, 0, 1, 1, 0, 0, 1, 1], action_ends=[3, 7])
    out = grpo.token_advantages([[0.5, -1.0]], [t], 9)
    assert out[0].tolist() == [0.0, 0.0, 0.5, 0.5, 0.0, 0.0, -1.0, -1.0, 0.0]


def _shorter_is_better(completions: list[str], **kwargs: object) -> list[float]:
    return [1.0 / (1.0 + len(c)) for c in completions]


@pytest.mark.parametrize("placement", ["final", "step"])
def test_grpo_trains(placement: str, tiny_model_dir: Path, tmp_path: Path) -> None:
    cfg: dict[str, Any] = {
        "model": str(tiny_model_dir), "env": ["test/OneTask-v0"], "env_kwargs": {"answer_reward": _shorter_is_better},
        "out": str(tmp_path / "g"), "max_steps": 2, "group_size": 3, "tasks_per_step": 1, "max_new_tokens": 6,
        "lora_r": 4, "lora_alpha": 8, "device": "cpu", "lr": 1e-2, "progress": False, "reward_placement": placement,
    }
    out = grpo.train(grpo.Config(**cfg))
    trained = Policy.load(str(out), device="cpu")
    assert any(p.abs().sum() > 0 for n, p in trained.model.named_parameters() if "lora_B" in n)
    assert any((Path(out) / "runs").rglob("events.out.tfevents*"))


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="Expected group_size >= 2"):
        grpo.Config(group_size=1)
