"""A Gymnasium text space that accepts any string up to a length.

``gymnasium.spaces.Text`` checks every character against a charset (alphanumeric by
default), so ordinary model output such as ``"calculator((12/60)*50)"`` is not ``in`` it.
:class:`AnyText` keeps ``Text``'s length bounds and vector-env support, but ``contains``
accepts every Python string of allowed length; ``sample`` draws from printable ASCII plus a
few non-ASCII characters, which is enough to exercise parsers.
"""

from __future__ import annotations

import string
from typing import Any

from gymnasium.spaces import Text

__all__ = ["AnyText", "MAX_ACTION_CHARS", "MAX_OBSERVATION_CHARS"]

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
