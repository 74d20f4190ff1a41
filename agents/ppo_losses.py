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

__all__ = [
    "explained_variance",
    "kl_penalty",
    "masked_gae",
    "masked_mean",
    "masked_whiten",
    "place_rewards",
    "policy_loss",
    "value_loss",
]


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp_min(1.0)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, *, shift_mean: bool = True) -> torch.Tensor:
    """Normalise ``x`` to zero mean and unit variance over the masked entries."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    out = (x - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        out = out + mean
    return out * mask


def place_rewards(
    step_rewards: Sequence[Sequence[float]],
    action_ends: Sequence[Sequence[int]],
    width: int,
    mode: Literal["final", "step"],
) -> torch.Tensor:
    """Token-level rewards: where each trajectory's reward lands in its token sequence.

    ``final`` (final-reward PPO) puts the episode's total reward on the last token of the last
    action; ``step`` (step-PPO, StepTool) puts each step's reward on the last token of that
    step's action. That placement is the only difference between the two.

    >>> place_rewards([[0.5, 1.0]], [[2, 5]], 7, "step")
    tensor([[0.0000, 0.0000, 0.5000, 0.0000, 0.0000, 1.0000, 0.0000]])
    >>> place_rewards([[0.5, 1.0]], [[2, 5]], 7, "final")
    tensor([[0.0000, 0.0000, 0.0000, 0.0000, 0.0000, 1.5000, 0.0000]])
    """
    if mode not in ("final", "step"):
        raise ValueError(f"Expected mode to be one of ['final', 'step'], got {mode!r}.")
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
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, *, gamma: float = 0.99, lam: float = 0.95
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over the model's tokens only.

    Observation (and prompt) tokens are skipped without breaking the chain: across them the
    next value and the running advantage carry over unchanged, so the last token of one action
    bootstraps from the first token of the next action, as verl does for multi-turn rollouts.
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
    for t in reversed(range(rewards.shape[1])):
        m = mask[:, t]
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        gae = delta + gamma * lam * last_gae
        next_value = values[:, t] * m + next_value * (1 - m)
        last_gae = gae * m + last_gae * (1 - m)
        advantages[:, t] = torch.where(m > 0, gae, torch.zeros_like(gae))
    returns = (advantages + values) * mask
    return advantages, returns


def policy_loss(
    logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, *, clip: float = 0.2
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO's clipped surrogate, token-averaged over the model's tokens.

    >>> lp = torch.tensor([[0.0, 0.5]]); old = torch.zeros(1, 2); adv = torch.tensor([[1.0, 1.0]])
    >>> loss, stats = policy_loss(lp, old, adv, torch.ones(1, 2), clip=0.2)
    >>> round(loss.item(), 4), stats["clipfrac"]
    (-1.1, 0.5)
    """
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip, 1.0 + clip)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
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
