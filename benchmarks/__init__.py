"""Benchmarks: speed of the environments, and (later) agents compared on the same tasks."""

__all__: list[str] = []
