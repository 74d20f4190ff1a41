"""Shared prefixes scored once: the same log-probs, values and gradients as scoring every row in full, through real rollouts and agents."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import gymnasium as gym
import pytest
import torch

import toolenv  # noqa: F401
from agents import dpo, grpo, utils
from agents.policy import Policy
from agents.rollout import GenerationSettings, rollout
from agents.utils import TokenScorer, collate, pack_shared_prefixes
from tests.agents.conftest import tiny_policy
from tests.agents.test_bc import OneTaskEnv  # noqa: F401  (registers test/OneTask-v0)
from tests.agents.test_grpo import _shorter_is_better


def _grouped_rollouts(policy: Policy) -> list[Any]:
    """Two Math-v0 tasks, three sampled episodes each (a GRPO step's shape), through the real rollout loop."""
    envs = [gym.make("toolenv/Math-v0") for _ in range(6)]
    torch.manual_seed(0)
    return rollout(policy, envs, settings=GenerationSettings(temperature=1.0, max_new_tokens=12),
                   options=[{"index": i // 3} for i in range(6)], max_turns=2)


def test_packed_scores_equal_full_rows_in_log_probs_values_and_gradients() -> None:
    policy = tiny_policy()
    trajs = _grouped_rollouts(policy)
    batch = collate(trajs, policy.tokenizer.pad_token_id)
    packed = pack_shared_prefixes(batch["input_ids"], batch["attention_mask"])
    assert packed is not None
    # each task's three episodes share its whole prompt (and the two tasks the chat template's start)
    assert packed.input_ids.numel() < 0.8 * batch["input_ids"].numel()
    assert len({int(packed.row[i]) for i in range(3)}) == 1
    torch.manual_seed(1)
    value_head = torch.nn.Linear(policy.model.config.hidden_size, 1)
    params = [p for p in policy.model.parameters() if p.requires_grad] + list(value_head.parameters())
    results = []
    for share in (False, True):
        scorer = TokenScorer(policy.model, value_head, temperature=0.7, share_prefixes=share)
        logprobs, values = scorer(**batch)
        grads = torch.autograd.grad((logprobs * batch["loss_mask"]).sum() + (values * batch["loss_mask"]).sum(), params)
        results.append((logprobs.detach(), values.detach(), grads))
        assert scorer.share_prefixes == share  # packed, and the first-batch check against full rows passed
    (full_lp, full_v, full_g), (lp, v, g) = results
    assert batch["loss_mask"].sum() > 20
    assert torch.allclose(lp, full_lp, atol=1e-5) and torch.allclose(v, full_v, atol=1e-5)
    for a, b in zip(g, full_g):
        assert torch.allclose(a, b, atol=1e-5 * max(b.abs().max().item(), 1.0))


def test_packing_rules() -> None:
    ids = torch.tensor([[5, 6, 7, 8, 9, 0], [5, 6, 7, 8, 9, 4], [1, 2, 3, 0, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]])
    packed = pack_shared_prefixes(ids, mask, min_prefix=2, max_fraction=1.0)
    assert packed is not None
    # row 0 is a prefix of row 1: the shared part stops one short, so row 0 keeps its last token
    assert packed.input_ids[0].tolist() == [5, 6, 7, 8, 9, 9, 4]
    assert packed.position_ids[0].tolist() == [0, 1, 2, 3, 4, 4, 5]
    assert packed.col[0, :5].tolist() == [0, 1, 2, 3, 4] and packed.col[1, :6].tolist() == [0, 1, 2, 3, 5, 6]
    assert packed.row.tolist() == [0, 0, 1]
    m = packed.attention_mask[0, 0]
    assert m[4].tolist() == [True] * 5 + [False, False]  # row 0's last token: the prefix and itself
    assert m[6].tolist() == [True] * 4 + [False, True, True]  # row 1's: the prefix and its own tokens, not row 0's
    # nothing shared, or too little saved: no packing
    assert pack_shared_prefixes(ids[[0, 2]], mask[[0, 2]], min_prefix=2) is None
    assert pack_shared_prefixes(ids[:1], mask[:1]) is None


def test_a_model_whose_attention_ignores_the_mask_is_scored_in_full(caplog: pytest.LogCaptureFixture) -> None:
    """The first packed batch is checked against the full rows; a decoder that drops the 4D mask turns packing off."""
    policy = tiny_policy()
    batch = collate(_grouped_rollouts(policy), policy.tokenizer.pad_token_id)
    scorer = TokenScorer(policy.model)
    decoder, head = scorer._parts()

    def ignoring(**kwargs: Any) -> Any:
        kwargs.pop("attention_mask", None), kwargs.pop("position_ids", None)
        return decoder(**kwargs)

    scorer._parts = lambda: (ignoring, head)  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING):
        lp = scorer(**batch)
    assert not scorer.share_prefixes and "scoring without shared prefixes" in caplog.text
    assert torch.allclose(lp, TokenScorer(policy.model, share_prefixes=False)(**batch), atol=1e-6)


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return Policy.load(str(out), device="cpu").model.state_dict()


@pytest.mark.parametrize("agent", ["dpo", "grpo"])
def test_agents_train_the_same_weights_with_shared_prefixes(agent: str, tiny_model_dir: Path, tmp_path: Path,
                                                           caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """A DPO pair and a GRPO group share their prompt: two steps with and without packing give the same adapter."""
    common: dict[str, Any] = {"model": str(tiny_model_dir), "env": ["test/OneTask-v0"], "max_steps": 2, "group_size": 3, "tasks_per_step": 1,
                              "max_new_tokens": 6, "lora_r": 4, "lora_alpha": 8, "device": "cpu", "lr": 1e-2, "progress": False, "seed": 0}
    module, extra = (dpo, {"beta": 0.1}) if agent == "dpo" else (grpo, {"kl_coef": 0.04, "env_kwargs": {"answer_reward": _shorter_is_better}})
    packs: list[bool] = []
    real = pack_shared_prefixes

    def counting(*args: Any, **kwargs: Any) -> Any:
        packed = real(*args, **kwargs)
        packs.append(packed is not None)
        return packed

    monkeypatch.setattr(utils, "pack_shared_prefixes", counting)
    outs = [module.train(module.Config(**common, **extra, out=str(tmp_path / str(share)), share_prefixes=share)) for share in (False, True)]
    assert packs and all(packs) and "scoring without shared prefixes" not in caplog.text  # every batch was packed
    a, b = _weights(outs[0]), _weights(outs[1])
    assert any(a[k].abs().sum() > 0 for k in a if "lora_B" in k)
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k
