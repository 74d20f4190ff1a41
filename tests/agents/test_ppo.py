"""PPO and step-PPO on a tiny model: they update the adapter and the critic, log, resume, train offline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from agents import ppo
from agents.policy import Policy
from agents.rollout import Trajectory, save_trajectories, scripted_trajectory
from agents.utils import TokenScorer, collate
from tests.agents.conftest import tiny_policy
from tests.agents.test_bc import OneTaskEnv  # noqa: F401  (registers test/OneTask-v0)


def _shorter_is_better(completions: list[str], **kwargs: object) -> list[float]:
    return [1.0 / (1.0 + len(c)) for c in completions]


def _cfg(model_dir: Path, out: Path, **kw: Any) -> ppo.Config:
    base: dict[str, Any] = {
        "model": str(model_dir), "env": ["test/OneTask-v0"], "env_kwargs": {"answer_reward": _shorter_is_better},
        "out": str(out), "max_steps": 2, "episodes_per_step": 4, "minibatch_size": 2, "ppo_epochs": 1,
        "max_new_tokens": 6, "lora_r": 4, "lora_alpha": 8, "device": "cpu", "lr": 1e-2, "progress": False, "save_every": 1,
    }
    base.update(kw)
    return ppo.Config(**base)


@pytest.mark.parametrize("placement", ["final", "step"])
def test_ppo_updates_adapter_and_critic(placement: str, tiny_model_dir: Path, tmp_path: Path) -> None:
    out = ppo.train(_cfg(tiny_model_dir, tmp_path / placement, reward_placement=placement))
    trained = Policy.load(str(out), device="cpu")
    assert any(p.abs().sum() > 0 for n, p in trained.model.named_parameters() if "lora_B" in n)
    head = torch.load(out / "value_head.pt")
    assert head["linear.weight"].abs().sum() > 0  # the critic moved off its zero init
    events = list((out / "runs").rglob("events.out.tfevents*"))
    assert events
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for tag in ("charts/success_rate", "charts/kl", "charts/explained_variance", "losses/clipfrac", "losses/value_loss",
                "rewards/answer_correct", "charts/episodes"):
        assert tag in tags, tag


def test_value_head_shapes_and_alignment() -> None:
    policy = tiny_policy()
    head = ppo.ValueHead(policy.model.config.hidden_size)
    with torch.no_grad():
        head.linear.bias.fill_(0.25)
    import gymnasium as gym

    trajs = [scripted_trajectory(gym.make("toolenv/Math-v0"), None, policy.tokenizer, options={"index": i}) for i in range(2)]
    batch = collate(trajs, policy.tokenizer.pad_token_id)
    logprobs, values = TokenScorer(policy.model, head)(**batch)
    assert logprobs.shape == values.shape == batch["input_ids"].shape
    assert torch.all(values[batch["loss_mask"] > 0] == 0.25) and torch.all(values[batch["loss_mask"] == 0] == 0)



@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_scorer_scores_at_the_sampling_temperature(temperature: float) -> None:
    """PPO and GRPO sampling at T optimise softmax(logits / T): the scorer must score that policy."""
    import gymnasium as gym

    policy = tiny_policy()
    trajs = [scripted_trajectory(gym.make("toolenv/Math-v0"), None, policy.tokenizer, options={"index": i}) for i in range(2)]
    batch = collate(trajs, policy.tokenizer.pad_token_id)
    with torch.no_grad():
        ours = TokenScorer(policy.model, temperature=temperature)(**batch)
        logits = policy.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
    expected = torch.log_softmax(logits[:, :-1] / temperature, dim=-1).gather(2, batch["input_ids"][:, 1:, None]).squeeze(2)
    mask = batch["loss_mask"][:, 1:] > 0
    torch.testing.assert_close(ours[:, 1:][mask], expected[mask], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="temperature"):
        TokenScorer(policy.model, temperature=0.0)


def test_step_rewards_prefer_the_envs_hindsight() -> None:
    traj = Trajectory(env_id="x", task={}, rewards=[0.0, 1.0], action_ends=[3, 7], infos=[{}, {"step_rewards": [0.5, 1.0]}])
    assert ppo.step_rewards_of(traj, "hindsight") == [0.5, 1.0]
    assert ppo.step_rewards_of(traj, "immediate") == [0.0, 1.0]
    traj.infos[-1]["step_rewards"] = [1.0]  # wrong length: it would credit the wrong steps
    with pytest.raises(ValueError, match="one hindsight step reward per step"):
        ppo.step_rewards_of(traj, "hindsight")


def test_offline_mode_trains_from_stored_trajectories(tiny_model_dir: Path, tmp_path: Path) -> None:
    import gymnasium as gym

    policy = Policy.load(str(tiny_model_dir), device="cpu")
    env = gym.make("test/OneTask-v0")
    stored = [scripted_trajectory(env, None, policy.tokenizer), scripted_trajectory(env, ["7"], policy.tokenizer)]
    path = save_trajectories(tmp_path / "stored.jsonl", stored)
    out = ppo.train(_cfg(tiny_model_dir, tmp_path / "offline", data=str(path), episodes_per_step=2, reward_placement="step"))
    assert any(p.abs().sum() > 0 for n, p in Policy.load(str(out), device="cpu").model.named_parameters() if "lora_B" in n)


def test_resume_matches_an_uninterrupted_run(tiny_model_dir: Path, tmp_path: Path) -> None:
    a = ppo.train(_cfg(tiny_model_dir, tmp_path / "a", max_steps=2))
    ppo.train(_cfg(tiny_model_dir, tmp_path / "b", max_steps=1))
    b = ppo.train(_cfg(tiny_model_dir, tmp_path / "b", max_steps=2))
    sa = Policy.load(str(a), device="cpu").model.state_dict()
    sb = Policy.load(str(b), device="cpu").model.state_dict()
    for k in sa:
        assert torch.allclose(sa[k], sb[k], atol=1e-6), k


def test_config_validation_names_fields() -> None:
    with pytest.raises(ValueError, match=r"Expected reward_placement to be one of \['final', 'step'\], got 'token'"):
        ppo.Config(reward_placement="token")
    with pytest.raises(ValueError, match="Expected kl_mode"):
        ppo.Config(kl_mode="both")
