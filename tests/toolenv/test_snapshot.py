"""snapshot() / restore() on every registered env: after wandering off and coming back, the env continues exactly as it would have."""

from __future__ import annotations

import json
from typing import Any

import gymnasium as gym
import pytest

import toolenv
from toolenv import restore, snapshot

ENV_IDS = sorted(e for e in gym.registry if e.startswith("toolenv/"))


def _make(env_id: str) -> gym.Env:
    try:
        return gym.make(env_id)
    except (FileNotFoundError, ImportError, ModuleNotFoundError) as e:  # data or the optional BFCL package absent here
        pytest.skip(f"{env_id}: {e}")


def _play(env: gym.Env, actions: list[str]) -> list[Any]:
    out = []
    for a in actions:
        obs, reward, terminated, truncated, info = env.step(a)
        out.append(json.loads(json.dumps([obs, reward, terminated, truncated, info], default=repr)))
        if terminated or truncated:
            break
    return out + [list(env.unwrapped.messages), env.unwrapped.end_info()]


def _task_with_solution(env: gym.Env) -> int:
    tasks = env.unwrapped.tasks
    for i in range(min(len(tasks), 50)):
        if len(tasks[i].solution) >= 1:
            return i
    return 0


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_restore_continues_exactly(env_id: str) -> None:
    env = _make(env_id)
    index = _task_with_solution(env)
    env.reset(seed=3, options={"index": index})
    gold = env.unwrapped.gold_actions()
    head, rest = gold[:1], gold[1:] or ["I do not know."]
    _play(env, head) if len(gold) > 1 else None
    saved = snapshot(env)
    straight = _play(env, rest)
    # wander: the rest of the solution twice (stateful APIs change), a malformed action, then come back
    restore(env, saved)
    _play(env, rest)
    restore(env, saved)
    _play(env, ["<<not an action>>"] + rest)
    restore(env, saved)
    assert _play(env, rest) == straight
    # and the wrappers' state came back too: TimeLimit counts from the snapshot's step, not from where the branch ended
    assert _elapsed(env) > _elapsed_at(saved)
    restore(env, saved)
    assert _elapsed(env) == _elapsed_at(saved) == len(head if len(gold) > 1 else [])


def _elapsed(env: gym.Env) -> int:
    while not isinstance(env, gym.wrappers.TimeLimit):
        env = env.env
    return int(env._elapsed_steps)


def _elapsed_at(snap: Any) -> int:
    return int(next(w["_elapsed_steps"] for w in snap.wrappers if "_elapsed_steps" in w))


def test_errors_name_the_problem() -> None:
    env = gym.make("toolenv/Math-v0")
    env.reset()
    with pytest.raises(TypeError, match="EnvSnapshot"):
        env.unwrapped.restore({"messages": []})
    with pytest.raises(ValueError, match="wrappers"):
        restore(env.unwrapped, snapshot(env))
    with pytest.raises(TypeError, match="toolenv env"):
        snapshot(gym.make("CartPole-v1"))
    assert toolenv.snapshot is snapshot
