"""Every registered id: Gymnasium's checker, determinism across processes, spaces, hostile text."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
import warnings

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import toolenv
import toolenv.protocols
from tests.toolenv.conftest import make_or_skip

ALL_IDS = sorted(toolenv.ENV_INFO)
PROTOCOLS = ["trice", "react", "json"]


def test_every_id_is_registered_with_gymnasium() -> None:
    assert "toolenv/Math-v0" in ALL_IDS
    for env_id in ALL_IDS:
        assert env_id in gym.registry and gym.registry[env_id].max_episode_steps


@pytest.mark.parametrize("env_id", ALL_IDS)
def test_check_env_passes_without_warnings(env_id: str) -> None:
    env = make_or_skip(env_id)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped)
    env.close()


def _episode_digest(env_id: str, seed: int) -> str:
    """A hash of a whole episode: observations, rewards, terms, task ids, with sampled actions."""
    env = gym.make(env_id)
    env.action_space.seed(seed)
    trace = []
    for episode in range(3):
        obs, info = env.reset(seed=seed if episode == 0 else None)
        trace.append([obs, info["task"]["id"]])
        actions = [*env.unwrapped.gold_actions()[:1], env.action_space.sample(), "calculator(1/0)", "42"]
        for action in actions:
            obs, reward, terminated, truncated, info = env.step(action)
            trace.append([obs, reward, terminated, truncated, info["reward_terms"]])
            if terminated or truncated:
                break
    return hashlib.sha256(json.dumps(trace, sort_keys=True).encode()).hexdigest()


_DIGEST_SCRIPT = "import sys, toolenv; from tests.toolenv.test_conformance import _episode_digest; print(_episode_digest(sys.argv[1], int(sys.argv[2])))"


@pytest.mark.parametrize("env_id", ALL_IDS)
def test_same_seed_same_episode_in_another_process(env_id: str) -> None:
    make_or_skip(env_id).close()
    here = _episode_digest(env_id, 7)
    assert here == _episode_digest(env_id, 7)
    assert here != _episode_digest(env_id, 8)
    out = subprocess.run(
        [sys.executable, "-c", _DIGEST_SCRIPT, env_id, "7"], capture_output=True, text=True, check=True,
        env={**__import__("os").environ, "PYTHONHASHSEED": "123"},
    )
    assert out.stdout.strip() == here


@pytest.mark.parametrize("env_id", ALL_IDS)
def test_observations_stay_in_the_space(env_id: str) -> None:
    env = make_or_skip(env_id)
    env.action_space.seed(0)
    for seed in range(5):
        obs, _ = env.reset(seed=seed)
        assert obs in env.observation_space
        for action in ["calculator(" + "9" * 5000 + ")", env.action_space.sample(), "x" * 20_000, "7"]:
            obs, reward, terminated, truncated, info = env.step(action)
            assert obs in env.observation_space
            assert isinstance(reward, float)
            assert reward == pytest.approx(sum(info["reward_terms"].values()))
            if terminated or truncated:
                break


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_vector_env(protocol: str) -> None:
    venv = gym.make_vec("toolenv/Math-v0", num_envs=3, vectorization_mode="sync", protocol=protocol)
    obs, infos = venv.reset(seed=0)
    assert len(obs) == 3 and all(isinstance(o, str) for o in obs)
    answer = toolenv.protocols.make_protocol(protocol).format_answer
    obs, rewards, terminated, truncated, infos = venv.step([answer("7"), answer("8"), answer("9")])
    assert terminated.all() and rewards.shape == (3,)
    assert set(infos["reward_terms"]) >= {"answer_correct", "format_error"}
    venv.close()


HOSTILE = st.one_of(
    st.text(max_size=300),
    st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=["Cs"]), max_size=200),
    st.binary(max_size=300).map(lambda b: b.decode("latin-1")),
    st.integers(1, 1_000_000).map(lambda n: "calculator(" + "(" * min(n, 100_000) + "1" + ")" * min(n, 100_000) + ")"),
    st.sampled_from(
        [
            "",
            "\x00" * 1_000_000,
            "a" * 1_000_000,
            "calculator(9**9**9**9)",
            "calculator(__import__('os').system('echo pwned'))",
            "calculator(().__class__.__bases__[0].__subclasses__())",
            "calculator((lambda: 1)())",
            "calculator([x for x in range(10**9)])",
            "calculator(" + "1+" * 100_000 + "1)",
            "calculator(10**10**10)",
            'Action: calculator\nAction Input: {"expression": "9**9**9**9"}',
            "Action: calculator\nAction Input: " + "{" * 50_000,
            '<tool_call>{"name": "calculator", "arguments": {"expression": "__import__(\\"os\\")"}}</tool_call>',
            "<tool_call>" + "[" * 100_000 + "</tool_call>",
            '<tool_call>{"name": "rm", "arguments": {"path": "/"}}</tool_call>',
            "Action: calculator\nAction Input: {\"expression\": " + '"1"' * 10_000 + "}",
            "\ud800\udfff",  # surrogates that cannot be encoded
            "Final Answer: " + "9" * 100_000,
        ]
    ),
)


@pytest.mark.parametrize("protocol", PROTOCOLS)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(action=HOSTILE)
def test_hostile_text_never_raises(protocol: str, action: str) -> None:
    env = gym.make("toolenv/Math-v0", protocol=protocol)
    env.reset(seed=0)
    limit = env.unwrapped.tools["calculator"].timeout
    start = time.perf_counter()
    obs, reward, terminated, truncated, info = env.step(action)
    assert time.perf_counter() - start < limit
    assert obs in env.observation_space
    assert reward == pytest.approx(sum(info["reward_terms"].values()))
    if not terminated:  # the episode goes on normally after any junk
        env.step("calculator(1+1)")


@pytest.mark.parametrize("env_id", ALL_IDS)
def test_async_vector_env_returns_the_real_observations_through_shared_memory(env_id: str) -> None:
    make_or_skip(env_id).close()
    sync = gym.make_vec(env_id, num_envs=2, vectorization_mode="sync")
    asyn = gym.make_vec(env_id, num_envs=2, vectorization_mode="async")  # Gymnasium's default: shared memory
    try:
        expected, _ = sync.reset(seed=3)
        got, _ = asyn.reset(seed=3)
        assert got == tuple(expected) and all(o.strip() for o in got)
        actions = ("calculator(6*7) é中 ☃", "[get_city(name='x')]")
        for _ in range(2):  # a step's observations, and the next step's (the view is read afresh each time)
            expected, r_sync, *_ = sync.step(actions)
            got, r_async, *_ = asyn.step(actions)
            assert got == tuple(expected) and list(r_async) == list(r_sync)
    finally:
        sync.close()
        asyn.close()
