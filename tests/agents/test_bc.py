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
    assert (batch["attention_mask"] == 0).any()  # padded: the scorer drops the mask, the reference keeps it
    params = [p for p in policy.model.parameters() if p.requires_grad]
    ours = TokenScorer(policy.model)(**batch)
    grads = torch.autograd.grad(ours.sum(), params)
    logits = policy.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    full = torch.log_softmax(logits.float(), -1)[:, :-1].gather(2, batch["input_ids"][:, 1:, None]).squeeze(2)
    mask = batch["loss_mask"][:, 1:]
    assert torch.allclose(ours[:, 1:] * mask, full * mask, atol=1e-5)
    assert (ours[:, 1:][mask == 0] == 0).all()
    for ours_grad, reference in zip(grads, torch.autograd.grad((full * mask).sum(), params)):
        assert torch.allclose(ours_grad, reference, rtol=0, atol=1e-5 * max(reference.abs().max().item(), 1.0))  # float32 sums in another order
    # a left-padded batch keeps its mask: the same log-probs, shifted
    width = batch["input_ids"].shape[1]
    left = {k: torch.stack([torch.roll(row, width - int(m.sum())) for row, m in zip(v, batch["attention_mask"])]) for k, v in batch.items()}
    shifted = TokenScorer(policy.model)(**left)
    for row, m, r in zip(shifted, batch["attention_mask"], ours):
        n = int(m.sum())
        assert torch.allclose(row[width - n :], r[:n], atol=1e-5)


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


# ------------------------------------------------------------------ chat JSONL (STE fine-tuning data)
def _react_episode_messages(tokenizer: Any, index: int = 0) -> tuple[list[dict[str, Any]], Any]:
    """A gold ReAct episode of Math-v0: its env messages and its scripted trajectory."""
    from agents.rollout import scripted_trajectory

    env = gym.make("toolenv/Math-v0", protocol="react")
    traj = scripted_trajectory(env, None, tokenizer, options={"index": index})
    messages = [dict(m) for m in env.unwrapped.messages]
    env.close()
    return messages, traj


def test_chat_trajectory_matches_scripted_trajectory(policy: Policy) -> None:
    from agents.rollout import chat_trajectory

    for index in range(3):
        messages, scripted = _react_episode_messages(policy.tokenizer, index)
        assert [m["role"] for m in messages][:3] == ["system", "user", "assistant"] and "tool" in [m["role"] for m in messages]
        chat = chat_trajectory(messages, policy.tokenizer, env_id="toolenv/Math-v0")
        assert chat.token_ids == scripted.token_ids
        assert chat.action_mask == scripted.action_mask
        assert chat.action_ends == scripted.action_ends
        assert chat.prompt_length == scripted.prompt_length
        assert chat.actions == scripted.actions
        assert chat.success and chat.terminated and scripted.success


def test_chat_trajectory_masks_only_assistant_turns(policy: Policy) -> None:
    from agents.rollout import chat_trajectory

    tok = policy.tokenizer
    messages = [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "What is 6 times 7?"},
        {"role": "assistant", "content": "Thought: x\nAction: calculator\nAction Input: {\"expression\": \"6*7\"}"},
        {"role": "tool", "name": "calculator", "content": "42"},
        {"role": "assistant", "content": "Final Answer: 42"},
        {"role": "tool", "content": "dropped: nothing follows it"},
    ]
    t = chat_trajectory(messages, tok, task={"query": "q"})
    model_text = tok.decode([i for i, m in zip(t.token_ids, t.action_mask) if m])
    assert model_text == messages[2]["content"] + tok.eos_token + messages[4]["content"] + tok.eos_token
    assert t.action_ends[-1] == len(t.token_ids) - 1 and len(t.action_ends) == 2
    assert "42" in tok.decode(t.token_ids[t.action_ends[0] + 1 : t.action_ends[1]])
    assert t.task == {"query": "q"} and t.success
    with pytest.raises(ValueError, match="at least one assistant turn"):
        chat_trajectory(messages[:2], tok)


def test_bc_trains_from_a_chat_file(tiny_model_dir: Path, tmp_path: Path) -> None:
    import json

    tok = Policy.load(str(tiny_model_dir), device="cpu").tokenizer
    messages, _ = _react_episode_messages(tok, 0)
    data = tmp_path / "train.jsonl"
    with data.open("w") as f:
        for _ in range(3):
            f.write(json.dumps({"messages": messages, "api": "calculator", "query": messages[1]["content"]}) + "\n")
    # a mixed file: a saved trajectory line is read as before
    from agents.rollout import save_trajectories, scripted_trajectory

    save_trajectories(data, [scripted_trajectory(gym.make("test/OneTask-v0"), None, tok)], append=True)
    demos = bc.load_demonstrations(data, tok)
    assert len(demos) == 4 and all(d.success for d in demos) and demos[0].task["api"] == "calculator"

    cfg = _config(tiny_model_dir, tmp_path / "bc-chat", data=str(data), max_steps=8, save_every=100, batch_size=2)
    before = Policy.load(str(tiny_model_dir), device="cpu")
    batch = collate(demos[:1], tok.pad_token_id)
    nll_before = bc.bc_loss(TokenScorer(before.model)(**batch), batch["loss_mask"])[0].item()
    out = bc.train(cfg)
    after = Policy.load(str(out), device="cpu")
    with torch.no_grad():
        nll_after = bc.bc_loss(TokenScorer(after.model)(**batch), batch["loss_mask"])[0].item()
    assert nll_after < nll_before


def test_bc_data_file_errors(tmp_path: Path, policy: Policy) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "x"}\n')
    with pytest.raises(ValueError, match="'token_ids' .* or 'messages'"):
        bc.load_demonstrations(bad, policy.tokenizer)


def test_chunked_token_scorer_equals_the_whole_head_in_values_and_gradients(policy: Policy) -> None:
    """Checkpointed chunks of the LM head: the same log-probs and the same gradients as one pass over all positions."""
    from agents.rollout import scripted_trajectory

    trajs = [scripted_trajectory(gym.make("toolenv/Math-v0"), None, policy.tokenizer, options={"index": i}) for i in range(4)]
    batch = collate(trajs, policy.tokenizer.pad_token_id)
    assert batch["loss_mask"].sum() > 7  # more positions than one chunk below
    grads = []
    for chunk in (10_000, 7):
        policy.model.zero_grad()
        lp = TokenScorer(policy.model, temperature=0.7, chunk_size=chunk)(**batch)
        (lp * batch["loss_mask"]).sum().backward()
        grads.append({n: p.grad.clone() for n, p in policy.model.named_parameters() if p.grad is not None})
        if chunk == 10_000:
            whole = lp.detach()
        else:
            assert torch.allclose(lp.detach(), whole, atol=1e-6)
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for n in grads[0]:
        scale = grads[0][n].abs().max().item()
        assert torch.allclose(grads[0][n], grads[1][n], rtol=0, atol=1e-5 * max(scale, 1.0)), n  # float32 sums in another order


def test_gradient_checkpointing_trains_the_same_weights(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Recomputing activations changes memory, not the math: the same demonstrations give the same adapter, and a run resumes across the switch."""
    from agents.utils import load_policy_for_training

    cfg = _config(tiny_model_dir, tmp_path / "ckpt", max_steps=3, gradient_checkpointing=True)
    model = load_policy_for_training(cfg, device="cpu").model.get_base_model()
    assert any(getattr(m, "gradient_checkpointing", False) for m in model.modules())
    plain = bc.train(_config(tiny_model_dir, tmp_path / "plain", max_steps=3))
    checkpointed = bc.train(cfg)
    a = Policy.load(str(plain), device="cpu").model.state_dict()
    b = Policy.load(str(checkpointed), device="cpu").model.state_dict()
    assert a.keys() == b.keys() and any("lora_B" in k for k in a)
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k
    bc.train(_config(tiny_model_dir, tmp_path / "switch", max_steps=2, save_every=1))
    bc.train(_config(tiny_model_dir, tmp_path / "switch", max_steps=3, save_every=1, gradient_checkpointing=True))  # resumes
