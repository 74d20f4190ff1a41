"""PPO, step-PPO and ArCHer raise the success rate of a warm-started tiny model on the easiest APIChain level.

A random 2-layer model cannot find a two-call chain by sampling, so it is first warm-started by
behaviour cloning on demonstrations of a *noisy expert*: on each of four level-1 tasks the expert
makes the two right calls and then reports the right number one time in three, and a wrong number
from its tool outputs (the employee's salary, or another field of the second lookup) otherwise.
Cloned, that policy makes the calls reliably and answers right about a third of the time — a
decision only the task's reward can correct, which is what the RL algorithms are for.

The success rate is measured identically before and after: the same 128 sampled episodes
(temperature 1, tasks in turn, fixed reset seeds and torch seed). The test asserts a clear rise,
not a fixed number. With the learning rate at 1e-12 (no training in effect) both rates are equal
and the test fails.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import toolenv  # noqa: F401  (registers the env ids)
from agents import archer, bc, ppo
from agents.policy import Policy
from agents.rollout import save_trajectories
from benchmarks.proxy import build_proxy_model, noisy_expert, sampled_evaluation

ENV_ID = "toolenv/APIChain-L1-v1"
#: Four level-1 tasks (two budget questions, one floor, one city population), in the trice
#: protocol: level 1's three tools take one argument each, and its calls are a few tokens long.
ENV_KWARGS: dict[str, Any] = {"size": 4, "protocol": "trice"}
EVAL_EPISODES = 128
MAX_NEW_TOKENS = 16
#: What the PPO runs use (tuned so both placements rise by 0.18-0.53 over PPO seeds 0-3 and
#: model seeds 0-2; the assertion asks for 0.1).
PPO_LR = 1e-3
PPO_STEPS = 30
MIN_RISE = 0.1


def _success_rate(model_dir: Path) -> float:
    """Success over the same sampled episodes for every model: tasks in turn, fixed seeds (the proxy benchmark's evaluation)."""
    return sampled_evaluation(model_dir, ENV_ID, ENV_KWARGS, episodes=EVAL_EPISODES, max_new_tokens=MAX_NEW_TOKENS)[ENV_ID]["accuracy"]


@pytest.fixture(scope="module")
def warm_start(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    """A tiny model behaviour-cloned on the noisy expert, and its success rate."""
    root = tmp_path_factory.mktemp("learning")
    build_proxy_model(root / "base", ENV_ID, ENV_KWARGS)
    tokenizer = Policy.load(str(root / "base"), device="cpu", trainable=False).tokenizer
    demos = noisy_expert(ENV_ID, ENV_KWARGS, tokenizer, wrong_call=False)
    assert all(d.infos[1]["calls_ok"] == [True] for d in demos) and sum(d.success for d in demos) == ENV_KWARGS["size"]
    data = save_trajectories(root / "noisy_expert.jsonl", demos)
    cfg = bc.Config(model=str(root / "base"), env=[ENV_ID], env_kwargs=ENV_KWARGS, out=str(root / "bc"), data=str(data),
                    successful_only=False, max_steps=60, batch_size=8, lr=3e-3, lora_r=0, device="cpu",
                    progress=False, save_every=1000)
    out = bc.train(cfg)
    return out, _success_rate(out)


@pytest.mark.slow
@pytest.mark.parametrize("placement", ["final", "step"])
def test_ppo_raises_success_rate(placement: str, warm_start: tuple[Path, float], tmp_path: Path) -> None:
    bc_dir, before = warm_start
    # The warm start makes its calls and sometimes answers right: there is something to learn.
    assert 0.1 <= before <= 0.6, f"warm start success {before:.3f}: the setup no longer poses the problem"
    cfg = ppo.Config(model=str(bc_dir), env=[ENV_ID], env_kwargs=ENV_KWARGS, out=str(tmp_path / placement),
                     reward_placement=placement, max_steps=PPO_STEPS, episodes_per_step=8, minibatch_size=4,
                     ppo_epochs=2, max_new_tokens=MAX_NEW_TOKENS, lr=PPO_LR, lora_r=8, lora_alpha=16, seed=0,
                     device="cpu", progress=False, save_every=1000)
    after = _success_rate(ppo.train(cfg))
    assert after >= before + MIN_RISE, f"{placement}-reward PPO: success {before:.3f} -> {after:.3f}"


#: ArCHer's settings, chosen on these tasks (seeds 0 and 1 rose from 0.29 to 0.66 and 0.71): its defaults' 3 critic steps
#: per iteration and clipping at 0.01 left the critic too cold to help in 240 samples.
ARCHER = {"lr": 1e-3, "critic_epochs": 10, "actor_epochs": 3, "max_grad_norm": 1.0, "warmup_iterations": 3}


@pytest.mark.slow
def test_archer_raises_success_rate(warm_start: tuple[Path, float], tmp_path: Path) -> None:
    bc_dir, before = warm_start
    assert 0.1 <= before <= 0.6, f"warm start success {before:.3f}: the setup no longer poses the problem"
    cfg = archer.Config(model=str(bc_dir), env=[ENV_ID], env_kwargs=ENV_KWARGS, out=str(tmp_path / "archer"), max_steps=PPO_STEPS,
                        episodes_per_step=8, batch_size=8, max_new_tokens=MAX_NEW_TOKENS, lora_r=8, lora_alpha=16, seed=0, device="cpu",
                        progress=False, save_every=1000, **ARCHER)
    after = _success_rate(archer.train(cfg))
    assert after >= before + MIN_RISE, f"ArCHer: success {before:.3f} -> {after:.3f}"
