"""Agents that learn toolenv tasks: policies, the shared rollout loop, and one module per algorithm."""

__all__: list[str] = []
