"""DFSDT through a real env: prunes malformed actions, backtracks from cut branches by restoring the env, stops at the first answer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import pytest

from agents.policy import Policy
from agents.rollout import ChatFormat, GenerationSettings, scripted_trajectory
from agents.search import DFSDTSettings, dfsdt
from tests.agents.test_bc import OneTaskEnv  # noqa: F401  (registers test/OneTask-v0, 3 steps at most)


class ScriptedGenerator:
    """Stands in for the model: hands out the scripted actions in order and records every prompt."""

    def __init__(self, policy: Policy, actions: Sequence[str]) -> None:
        self.fmt = ChatFormat(policy.tokenizer)
        self.actions = list(actions)
        self.prompts: list[str] = []
        self.tokenizer = policy.tokenizer

    def generate(self, prompts: list[list[int]], settings: GenerationSettings, stop: Sequence[str]) -> list[tuple[list[int], list[float]]]:
        out = []
        for p in prompts:
            self.prompts.append(self.tokenizer.decode(p))
            ids = self.fmt.action_ids(self.actions.pop(0))
            out.append((ids, [0.0] * len(ids)))
        return out


def test_dfsdt_backtracks_and_returns_the_answered_path(policy: Policy) -> None:
    script = [
        "calculator(",        # root, try 1: malformed -> pruned, stay at the root
        "calculator(6*7)",    # root, try 2: go down
        "calculator(1+1)",    # depth 1: go down
        "calculator(2+2)",    # depth 2: the third step hits the env's limit -> cut, stay
        "calculator(3+3)",    # depth 2, try 2: cut again -> this node is spent, back to depth 1
        "42",                 # depth 1, try 2: the answer ends the search
    ]
    gen = ScriptedGenerator(policy, script)
    env = gym.make("test/OneTask-v0")
    [traj] = dfsdt(policy, [env], search=DFSDTSettings(width=2, max_queries=20), generator=gen)
    assert not gen.actions  # every scripted action was asked for, in this order
    assert traj.actions == ["calculator(6*7)", "42"] and traj.success and traj.terminated
    assert traj.infos[-1]["search"] == {"queries": 6, "backtracks": 1, "nodes": 7, "answered": True}
    # the answered path is token for token the episode played straight: the env was restored exactly
    straight = scripted_trajectory(gym.make("test/OneTask-v0"), ["calculator(6*7)", "42"], policy.tokenizer)
    assert traj.token_ids == straight.token_ids and traj.rewards == straight.rewards and traj.action_mask == straight.action_mask
    # the second child of a node is asked for with its earlier siblings listed; the first child is not
    assert "You have been at this point before" not in gen.prompts[0]
    assert "You have been at this point before" in gen.prompts[1] and "calculator(" in gen.prompts[1]
    assert "calculator(2+2)" in gen.prompts[4] and "calculator(1+1)" in gen.prompts[5]
    # and that message is never part of a child's context
    assert "You have been at this point before" not in policy.tokenizer.decode(traj.token_ids)


def test_dfsdt_stops_at_the_query_budget(policy: Policy) -> None:
    gen = ScriptedGenerator(policy, ["calculator(1+1)", "calculator(2+2)", "calculator(3+3)"])
    [traj] = dfsdt(policy, [gym.make("test/OneTask-v0")], search=DFSDTSettings(width=3, max_queries=2), generator=gen)
    assert traj.infos[-1]["search"]["queries"] == 2 and not traj.infos[-1]["search"]["answered"]
    assert traj.truncated and not traj.success and traj.actions == ["calculator(1+1)", "calculator(2+2)"]


def test_dfsdt_gives_up_when_the_tree_is_spent(policy: Policy) -> None:
    gen = ScriptedGenerator(policy, ["calculator(", "calculator("])  # both children of the root malformed
    [traj] = dfsdt(policy, [gym.make("test/OneTask-v0")], search=DFSDTSettings(width=2, max_queries=10), generator=gen)
    assert traj.infos[-1]["search"] == {"queries": 2, "backtracks": 0, "nodes": 3, "answered": False} and not traj.success


def test_searches_of_several_tasks_run_in_lockstep(policy: Policy) -> None:
    gen = ScriptedGenerator(policy, ["42", "calculator(6*7)", "42"])
    trajs = dfsdt(policy, [gym.make("test/OneTask-v0"), gym.make("test/OneTask-v0")], generator=gen)
    assert [t.actions for t in trajs] == [["42"], ["calculator(6*7)", "42"]]
    assert len(gen.prompts) == 3  # round 1: both searches in one batch; round 2: the second alone


def test_settings_name_the_field() -> None:
    with pytest.raises(ValueError, match="width"):
        DFSDTSettings(width=0)


def test_dfsdt_with_the_model_sampling(policy: Policy) -> None:
    """No script: the tiny model samples, and every search ends with a trajectory and its search record."""
    envs: list[Any] = [gym.make("test/OneTask-v0") for _ in range(3)]
    trajs = dfsdt(policy, envs, search=DFSDTSettings(width=2, max_queries=4), settings=GenerationSettings(max_new_tokens=8))
    assert len(trajs) == 3
    for t in trajs:
        assert t.infos[-1]["search"]["queries"] <= 4 and (t.terminated or t.truncated)
