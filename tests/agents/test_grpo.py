"""GRPO: group-relative advantages (final and step) by hand, token spreading, a training run on a tiny model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from agents import grpo
from agents.policy import Policy
from agents.rollout import Trajectory
from tests.agents.test_bc import OneTaskEnv  # noqa: F401  (registers test/OneTask-v0)


def test_outcome_advantages_equal_trls() -> None:
    """TRL's GRPOTrainer: (r - mean) / (std + 1e-4) with torch's Bessel-corrected std, per group."""
    returns = torch.tensor([1.0, 0.0, 0.0, 0.5])
    expected = ((returns - returns.mean()) / (returns.std() + 1e-4)).tolist()  # torch.std is unbiased, as TRL's nanstd
    adv = grpo.group_advantages([[1.0], [0.0, 0.0], [0.0], [0.25, 0.25]], "final")
    assert [a[0] for a in adv] == pytest.approx(expected, rel=1e-6)
    assert adv[1] == [pytest.approx(expected[1])] * 2 and adv[3] == [pytest.approx(expected[3])] * 2
    assert grpo.group_advantages([[1.0], [1.0]], "final") == [[0.0], [0.0]]  # no signal in a uniform group
    # scale_rewards "none" (Dr. GRPO): the mean only
    assert grpo.group_advantages([[2.0], [0.0]], "final", scale=False) == [[1.0], [-1.0]]


def test_process_advantages_equal_deepseekmath() -> None:
    """DeepSeekMath §4.1.3: normalise every step reward over the group, then sum from each step on."""
    group = [[0.2, 0.0, 1.0], [0.0], [0.5, 0.5]]
    flat = torch.tensor([r for rs in group for r in rs])
    norm = [((torch.tensor(rs) - flat.mean()) / (flat.std() + 1e-4)).tolist() for rs in group]
    expected = [[sum(n[k:]) for k in range(len(n))] for n in norm]
    adv = grpo.group_advantages(group, "step")
    for a, e in zip(adv, expected):
        assert a == pytest.approx(e, rel=1e-6, abs=1e-9)
    # the old bug: identical trajectories with equal rewards got [1.225, 0, -1.225] by depth alone
    assert grpo.group_advantages([[0.5, 0.5, 0.5], [0.5, 0.5, 0.5]], "step") == [[0.0] * 3, [0.0] * 3]
    # and identical trajectories always get identical advantages
    a, b = grpo.group_advantages([[0.2, 1.0], [0.2, 1.0], [0.0, 0.0]], "step")[:2]
    assert a == b


def test_loss_aggregations_equal_trls() -> None:
    """TRL's loss_type reductions: grpo (per sequence), bnpo (per token), dr_grpo (batch x max length)."""
    from agents.ppo_losses import aggregate_loss

    per_token = torch.tensor([[1.0, 2.0, 3.0, 0.0], [4.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    grpo_ref = ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    bnpo_ref = (per_token * mask).sum() / mask.sum().clamp(min=1.0)
    dr_ref = (per_token * mask).sum() / (per_token.size(0) * 6)
    assert aggregate_loss(per_token, mask, "seq_mean").item() == pytest.approx(grpo_ref.item())
    assert aggregate_loss(per_token, mask, "token_mean").item() == pytest.approx(bnpo_ref.item())
    assert aggregate_loss(per_token, mask, "dr_grpo", max_length=6).item() == pytest.approx(dr_ref.item())


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


def test_one_epoch_one_minibatch_skips_the_old_logprob_pass(tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With nothing to be stale against, the old log-probs are the current ones: one scoring pass fewer, the same loss."""
    from agents.utils import TokenScorer

    passes: list[bool] = []
    real = TokenScorer.forward

    def counting(self: TokenScorer, *args: Any, **kwargs: Any) -> Any:
        passes.append(torch.is_grad_enabled())
        return real(self, *args, **kwargs)

    monkeypatch.setattr(TokenScorer, "forward", counting)
    cfg: dict[str, Any] = {
        "model": str(tiny_model_dir), "env": ["test/OneTask-v0"], "env_kwargs": {"answer_reward": _shorter_is_better}, "out": str(tmp_path / "g"),
        "max_steps": 1, "group_size": 3, "tasks_per_step": 1, "max_new_tokens": 6, "lora_r": 4, "lora_alpha": 8, "device": "cpu",
        "progress": False, "kl_coef": 0.0, "minibatch_size": 3, "epochs": 1,
    }
    grpo.train(grpo.Config(**cfg))
    assert passes == [True]  # only the training pass: no no-grad old-log-prob pass
    passes.clear()
    grpo.train(grpo.Config(**{**cfg, "out": str(tmp_path / "h"), "epochs": 2}))
    assert passes.count(False) == 1 and passes.count(True) == 2  # two epochs: the old pass is needed
