"""PPO's pure pieces against numbers worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from agents.ppo_losses import (
    explained_variance,
    kl_penalty,
    masked_gae,
    masked_whiten,
    place_rewards,
    policy_loss,
    value_loss,
)


def test_gae_skips_observation_tokens_without_breaking_the_chain() -> None:
    # tokens: action 1 = [0, 1], observation = [2, 3], action 2 = [4, 5]; gamma 0.9, lambda 0.8
    rewards = torch.tensor([[0.0, 0.5, 0.0, 0.0, 0.0, 1.0]])
    values = torch.tensor([[0.2, 0.4, 7.0, 7.0, 0.6, 0.3]])  # observation values must not matter
    mask = torch.tensor([[1.0, 1.0, 0.0, 0.0, 1.0, 1.0]])
    adv, ret = masked_gae(rewards, values, mask, gamma=0.9, lam=0.8)
    # by hand, backwards:
    # t5: delta = 1 + 0.9*0 - 0.3 = 0.7                       adv5 = 0.7
    # t4: delta = 0 + 0.9*0.3 - 0.6 = -0.33; adv4 = -0.33 + 0.72*0.7 = 0.174
    # t3, t2: observation, skipped (next value 0.6, running advantage 0.174 carry over)
    # t1: delta = 0.5 + 0.9*0.6 - 0.4 = 0.64; adv1 = 0.64 + 0.72*0.174 = 0.76528
    # t0: delta = 0 + 0.9*0.4 - 0.2 = 0.16; adv0 = 0.16 + 0.72*0.76528 = 0.7110016
    expected = torch.tensor([[0.7110016, 0.76528, 0.0, 0.0, 0.174, 0.7]])
    assert torch.allclose(adv, expected, atol=1e-6)
    assert torch.allclose(ret, (expected + values) * mask, atol=1e-6)
    # changing observation-token values changes nothing
    values2 = values.clone()
    values2[0, 2:4] = -100.0
    assert torch.allclose(masked_gae(rewards, values2, mask, gamma=0.9, lam=0.8)[0], adv)


def test_final_vs_step_reward_placement_changes_only_where_rewards_land() -> None:
    step_rewards, ends = [[0.3, 1.0]], [[1, 5]]
    final = place_rewards(step_rewards, ends, 6, "final")
    step = place_rewards(step_rewards, ends, 6, "step")
    assert final[0].tolist() == pytest.approx([0.0, 0.0, 0.0, 0.0, 0.0, 1.3])
    assert step[0].tolist() == pytest.approx([0.0, 0.3, 0.0, 0.0, 0.0, 1.0])
    mask = torch.tensor([[1.0, 1.0, 0.0, 0.0, 1.0, 1.0]])
    values = torch.zeros(1, 6)
    adv_final, _ = masked_gae(final, values, mask, gamma=1.0, lam=1.0)
    adv_step, _ = masked_gae(step, values, mask, gamma=1.0, lam=1.0)
    # with gamma = lambda = 1 and zero values both credit 1.3 to the first action's tokens ...
    assert adv_final[0, 0].item() == pytest.approx(1.3) and adv_step[0, 0].item() == pytest.approx(1.3)
    # ... but with discounting the step reward reaches the first action undiscounted by the second
    adv_final, _ = masked_gae(final, values, mask, gamma=0.5, lam=1.0)
    adv_step, _ = masked_gae(step, values, mask, gamma=0.5, lam=1.0)
    assert adv_final[0, 1].item() == pytest.approx(1.3 * 0.5**2)
    assert adv_step[0, 1].item() == pytest.approx(0.3 + 1.0 * 0.5**2)
    with pytest.raises(ValueError, match="one reward per action"):
        place_rewards([[1.0]], [[1, 2]], 4, "step")


def test_policy_loss_clips_pessimistically() -> None:
    mask = torch.ones(1, 2)
    # positive advantage: the ratio is clipped at 1.2 for the second token
    loss, stats = policy_loss(torch.tensor([[0.0, 0.5]]), torch.zeros(1, 2), torch.tensor([[1.0, 1.0]]), mask, clip=0.2)
    assert loss.item() == pytest.approx(-(1.0 + 1.2) / 2) and stats["clipfrac"] == 0.5
    # negative advantage, ratio 0.5: the clipped term (ratio 0.8) is the larger loss
    loss, _ = policy_loss(torch.tensor([[math.log(0.5)]]), torch.zeros(1, 1), torch.tensor([[-1.0]]), torch.ones(1, 1))
    assert loss.item() == pytest.approx(0.8)
    # masked tokens do not count
    loss, _ = policy_loss(torch.tensor([[0.0, 5.0]]), torch.zeros(1, 2), torch.tensor([[1.0, 1.0]]), torch.tensor([[1.0, 0.0]]))
    assert loss.item() == pytest.approx(-1.0)


def test_value_loss_is_clipped_and_halved() -> None:
    # v moved from 0 to 1 toward a return of 2: unclipped error 1, clipped (v=0.2) error 1.8^2
    loss, stats = value_loss(torch.tensor([[1.0]]), torch.tensor([[0.0]]), torch.tensor([[2.0]]), torch.ones(1, 1), clip=0.2)
    assert loss.item() == pytest.approx(0.5 * 1.8**2) and stats["vf_clipfrac"] == 1.0


def test_kl_estimators_and_whitening() -> None:
    lp, ref = torch.tensor([-1.0, -2.0]), torch.tensor([-1.5, -1.0])
    assert kl_penalty(lp, ref, "k1").tolist() == pytest.approx([0.5, -1.0])
    k3 = kl_penalty(lp, ref, "k3")
    assert k3.tolist() == pytest.approx([math.exp(-0.5) - 1 + 0.5, math.exp(1.0) - 1 - 1.0]) and (k3 >= 0).all()
    x = torch.tensor([[1.0, 2.0, 100.0, 3.0]])
    m = torch.tensor([[1.0, 1.0, 0.0, 1.0]])
    w = masked_whiten(x, m)
    # zero mean and unit *unbiased* variance over the masked entries (TRL's and verl's convention)
    assert w[0, 2] == 0 and w[m > 0].mean().abs() < 1e-6 and w[m > 0].var(unbiased=True) == pytest.approx(1.0, abs=1e-5)


def test_explained_variance() -> None:
    ret = torch.tensor([[1.0, 2.0, 3.0]])
    m = torch.ones(1, 3)
    assert explained_variance(ret, ret, m) == pytest.approx(1.0)
    assert explained_variance(torch.full((1, 3), 2.0), ret, m) == pytest.approx(0.0)


# ---- reference equivalence: the references' formulas written out on small tensors ----------------


def _verl_gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float) -> torch.Tensor:
    """verl ``compute_gae_advantage_return`` (multi-turn: values and TD error skipped on observation tokens)."""
    nextvalues, lastgaelam, out = 0.0, 0.0, []
    for t in reversed(range(rewards.shape[1])):
        delta = rewards[:, t] + gamma * nextvalues - values[:, t]
        lastgaelam_ = delta + gamma * lam * lastgaelam
        nextvalues = values[:, t] * mask[:, t] + (1 - mask[:, t]) * nextvalues
        lastgaelam = lastgaelam_ * mask[:, t] + (1 - mask[:, t]) * lastgaelam
        out.append(lastgaelam)
    return torch.stack(out[::-1], dim=1)


def _trl_0_10_1_gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float) -> torch.Tensor:
    """trl 0.10.1 ``PPOTrainer.compute_advantages`` (StepTool's): values and rewards zeroed off the mask, no skipping."""
    values, rewards = values * mask, rewards * mask
    lastgaelam, out, n = 0.0, [], rewards.shape[-1]
    for t in reversed(range(n)):
        nextvalues = values[:, t + 1] if t < n - 1 else 0.0
        delta = rewards[:, t] + gamma * nextvalues - values[:, t]
        lastgaelam = delta + gamma * lam * lastgaelam
        out.append(lastgaelam)
    return torch.stack(out[::-1]).transpose(0, 1)


def _reference_whiten(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """TRL's and verl's ``masked_whiten``: masked mean, Bessel-corrected masked variance, rsqrt(var + 1e-8)."""
    mean = (x * mask).sum() / mask.sum()
    var = (((x - mean) ** 2) * mask).sum() / mask.sum()
    var = var * mask.sum() / (mask.sum() - 1)
    return (x - mean) * torch.rsqrt(var + 1e-8)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gae_equals_verls_and_trl_0_10_1s(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    rewards = torch.randn(3, 12, generator=g)
    values = torch.randn(3, 12, generator=g)
    mask = torch.tensor([[0, 0, 1, 1, 1, 0, 0, 1, 1, 0, 0, 0],
                         [0, 1, 1, 0, 1, 1, 1, 0, 0, 1, 1, 0],
                         [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]], dtype=torch.float32)
    ours, returns = masked_gae(rewards, values, mask, gamma=0.99, lam=0.95)
    torch.testing.assert_close(ours, _verl_gae(rewards, values, mask, 0.99, 0.95) * mask)
    torch.testing.assert_close(returns, (ours + values) * mask)
    through, returns_t = masked_gae(rewards, values, mask, gamma=0.99, lam=0.95, through_observations=True)
    torch.testing.assert_close(through, _trl_0_10_1_gae(rewards, values, mask, 0.99, 0.95) * mask)
    torch.testing.assert_close(returns_t, (through + values * mask) * mask)
    # with every token the model's, the two conventions agree
    full = mask[2:]
    torch.testing.assert_close(masked_gae(rewards[2:], values[2:], full)[0],
                               masked_gae(rewards[2:], values[2:], full, through_observations=True)[0])


def test_whitening_equals_trls_and_verls() -> None:
    x = torch.tensor([[1.0, 2.0, 7.0, 0.0], [3.0, -1.0, 0.0, 5.0]])
    m = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 1.0]])
    torch.testing.assert_close(masked_whiten(x, m), _reference_whiten(x, m) * m)


def test_steptool_reward_placement_equals_its_compute_rewards() -> None:
    """StepTool's StepPPOTrainer.compute_rewards: walking back over the step segments of the mask,
    step k's score x (len(score) - k - 1) lands on that segment's last token."""
    mask = torch.tensor([0, 1, 1, 0, 0, 1, 1, 1, 0, 1, 1, 0], dtype=torch.float32)
    scores = [0.9, 0.6, 1.0]
    expected = torch.zeros(12)
    last = mask.clone()
    for k in reversed(range(len(scores))):  # the reference's loop, on one sequence
        i = int(last.nonzero()[-1])
        expected[i] += scores[k] * (len(scores) - k - 1)
        last = last[: i + 1]
        zeros = (last == 0).nonzero()
        if len(zeros) == 0:
            break
        last = last[: int(zeros[-1]) + 1]
    ends = [2, 7, 10]
    ours = place_rewards([scores], [ends], 12, "step", code_weights=True)[0]
    torch.testing.assert_close(ours, expected)
    assert ours[10] == 0.0  # the final IsSolved is multiplied by 0


def test_adaptive_kl_controller_equals_trls() -> None:
    from agents.ppo_losses import AdaptiveKLController

    ctl = AdaptiveKLController(0.3, target=6.0, horizon=10_000)
    value = 0.3
    for kl, n in [(12.0, 8), (1.0, 8), (6.5, 16), (100.0, 8)]:
        ctl.update(kl, n)
        value *= 1 + float(np.clip(kl / 6.0 - 1, -0.2, 0.2)) * n / 10_000
        assert ctl.value == pytest.approx(value, rel=1e-12)
