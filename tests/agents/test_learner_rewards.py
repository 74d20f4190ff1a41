"""What each learner's loss sees, from episodes played through the real rollout loop.

No info dict is built by hand here: APIChain episodes are played by a scripted generator through
:func:`agents.rollout.rollout` (or :func:`agents.rollout.scripted_trajectory`, as BC, RRHF and
DPO build gold demonstrations), and the rewards, advantages, pairs or targets each algorithm
computes from those trajectories are checked against what the env itself reported.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import pytest
import torch

import toolenv  # noqa: F401  (registers the env ids)
from agents import bc, dpo, grpo, ppo, rrhf
from agents.rollout import GenerationSettings, rollout, scripted_trajectory, step_rewards_of
from agents.utils import collate
from tests.agents.conftest import ScriptedGenerator, tiny_policy

ENV = "toolenv/APIChain-L1-v1"


@pytest.fixture(scope="module")
def policy() -> Any:
    return tiny_policy()


def _gold(index: int = 0) -> list[str]:
    env = gym.make(ENV)
    env.reset(options={"index": index})
    return env.unwrapped.gold_actions()


def _env_report(actions: list[str], index: int = 0) -> dict[str, Any]:
    """The env's own account of an episode played directly (no rollout): rewards and end info."""
    env = gym.make(ENV)
    env.reset(options={"index": index})
    rewards, info = [], {}
    for a in actions:
        _, r, term, trunc, info = env.step(a)
        rewards.append(r)
        if term or trunc:
            break
    return {"rewards": rewards, "info": info, "end": env.unwrapped.end_info(), "truncated": trunc}


def _play(policy: Any, scripts: list[list[str]], index: int = 0) -> list[Any]:
    envs = [gym.make(ENV) for _ in scripts]
    gen = ScriptedGenerator(policy.tokenizer, scripts)
    return rollout(policy, envs, settings=GenerationSettings(max_new_tokens=64), options=[{"index": index}] * len(scripts),
                   generator=gen)


def _repeated_first_call(index: int = 0) -> list[str]:
    gold = _gold(index)
    return [gold[0], *gold]  # the first call twice, then the rest of the gold episode


def _detour() -> tuple[int, list[str]]:
    """An episode whose first call is not gold but its result is used later: hindsight credits
    it (contribution 1, reward 1.0) where the immediate reward could not (0.5)."""
    from toolenv.protocols import make_protocol
    from toolenv.tools import apis
    from toolenv.types import ToolCall

    env = gym.make(ENV)
    tasks = env.unwrapped.tasks
    index = next(i for i in range(100) if tasks[i].solution[1].name == "get_department")
    name = tasks[index].solution[0].arguments["name"]
    dept = apis.EMPLOYEES[name][0]
    colleague = next(e for e, (d, *_) in apis.EMPLOYEES.items() if d == dept and e != name)
    fmt = make_protocol("json").format_call
    gold = _gold(index)
    return index, [fmt(ToolCall("find_employee", {"name": colleague})), *gold[1:]]


def _spam(index: int = 0) -> list[str]:
    return [_gold(index)[0]] * 20  # the first call until the step limit truncates the episode


# ------------------------------------------------------------------------------------- rollout
def test_rollout_carries_the_envs_hindsight_rewards_terminated_and_truncated(policy: Any) -> None:
    rep, spam = _repeated_first_call(), _spam()
    t_rep, t_spam = _play(policy, [rep, spam])
    env_rep, env_spam = _env_report(rep), _env_report(spam)
    # terminated: the last info holds the env's own hindsight rewards, repeated call credited 0 contribution
    assert t_rep.terminated and step_rewards_of(t_rep, "hindsight") == pytest.approx(env_rep["info"]["step_rewards"])
    assert env_rep["info"]["step_rewards"] == pytest.approx([1.0, 0.5, 1.0, 1.0])
    assert step_rewards_of(t_rep, "immediate") == pytest.approx(env_rep["rewards"])
    # truncated by the registered step limit: the rollout adds the env's end-of-episode info
    assert t_spam.truncated and not t_spam.terminated and len(t_spam.rewards) == 8
    assert env_spam["truncated"] and "step_rewards" not in env_spam["info"]
    assert step_rewards_of(t_spam, "hindsight") == pytest.approx(env_spam["end"]["step_rewards"])
    assert env_spam["end"]["step_rewards"] == pytest.approx([1.0] + [0.5] * 7)


def test_hindsight_differs_from_immediate_and_the_learners_get_hindsight(policy: Any) -> None:
    index, detour = _detour()
    [t] = _play(policy, [detour], index=index)
    env = _env_report(detour, index=index)
    assert env["rewards"] == pytest.approx([0.5, 1.0, 1.0])  # immediately, the detour looks useless
    assert env["info"]["step_rewards"] == pytest.approx([1.0, 1.0, 1.0])  # in hindsight its result was used
    assert step_rewards_of(t, "hindsight") == pytest.approx([1.0, 1.0, 1.0])
    assert step_rewards_of(t, "immediate") == pytest.approx([0.5, 1.0, 1.0])
    width = collate([t], policy.tokenizer.pad_token_id)["input_ids"].shape[1]
    placed = ppo.ppo_rewards([t], _ppo_cfg(reward_placement="step"), width)[0]
    assert placed[t.action_ends].tolist() == pytest.approx([1.0, 1.0, 1.0])  # what step-PPO's loss sees
    immediate = ppo.ppo_rewards([t], _ppo_cfg(reward_placement="step", reward_source="immediate"), width)[0]
    assert immediate[t.action_ends].tolist() == pytest.approx([0.5, 1.0, 1.0])
    group = grpo.group_advantages([step_rewards_of(t, "hindsight"), [0.0, 0.0]], "step")
    assert group[0][0] > group[0][1] > group[0][2] > 0


def test_rollout_cut_by_its_own_turn_budget_gets_hindsight_too(policy: Any) -> None:
    envs = [gym.make(ENV)]
    gen = ScriptedGenerator(policy.tokenizer, [_spam()])
    [t] = rollout(policy, envs, settings=GenerationSettings(max_new_tokens=64), options=[{"index": 0}], generator=gen, max_turns=3)
    assert t.truncated and len(t.rewards) == 3
    assert step_rewards_of(t, "hindsight") == pytest.approx([1.0, 0.5, 0.5])


# ------------------------------------------------------------------------------------ ppo
def _ppo_cfg(**kw: Any) -> ppo.Config:
    return ppo.Config(env=[ENV], progress=False, **kw)


def test_step_ppo_places_the_envs_hindsight_rewards_on_each_actions_last_token(policy: Any) -> None:
    trajs = _play(policy, [_repeated_first_call(), _spam()])
    width = collate(trajs, policy.tokenizer.pad_token_id)["input_ids"].shape[1]
    rewards = ppo.ppo_rewards(trajs, _ppo_cfg(reward_placement="step"), width)
    for row, t in zip(rewards, trajs):
        assert row[t.action_ends].tolist() == pytest.approx(step_rewards_of(t, "hindsight"))
        assert row.sum().item() == pytest.approx(sum(step_rewards_of(t, "hindsight")))
    assert rewards[0][trajs[0].action_ends].tolist() == pytest.approx([1.0, 0.5, 1.0, 1.0])  # not [1, 1/6, 1, 1]
    # StepTool's code weights: step k of n times n-1-k, the final IsSolved times 0
    coded = ppo.ppo_rewards(trajs, _ppo_cfg(reward_placement="step", setting="steptool"), width)
    assert coded[0][trajs[0].action_ends].tolist() == pytest.approx([3.0, 1.0, 1.0, 0.0])


def test_final_ppo_rewards_the_sum_or_issolved_only(policy: Any) -> None:
    trajs = _play(policy, [_repeated_first_call(), _spam()])
    width = collate(trajs, policy.tokenizer.pad_token_id)["input_ids"].shape[1]
    final = ppo.ppo_rewards(trajs, _ppo_cfg(reward_placement="final"), width)
    assert final[0, trajs[0].action_ends[-1]].item() == pytest.approx(3.5) and final[0].abs().sum().item() == pytest.approx(3.5)
    assert final[1, trajs[1].action_ends[-1]].item() == pytest.approx(4.5)
    issolved = ppo.ppo_rewards(trajs, _ppo_cfg(reward_placement="final", setting="steptool"), width)
    assert issolved[0, trajs[0].action_ends[-1]].item() == 1.0 and issolved[0].abs().sum().item() == 1.0
    assert issolved[1].abs().sum().item() == 0.0  # truncated: no answer, IsSolved 0


# ----------------------------------------------------------------------------------- grpo
def test_grpo_advantages_come_from_the_envs_rewards(policy: Any) -> None:
    gold = _gold()
    wrong = [*gold[:-1], gold[-1].replace(gold[-1].strip()[-1], "0") + "1"]
    trajs = _play(policy, [gold, _repeated_first_call(), _spam(), wrong])
    step_rewards = [step_rewards_of(t, "hindsight") for t in trajs]
    assert step_rewards[0] == pytest.approx(_env_report(gold)["info"]["step_rewards"])
    assert step_rewards[2] == pytest.approx(_env_report(_spam())["end"]["step_rewards"])
    for mode in ("final", "step"):
        adv = grpo.group_advantages(step_rewards, mode)
        flat = torch.tensor([r for rs in step_rewards for r in rs])
        if mode == "final":
            returns = torch.tensor([sum(rs) for rs in step_rewards])
            expected = [[float((sum(rs) - returns.mean()) / (returns.std() + 1e-4))] * len(rs) for rs in step_rewards]
        else:
            expected = [[float(((torch.tensor(rs[k:]) - flat.mean()) / (flat.std() + 1e-4)).sum()) for k in range(len(rs))]
                        for rs in step_rewards]
        for a, e in zip(adv, expected):
            assert a == pytest.approx(e, rel=1e-5, abs=1e-6)
        width = collate(trajs, policy.tokenizer.pad_token_id)["input_ids"].shape[1]
        tokens = grpo.token_advantages(adv, trajs, width)
        for row, t, a in zip(tokens, trajs, adv):
            assert row[t.action_ends].tolist() == pytest.approx(a, rel=1e-5)
            assert (row[torch.tensor(t.action_mask + [0] * (width - len(t.action_mask))) == 0] == 0).all()


# ------------------------------------------------------------------------------------ dpo
def test_dpo_pairs_follow_the_envs_outcomes(policy: Any) -> None:
    gold_actions = _gold()
    trajs = _play(policy, [_spam(), gold_actions, _repeated_first_call()])
    env = gym.make(ENV)
    gold = scripted_trajectory(env, None, policy.tokenizer, options={"index": 0}, env_id=ENV)
    spam, sampled_gold, repeated = trajs
    assert [t.success for t in trajs] == [False, True, True] and gold.success
    # ETO: gold against each exploration; the failure is rejected and cut to gold length + 5 actions
    pair = dpo.eto_pair(gold, spam, extra_rounds=5)
    assert pair is not None and pair.chosen is gold and len(pair.rejected.action_ends) == min(8, len(gold.action_ends) + 5)
    assert pair.rejected.token_ids == spam.token_ids[: pair.rejected.action_ends[-1] + 1]
    assert dpo.eto_pair(gold, repeated) is None  # equal outcome (both solved): no pair
    short = dpo.eto_pair(gold, spam, extra_rounds=0)
    assert short is not None and len(short.rejected.action_ends) == len(gold.action_ends)
    # the default pairing: every success over the failure
    pairs = dpo.preference_pairs([gold, *trajs])
    assert {(id(p.chosen), id(p.rejected)) for p in pairs} == {(id(gold), id(spam)), (id(sampled_gold), id(spam)), (id(repeated), id(spam))}


# ----------------------------------------------------------------------------------- rrhf
def test_rrhf_ranks_gold_first_on_a_tie(policy: Any) -> None:
    cfg = rrhf.Config(env=["toolenv/Math-v0"], num_samples=2, tasks_per_step=1, progress=False)
    cands = rrhf.Candidates(cfg, policy.tokenizer)
    env = gym.make("toolenv/Math-v0")
    env.reset(options={"index": 0})
    gold_actions = env.unwrapped.gold_actions()
    policy_gen = ScriptedGenerator(policy.tokenizer, [gold_actions, ["I do not know."]])
    import agents.rollout as rollout_module

    original = rollout_module.HFGenerator
    rollout_module.HFGenerator = lambda _policy, **_kw: policy_gen  # type: ignore[assignment,misc]
    try:
        [group] = cands.gather(policy, [("toolenv/Math-v0", 0)])
    finally:
        rollout_module.HFGenerator = original  # type: ignore[misc]
    assert group.sources == ["gold", "sample", "sample"]
    scores = group.scores()
    assert scores[0] == scores[1] == 20.0 and scores[2] < 20.0  # the sample that copies gold ties it
    batch = collate(group.candidates, policy.tokenizer.pad_token_id)
    lp = torch.zeros(batch["loss_mask"].shape)
    _, stats = rrhf.rrhf_loss(lp, batch["loss_mask"], torch.tensor(scores), rrhf_weight=1.0, length_norm="response")
    assert stats["best_score"] == 20.0
    best = int(torch.nonzero(torch.tensor(scores) == max(scores))[0, 0])
    assert group.sources[best] == "gold"


# ------------------------------------------------------------------------------------- bc
def test_bc_trains_on_the_gold_actions_tokens_only(policy: Any) -> None:
    cfg = bc.Config(env=[ENV], demos_per_env=2, progress=False)
    demos = bc.demonstrations(cfg, policy.tokenizer)
    gold = _gold(0)
    assert demos[0].actions == gold and demos[0].success
    batch = collate(demos[:1], policy.tokenizer.pad_token_id)
    ids = batch["input_ids"][0][batch["loss_mask"][0] > 0].tolist()
    text = policy.tokenizer.decode(ids)
    for action in gold:
        assert action in text
    assert "Observation" not in text and demos[0].task["question"] not in text
