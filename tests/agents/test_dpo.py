"""DPO: the loss by hand and against TRL's DPOTrainer, preference pairs, and training on a tiny model."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gymnasium as gym
import pytest
import torch

from agents import dpo
from agents.policy import Policy
from agents.rollout import Trajectory, save_trajectories, scripted_trajectory
from agents.utils import TokenScorer, collate
from tests.agents.conftest import tiny_model, tiny_policy, tiny_tokenizer
from tests.agents.test_bc import OneTaskEnv  # noqa: F401  (registers test/OneTask-v0)


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Tiny models gain nothing from intra-op threads (and lose a lot on a busy 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _logsig(x: float) -> float:
    return -math.log1p(math.exp(-x))


# ------------------------------------------------------------------------------ loss by hand
# Two pairs.                     pair 0                 pair 1
#   policy   chosen / rejected   -1.0 / -2.0            -3.0 / -1.0
#   ref      chosen / rejected   -1.5 / -1.5            -2.0 / -2.0
#   log-ratios                    0.5 / -0.5            -1.0 /  1.0
#   d = chosen - rejected         1.0                   -2.0
PI_C, PI_R = torch.tensor([-1.0, -3.0]), torch.tensor([-2.0, -1.0])
REF_C, REF_R = torch.tensor([-1.5, -2.0]), torch.tensor([-1.5, -2.0])


def test_sequence_logps_sums_the_masked_tokens() -> None:
    lp = torch.tensor([[-9.0, -1.0, -2.0, -3.0], [-9.0, -0.5, -9.0, -9.0]])
    mask = torch.tensor([[0.0, 1.0, 1.0, 0.0], [0.0, 1.0, 0.0, 0.0]])
    assert dpo.sequence_logps(lp, mask).tolist() == [-3.0, -0.5]
    with pytest.raises(ValueError, match="Expected token_logprobs and mask of the same shape"):
        dpo.sequence_logps(lp, mask[:, :3])


@pytest.mark.parametrize("beta", [0.1, 1.0])
def test_dpo_loss_by_hand(beta: float) -> None:
    # loss = mean(-log σ(β d)) over d = [1, -2]; rewards = β * log-ratios
    expected = -(_logsig(beta * 1.0) + _logsig(beta * -2.0)) / 2
    loss, stats = dpo.dpo_loss(PI_C, PI_R, REF_C, REF_R, beta=beta)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert stats["loss"] == pytest.approx(expected, rel=1e-6)
    assert stats["rewards/chosen"] == pytest.approx(beta * (0.5 - 1.0) / 2)
    assert stats["rewards/rejected"] == pytest.approx(beta * (-0.5 + 1.0) / 2)
    assert stats["rewards/margins"] == pytest.approx(beta * (1.0 - 2.0) / 2)
    assert stats["rewards/accuracies"] == 0.5  # pair 0 ranks chosen higher, pair 1 does not
    assert stats["logps/chosen"] == pytest.approx(-2.0) and stats["logps/rejected"] == pytest.approx(-1.5)


def test_dpo_loss_label_smoothing_is_conservative_dpo() -> None:
    # ε = 0.2, β = 1: per pair -(0.8) log σ(d) - 0.2 log σ(-d)
    eps = 0.2
    per_pair = [-(1 - eps) * _logsig(d) - eps * _logsig(-d) for d in (1.0, -2.0)]
    loss, _ = dpo.dpo_loss(PI_C, PI_R, REF_C, REF_R, beta=1.0, label_smoothing=eps)
    assert loss.item() == pytest.approx(sum(per_pair) / 2, rel=1e-6)
    # at d = 0 every ε gives log 2
    zero = torch.zeros(3)
    assert dpo.dpo_loss(zero, zero, zero, zero, beta=0.5, label_smoothing=0.3)[0].item() == pytest.approx(math.log(2))


def test_dpo_loss_gradient_direction() -> None:
    # d loss / d π_c = -β σ(-β d) / n < 0 (push chosen up); d loss / d π_r = +β σ(-β d) / n > 0
    pi_c, pi_r = PI_C.clone().requires_grad_(True), PI_R.clone().requires_grad_(True)
    loss, _ = dpo.dpo_loss(pi_c, pi_r, REF_C, REF_R, beta=0.5)
    loss.backward()
    assert pi_c.grad is not None and pi_r.grad is not None
    sig = torch.sigmoid(-0.5 * torch.tensor([1.0, -2.0]))
    assert torch.allclose(pi_c.grad, -0.5 * sig / 2) and torch.allclose(pi_r.grad, 0.5 * sig / 2)


def test_dpo_loss_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"Expected four log-prob tensors of the same shape \[n\]"):
        dpo.dpo_loss(PI_C, PI_R[:1], REF_C, REF_R, beta=0.1)
    with pytest.raises(ValueError, match=r"Expected label_smoothing in \[0, 0.5\), got 0.5"):
        dpo.dpo_loss(PI_C, PI_R, REF_C, REF_R, beta=0.1, label_smoothing=0.5)


# -------------------------------------------------- the loss equals TRL's DPOTrainer on one batch
@pytest.fixture
def _fresh_accelerate_state() -> Iterator[None]:
    """``Trainer`` initialises accelerate's process-wide state (here on the CPU); start from and leave a clean one."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.mark.usefixtures("_fresh_accelerate_state")
@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_dpo_loss_matches_trl_dpo_trainer(beta: float, tmp_path: Path) -> None:
    """TRL's own ``_compute_loss`` on a batch from its own collator, against our training path on the same tokens.

    TRL gets the base tiny model and a LoRA config (so its reference is the model with the
    adapter disabled, as ours); the adapter's B matrices are then set to random values so the
    policy and the reference differ. TRL's batch rows ``[chosen..., rejected...]`` become
    trajectories whose action mask is TRL's ``completion_mask``, and go through ``_pair_logps``
    (collate, :class:`TokenScorer`, ``Policy.reference()``) and :func:`dpo.dpo_loss`.

    Completions are short so that sequence log-probs stay small (|log p| < 60 under the random
    model): both sides sum float32 per-token log-probs that agree to ~1e-6, in different orders,
    and near |log p| = 170 one float32 step is already 1.5e-5.
    """
    from datasets import Dataset
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer

    tok = tiny_tokenizer()
    data = Dataset.from_dict({
        "prompt": ["What is 6 times 7?", "calculator(3+4) gives", "How many apples does she have now?"],
        "chosen": [" calculator(6*7)", " 7", " 24"],
        "rejected": [" 48", " calculator(48/2)", " 60 apples"],
    })
    args = DPOConfig(output_dir=str(tmp_path), beta=beta, report_to=[], per_device_train_batch_size=2, bf16=False,
                     activation_checkpointing=False, use_cpu=True, disable_tqdm=True, seed=0)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = DPOTrainer(model=tiny_model(len(tok)), args=args, train_dataset=data, processing_class=tok, peft_config=lora)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in trainer.model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.3)
    batch = next(iter(trainer.get_train_dataloader()))
    theirs = trainer._compute_loss(trainer.model, batch, return_outputs=False)

    policy = Policy(trainer.model, tok)
    rows = []
    for ids, attention, completion in zip(batch["input_ids"], batch["attention_mask"], batch["completion_mask"]):
        n = int(attention.sum())
        rows.append(Trajectory("trl", {"id": "x"}, token_ids=ids[:n].tolist(), action_mask=completion[:n].tolist()))
    half = len(rows) // 2
    pairs = [dpo.PreferencePair(c, r, "trl") for c, r in zip(rows[:half], rows[half:])]
    scorer = TokenScorer(policy.model)
    logps = dpo._pair_logps(scorer, scorer, policy, pairs, policy.tokenizer.pad_token_id, "cpu")
    ours, stats = dpo.dpo_loss(*logps, beta=beta)

    assert max(r.num_model_tokens for r in rows) > 3  # multi-token completions, prompt masked
    assert abs(ours.item() - theirs.item()) < 1e-5, (ours.item(), theirs.item())
    assert logps[0].requires_grad and not logps[2].requires_grad  # reference computed without gradients
    assert not torch.allclose(logps[0], logps[2])  # the adapter moved the policy off the reference
    metrics = trainer._metrics["train"] if trainer.model.training else trainer._metrics["eval"]
    for key in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"):
        assert stats[key] == pytest.approx(metrics[key][-1], rel=1e-5, abs=1e-6), key


# ------------------------------------------------------------------------------------ pairs
def _ep(name: int, *, success: bool = False, ret: float = 0.0, env_id: str = "e", task_id: str = "t") -> Trajectory:
    """A hand-built episode: one prompt token, one model token ``name`` (so episodes differ), one step."""
    return Trajectory(env_id, {"id": task_id}, token_ids=[0, name], action_mask=[0, 1], rewards=[ret], infos=[{"success": success}])


def _names(pairs: list[dpo.PreferencePair]) -> list[tuple[int, int]]:
    return [(p.chosen.token_ids[1], p.rejected.token_ids[1]) for p in pairs]


def test_pairs_prefer_success_over_failure() -> None:
    # success decides even against a higher return; no pair within the failures or the successes
    group = [_ep(1, success=True, ret=0.2), _ep(2, ret=0.9), _ep(3, success=True, ret=1.0), _ep(4, ret=-0.1)]
    pairs = dpo.preference_pairs(group)
    assert _names(pairs) == [(1, 2), (1, 4), (3, 2), (3, 4)]
    assert {p.reason for p in pairs} == {"success"}


def test_pairs_fall_back_to_returns_without_success() -> None:
    # no success: rank by return, skip ties (2 and 3 both return 0.0)
    group = [_ep(1, ret=-0.1), _ep(2, ret=0.0), _ep(3, ret=0.0), _ep(4, ret=0.5)]
    pairs = dpo.preference_pairs(group)
    assert _names(pairs) == [(2, 1), (3, 1), (4, 1), (4, 2), (4, 3)]
    assert {p.reason for p in pairs} == {"return"}
    # all succeed: success does not split the group either, returns do
    assert _names(dpo.preference_pairs([_ep(1, success=True, ret=1.0), _ep(2, success=True, ret=0.9)])) == [(1, 2)]
    # all alike, or candidates without model tokens or with identical tokens: no pair
    assert dpo.preference_pairs([_ep(1), _ep(2)]) == []
    empty = Trajectory("e", {"id": "t"}, token_ids=[0], action_mask=[0], rewards=[1.0], infos=[{"success": True}])
    assert dpo.preference_pairs([empty, _ep(2)]) == []
    assert dpo.preference_pairs([_ep(1, success=True), _ep(1)]) == []


def test_pair_cap_keeps_distinct_trajectories() -> None:
    # 3 successes x 3 failures = 9 pairs; a cap of 3 uses each trajectory once, widest gap first
    group = [_ep(1, success=True, ret=1.0), _ep(2, success=True, ret=0.9), _ep(3, success=True, ret=0.8),
             _ep(4, ret=0.0), _ep(5, ret=-0.1), _ep(6, ret=-0.2)]
    assert len(dpo.preference_pairs(group)) == 9
    capped = dpo.preference_pairs(group, max_pairs=3)
    assert _names(capped) == [(1, 6), (2, 5), (3, 4)]
    capped = dpo.preference_pairs(group, max_pairs=4)
    assert len(capped) == 4 and _names(capped)[:3] == [(1, 6), (2, 5), (3, 4)]


def test_gold_solution_gives_pairs_when_the_policy_never_succeeds() -> None:
    policy = tiny_policy()  # a random model: its episodes fail
    cfg = dpo.Config(env=["test/OneTask-v0"], group_size=3, tasks_per_step=1, max_new_tokens=4, progress=False)
    source = dpo.PairSource(cfg, policy.tokenizer)
    torch.manual_seed(0)
    pairs, samples = source.sample(policy, [0])
    assert len(samples) == 3 and not any(t.success for t in samples)
    gold = source.gold("test/OneTask-v0", 0)
    assert gold.success and gold.actions == ["calculator(6*7)", "42"]
    assert len(pairs) == 3 and all(p.chosen is gold and p.reason == "success" for p in pairs)
    assert all(p.rejected in samples for p in pairs)
    source.close()
    # without gold, failed samples pair only by return (format errors cost 0.1 a step)
    source = dpo.PairSource(dpo.Config(env=["test/OneTask-v0"], group_size=3, tasks_per_step=1, max_new_tokens=4,
                                       include_gold=False, progress=False), policy.tokenizer)
    pairs, samples = source.sample(policy, [0])
    assert all(p.reason == "return" and p.chosen.total_reward > p.rejected.total_reward for p in pairs)
    source.close()


def test_offline_pairs_group_by_env_and_task(tmp_path: Path) -> None:
    stored = [
        _ep(1, success=True, task_id="a"), _ep(2, task_id="a"), _ep(3, task_id="a"),
        _ep(4, success=True, task_id="b"), _ep(5, success=True, task_id="b"),  # all succeed, equal returns: no pair
        _ep(6, ret=1.0, task_id="a", env_id="other"), _ep(7, task_id="a", env_id="other"),  # same task id, other env
    ]
    groups = dpo.group_by_task(stored)
    assert {k: [t.token_ids[1] for t in v] for k, v in groups.items()} == {
        ("e", "a"): [1, 2, 3], ("e", "b"): [4, 5], ("other", "a"): [6, 7]}
    path = save_trajectories(tmp_path / "stored.jsonl", stored)
    source = dpo.PairSource(dpo.Config(data=str(path), max_pairs_per_task=1, progress=False), tokenizer=None)
    assert source.num_groups == 2
    assert [_names(g) for g in source.offline] == [[(1, 2)], [(6, 7)]]
    pairs, samples = source.sample(None, [1, 0])  # type: ignore[arg-type]  (offline: no policy needed)
    assert _names(pairs) == [(6, 7), (1, 2)] and samples == []
    flat = save_trajectories(tmp_path / "flat.jsonl", [_ep(4, success=True), _ep(5, success=True)])
    with pytest.raises(ValueError, match="give preference pairs, got none"):
        dpo.PairSource(dpo.Config(data=str(flat), progress=False), tokenizer=None)


# --------------------------------------------------------------------------------- training
def _cfg(model_dir: Path, out: Path, **kw: Any) -> dpo.Config:
    base: dict[str, Any] = {
        "model": str(model_dir), "env": ["test/OneTask-v0"], "out": str(out), "max_steps": 6, "group_size": 3,
        "tasks_per_step": 1, "max_new_tokens": 6, "lora_r": 4, "lora_alpha": 8, "device": "cpu", "lr": 1e-2,
        "beta": 0.1, "progress": False, "save_every": 3, "log_every": 1, "seed": 0,
    }
    base.update(kw)
    return dpo.Config(**base)


def _margin(policy: Policy, chosen: Trajectory, rejected: Trajectory) -> float:
    """(log π(chosen) − log π(rejected)) − the same under the reference (the adapter disabled)."""
    batch = collate([chosen, rejected], policy.tokenizer.pad_token_id)
    scorer = TokenScorer(policy.model)
    with torch.no_grad():
        lp = dpo.sequence_logps(scorer(**batch), batch["loss_mask"])
        with policy.reference():
            ref = dpo.sequence_logps(scorer(**batch), batch["loss_mask"])
    return float((lp[0] - lp[1]) - (ref[0] - ref[1]))


def test_dpo_raises_the_gold_trajectory_over_a_wrong_one(tiny_model_dir: Path, tmp_path: Path) -> None:
    before = Policy.load(str(tiny_model_dir), device="cpu")
    base_weights = {n: p.clone() for n, p in before.model.named_parameters()}
    env = gym.make("test/OneTask-v0")
    gold = scripted_trajectory(env, None, before.tokenizer)
    wrong = scripted_trajectory(env, ["calculator(6+7)", "13"], before.tokenizer)
    assert gold.success and not wrong.success

    out = dpo.train(_cfg(tiny_model_dir, tmp_path / "dpo"))
    after = Policy.load(str(out), device="cpu")
    # the implicit reward of gold over a wrong answer (never trained on) rose from 0
    assert _margin(after, gold, wrong) > 1.0
    # the adapter changed; the base weights did not
    assert any(p.abs().sum() > 0 for n, p in after.model.named_parameters() if "lora_B" in n)
    for n, p in after.model.get_base_model().named_parameters():
        if "lora_" not in n:
            assert torch.equal(p, base_weights[n.replace(".base_layer", "")]), n
    # TensorBoard has the DPO scalars, and the margin on the training pairs grew
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = list((out / "runs").rglob("events.out.tfevents*"))
    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for tag in ("losses/dpo", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
                "charts/pairs", "charts/success_rate", "charts/episodes"):
        assert tag in tags, tag
    margins = [e.value for e in acc.Scalars("rewards/margins")]
    assert margins[0] == pytest.approx(0.0, abs=1e-6) and margins[-1] > 0.5, margins
    chosen = [e.value for e in acc.Scalars("logps/chosen")]  # the chosen are the gold trajectory here
    assert chosen[-1] > chosen[0] + 5.0, chosen
    assert [e.value for e in acc.Scalars("charts/episodes")][-1] == 6 * 3


def test_resume_matches_an_uninterrupted_run(tiny_model_dir: Path, tmp_path: Path) -> None:
    a = dpo.train(_cfg(tiny_model_dir, tmp_path / "a", max_steps=2, save_every=1))
    dpo.train(_cfg(tiny_model_dir, tmp_path / "b", max_steps=1, save_every=1))
    b = dpo.train(_cfg(tiny_model_dir, tmp_path / "b", max_steps=2, save_every=1))
    sa = Policy.load(str(a), device="cpu").model.state_dict()
    sb = Policy.load(str(b), device="cpu").model.state_dict()
    for k in sa:
        assert torch.allclose(sa[k], sb[k], atol=1e-6), k


def test_micro_batches_accumulate_to_the_full_batch(tiny_model_dir: Path, tmp_path: Path) -> None:
    # one step, 3 pairs: one forward of 3 pairs, or 3 forwards of 1 pair whose gradients accumulate
    whole = dpo.train(_cfg(tiny_model_dir, tmp_path / "whole", max_steps=1, batch_size=8))
    split = dpo.train(_cfg(tiny_model_dir, tmp_path / "split", max_steps=1, batch_size=1))
    sa = Policy.load(str(whole), device="cpu").model.state_dict()
    sb = Policy.load(str(split), device="cpu").model.state_dict()
    assert any(sa[k].abs().sum() > 0 for k in sa if "lora_B" in k)
    for k in sa:
        assert torch.allclose(sa[k], sb[k], atol=1e-5), k


def test_offline_mode_trains_from_stored_trajectories(tiny_model_dir: Path, tmp_path: Path) -> None:
    policy = Policy.load(str(tiny_model_dir), device="cpu")
    env = gym.make("test/OneTask-v0")
    gold = scripted_trajectory(env, None, policy.tokenizer, env_id="test/OneTask-v0")
    wrong = scripted_trajectory(env, ["7"], policy.tokenizer, env_id="test/OneTask-v0")
    path = save_trajectories(tmp_path / "stored.jsonl", [gold, wrong])
    # through main(argv), as `toolenv train dpo` runs it
    out = tmp_path / "offline"
    assert dpo.main(["--model", str(tiny_model_dir), "--env", "test/OneTask-v0", "--out", str(out), "--data", str(path),
                     "--max-steps", "3", "--lr", "1e-2", "--lora-r", "4", "--device", "cpu", "--no-progress"]) == 0
    after = Policy.load(str(out), device="cpu")
    assert _margin(after, gold, wrong) > 0.5


def test_config_validation_names_fields(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Expected beta > 0, got 0"):
        dpo.Config(beta=0)
    with pytest.raises(ValueError, match="Expected max_pairs_per_task > 0, got 0"):
        dpo.Config(max_pairs_per_task=0)
    with pytest.raises(ValueError, match="Expected group_size > 0, got -1"):
        dpo.Config(group_size=-1)
    with pytest.raises(ValueError, match=r"Expected label_smoothing in \[0, 0.5\), got 0.7"):
        dpo.Config(label_smoothing=0.7)
    with pytest.raises(ValueError, match=r"group_size \+ include_gold, got 1 \(group_size=1, include_gold=False\)"):
        dpo.Config(group_size=1, include_gold=False)
    with pytest.raises(ValueError, match="Expected data to be an existing JSONL file"):
        dpo.Config(data=str(tmp_path / "missing.jsonl"))
    cfg = dpo.Config()
    assert (cfg.out, cfg.beta, cfg.group_size, cfg.tasks_per_step, cfg.include_gold, cfg.max_pairs_per_task) == (
        "runs/dpo", 0.1, 4, 2, True, 4)
