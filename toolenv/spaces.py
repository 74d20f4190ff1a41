"""A Gymnasium text space that accepts any string up to a length.

``gymnasium.spaces.Text`` checks every character against a charset (alphanumeric by
default), so ordinary model output such as ``"calculator((12/60)*50)"`` is not ``in`` it.
:class:`AnyText` keeps ``Text``'s length bounds and vector-env support, but ``contains``
accepts every Python string of allowed length; ``sample`` draws from printable ASCII plus a
few non-ASCII characters, which is enough to exercise parsers.

Async vector envs pass observations through shared memory, where Gymnasium stores a ``Text`` as
indices into its charset and silently drops every character outside it. ``AnyText`` stores
Unicode code points instead (``-1`` pads), so any string comes back exactly.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium.spaces import Text
from gymnasium.vector.utils import shared_memory as _shm

__all__ = ["MAX_ACTION_CHARS", "MAX_OBSERVATION_CHARS", "AnyText", "SharedTexts", "ToolAction"]

#: Longest action the envs accept as a move; longer text is a malformed action.
MAX_ACTION_CHARS = 16_384
#: Longest observation an env returns; longer tool output is truncated before that.
MAX_OBSERVATION_CHARS = 16_384

_SAMPLE_CHARSET = string.printable + "é中π€—…\u200b"


class AnyText(Text):
    """Any ``str`` whose length lies in ``[min_length, max_length]``.

    Example:
        >>> space = AnyText(max_length=32)
        >>> "calculator((12/60)*50)" in space, "x" * 33 in space, b"bytes" in space
        (True, False, False)
    """

    def __init__(self, max_length: int, *, min_length: int = 0, seed: Any = None) -> None:
        super().__init__(max_length, min_length=min_length, charset=_SAMPLE_CHARSET, seed=seed)

    def contains(self, x: Any) -> bool:
        return isinstance(x, str) and self.min_length <= len(x) <= self.max_length

    def sample(self, mask: Any = None, probability: Any = None) -> str:
        if mask is not None or probability is not None:
            return super().sample(mask=mask, probability=probability)
        # Short samples: a uniform length up to 16k characters makes random-action tests slow
        # without exercising anything more.
        length = int(self.np_random.integers(self.min_length, min(self.max_length, 256) + 1))
        idx = self.np_random.integers(0, len(self.character_list), size=length)
        return "".join(self.character_list[int(i)] for i in idx)

    def __repr__(self) -> str:
        return f"AnyText({self.min_length}, {self.max_length})"

    def __eq__(self, other: Any) -> bool:
        return (
            isinstance(other, AnyText)
            and self.min_length == other.min_length
            and self.max_length == other.max_length
        )


class ToolAction(AnyText):
    """A tool-use env's actions: any text up to ``max_length`` characters, or a structured action.

    Structured actions are tool calls a trainer has already parsed — an OpenAI-style assistant
    message (``{"role": "assistant", "content": ..., "tool_calls": [...]}``) or a list of
    ``{"name", "arguments"}`` (:mod:`toolenv.protocols.structured`). ``sample()`` draws text.

    Example:
        >>> space = ToolAction(32)
        >>> "calculator(1+1)" in space, [{"name": "calculator", "arguments": {"expression": "1+1"}}] in space, 3 in space
        (True, True, False)
    """

    def contains(self, x: Any) -> bool:
        if isinstance(x, str):
            return super().contains(x)
        if isinstance(x, dict):
            return x.get("role", "assistant") == "assistant" and ("content" in x or "tool_calls" in x)
        return isinstance(x, (list, tuple)) and len(x) > 0 and all(isinstance(c, dict) and isinstance(c.get("name"), str) for c in x)

    def __repr__(self) -> str:
        return f"ToolAction({self.min_length}, {self.max_length})"

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, ToolAction) and super().__eq__(other)


@_shm.create_shared_memory.register(AnyText)
def _create_anytext_shared_memory(space: AnyText, n: int = 1, ctx: Any = None) -> Any:
    import multiprocessing as mp

    return (ctx or mp).Array(np.dtype(np.int32).char, n * space.max_length)


@_shm.write_to_shared_memory.register(AnyText)
def _write_anytext_to_shared_memory(space: AnyText, index: int, value: str, shared_memory: Any) -> None:
    size = space.max_length
    if len(value) > size:
        raise ValueError(f"Expected a string of at most {size} characters for {space}, got {len(value)}.")
    destination = np.frombuffer(shared_memory.get_obj(), dtype=np.int32)[index * size : (index + 1) * size]
    destination[:] = -1
    if value:
        destination[: len(value)] = np.frombuffer(value.encode("utf-32-le"), dtype=np.uint32).astype(np.int32)


def _decode(row: np.ndarray) -> str:
    end = np.flatnonzero(row < 0)
    codes = row[: end[0] if len(end) else len(row)]
    return codes.astype("<u4").tobytes().decode("utf-32-le")


class SharedTexts(Sequence[str]):
    """A live view of the strings in an async vector env's shared memory.

    Gymnasium reads the shared buffer once, when the vector env is built, and hands out that
    object after every ``reset``/``step`` (deep-copied unless ``copy=False``), as it does with
    NumPy views for array spaces. A tuple of strings would be frozen at that first read; this
    view decodes the buffer each time it is read, and a deep copy is a plain tuple of ``str``.
    """

    def __init__(self, buffer: np.ndarray) -> None:
        self._buffer = buffer

    def __len__(self) -> int:
        return len(self._buffer)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return tuple(_decode(row) for row in self._buffer[index])
        return _decode(self._buffer[index])

    def __deepcopy__(self, memo: dict[int, Any]) -> tuple[str, ...]:
        return tuple(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and tuple(self) == tuple(other)

    def __repr__(self) -> str:
        return repr(tuple(self))


@_shm.read_from_shared_memory.register(AnyText)
def _read_anytext_from_shared_memory(space: AnyText, shared_memory: Any, n: int = 1) -> SharedTexts:
    return SharedTexts(np.frombuffer(shared_memory.get_obj(), dtype=np.int32).reshape((n, space.max_length)))
