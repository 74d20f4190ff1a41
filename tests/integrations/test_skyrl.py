"""toolenv in SkyRL: ids registered with skyrl_gym, a gold and a malformed episode through its BaseTextEnv interface."""

from __future__ import annotations

import gymnasium as gym
import pytest

pytest.importorskip("skyrl_gym")
import skyrl_gym  # noqa: E402

import toolenv  # noqa: E402, F401
from toolenv.integrations.skyrl import register  # noqa: E402


def test_a_gold_episode_with_per_turn_rewards_and_the_report() -> None:
    assert "toolenv/APIChain-L1-v1" in register()
    env = skyrl_gym.make("toolenv/APIChain-L1-v1", env_config={}, extras={"extra_info": {"index": 2}})
    messages, meta = env.init([{"role": "user", "content": "ignored: the env asks in its own protocol"}])
    reference = gym.make("toolenv/APIChain-L1-v1")
    _, info = reference.reset(options={"index": 2})
    assert meta["task"]["id"] == info["task"]["id"] and messages == reference.unwrapped.messages
    rewards, outs = [], []
    for action in reference.unwrapped.gold_actions():
        out = env.step(action)
        outs.append(out)
        rewards.append(out["reward"])
        _, ref_reward, *_ = reference.step(action)
        assert out["reward"] == pytest.approx(ref_reward)
    assert [bool(o["observations"]) for o in outs] == [True] * (len(outs) - 1) + [False] and outs[-1]["done"]
    assert outs[0]["observations"][0]["content"] == reference.unwrapped.messages[3]["content"]  # the first tool output
    episode = outs[-1]["metadata"]["episode"]
    assert episode["success"] and episode["return"] == pytest.approx(sum(rewards))
    assert episode["step_rewards"] == pytest.approx(reference.unwrapped.end_info()["step_rewards"])  # hindsight rewards travel at the end
    metrics = env.get_metrics()
    assert metrics["success"] == 1.0 and metrics["term/task_status"] == pytest.approx(episode["terms"]["task_status"])
    assert type(env).aggregate_metrics([metrics, metrics])["success"] == 1.0


def test_malformed_turns_are_observations_and_the_config_reaches_the_env() -> None:
    register(["toolenv/Math-v0"])
    env = skyrl_gym.make("toolenv/Math-v0", env_config={"env_kwargs": {"protocol": "json"}}, extras={"index": 0})
    env.init([])
    out = env.step("<tool_call>{oops</tool_call>")
    assert not out["done"] and out["reward"] == pytest.approx(-0.1) and out["observations"][0]["content"].startswith("Invalid action")
    assert out["metadata"]["reward_terms"]["format_error"] == pytest.approx(-0.1)
    with pytest.raises(ValueError, match="Unknown env id"):
        register(["toolenv/Mat-v0"])
