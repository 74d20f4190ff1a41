"""The reward-export convention: what every integration reports about an episode, under one set of names.

>>> import gymnasium as gym, toolenv
>>> env = gym.make("toolenv/Math-v0")
>>> _ = env.reset(options={"index": 0})
>>> for action in env.unwrapped.gold_actions():
...     _ = env.step(action)
>>> report = episode_report(env)
>>> report["success"], report["return"], report["terms"]["answer_correct"], report["num_tool_calls"]
(True, 1.0, 1.0, 1)
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

__all__ = ["EPISODE_METRICS", "episode_report"]

#: Episode metrics every integration exports (besides the summed terms and the step rewards).
EPISODE_METRICS = ("success", "return", "num_tool_calls", "num_format_errors", "turns", "terminated")


def episode_report(env: gym.Env) -> dict[str, Any]:
    """The episode so far: summed weighted ``terms``, per-step ``rewards``, hindsight ``step_rewards``
    (``None`` when the env has none), and :data:`EPISODE_METRICS`."""
    base: Any = env.unwrapped
    weights = base.reward_weights
    terms = dict.fromkeys(weights, 0.0)
    rewards = []
    for record in base.history:
        raw = record["raw"]
        step = {k: weights[k] * raw[k] if raw.get(k) else 0.0 for k in weights}
        rewards.append(float(sum(step.values())))
        for k, v in step.items():
            terms[k] += v
    hindsight = base.end_info().get("step_rewards") if base.history else None
    return {
        "terms": terms,
        "rewards": rewards,
        "step_rewards": [float(x) for x in hindsight] if isinstance(hindsight, list) else None,
        "success": bool(getattr(base, "_success", False)),
        "return": float(sum(rewards)),
        "num_tool_calls": int(getattr(base, "_num_calls", 0)),
        "num_format_errors": int(getattr(base, "_num_errors", 0)),
        "turns": len(base.history),
        "terminated": bool(getattr(base, "_done", True)) and bool(base.history),
    }
