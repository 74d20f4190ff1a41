"""Registration of toolenv ids with Gymnasium, plus the facts ``toolenv list`` shows."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym

__all__ = ["ENV_INFO", "EnvInfo", "check_env_args", "parse_kw", "register_env", "held_out_env_of"]


@dataclass(frozen=True)
class EnvInfo:
    """What ``toolenv list`` says of a registered id."""

    id: str
    description: str
    tools: tuple[str, ...]
    datasets: tuple[str, ...]
    needs_data: bool
    kwargs: dict[str, Any] = field(default_factory=dict)


ENV_INFO: dict[str, EnvInfo] = {}


def register_env(
    id: str,
    entry_point: str,
    *,
    description: str,
    tools: tuple[str, ...],
    datasets: tuple[str, ...] = (),
    needs_data: bool = False,
    max_episode_steps: int | None = None,
    kwargs: dict[str, Any] | None = None,
) -> None:
    """Register ``id`` with Gymnasium (string entry point, so nothing heavy is imported)."""
    kwargs = dict(kwargs or {})
    gym.register(id=id, entry_point=entry_point, max_episode_steps=max_episode_steps, kwargs=kwargs)
    ENV_INFO[id] = EnvInfo(id, description, tools, datasets, needs_data, kwargs)


def check_env_args(env_id: str, kwargs: dict[str, Any] | None = None) -> None:
    """Check an id and kwargs without building the env (no data is read): a "Did you mean" for both.

    >>> check_env_args("toolenv/Math-v0", {"level": 2})
    >>> check_env_args("toolenv/Maht-v0")
    Traceback (most recent call last):
    ...
    ValueError: Unknown env id 'toolenv/Maht-v0'. Did you mean 'toolenv/Math-v0'? See `toolenv list`.
    """
    import difflib

    if env_id not in gym.registry:
        try:  # Gymnasium's own message for an old version of a registered id ("... use ...-v1 instead")
            gym.spec(env_id)
        except gym.error.DeprecatedEnv as e:
            raise ValueError(str(e)) from None
        except gym.error.Error:
            pass
        close = difflib.get_close_matches(env_id, list(ENV_INFO) or list(gym.registry), n=1, cutoff=0.6)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"Unknown env id {env_id!r}.{hint} See `toolenv list`.")
    entry = gym.registry[env_id].entry_point
    if not kwargs or not isinstance(entry, str) or ":" not in entry:
        return
    import importlib

    from toolenv.core import unknown_kwarg

    module, name = entry.split(":")
    cls = getattr(importlib.import_module(module), name)
    problem = unknown_kwarg(cls, kwargs) if isinstance(cls, type) else None
    if problem is not None:
        raise ValueError(f"{problem[0].upper()}{problem[1:]} (env {env_id})")


def parse_kw(pairs: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``["split=test", "level=2"]`` -> ``{"split": "test", "level": 2}`` (values JSON-decoded when possible).

    The one way env kwargs are given on every command line (``--kw KEY=VALUE``, repeatable).

    >>> parse_kw(["split=test", "level=2", 'reward_weights={"step_cost": -0.1}'])
    {'split': 'test', 'level': 2, 'reward_weights': {'step_cost': -0.1}}
    """
    import json

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"Expected --kw KEY=VALUE, got {pair!r}.")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def held_out_env_of(env_id: str) -> str:
    """The held-out variant of a training id when one is registered (``Math-v0`` -> ``Math-Test-v0``), else the id.

    >>> held_out_env_of("toolenv/APIChain-L1-v1"), held_out_env_of("toolenv/Math-Test-v0")
    ('toolenv/APIChain-L1-Test-v1', 'toolenv/Math-Test-v0')
    """
    if "-Test" in env_id:
        return env_id
    base, _, version = env_id.rpartition("-v")
    candidate = f"{base}-Test-v{version}"
    return candidate if candidate in gym.registry else env_id
