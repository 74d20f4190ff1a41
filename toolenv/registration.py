"""Registration of toolenv ids with Gymnasium, plus the facts ``toolenv list`` shows."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym

__all__ = ["ENV_INFO", "EnvInfo", "register_env"]


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
