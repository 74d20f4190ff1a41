"""Behaviour cloning on a tiny model: it learns a trivial env perfectly, trains only the adapter, resumes exactly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import pytest
import torch

import toolenv  # noqa: F401
from agents import bc
from agents.policy import Policy
from agents.rollout import GenerationSettings, rollout
from agents.utils import TokenScorer, collate
from tests.agents.conftest import tiny_policy
from toolenv.core import ToolEnv
from toolenv.datasets import ListTaskSet
from toolenv.tools.calculator import calculator
from toolenv.types import Task, ToolCall


class OneTaskEnv(ToolEnv):
    """A trivial env: always the same question, whose gold solution is one calculator call."""

    def __init__(self, **kwargs: Any) -> None:
        task = Task("only", "What is 6 times 7?", "42", (ToolCall("calculator", {"expression": "6*7"}),))
        super().__init__(ListTaskSet([task], name="one", split="train"), [calculator], **kwargs)


gym.register("test/OneTask-v0", entry_point=OneTaskEnv, max_episode_steps=3)


def test_token_scorer_matches_full_forward(policy: Policy) -> None:
    from agents.rollout import scripted_trajectory

    trajs = [scripted_trajectory(gym.make("toolenv/Math-v0"), None, policy.tokenizer, options={"index": i}) for i in range(3)]
    batch = collate(trajs, policy.tokenizer.pad_token_id)
    ours = TokenScorer(policy.model)(**batch)
    logits = policy.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    full = torch.log_softmax(logits.float(), -1)[:, :-1].gather(2, batch["input_ids"][:, 1:, None]).squeeze(2)
    mask = batch["loss_mask"][:, 1:]
    assert torch.allclose(ours[:, 1:] * mask, full * mask, atol=1e-5)
    assert (ours[:, 1:][mask == 0] == 0).all()


def _config(model_dir: Path, out: Path, **kw: Any) -> bc.Config:
    base = {"model": str(model_dir), "env": ["test/OneTask-v0"], "out": str(out), "max_steps": 40, "batch_size": 4,
            "lr": 3e-2, "lora_r": 8, "lora_alpha": 16, "device": "cpu", "progress": False, "save_every": 20, "seed": 0}
    base.update(kw)
    return bc.Config(**base)


def test_bc_learns_a_trivial_env(tiny_model_dir: Path, tmp_path: Path) -> None:
    before = Policy.load(str(tiny_model_dir), device="cpu")
    base_weights = {n: p.clone() for n, p in before.model.named_parameters()}
    out = bc.train(_config(tiny_model_dir, tmp_path / "bc"))
    after = Policy.load(str(out), device="cpu")
    # the adapter changed; the base weights did not
    lora = {n: p for n, p in after.model.named_parameters() if "lora_B" in n}
    assert lora and any(p.abs().sum() > 0 for p in lora.values())
    for n, p in after.model.get_base_model().named_parameters():
        if "lora_" not in n:
            key = n.replace(".base_layer", "")
            assert torch.equal(p, base_weights[key]), n
    # greedy rollouts now solve the env: call, then answer
    envs = [gym.make("test/OneTask-v0") for _ in range(4)]
    trajs = rollout(after, envs, settings=GenerationSettings(max_new_tokens=16, greedy=True))
    assert all(t.success for t in trajs), [t.actions for t in trajs]
    assert trajs[0].actions == ["calculator(6*7)", "42"]
    assert (tmp_path / "bc" / "runs").is_dir() and any((tmp_path / "bc" / "runs").rglob("events.out.tfevents*"))


def test_bc_resume_continues_exactly(tiny_model_dir: Path, tmp_path: Path) -> None:
    straight = bc.train(_config(tiny_model_dir, tmp_path / "a", max_steps=6, save_every=3))
    # a run "killed" after step 3: train 3 steps, then restart the same command with the full budget
    bc.train(_config(tiny_model_dir, tmp_path / "b", max_steps=3, save_every=3))
    resumed = bc.train(_config(tiny_model_dir, tmp_path / "b", max_steps=6, save_every=3))
    a = Policy.load(str(straight), device="cpu").model.state_dict()
    b = Policy.load(str(resumed), device="cpu").model.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k


def test_checkpoint_refuses_changed_settings(tiny_model_dir: Path, tmp_path: Path) -> None:
    bc.train(_config(tiny_model_dir, tmp_path / "c", max_steps=2, save_every=1))
    with pytest.raises(ValueError, match=r"different settings \(\['lr'\]\)"):
        bc.train(_config(tiny_model_dir, tmp_path / "c", max_steps=4, lr=1e-3))


def test_demonstrations_follow_the_env_protocol(policy: Policy) -> None:
    cfg = bc.Config(env=["toolenv/Math-v0"], env_kwargs={"protocol": "react"}, demos_per_env=5, progress=False)
    demos = bc.demonstrations(cfg, policy.tokenizer)
    assert len(demos) == 5 and all(d.success for d in demos)
    assert demos[0].actions[0].startswith("Thought: I should use calculator.\nAction: calculator")


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match="Expected demos_per_env > 0, got 0"):
        bc.Config(demos_per_env=0)
    with pytest.raises(ValueError, match=r"Expected device to be one of \['auto', 'cpu', 'cuda'\], got 'gpu'"):
        bc.Config(device="gpu")


def test_tiny_policy_helper_is_deterministic() -> None:
    a, b = tiny_policy(seed=3), tiny_policy(seed=3)
    ids = torch.tensor([[1, 2, 3]])
    assert torch.equal(a.model(ids).logits, b.model(ids).logits)
