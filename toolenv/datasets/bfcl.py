"""The Berkeley Function Calling Leaderboard (BFCL v4) tasks, read from the installed ``bfcl-eval`` package.

``bfcl-eval`` is an optional dependency; install it without its vendor SDKs::

    pip install --no-deps bfcl-eval==2026.3.23 && pip install mpmath

Where things live in the package (``bfcl_eval/``):

- ``data/BFCL_v4_<category>.json``: one JSON entry per line. Multi-turn entries
  (``multi_turn_base``, ``_miss_func``, ``_miss_param``, ``_long_context``) hold ``question``
  (one list of messages per user turn; a held-out turn of ``miss_func`` is empty),
  ``initial_config`` (per API class), ``involved_classes``, ``path``, ``excluded_function`` and,
  for ``miss_func``, ``missed_function`` (turn index → function names). Single-turn entries hold
  ``question`` and ``function`` (the function docs).
- ``data/possible_answer/BFCL_v4_<category>.json``: the ground truth. Multi-turn: a list of call
  strings per turn (``"cd(folder='document')"``); single-turn: per call ``{name: {param:
  [allowed values]}}`` (``""`` among them means the parameter may be left out).
- ``data/multi_turn_func_doc/*.json``: the function docs of the multi-turn API classes, whose
  code is in ``eval_checker/multi_turn_eval/func_source_code/``.

Tasks keep everything the envs need in ``meta``; treat it as read-only (tasks share the docs).

Example:
    >>> tasks = load_bfcl_multi_turn("base")          # doctest: +SKIP
    >>> len(tasks), tasks[0].meta["ground_truth"][0]  # doctest: +SKIP
    (200, ["cd(folder='document')", "mkdir(dir_name='temp')", "mv(source='final_report.pdf', destination='temp')"])
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from toolenv.datasets.base import DataNotFoundError, ListTaskSet, check_choice, read_json_lines
from toolenv.protocols.python_calls import parse_python_calls
from toolenv.types import Task, ToolCall

__all__ = [
    "BFCL_INSTALL",
    "BFCL_VERSION_PREFIX",
    "IRRELEVANT_REPLY",
    "MULTI_TURN_CATEGORIES",
    "PYTHON_HINT",
    "SINGLE_TURN_CATEGORIES",
    "BFCLNotInstalledError",
    "bfcl_package_dir",
    "load_bfcl_multi_turn",
    "load_bfcl_single_turn",
    "multi_turn_function_docs",
]

#: The command that installs what the BFCL envs need (the package's declared dependencies pin
#: old numpy and pull vendor SDKs, which the envs do not use).
BFCL_INSTALL = "pip install --no-deps bfcl-eval==2026.3.23 && pip install mpmath"
BFCL_VERSION_PREFIX = "BFCL_v4"
MULTI_TURN_CATEGORIES = ("base", "miss_func", "miss_param", "long_context")
SINGLE_TURN_CATEGORIES = ("simple_python", "multiple", "parallel", "parallel_multiple", "irrelevance")
#: What BFCL appends to every function description it shows (``add_language_specific_hint_to_function_doc``).
PYTHON_HINT = " Note that the provided function is in Python 3 syntax."


class BFCLNotInstalledError(DataNotFoundError):
    """The ``bfcl-eval`` package (or ``mpmath``, which its math API needs) is not installed.

    A :class:`~toolenv.datasets.DataNotFoundError`, so code that skips envs whose data is absent
    skips the BFCL envs too.
    """


def bfcl_package_dir() -> Path:
    """The installed ``bfcl_eval`` package directory (found without importing it).

    Raises:
        BFCLNotInstalledError: ``bfcl-eval`` is not installed; the message names the install command.
    """
    spec = importlib.util.find_spec("bfcl_eval")
    if spec is None or not spec.submodule_search_locations:
        raise BFCLNotInstalledError(f"The BFCL envs need the bfcl-eval package, which is not installed: {BFCL_INSTALL}")
    root = Path(next(iter(spec.submodule_search_locations)))
    if not (root / "data").is_dir():
        raise BFCLNotInstalledError(f"Expected BFCL data at {root / 'data'}, but it does not exist. Reinstall: {BFCL_INSTALL}")
    return root


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        raise BFCLNotInstalledError(f"Expected the BFCL file {path}, but it does not exist. Reinstall: {BFCL_INSTALL}")
    return [item for _, item in read_json_lines(path)]


def _doc_file_mapping() -> Mapping[str, str]:
    bfcl_package_dir()
    from bfcl_eval.constants.executable_backend_config import MULTI_TURN_FUNC_DOC_FILE_MAPPING

    return MULTI_TURN_FUNC_DOC_FILE_MAPPING


@functools.cache
def _raw_class_docs(class_name: str) -> tuple[dict[str, Any], ...]:
    mapping = _doc_file_mapping()
    if class_name not in mapping:
        raise ValueError(f"Expected a BFCL API class, one of {sorted(mapping)}; got {class_name!r}.")
    return tuple(_read_jsonl(bfcl_package_dir() / "data" / "multi_turn_func_doc" / mapping[class_name]))


@functools.cache
def _hinted_class_docs(class_name: str) -> tuple[dict[str, Any], ...]:
    return tuple(_with_hint(d) for d in _raw_class_docs(class_name))


def _with_hint(doc: Mapping[str, Any]) -> dict[str, Any]:
    return {**doc, "description": doc.get("description", "") + PYTHON_HINT}


def multi_turn_function_docs(class_name: str, *, hint: bool = True) -> list[dict[str, Any]]:
    """The function docs of one multi-turn API class (e.g. ``"GorillaFileSystem"``), as BFCL shows them.

    Args:
        class_name: A key of BFCL's ``MULTI_TURN_FUNC_DOC_FILE_MAPPING``.
        hint: Append BFCL's Python hint to each description, as BFCL does for the docs it
            lists in the system prompt (held-out docs of ``miss_func`` go without it).
    """
    return list(_hinted_class_docs(class_name) if hint else _raw_class_docs(class_name))


def _user_text(messages: Sequence[Mapping[str, Any]]) -> str:
    return "\n\n".join(str(m.get("content", "")) for m in messages if m.get("role") == "user")


def _signatures(docs: Sequence[Mapping[str, Any]]) -> dict[str, list[str]]:
    return {d["name"]: list(d.get("parameters", {}).get("properties", {})) for d in docs}


def _gold_calls(strings: Sequence[str], signatures: Mapping[str, Sequence[str]], entry_id: str) -> list[ToolCall]:
    calls: list[ToolCall] = []
    for s in strings:
        parsed = parse_python_calls(s, signatures)
        if not isinstance(parsed, tuple):
            raise ValueError(f"Expected a literal ground-truth call in {entry_id}, got {s!r}: {parsed}")
        calls.extend(parsed)
    return calls


def _multi_turn_task(entry: dict[str, Any], truth: dict[str, Any], category: str) -> Task:
    classes = list(entry["involved_classes"])
    available: list[dict[str, Any]] = [d for c in classes for d in _hinted_class_docs(c)]
    all_docs = [d for c in classes for d in _raw_class_docs(c)]
    missed: dict[str, list[dict[str, Any]]] = {}
    for turn, names in (entry.get("missed_function") or {}).items():
        held = [d for d in all_docs if d["name"] in set(names)]
        missed[str(turn)] = sorted(held, key=lambda d: list(names).index(d["name"]))
        available = [d for d in available if d["name"] not in set(names)]
    turns = [_user_text(t) if t else None for t in entry["question"]]
    ground_truth = [list(t) for t in truth["ground_truth"]]
    if len(turns) != len(ground_truth):
        raise ValueError(f"Expected one ground-truth list per turn in {entry['id']}, got {len(ground_truth)} for {len(turns)} turns.")
    solution = _gold_calls([c for t in ground_truth for c in t], _signatures(all_docs), entry["id"])
    meta = {
        "category": f"multi_turn_{category}",
        "turns": turns,
        "initial_config": entry.get("initial_config", {}),
        "involved_classes": classes,
        "path": list(entry.get("path", [])),
        "functions": available,
        "missed_functions": missed,
        "ground_truth": ground_truth,
        "excluded_function": list(entry.get("excluded_function", [])),
        "long_context": category == "long_context",
    }
    return Task(entry["id"], turns[0] or "", "", tuple(solution), meta)


@functools.cache
def load_bfcl_multi_turn(category: str = "base") -> ListTaskSet:
    """BFCL's multi-turn tasks of one category, in file order.

    Args:
        category: ``"base"``, ``"miss_func"``, ``"miss_param"`` or ``"long_context"``.

    Returns:
        200 tasks; ``meta`` holds ``turns`` (user text per turn, ``None`` for a held-out turn),
        ``initial_config``, ``involved_classes``, ``path``, ``functions`` (the docs offered from
        the start), ``missed_functions`` (turn index as text → docs added at that turn),
        ``ground_truth`` (call strings per turn), ``excluded_function`` and ``long_context``.
        ``solution`` is the ground truth's calls in order, positional arguments named.

    Raises:
        BFCLNotInstalledError: ``bfcl-eval`` is not installed.
    """
    check_choice("category", category, MULTI_TURN_CATEGORIES)
    data = bfcl_package_dir() / "data"
    name = f"{BFCL_VERSION_PREFIX}_multi_turn_{category}.json"
    entries = _read_jsonl(data / name)
    truths = {t["id"]: t for t in _read_jsonl(data / "possible_answer" / name)}
    tasks = [_multi_turn_task(e, truths[e["id"]], category) for e in entries]
    return ListTaskSet(tasks, name=f"bfcl/multi_turn_{category}", split="test")


def _first_allowed(options: Any) -> tuple[bool, Any]:
    """``(present, value)``: the first allowed value other than ``""`` (which allows leaving it out)."""
    if not isinstance(options, list):
        return False, None
    for option in options:
        if option != "":
            return True, option
    return False, None


def _pick(options: Any, schema: Mapping[str, Any]) -> tuple[bool, Any]:
    """The first allowed value of a parameter; dict values are themselves maps of allowed values."""
    present, value = _first_allowed(options)
    if not present:
        return False, None
    kind = schema.get("type")
    if kind == "dict" and isinstance(value, dict):
        return True, _pick_nested(value)
    if kind == "array" and schema.get("items", {}).get("type") == "dict" and isinstance(value, list):
        return True, [_pick_nested(v) if isinstance(v, dict) else v for v in value]
    return True, value


def _pick_nested(possible: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, options in possible.items():
        present, value = _first_allowed(options)
        if present:
            out[key] = value
    return out


def _single_turn_solution(truth: Sequence[Mapping[str, Any]], docs: Sequence[Mapping[str, Any]]) -> list[ToolCall]:
    by_name = {d["name"]: d for d in docs}
    calls: list[ToolCall] = []
    for item in truth:
        for name, params in item.items():
            properties = by_name.get(name, {}).get("parameters", {}).get("properties", {})
            arguments: dict[str, Any] = {}
            for param, options in params.items():
                if param not in properties:  # a stray key of the answer file: it can only be left out
                    continue
                present, value = _pick(options, properties[param])
                if present:
                    arguments[param] = value
            calls.append(ToolCall(name, arguments))
    return calls


#: The reply of an expert to an irrelevance task (no function fits).
IRRELEVANT_REPLY = "None of the given functions can be used for this request."


@functools.cache
def load_bfcl_single_turn(category: str = "simple_python") -> ListTaskSet:
    """BFCL's single-turn (AST-checked) tasks of one category, in file order.

    Args:
        category: ``"simple_python"``, ``"multiple"``, ``"parallel"``, ``"parallel_multiple"``
            or ``"irrelevance"``.

    Returns:
        Tasks whose ``meta`` holds ``category``, ``functions`` (docs with BFCL's Python hint) and
        ``ground_truth`` (BFCL's possible answers; ``[]`` for irrelevance). ``solution`` is one
        correct set of calls (for each documented parameter its first allowed value other than
        ``""``, which marks it optional); irrelevance tasks have none, and their ``answer`` is a
        refusal.

    Raises:
        BFCLNotInstalledError: ``bfcl-eval`` is not installed.
    """
    check_choice("category", category, SINGLE_TURN_CATEGORIES)
    data = bfcl_package_dir() / "data"
    name = f"{BFCL_VERSION_PREFIX}_{category}.json"
    entries = _read_jsonl(data / name)
    answers = data / "possible_answer" / name
    truths = {t["id"]: t["ground_truth"] for t in _read_jsonl(answers)} if answers.exists() else {}
    tasks = []
    for e in entries:
        docs = [_with_hint(d) for d in e["function"]]
        truth = truths.get(e["id"], [])
        solution = _single_turn_solution(truth, docs)
        meta = {"category": category, "functions": docs, "ground_truth": truth, "language": "python"}
        answer = IRRELEVANT_REPLY if category == "irrelevance" else ""
        tasks.append(Task(e["id"], _user_text(e["question"][0]), answer, tuple(solution), meta))
    return ListTaskSet(tasks, name=f"bfcl/{category}", split="test")
