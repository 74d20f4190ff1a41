"""RRHF: the loss against hand-computed values, TRICE scores of candidate groups, and training on a tiny model."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gymnasium as gym
import pytest
import torch

from agents import rrhf
from agents.config import TrainConfig
from agents.policy import Policy
from agents.rollout import Trajectory, save_trajectories, scripted_trajectory
from agents.utils import TokenScorer, collate
from tests.agents.conftest import tiny_policy
from tests.agents.test_bc import OneTaskEnv  # noqa: F401  (registers test/OneTask-v0)


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core machine two threads
    spinning against another process made these tests ~8x slower; restore afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --------------------------------------------------------------------------- rrhf_loss by hand
# Three candidates, four tokens; position 0 is the prompt. Entries where the mask is 0 hold junk
# (-9) to show that they are ignored.
#   cand 0: lp -1, -2, -3 on mask [0,1,1,1]  -> sum -6,   |y| = 3, p0 = -2
#   cand 1: lp -0.5, -1.5 on mask [0,1,1,0]  -> sum -2,   |y| = 2, p1 = -1
#   cand 2: lp -1.5 on mask [0,1,0,0]        -> sum -1.5, |y| = 1, p2 = -1.5
LP = torch.tensor([[-9.0, -1.0, -2.0, -3.0], [-9.0, -0.5, -1.5, -9.0], [-9.0, -1.5, -9.0, -9.0]])
MASK = torch.tensor([[0.0, 1.0, 1.0, 1.0], [0.0, 1.0, 1.0, 0.0], [0.0, 1.0, 0.0, 0.0]])
# Scores 20 > 10 > 5: ordered pairs (better i, worse j) and max(0, p_j - p_i):
#   (0, 1): p1 - p0 = -1 + 2   = 1.0  violated
#   (0, 2): p2 - p0 = -1.5 + 2 = 0.5  violated
#   (1, 2): p2 - p1 = -1.5 + 1 = -0.5 -> 0
#   L_rank = 1.5, 2 pairs violated. Best b = 0.
SCORES = torch.tensor([20.0, 10.0, 5.0])


def test_rrhf_loss_response_normalisation_by_hand() -> None:
    # L_sft = -sum(lp_0 m_0) / |y_0| = 6 / 3 = 2;  loss = 1 * 1.5 + 2 = 3.5
    loss, stats = rrhf.rrhf_loss(LP, MASK, SCORES, rrhf_weight=1.0, length_norm="response")
    assert loss.item() == pytest.approx(3.5)
    assert stats["rank_loss"] == pytest.approx(1.5)
    assert stats["sft_loss"] == pytest.approx(2.0)
    assert stats["pairs_violated"] == 2.0
    assert stats["best_score"] == 20.0 and stats["mean_score"] == pytest.approx(35 / 3)
    # weight 0.1: loss = 0.1 * 1.5 + 2 = 2.15
    loss, _ = rrhf.rrhf_loss(LP, MASK, SCORES, rrhf_weight=0.1, length_norm="response")
    assert loss.item() == pytest.approx(2.15)


def _trice_stage2_loss(lp: torch.Tensor, mask: torch.Tensor, scores: torch.Tensor, weight: float) -> torch.Tensor:
    """TRICE's RRHFTrainer (train/train_stage2.py), one group, length_penalty 1, written out.

    ``gather_logits_labels`` zeroes the masked log-probs and sets the -100 labels to 0 in place, so
    ``get_score``'s length is the padded length T for every candidate; ``rrhf_loss`` sums
    ``-diff`` where the reward difference is positive and the score difference negative (a worse
    candidate more likely than a better one); ``sft_loss`` is ``-mean`` over T of the argmax candidate.
    """
    logit_label = lp * mask
    length = torch.ones_like(mask).sum(-1)  # the in-place edit: no -100 left
    p = logit_label.sum(-1) / length
    new_scores = p.view(-1, len(scores))
    rw = scores.view(1, -1)
    diff = new_scores.unsqueeze(1) - new_scores.unsqueeze(-1)
    rw_diff = rw.unsqueeze(1) - rw.unsqueeze(-1)
    rank = -diff[torch.bitwise_and(rw_diff > 0, diff < 0)].sum()
    best = torch.argmax(rw, dim=1)
    sft = -logit_label[best].mean()
    return weight * rank + sft


@pytest.mark.parametrize("scores", [[20.0, 10.0, 5.0], [5.0, 20.0, 20.0], [10.0, 10.0, 15.0], [0.0, 5.0, 20.0]])
def test_rrhf_loss_padded_equals_trices_code(scores: list[float]) -> None:
    s = torch.tensor(scores)
    for weight in (1.0, 0.1):
        loss, _ = rrhf.rrhf_loss(LP, MASK, s, rrhf_weight=weight, length_norm="padded")
        assert loss.item() == pytest.approx(_trice_stage2_loss(LP, MASK, s, weight).item(), rel=1e-6)


def test_rrhf_loss_padded_normalisation_by_hand() -> None:
    # p_i = sum / T (T = 4): p0 = -1.5, p1 = -0.5, p2 = -0.375
    #   (0, 1): p1 - p0 = 1.0; (0, 2): p2 - p0 = 1.125; (1, 2): p2 - p1 = 0.125  -> L_rank = 2.25
    # L_sft = 6 / 4 = 1.5; loss = 2.25 + 1.5 = 3.75
    loss, stats = rrhf.rrhf_loss(LP, MASK, SCORES, rrhf_weight=1.0, length_norm="padded")
    assert stats["rank_loss"] == pytest.approx(2.25) and stats["sft_loss"] == pytest.approx(1.5)
    assert loss.item() == pytest.approx(3.75)


def test_rrhf_loss_equal_scores_and_ties() -> None:
    # all scores equal: no ordered pair, L_rank = 0; best = first candidate, L_sft = 6 / 3 = 2
    loss, stats = rrhf.rrhf_loss(LP, MASK, torch.tensor([5.0, 5.0, 5.0]), rrhf_weight=1.0, length_norm="response")
    assert stats["rank_loss"] == 0.0 and stats["pairs_violated"] == 0.0
    assert loss.item() == pytest.approx(2.0)
    # scores [5, 20, 20]: best is candidate 1 (first of the tie), L_sft = 2 / 2 = 1;
    # pairs (1, 0): p0 - p1 = -1 -> 0 and (2, 0): p0 - p2 = -0.5 -> 0; no pair between the tied two
    loss, stats = rrhf.rrhf_loss(LP, MASK, torch.tensor([5.0, 20.0, 20.0]), rrhf_weight=1.0, length_norm="response")
    assert stats["rank_loss"] == 0.0 and stats["sft_loss"] == pytest.approx(1.0)
    assert loss.item() == pytest.approx(1.0)


def test_rrhf_loss_gradient_direction() -> None:
    # d loss / d lp: the best candidate's tokens are pushed up (negative gradient), the worse
    # candidates that out-rank it are pushed down (positive gradient), masked entries get none
    lp = LP.clone().requires_grad_(True)
    loss, _ = rrhf.rrhf_loss(lp, MASK, SCORES, rrhf_weight=1.0, length_norm="response")
    loss.backward()
    assert lp.grad is not None
    assert (lp.grad[0, 1:] < 0).all()  # -1/3 (sft) - 2 * 1/3 (two violated pairs) = -1 per token
    assert torch.allclose(lp.grad[0, 1:], torch.full((3,), -1.0))
    assert (lp.grad[1, 1:3] > 0).all() and (lp.grad[2, 1] > 0)
    assert (lp.grad[MASK == 0] == 0).all()


def test_rrhf_loss_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"Expected length_norm to be one of \['padded', 'response'\], got 'mean'"):
        rrhf.rrhf_loss(LP, MASK, SCORES, rrhf_weight=1.0, length_norm="mean")
    with pytest.raises(ValueError, match="Expected token_logprobs and loss_mask of shape"):
        rrhf.rrhf_loss(LP, MASK, SCORES[:2], rrhf_weight=1.0, length_norm="response")


# ---------------------------------------------------------------------------- candidate_scores
TASK = {"id": "t", "answer": "42", "solution": [{"name": "calculator", "arguments": {"expression": "6*7"}}]}
CALL_OK = {"action_kind": "call", "tool_outputs": ["42"], "reward_raw": {"call_succeeded": 1.0}, "tool_used": True}
CALL_ERR = {"action_kind": "call", "tool_outputs": ["Error: Division by zero."], "reward_raw": {"call_succeeded": 0.0}, "tool_used": True}


def _episode(*steps: dict[str, Any], answer: str | None = None) -> Trajectory:
    infos = list(steps)
    if answer is not None:
        infos.append({"action_kind": "answer", "answer": answer, "tool_used": any(s.get("tool_used") for s in steps)})
    return Trajectory("test/OneTask-v0", TASK, infos=infos)


def test_candidate_scores_follow_the_trice_ladder() -> None:
    group = [
        _episode(CALL_OK, answer="42"),  # correct, used a tool like the gold solution -> 20
        _episode(answer="The answer is 42"),  # correct without a tool -> 15; wrong ones start at 10
        _episode(answer="30"),  # wrong, distance 12 -> third wrong -> 0
        _episode(answer="41"),  # wrong, distance 1 -> first wrong -> 10
        _episode(CALL_OK, answer="40"),  # states 40: judged by its text, not the tool -> distance 2 -> 5
        _episode(CALL_OK, answer="done"),  # no number: judged by the tool's 42 -> 20
        _episode(CALL_ERR),  # truncated, failed call: nothing to judge -> last -> 0 (floor)
    ]
    assert rrhf.candidate_scores(group, TASK) == [20.0, 15.0, 0.0, 10.0, 5.0, 20.0, 0.0]
    # a failed call after a successful one does not replace the successful value
    assert rrhf.candidate_scores([_episode(CALL_OK, CALL_ERR, answer="")], TASK) == [20.0]
    # a task whose gold solution has no calls: the tool-free correct answer is the 20
    no_tool = {**TASK, "solution": []}
    assert rrhf.candidate_scores([_episode(answer="42"), _episode(CALL_OK, answer="42")], no_tool) == [20.0, 15.0]


def test_final_answer_is_empty_without_an_answer() -> None:
    assert rrhf.final_answer(_episode(CALL_OK, answer="42")) == "42"
    assert rrhf.final_answer(_episode(CALL_OK)) == ""
    assert rrhf.final_answer(Trajectory("e", TASK)) == ""


# ------------------------------------------------------------------------------- candidates
def test_stored_trajectories_join_the_group_of_their_task(tmp_path: Path) -> None:
    policy = tiny_policy()
    env = gym.make("test/OneTask-v0")
    ours = scripted_trajectory(env, ["41"], policy.tokenizer, env_id="test/OneTask-v0")
    other_task = Trajectory("test/OneTask-v0", {**ours.task, "id": "another"}, actions=["7"])
    other_env = Trajectory("toolenv/Math-v0", dict(ours.task), actions=["8"])
    data = save_trajectories(tmp_path / "stored.jsonl", [ours, other_task, other_env])
    cfg = rrhf.Config(env=["test/OneTask-v0"], num_samples=0, include_gold=True, data=str(data), progress=False)
    source = rrhf.Candidates(cfg, policy.tokenizer)
    assert source.tasks == [("test/OneTask-v0", 0)]
    (group,) = source.gather(policy, source.tasks)
    assert group.sources == ["gold", "data"]
    assert [c.actions for c in group.candidates] == [["calculator(6*7)", "42"], ["41"]]
    assert group.candidates[1].token_ids == ours.token_ids  # replayed through the env, same tokens
    assert group.scores() == [20.0, 15.0]
    source.close()


def test_gather_samples_every_task_in_one_batch() -> None:
    policy = tiny_policy()
    cfg = rrhf.Config(env=["test/OneTask-v0"], num_samples=3, tasks_per_step=2, max_new_tokens=8, progress=False)
    source = rrhf.Candidates(cfg, policy.tokenizer)
    groups = source.gather(policy, [("test/OneTask-v0", 0), ("test/OneTask-v0", 0)])
    assert len(groups) == 2
    for g in groups:
        assert g.sources == ["gold"] + ["sample"] * 3  # gold first, as in TRICE's data
        assert all(c.task["id"] == "only" and c.num_model_tokens > 0 for c in g.candidates)
        assert len(g.scores()) == 4 and g.scores()[0] == 20.0
    source.close()


# ---------------------------------------------------------------------------------- training
def _config(model_dir: Path, out: Path, **kw: Any) -> rrhf.Config:
    base = {"model": str(model_dir), "env": ["test/OneTask-v0"], "out": str(out), "max_steps": 20, "num_samples": 3,
            "tasks_per_step": 1, "include_gold": True, "lr": 2e-2, "lora_r": 8, "lora_alpha": 16, "device": "cpu",
            "progress": False, "save_every": 10, "log_every": 1, "seed": 0, "max_new_tokens": 12}
    base.update(kw)
    return rrhf.Config(**base)


def _gold_logprob(policy: Policy) -> float:
    """Mean log-probability of the gold episode's model tokens."""
    gold = scripted_trajectory(gym.make("test/OneTask-v0"), None, policy.tokenizer)
    batch = collate([gold], policy.tokenizer.pad_token_id)
    with torch.no_grad():
        lp = TokenScorer(policy.model)(**batch)
    return float((lp * batch["loss_mask"]).sum() / batch["loss_mask"].sum())


def test_rrhf_raises_the_gold_likelihood(tiny_model_dir: Path, tmp_path: Path) -> None:
    before = Policy.load(str(tiny_model_dir), device="cpu")
    base_weights = {n: p.clone() for n, p in before.model.named_parameters()}
    lp_before = _gold_logprob(before)
    out = rrhf.train(_config(tiny_model_dir, tmp_path / "rrhf"))
    after = Policy.load(str(out), device="cpu")
    # the adapter changed; the base weights did not
    lora = {n: p for n, p in after.model.named_parameters() if "lora_B" in n}
    assert lora and any(p.abs().sum() > 0 for p in lora.values())
    for n, p in after.model.get_base_model().named_parameters():
        if "lora_" not in n:
            assert torch.equal(p, base_weights[n.replace(".base_layer", "")]), n
    # the best candidate (gold) became more likely: from about 1/vocabulary per token to much more
    lp_after = _gold_logprob(after)
    assert lp_after > lp_before + 1.0, (lp_before, lp_after)
    assert math.exp(lp_after) > 0.2
    assert (out / "toolenv_policy.json").read_text().count('"agent": "rrhf"') == 1
    events = list((out / "runs").rglob("events.out.tfevents*"))
    assert events
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = EventAccumulator(str(events[0].parent)).Reload().Tags()["scalars"]
    for tag in ("losses/rank", "losses/sft", "losses/total", "rewards/mean_trice_score",
                "rewards/sample_success_rate", "charts/pairs_violated"):
        assert tag in tags, tag


def test_rrhf_resume_continues_exactly(tiny_model_dir: Path, tmp_path: Path) -> None:
    kw = {"max_steps": 4, "save_every": 2, "num_samples": 2, "max_new_tokens": 6, "length_norm": "padded"}
    straight = rrhf.train(_config(tiny_model_dir, tmp_path / "a", **kw))
    # a run "killed" after step 2, then the same command again with the full budget (through main)
    rrhf.train(_config(tiny_model_dir, tmp_path / "b", **{**kw, "max_steps": 2}))
    argv = ["--model", str(tiny_model_dir), "--env", "test/OneTask-v0", "--out", str(tmp_path / "b"),
            "--max-steps", "4", "--save-every", "2", "--num-samples", "2", "--max-new-tokens", "6",
            "--length-norm", "padded", "--tasks-per-step", "1", "--lr", "0.02", "--lora-r", "8",
            "--lora-alpha", "16", "--device", "cpu", "--no-progress", "--log-every", "1", "--seed", "0"]
    assert rrhf.main(argv) == 0
    a = Policy.load(str(straight), device="cpu").model.state_dict()
    b = Policy.load(str(tmp_path / "b"), device="cpu").model.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k


# ------------------------------------------------------------------------------------ config
def test_config_errors_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"Expected length_norm to be one of \['padded', 'response'\], got 'mean'"):
        rrhf.Config(length_norm="mean")
    with pytest.raises(ValueError, match="Expected num_samples >= 0, got -1"):
        rrhf.Config(num_samples=-1)
    with pytest.raises(ValueError, match="Expected tasks_per_step > 0, got 0"):
        rrhf.Config(tasks_per_step=0)
    with pytest.raises(ValueError, match="Expected tasks_per_env > 0, got 0"):
        rrhf.Config(tasks_per_env=0)
    with pytest.raises(ValueError, match="Expected rrhf_weight >= 0, got -1.0"):
        rrhf.Config(rrhf_weight=-1.0)
    with pytest.raises(ValueError, match="Expected temperature > 0, got 0"):
        rrhf.Config(temperature=0)
    with pytest.raises(ValueError, match=r"Expected top_p in \(0, 1\], got 1.5"):
        rrhf.Config(top_p=1.5)
    with pytest.raises(ValueError, match="Expected max_new_tokens > 0, got 0"):
        rrhf.Config(max_new_tokens=0)
    with pytest.raises(ValueError, match="Expected data to be an existing JSONL file"):
        rrhf.Config(data=str(tmp_path / "missing.jsonl"))
    with pytest.raises(ValueError, match=r"at least 2 candidates per task .*num_samples=1, include_gold=False"):
        rrhf.Config(num_samples=1, include_gold=False)
    assert rrhf.Config().lr < TrainConfig().lr  # starts from a cloned policy: a smaller step than the default
