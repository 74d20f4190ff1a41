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

__all__ = ["AGENTS", "available_agents", "load_agent", "register_agent"]

AGENTS: dict[str, str] = {
    "bc": "agents.bc",
    "rrhf": "agents.rrhf",
}


def register_agent(name: str, module: str) -> None:
    """Make ``toolenv train NAME`` run the agent in ``module`` (a dotted module path)."""
    AGENTS[name] = module


def available_agents() -> dict[str, str]:
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
    module = importlib.import_module(agents[name])
    for attr in ("Config", "train"):
        if not hasattr(module, attr):
            raise TypeError(f"Agent module {agents[name]} must define {attr}; it does not.")
    return module
