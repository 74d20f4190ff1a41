"""Pure pieces of PPO for multi-turn tool use: reward placement, masked GAE, clipped losses.

Every function works on ``[batch, seq]`` tensors aligned with a trajectory's tokens (see
:class:`agents.rollout.Trajectory`): ``mask`` is the action mask (1 on the model's tokens).
They are separate from the training loop so each can be checked against numbers worked out
by hand.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from rewards.steps import steptool_code_weighting

__all__ = [
    "AdaptiveKLController",
    "aggregate_loss",
    "explained_variance",
    "kl_penalty",
    "masked_gae",
    "masked_mean",
    "masked_var",
    "masked_whiten",
    "place_rewards",
    "policy_loss",
    "value_loss",
]


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp_min(1.0)


def masked_var(x: torch.Tensor, mask: torch.Tensor, *, unbiased: bool = True) -> torch.Tensor:
    """Variance over the masked entries; ``unbiased`` applies Bessel's correction, as TRL's and verl's ``masked_var`` do.

    >>> masked_var(torch.tensor([1.0, 3.0, 9.0]), torch.tensor([1.0, 1.0, 0.0]))
    tensor(2.)
    """
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    if unbiased:
        n = mask.sum()
        if n <= 1:
            return torch.zeros_like(var)
        var = var * n / (n - 1)
    return var


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, *, shift_mean: bool = True) -> torch.Tensor:
    """Normalise ``x`` to zero mean and unit variance over the masked entries (unbiased variance, as TRL and verl)."""
    mean = masked_mean(x, mask)
    var = masked_var(x, mask, unbiased=True)
    out = (x - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        out = out + mean
    return out * mask


def place_rewards(
    step_rewards: Sequence[Sequence[float]],
    action_ends: Sequence[Sequence[int]],
    width: int,
    mode: Literal["final", "step"],
    *,
    code_weights: bool = False,
) -> torch.Tensor:
    """Token-level rewards: where each trajectory's reward lands in its token sequence.

    ``final`` (final-reward PPO) puts the episode's total reward on the last token of the last
    action; ``step`` (step-PPO, StepTool) puts each step's reward on the last token of that
    step's action. With ``code_weights`` (step only), step ``k`` of ``n`` is multiplied by
    ``n - 1 - k``, as StepTool's ``StepPPOTrainer.compute_rewards`` does, so the last score
    (the final answer's IsSolved) gets weight 0.

    >>> place_rewards([[0.5, 1.0]], [[2, 5]], 7, "step")
    tensor([[0.0000, 0.0000, 0.5000, 0.0000, 0.0000, 1.0000, 0.0000]])
    >>> place_rewards([[0.5, 1.0]], [[2, 5]], 7, "final")
    tensor([[0.0000, 0.0000, 0.0000, 0.0000, 0.0000, 1.5000, 0.0000]])
    >>> place_rewards([[0.5, 1.0, 1.0]], [[1, 3, 5]], 6, "step", code_weights=True)
    tensor([[0., 1., 0., 1., 0., 0.]])
    """
    if mode not in ("final", "step"):
        raise ValueError(f"Expected mode to be one of ['final', 'step'], got {mode!r}.")
    if code_weights and mode != "step":
        raise ValueError("Expected code_weights only with mode='step' (StepTool weights step scores by position).")
    if code_weights:
        step_rewards = [steptool_code_weighting(rs) for rs in step_rewards]
    out = torch.zeros((len(step_rewards), width))
    for i, (rewards, ends) in enumerate(zip(step_rewards, action_ends)):
        if len(rewards) != len(ends):
            raise ValueError(f"Expected one reward per action, got {len(rewards)} rewards and {len(ends)} actions.")
        if not ends:
            continue
        if mode == "final":
            out[i, ends[-1]] = float(sum(rewards))
        else:
            for r, e in zip(rewards, ends):
                out[i, e] += float(r)
    return out


def masked_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    *,
    gamma: float = 0.99,
    lam: float = 0.95,
    through_observations: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over a multi-turn token sequence.

    Default (verl's multi-turn GAE): observation (and prompt) tokens are skipped without
    breaking the chain: across them the next value and the running advantage carry over
    unchanged, so the last token of one action bootstraps from the first token of the next.

    ``through_observations=True`` (trl 0.10.1's ``PPOTrainer.compute_advantages``, which
    StepTool's step-PPO inherits): values and rewards are zeroed where ``mask`` is 0 and the
    recursion runs over every token, so across an observation of ``m`` tokens the credit from
    later steps is multiplied by ``(γλ)^m`` (and a masked token's zero value is bootstrapped).

    Returns ``(advantages, returns)``, zero where ``mask`` is 0.

    >>> r = torch.tensor([[0.0, 0.0, 0.0, 1.0]]); v = torch.tensor([[0.5, 9.0, 0.5, 0.5]])
    >>> m = torch.tensor([[1.0, 0.0, 1.0, 1.0]])  # token 1 is an observation: its value is ignored
    >>> adv, ret = masked_gae(r, v, m, gamma=1.0, lam=1.0)
    >>> adv
    tensor([[0.5000, 0.0000, 0.5000, 0.5000]])
    """
    advantages = torch.zeros_like(rewards)
    next_value = torch.zeros(rewards.shape[0], dtype=rewards.dtype, device=rewards.device)
    last_gae = torch.zeros_like(next_value)
    if through_observations:
        values, rewards = values * mask, rewards * mask
        for t in reversed(range(rewards.shape[1])):
            delta = rewards[:, t] + gamma * next_value - values[:, t]
            last_gae = delta + gamma * lam * last_gae
            next_value = values[:, t]
            advantages[:, t] = last_gae
        returns = advantages + values
        return advantages * mask, returns * mask
    for t in reversed(range(rewards.shape[1])):
        m = mask[:, t]
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        gae = delta + gamma * lam * last_gae
        next_value = values[:, t] * m + next_value * (1 - m)
        last_gae = gae * m + last_gae * (1 - m)
        advantages[:, t] = torch.where(m > 0, gae, torch.zeros_like(gae))
    returns = (advantages + values) * mask
    return advantages, returns


LossType = Literal["token_mean", "seq_mean", "dr_grpo"]


def aggregate_loss(
    per_token: torch.Tensor, mask: torch.Tensor, loss_type: LossType = "token_mean", *, max_length: int | None = None
) -> torch.Tensor:
    """Reduce a per-token loss to a scalar, the ways TRL's GRPO trainer offers (``loss_type``).

    - ``token_mean``: the mean over every model token of the batch (TRL's ``bnpo``; its ``dapo``
      when the batch is the whole generation batch).
    - ``seq_mean``: the mean over each sequence's tokens, then over sequences (TRL's ``grpo``,
      DeepSeekMath's 1/|o_i| normalisation).
    - ``dr_grpo``: the sum over tokens divided by ``batch × max_length`` (Dr. GRPO, TRL's
      ``dr_grpo`` with ``max_completion_length``).

    >>> x = torch.tensor([[1.0, 1.0, 1.0], [4.0, 0.0, 0.0]]); m = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    >>> [round(aggregate_loss(x, m, t, max_length=4).item(), 4) for t in ("token_mean", "seq_mean", "dr_grpo")]
    [1.75, 2.5, 0.875]
    """
    if loss_type == "token_mean":
        return masked_mean(per_token, mask)
    if loss_type == "seq_mean":
        return ((per_token * mask).sum(-1) / mask.sum(-1).clamp_min(1.0)).mean()
    if loss_type == "dr_grpo":
        if not max_length:
            raise ValueError("Expected max_length (the longest completion, in tokens) for loss_type='dr_grpo'.")
        return (per_token * mask).sum() / (per_token.shape[0] * max_length)
    raise ValueError(f"Expected loss_type to be one of ['token_mean', 'seq_mean', 'dr_grpo'], got {loss_type!r}.")


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip: float = 0.2,
    loss_type: LossType = "token_mean",
    max_length: int | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO's clipped surrogate over the model's tokens, reduced by :func:`aggregate_loss`.

    >>> lp = torch.tensor([[0.0, 0.5]]); old = torch.zeros(1, 2); adv = torch.tensor([[1.0, 1.0]])
    >>> loss, stats = policy_loss(lp, old, adv, torch.ones(1, 2), clip=0.2)
    >>> round(loss.item(), 4), stats["clipfrac"]
    (-1.1, 0.5)
    """
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip, 1.0 + clip)
    loss = aggregate_loss(torch.maximum(unclipped, clipped), mask, loss_type, max_length=max_length)
    with torch.no_grad():
        clipfrac = masked_mean((clipped > unclipped).float(), mask).item()
        approx_kl = masked_mean(0.5 * (logprobs - old_logprobs) ** 2, mask).item()
    return loss, {"policy_loss": loss.item(), "clipfrac": clipfrac, "approx_kl": approx_kl}


def value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, *, clip: float = 0.2
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO's clipped value loss: ``0.5 * max((v - R)^2, (clip(v, v_old ± c) - R)^2)``, token-averaged.

    >>> v = torch.tensor([[1.0]]); old = torch.tensor([[0.0]]); ret = torch.tensor([[0.0]])
    >>> loss, stats = value_loss(v, old, ret, torch.ones(1, 1), clip=0.2)
    >>> round(loss.item(), 4), stats["vf_clipfrac"]
    (0.5, 0.0)
    """
    clipped = old_values + torch.clamp(values - old_values, -clip, clip)
    losses = torch.maximum((values - returns) ** 2, (clipped - returns) ** 2)
    loss = 0.5 * masked_mean(losses, mask)
    with torch.no_grad():
        vf_clipfrac = masked_mean(((clipped - returns) ** 2 > (values - returns) ** 2).float(), mask).item()
    return loss, {"value_loss": loss.item(), "vf_clipfrac": vf_clipfrac}


def kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, kind: Literal["k1", "k3"] = "k1") -> torch.Tensor:
    """Per-token KL estimate to the reference: ``k1 = log p - log q`` (reward penalty), ``k3`` (a non-negative loss term).

    >>> kl_penalty(torch.tensor([0.0]), torch.tensor([0.0]), "k3")
    tensor([0.])
    """
    diff = logprobs - ref_logprobs
    if kind == "k1":
        return diff
    if kind == "k3":
        return torch.exp(-diff) - 1 + diff
    raise ValueError(f"Expected kind to be one of ['k1', 'k3'], got {kind!r}.")


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """``1 - Var[R - v] / Var[R]`` over the masked entries (1 is perfect, 0 is no better than the mean)."""
    var_r = masked_mean((returns - masked_mean(returns, mask)) ** 2, mask)
    diff = returns - values
    var_d = masked_mean((diff - masked_mean(diff, mask)) ** 2, mask)
    return float(1.0 - var_d / var_r) if var_r > 0 else float("nan")


class AdaptiveKLController:
    """Ziegler et al.'s adaptive KL coefficient, as trl 0.10.1's ``AdaptiveKLController`` (StepTool's setting).

    After each batch the coefficient is multiplied by ``1 + clip(KL / target - 1, ±0.2) × n / horizon``,
    where KL is the batch's mean per-sequence KL (summed over tokens) and ``n`` the batch size.

    >>> ctl = AdaptiveKLController(0.3, target=6.0, horizon=10_000)
    >>> ctl.update(12.0, 8); round(ctl.value, 8)  # KL twice the target: +20 % x 8 / 10,000
    0.300048
    """

    def __init__(self, init: float, *, target: float, horizon: int) -> None:
        if target <= 0 or horizon <= 0:
            raise ValueError(f"Expected kl target > 0 and horizon > 0, got {target} and {horizon}.")
        self.value = float(init)
        self.target = float(target)
        self.horizon = int(horizon)

    def update(self, current: float, n_steps: int) -> None:
        error = min(max(current / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon
