"""toolenv envs in SkyRL (NovaSky's ``skyrl-gym``): every id as a ``BaseTextEnv``.

SkyRL's generator owns the model and the chat; an env gets the dataset row's ``extras`` at
construction, returns the first prompt from ``init`` and, for each model turn (text), a
``BaseTextEnvStepOutput``: new observation messages, the turn's reward, ``done`` and metadata.
:class:`ToolEnvTextEnv` wraps ``gym.make(env_id)``:

- ``extras`` picks the task: ``index`` or ``task_id`` (at the top level or in ``extra_info``); a
  sampled task otherwise. ``env_config["env_kwargs"]`` and the registration's kwargs go to ``gym.make``.
- ``init`` returns the env's own conversation (its system prompt with the protocol and tools, then
  the question), so the model is asked in the protocol the env parses.
- ``step`` returns each turn's reward (per-turn rewards, as SkyRL's multi-turn training takes
  them), the env's new messages (tool outputs as ``tool`` or ``user`` turns, as the env wrote them),
  and in ``metadata`` the weighted ``reward_terms``, ``reward_raw``, the env's info and, when the
  episode ends, the :func:`~toolenv.integrations.export.episode_report` (summed terms, hindsight
  ``step_rewards`` — known only at the end, so they travel here for a trainer that re-assigns
  turn credit —, success, counts).
- ``get_metrics`` gives the episode's numbers for SkyRL's per-env aggregation: ``success``,
  ``return``, ``num_tool_calls``, ``num_format_errors``, ``turns`` and ``term/<name>`` per term.

:func:`register` adds toolenv ids to ``skyrl_gym``'s registry (all of them by default), so
``skyrl_gym.make("toolenv/Math-v0", env_config={}, extras={"index": 3})`` works.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import gymnasium as gym

from toolenv.integrations.export import episode_report

__all__ = ["ToolEnvTextEnv", "register"]

try:
    from skyrl_gym.envs.base_text_env import BaseTextEnv, BaseTextEnvStepOutput
except ImportError:  # the optional package is absent: the module imports, register() says what to install
    BaseTextEnv, BaseTextEnvStepOutput = object, dict  # type: ignore[assignment,misc]


def _require() -> None:
    if BaseTextEnv is object:
        raise ImportError("toolenv's SkyRL envs need the skyrl-gym package: pip install skyrl-gym")


class ToolEnvTextEnv(BaseTextEnv):  # type: ignore[misc,valid-type]
    """A toolenv env as a SkyRL ``BaseTextEnv`` (see the module docstring)."""

    def __init__(self, env_config: Any = None, extras: dict[str, Any] | None = None, *, env_id: str, env_kwargs: dict[str, Any] | None = None) -> None:
        _require()
        super().__init__()
        config = dict(env_config or {}) if not hasattr(env_config, "items") else dict(env_config.items())
        kwargs = {**(env_kwargs or {}), **dict(config.get("env_kwargs") or {})}
        self.env_id = env_id
        self.env = gym.make(env_id, **kwargs)
        self.max_turns = int(self.env.spec.max_episode_steps or 1) if self.env.spec else 1
        extras = dict(extras or {})
        info = dict(extras.get("extra_info") or {})
        self._options = {k: v for k, v in {**info, **extras}.items() if k in ("index", "task_id") and v is not None}
        self._seed = extras.get("seed", info.get("seed"))
        self._seen = 0

    def init(self, prompt: Any = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        _, info = self.env.reset(seed=self._seed, options=self._options or None)
        messages = [dict(m) for m in self.env.unwrapped.messages]  # type: ignore[attr-defined]
        self._seen = len(messages)
        self.turns = 0
        return messages, {"task": info["task"], "tools": info["tools"]}

    def step(self, action: str) -> Any:
        base: Any = self.env.unwrapped
        if base.task is None or base._done:
            return BaseTextEnvStepOutput(observations=[], reward=0.0, done=True, metadata={"error": "step after the end of the episode"})
        _, reward, terminated, truncated, info = self.env.step(action)
        self.turns += 1
        done = bool(terminated or truncated)
        new = [dict(m) for m in base.messages[self._seen + 1 :] if m["role"] != "assistant"]
        self._seen = len(base.messages)
        metadata: dict[str, Any] = {"reward_terms": info.get("reward_terms", {}), "reward_raw": info.get("reward_raw", {}),
                                    "terminated": bool(terminated), "truncated": bool(truncated),
                                    "info": {k: v for k, v in info.items() if k not in ("reward_terms", "reward_raw")}}
        if done:
            metadata["episode"] = episode_report(self.env)
        return BaseTextEnvStepOutput(observations=[] if done else new, reward=float(reward), done=done, metadata=metadata)

    def get_metrics(self) -> dict[str, Any]:
        report = episode_report(self.env)
        out: dict[str, Any] = {k: float(report[k]) for k in ("success", "return", "num_tool_calls", "num_format_errors", "turns")}
        out.update({f"term/{k}": float(v) for k, v in report["terms"].items()})
        return out

    def close(self) -> None:
        self.env.close()


def register(env_ids: Iterable[str] | None = None, **env_kwargs: Any) -> list[str]:
    """Register toolenv ids (default: every registered one) with ``skyrl_gym``; returns the ids registered."""
    _require()
    import skyrl_gym

    import toolenv

    ids = list(env_ids) if env_ids is not None else list(toolenv.ENV_INFO)
    for env_id in ids:
        toolenv.check_env_args(env_id, env_kwargs)
        if env_id in skyrl_gym.registry:
            continue
        skyrl_gym.register(id=env_id, entry_point="toolenv.integrations.skyrl:ToolEnvTextEnv",
                           kwargs={"env_id": env_id, "env_kwargs": dict(env_kwargs)})
    return ids
