"""Where task data lives, and the sequence type every dataset loader returns.

Data files are never shipped with the package: they are read from a data directory given
as ``data_dir=...`` or through the ``TOOLENV_DATA`` environment variable (CI points it at
``../shared/data``). A :class:`TaskSet` is a read-only ``Sequence[Task]`` with a name, a
split and a fast :meth:`TaskSet.index_of` lookup from task id to position.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import operator
import os
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, overload

from toolenv.types import Task

__all__ = [
    "DATA_ENV_VAR",
    "DataFormatError",
    "DataNotFoundError",
    "ListTaskSet",
    "TaskSet",
    "check_choice",
    "parse_xml",
    "read_json",
    "read_json_lines",
    "record_of",
    "require_file",
    "resolve_data_dir",
]

#: Environment variable naming the data directory when no ``data_dir`` is passed.
DATA_ENV_VAR = "TOOLENV_DATA"

# How a dataset's top-level folder is spelled in messages.
_DISPLAY_NAMES = {"gsm8k": "GSM8K", "asdiv": "ASDiv", "mawps": "MAWPS", "svamp": "SVAMP"}


class DataNotFoundError(FileNotFoundError):
    """No data directory is configured, or a file a loader needs is missing from it."""


class DataFormatError(ValueError):
    """A data file is malformed; the message names the file and the line or record."""


def read_json_lines(path: Path) -> list[tuple[int, Any]]:
    """``(line number, record)`` for every non-empty line of a JSON Lines file (line numbers from 1)."""
    out = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                out.append((lineno, json.loads(line)))
            except ValueError as e:
                raise DataFormatError(f"{path}, line {lineno}: not valid JSON ({e}).") from None
    return out


def read_json(path: Path) -> Any:
    """A whole JSON file; a syntax error names the file, line and column."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataFormatError(f"{path}, line {e.lineno} column {e.colno}: not valid JSON ({e.msg}).") from None
    except UnicodeDecodeError as e:
        raise DataFormatError(f"{path}: not UTF-8 text ({e}).") from None


def parse_xml(path: Path) -> ET.ElementTree:
    """An XML file; a syntax error (a truncated file, say) names the file, line and column."""
    try:
        return ET.parse(path)
    except ET.ParseError as e:
        line, col = e.position
        raise DataFormatError(f"{path}, line {line} column {col}: not well-formed XML ({e}).") from None


@contextlib.contextmanager
def record_of(path: Path, where: str) -> Iterator[None]:
    """Turn a record's missing key or wrong type into a :class:`DataFormatError` naming the file and ``where``.

    >>> with record_of(Path("gsm8k/train.jsonl"), "line 3"):
    ...     {"question": "?"}["answer"]
    Traceback (most recent call last):
    ...
    toolenv.datasets.base.DataFormatError: gsm8k/train.jsonl, line 3: missing key 'answer'.
    """
    try:
        yield
    except DataFormatError:
        raise
    except KeyError as e:
        raise DataFormatError(f"{path}, {where}: missing key {e.args[0]!r}.") from None
    except (TypeError, ValueError, AttributeError, IndexError) as e:
        raise DataFormatError(f"{path}, {where}: malformed record ({type(e).__name__}: {e}).") from None


def _did_you_mean(value: str, allowed: Iterable[str]) -> str:
    """``" Did you mean 'x'?"`` for the closest allowed string, or ``""`` when none is close."""
    matches = difflib.get_close_matches(str(value), list(allowed), n=1, cutoff=0.5)
    return f" Did you mean {matches[0]!r}?" if matches else ""


def check_choice(field: str, value: object, allowed: Sequence[str]) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``allowed``.

    The message names the field, the value, the allowed values and the closest match:

    >>> check_choice("split", "tset", ("train", "test"))
    Traceback (most recent call last):
    ...
    ValueError: Expected split to be one of 'train', 'test'; got 'tset'. Did you mean 'test'?
    """
    if value in allowed:
        return
    choices = ", ".join(repr(a) for a in allowed)
    hint = _did_you_mean(value, allowed) if isinstance(value, str) else ""
    if not hint:
        hint = f" Choose one of {choices}."
    raise ValueError(f"Expected {field} to be one of {choices}; got {value!r}.{hint}")


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The data directory: ``data_dir`` if given, else ``$TOOLENV_DATA``.

    Args:
        data_dir: An explicit directory; it wins over the environment variable.

    Returns:
        The directory as a ``Path`` (``~`` expanded). Whether it exists is checked by
        :func:`require_file`, which can name the missing file.

    Raises:
        DataNotFoundError: Neither ``data_dir`` nor ``TOOLENV_DATA`` is set.
    """
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir).expanduser()
    env = os.environ.get(DATA_ENV_VAR, "")
    if env:
        return Path(env).expanduser()
    raise DataNotFoundError(
        "No data directory set: pass data_dir=... or set the TOOLENV_DATA environment "
        "variable (CI points it at ../shared/data)."
    )


def _setting(data_dir: str | os.PathLike[str] | None) -> str:
    """Which setting chose the data directory, e.g. ``"TOOLENV_DATA=/x"``."""
    if data_dir is not None and str(data_dir) != "":
        return f"data_dir={os.fspath(data_dir)}"
    return f"{DATA_ENV_VAR}={os.environ.get(DATA_ENV_VAR, '')}"


def require_file(data_dir: str | os.PathLike[str] | None, relative: str) -> Path:
    """The path of ``relative`` inside the data directory, which must exist.

    Args:
        data_dir: As for :func:`resolve_data_dir` (``None`` means ``$TOOLENV_DATA``).
        relative: Path inside the data directory, e.g. ``"gsm8k/test.jsonl"``.

    Raises:
        DataNotFoundError: No data directory is set, or the file is missing. The message
            names the setting used and the full expected path.
    """
    root = resolve_data_dir(data_dir)
    path = root / relative
    if path.exists():
        return path
    top = Path(relative).parts[0] if Path(relative).parts else relative
    what = _DISPLAY_NAMES.get(top, top)
    extra = "" if root.is_dir() else f" The data directory {root} itself does not exist."
    raise DataNotFoundError(
        f"Expected {what} file at {path} (data directory from {_setting(data_dir)}), but it does not exist.{extra}"
    )


class TaskSet(Sequence[Task]):
    """A read-only sequence of tasks of one dataset split.

    Subclasses implement ``__len__`` and ``_get(index)`` (a non-negative index below
    ``len(self)``); they may override :meth:`index_of` with something faster than a scan.

    Attributes:
        name: Dataset name, e.g. ``"gsm8k"`` or ``"mawps/multiarith"``.
        split: Split name, e.g. ``"train"``.
    """

    name: str
    split: str

    def __init__(self, name: str, split: str) -> None:
        self.name = name
        self.split = split
        self._ids: dict[str, int] | None = None

    def __len__(self) -> int:
        raise NotImplementedError

    def _get(self, index: int) -> Task:
        raise NotImplementedError

    @overload
    def __getitem__(self, index: int) -> Task: ...

    @overload
    def __getitem__(self, index: slice) -> list[Task]: ...

    def __getitem__(self, index: int | slice) -> Task | list[Task]:
        if isinstance(index, slice):
            return [self._get(i) for i in range(*index.indices(len(self)))]
        try:
            index = operator.index(index)  # numpy integers too
        except TypeError:
            raise TypeError(f"Expected an int or slice index, got {type(index).__name__}") from None
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"Task index {index} out of range for {self.name}/{self.split} ({n} tasks)")
        return self._get(index)

    def index_of(self, task_id: str) -> int:
        """Position of the task with id ``task_id``.

        Raises:
            KeyError: No such id; the message suggests the closest id.
        """
        if self._ids is None:
            self._ids = {self._get(i).id: i for i in range(len(self))}
        try:
            return self._ids[task_id]
        except KeyError:
            raise self._missing(task_id, self._ids) from None

    def _missing(self, task_id: str, ids: Iterable[str]) -> KeyError:
        hint = _did_you_mean(task_id, ids)
        return KeyError(f"No task with id {task_id!r} in {self.name}/{self.split} ({len(self)} tasks).{hint}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, split={self.split!r}, n={len(self)})"


class ListTaskSet(TaskSet):
    """A :class:`TaskSet` over a list of tasks held in memory; ``index_of`` is O(1).

    Example:
        >>> ts = ListTaskSet([Task("a-0", "1+1?", "2"), Task("a-1", "2+2?", "4")], name="a", split="test")
        >>> len(ts), ts[1].answer, ts.index_of("a-1")
        (2, '4', 1)
    """

    def __init__(self, tasks: Iterable[Task], name: str, split: str) -> None:
        super().__init__(name, split)
        self._tasks: tuple[Task, ...] = tuple(tasks)
        ids: dict[str, int] = {}
        for i, task in enumerate(self._tasks):
            if task.id in ids:
                raise ValueError(f"Expected unique task ids in {name}/{split}, got {task.id!r} twice")
            ids[task.id] = i
        self._ids = ids

    def __len__(self) -> int:
        return len(self._tasks)

    def _get(self, index: int) -> Task:
        return self._tasks[index]

    def __iter__(self) -> Iterator[Task]:
        return iter(self._tasks)
