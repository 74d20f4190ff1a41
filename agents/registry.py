"""Agents by name, for ``toolenv train NAME``.

An agent is a module with a config dataclass ``Config`` (a :class:`~agents.config.TrainConfig`
subclass) and a function ``train(cfg) -> Path``. Built-in agents are listed here; any package
can add its own through the ``toolenv.agents`` entry-point group, at run time with
:func:`register_agent`, or simply be named by its module path (``toolenv train mylab.reinforce``).
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any

__all__ = ["AGENTS", "agent_defaults", "available_agents", "load_agent", "register_agent"]

#: name -> module path, or (module path, config defaults) for a variant of another agent.
AGENTS: dict[str, str | tuple[str, dict[str, Any]]] = {
    "bc": "agents.bc",
    "rrhf": "agents.rrhf",
    "ppo": "agents.ppo",
    "step-ppo": ("agents.ppo", {"reward_placement": "step", "out": "runs/step-ppo"}),
    "grpo": "agents.grpo",
    "dpo": "agents.dpo",
    "rft": "agents.rft",
    "archer": "agents.archer",
}


def register_agent(name: str, module: str, defaults: dict[str, Any] | None = None) -> None:
    """Make ``toolenv train NAME`` run the agent in ``module`` (a dotted module path), with config ``defaults``."""
    AGENTS[name] = (module, dict(defaults)) if defaults else module


def _module_of(entry: str | tuple[str, dict[str, Any]]) -> str:
    return entry if isinstance(entry, str) else entry[0]


def agent_defaults(name: str) -> dict[str, Any]:
    """Config values a registered variant sets before the command line's (``step-ppo``: step placement)."""
    entry = available_agents().get(name)
    return dict(entry[1]) if isinstance(entry, tuple) else {}


def available_agents() -> dict[str, str | tuple[str, dict[str, Any]]]:
    """Built-in agents plus those registered through the ``toolenv.agents`` entry-point group."""
    found = dict(AGENTS)
    for ep in entry_points(group="toolenv.agents"):
        found.setdefault(ep.name, ep.value)
    return found


def load_agent(name: str) -> ModuleType:
    """Import the agent's module and check it has ``Config`` and ``train``."""
    agents = available_agents()
    if name not in agents and "." in name:  # a module path: `toolenv train mylab.reinforce`
        agents = {**agents, name: name}
    if name not in agents:
        import difflib

        close = difflib.get_close_matches(name, list(agents), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ValueError(f"Unknown agent {name!r}: expected one of {sorted(agents)}.{hint}")
    path = _module_of(agents[name])
    import os
    import sys

    if "" not in sys.path and os.getcwd() not in sys.path:  # as `python -m` does: modules in the current folder
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(path)
    except ModuleNotFoundError as e:
        if e.name and path.startswith(e.name):
            raise ValueError(f"Cannot import agent module {path!r}: no module {e.name!r} here ({os.getcwd()}) "
                             f"or on the Python path.") from None
        raise
    for attr in ("Config", "train"):
        if not hasattr(module, attr):
            raise TypeError(f"Agent module {path} must define {attr}; it does not.")
    return module
