"""ArCHer: its critic and actor losses equal the reference's formulas; turns from real rollouts reach the buffer; it trains and resumes exactly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import pytest
import torch

from agents import archer
from agents.policy import Policy
from agents.rollout import scripted_trajectory
from tests.agents.test_bc import OneTaskEnv  # noqa: F401  (registers test/OneTask-v0)


def test_critic_loss_equals_archers_formula() -> None:
    torch.manual_seed(0)
    critic, target = archer.DoubleCritic(4), archer.DoubleCritic(4)
    f_s, f_sa, f_next, f_spi = (torch.randn(5, 4) for _ in range(4))
    reward, done, gamma = torch.tensor([0.0, 1.0, 0.5, -1.0, 2.0]), torch.tensor([0.0, 1.0, 0.0, 0.0, 1.0]), 0.9
    loss, stats = archer.critic_loss(critic, target, f_s, f_sa, f_next, f_spi, reward, done, gamma)
    # ArCHer's critic_loss, written out: Q towards r + γ(1-d)·target V(s'), V towards target Q(s, π(s))
    sa, spi = torch.cat([f_s, f_sa], -1), torch.cat([f_s, f_spi], -1)
    q1, q2 = critic.q1(sa).squeeze(-1), critic.q2(sa).squeeze(-1)
    v1, v2 = critic.v1(f_s).squeeze(-1), critic.v2(f_s).squeeze(-1)
    tq1, tq2 = target.q1(spi).squeeze(-1), target.q2(spi).squeeze(-1)
    tv1, tv2 = target.v1(f_next).squeeze(-1), target.v2(f_next).squeeze(-1)
    expected = (((q1 - (reward + (1 - done) * gamma * tv1)) ** 2).mean() + ((q2 - (reward + (1 - done) * gamma * tv2)) ** 2).mean()
                + ((v1 - tq1) ** 2).mean() + ((v2 - tq2) ** 2).mean())
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    # gradients reach the critic only: the targets are constants
    loss.backward()
    assert all(p.grad is None for p in target.parameters()) and all(p.grad is not None for p in critic.parameters())
    adv = archer.advantages(critic, f_s, f_spi)
    assert torch.allclose(adv, torch.minimum(critic.q1(spi), critic.q2(spi)).squeeze(-1) - torch.minimum(v1, v2))


def test_actor_loss_and_soft_update_equal_archers() -> None:
    lp = torch.log(torch.tensor([[0.9, 0.5, 0.25, 1.0], [0.9, 0.1, 1.0, 1.0]]))
    mask = torch.tensor([[0.0, 1.0, 1.0, 0.0], [0.0, 1.0, 0.0, 0.0]])
    adv = torch.tensor([0.5, -1.0])
    expected = -((0.5 * (torch.log(torch.tensor(0.5)) + torch.log(torch.tensor(0.25)))) + (-1.0 * torch.log(torch.tensor(0.1)))) / 2
    assert archer.actor_loss(lp, mask, adv).item() == pytest.approx(expected.item(), rel=1e-6)
    a, b = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    before = a.weight.detach().clone()
    archer.soft_update(a, b, 0.1)
    assert torch.allclose(a.weight, 0.9 * before + 0.1 * b.weight)


def test_turns_of_a_real_episode(tiny_model_dir: Path) -> None:
    tok = Policy.load(str(tiny_model_dir), device="cpu").tokenizer
    traj = scripted_trajectory(gym.make("test/OneTask-v0"), None, tok)  # the gold call, then the answer
    turns = archer.turn_transitions(traj, "immediate")
    assert len(turns) == 2 and traj.terminated
    for k, turn in enumerate(turns):
        assert traj.action_mask[turn.state_end] == 1 and traj.action_mask[turn.state_end - 1] == 0  # s ends where the turn starts
        assert turn.action_end == traj.action_ends[k] and turn.reward == traj.rewards[k]
    assert turns[0].next_end == turns[1].state_end and turns[1].next_end == len(traj.token_ids)
    assert [t.done for t in turns] == [0.0, 1.0]
    # an episode cut by the step limit bootstraps from its last state
    cut = scripted_trajectory(gym.make("test/OneTask-v0"), ["calculator(1+1)"] * 5, tok)
    assert cut.truncated and not cut.terminated
    assert [t.done for t in archer.turn_transitions(cut, "immediate")] == [0.0, 0.0, 0.0]


def _config(model_dir: Path, out: Path, **kw: Any) -> archer.Config:
    base: dict[str, Any] = {
        "model": str(model_dir), "env": ["test/OneTask-v0"], "out": str(out), "max_steps": 2, "episodes_per_step": 3,
        "batch_size": 4, "max_new_tokens": 6, "lora_r": 4, "lora_alpha": 8, "device": "cpu", "lr": 1e-2, "progress": False,
        "save_every": 1, "critic_epochs": 2, "actor_epochs": 2,
    }
    base.update(kw)
    return archer.Config(**base)


def test_archer_trains_on_the_rollouts_turns(tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[dict[str, Any]] = []
    real = archer.critic_loss

    def recording(critic: Any, target: Any, f_s: Any, f_sa: Any, f_next: Any, f_spi: Any, reward: Any, done: Any, gamma: float) -> Any:
        seen.append({"reward": reward.tolist(), "done": done.tolist()})
        return real(critic, target, f_s, f_sa, f_next, f_spi, reward, done, gamma)

    monkeypatch.setattr(archer, "critic_loss", recording)
    out = archer.train(_config(tiny_model_dir, tmp_path / "a"))
    from agents.rollout import load_trajectories

    trajs = [t for k in range(2) for t in load_trajectories(tmp_path / "a" / "samples" / f"iter{k}.rank0.jsonl")]
    turns = [turn for t in trajs for turn in archer.turn_transitions(t)]
    assert len(seen) == 4  # 2 critic epochs x 2 iterations
    pairs = {(t.reward, t.done) for t in turns}
    assert all((r, d) in pairs for batch in seen for r, d in zip(batch["reward"], batch["done"]))
    trained = Policy.load(str(out), device="cpu")
    assert any(p.abs().sum() > 0 for n, p in trained.model.named_parameters() if "lora_B" in n)  # the actor moved after warm-up
    saved = torch.load(Path(out) / "critic.pt", weights_only=True)
    assert set(saved) == {"critic", "target"}


def test_archer_resumes_exactly(tiny_model_dir: Path, tmp_path: Path) -> None:
    straight = archer.train(_config(tiny_model_dir, tmp_path / "a"))
    archer.train(_config(tiny_model_dir, tmp_path / "b", max_steps=1))
    resumed = archer.train(_config(tiny_model_dir, tmp_path / "b"))
    a = Policy.load(str(straight), device="cpu").model.state_dict()
    b = Policy.load(str(resumed), device="cpu").model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    ca, cb = (torch.load(Path(p) / "critic.pt", weights_only=True) for p in (straight, resumed))
    assert all(torch.equal(ca["target"][k], cb["target"][k]) for k in ca["target"])
