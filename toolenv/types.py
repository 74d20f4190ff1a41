"""Plain data types shared by every part of toolenv: tasks and tool calls."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Task", "ToolCall"]


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One call of a tool, as parsed from model text or written in a gold solution.

    Attributes:
        name: The tool's name, e.g. ``"calculator"``.
        arguments: Keyword arguments, e.g. ``{"expression": "(12/60)*50"}``.
        positional: A single positional argument as raw text, for protocols that write calls
            as ``calculator((12/60)*50)``; the tool binds it to its only required parameter.
        raw: The text the call was parsed from (empty for gold calls).
    """

    name: str
    arguments: Mapping[str, Any] = field(default_factory=dict)
    positional: str | None = None
    raw: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form, used in ``info`` and saved trajectories."""
        out: dict[str, Any] = {"name": self.name, "arguments": dict(self.arguments)}
        if self.positional is not None:
            out["positional"] = self.positional
        return out


@dataclass(frozen=True, slots=True)
class Task:
    """One task of an environment's dataset.

    Attributes:
        id: Stable identifier, unique within its dataset split (e.g. ``"gsm8k-test-17"``).
        question: What the user asks; shown to the model.
        answer: The gold answer as text (numbers as plain decimals, e.g. ``"72"`` or ``"0.5"``).
        solution: A gold tool-use solution: the calls an expert makes, in order. Empty when the
            source has none.
        meta: Anything else the source provides (dataset name, level, formula, ...).
    """

    id: str
    question: str
    answer: str
    solution: tuple[ToolCall, ...] = ()
    meta: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form, used in ``info["task"]`` and saved trajectories."""
        return {
            "id": self.id,
            "question": self.question,
            "answer": self.answer,
            "solution": [c.to_dict() for c in self.solution],
            "meta": dict(self.meta),
        }
