"""The protocol interface: how a model writes tool calls and answers as text."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

from toolenv.types import ToolCall

if TYPE_CHECKING:
    from toolenv.tools.base import Tool

__all__ = ["Action", "Protocol"]


@dataclass(frozen=True, slots=True)
class Action:
    """What a protocol read out of one model response.

    Attributes:
        kind: ``"call"`` (one or more tool calls), ``"answer"`` (a final answer) or
            ``"invalid"`` (the text follows none of the protocol's forms).
        calls: The parsed calls when ``kind == "call"``.
        answer: The answer text when ``kind == "answer"``.
        thought: Reasoning the protocol separates from the action (ReAct's ``Thought:``).
        error: What is wrong, when ``kind == "invalid"``; shown to the model.
    """

    kind: Literal["call", "answer", "invalid"]
    calls: tuple[ToolCall, ...] = ()
    answer: str | None = None
    thought: str | None = None
    error: str | None = None

    @classmethod
    def invalid(cls, error: str) -> Action:
        return cls("invalid", error=error)


class Protocol(ABC):
    """Parses model text into an :class:`Action` and renders calls and answers back as text.

    Subclasses set :attr:`name` and :attr:`stop` and implement :meth:`parse`,
    :meth:`format_call` and :meth:`instructions`. ``parse`` must never raise on any string.
    """

    name: ClassVar[str]
    #: Strings that end an action during generation (besides the end-of-turn token).
    stop: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def parse(self, text: str, tool_names: Collection[str] = ()) -> Action:
        """Read one model response. ``tool_names`` are the tools the env offers."""

    @abstractmethod
    def format_call(self, call: ToolCall) -> str:
        """Write a call the way a model following this protocol would."""

    def format_answer(self, answer: str) -> str:
        """Write a final answer the way a model following this protocol would."""
        return answer

    def format_observation(self, output: str) -> str:
        """Text of a tool's output as the model sees it."""
        return output

    @abstractmethod
    def instructions(self, tools: Sequence[Tool]) -> str:
        """The part of the system prompt that explains the format and lists the tools."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def tool_list(tools: Sequence[Tool]) -> str:
    """One line per tool: signature and description."""
    return "\n".join(f"- {t.signature_text()}: {t.description}" for t in tools)
