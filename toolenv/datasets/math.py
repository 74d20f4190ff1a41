"""Math word problems with gold calculator solutions: GSM8K, ASDiv, MAWPS, SVAMP and a generator.

Every loader returns :class:`~toolenv.types.Task` objects whose ``answer`` is normalised
number text (``"72"``, ``"0.5"``, ``"-3"``) and whose ``solution`` is one
``calculator`` call with a single expression that evaluates to the answer, or ``()`` when no
such expression could be built from the source and verified with the calculator. Tasks
whose answer is not a number (some ASDiv answers are ``"3:4"`` or ``"Yes"``) are skipped.

The files are read from the data directory (``data_dir=...`` or ``$TOOLENV_DATA``); see
:mod:`toolenv.datasets.base`. :class:`ProceduralMath` needs no files: it generates
arithmetic word problems of four levels deterministically from ``(split, level, index)``.

Example:
    >>> tasks = math_tasks("procedural", "test", level=1)
    >>> len(tasks), tasks[0].id
    (1000, 'math-test-L1-0')
"""

from __future__ import annotations

import functools
import html
import logging
import math
import os
import random
import re
from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

from toolenv.datasets.base import (
    DataFormatError,
    ListTaskSet,
    TaskSet,
    check_choice,
    parse_xml,
    read_json,
    read_json_lines,
    record_of,
    require_file,
    resolve_data_dir,
)
from toolenv.tools.calculator import CalculatorError, evaluate
from toolenv.types import Task, ToolCall

__all__ = [
    "MATH_DATASETS",
    "MAWPS_SUBSETS",
    "ProceduralMath",
    "format_answer",
    "load_asdiv",
    "load_gsm8k",
    "load_mawps",
    "load_svamp",
    "math_tasks",
]

logger = logging.getLogger(__name__)

MATH_DATASETS = ("procedural", "gsm8k", "asdiv", "mawps", "svamp")
MAWPS_SUBSETS = ("multiarith", "addsub", "singleeq", "singleop")

#: The splits each dataset accepts.
SPLITS: dict[str, tuple[str, ...]] = {
    "procedural": ("train", "valid", "test"),
    "gsm8k": ("train", "test"),
    "asdiv": ("train", "test", "all"),
    "mawps": ("train", "valid", "test", "all"),
    "svamp": ("train", "test", "all"),
}

PathArg = str | os.PathLike[str] | None

# ---------------------------------------------------------------------------------------------
# Numbers and verification
# ---------------------------------------------------------------------------------------------

_NUMBER_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(?:/(\d+(?:\.\d+)?))?")
_THOUSANDS_RE = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_UNIT_RE = re.compile(r"^(.*?)\s*\([^()]*\)\s*$")
_DECIMALS = 10


def _parse_number(text: str) -> Fraction | None:
    """``"1,080"``, ``"$0.5"``, ``"-3"``, ``"5/2"`` or ``"-(1/3)"`` as a Fraction; None if not a number."""
    t = _THOUSANDS_RE.sub("", text.strip()).replace("$", "").strip()
    sign = 1
    while True:
        if t.startswith("-"):
            sign, t = -sign, t[1:].strip()
        elif t.startswith("+"):
            t = t[1:].strip()
        elif t.startswith("(") and t.endswith(")"):
            t = t[1:-1].strip()
        else:
            break
    m = _NUMBER_RE.fullmatch(t)
    if m is None:
        return None
    value = Fraction(m.group(1))
    if m.group(2) is not None:
        denominator = Fraction(m.group(2))
        if denominator == 0:
            return None
        value /= denominator
    return sign * value


def _to_fraction(value: Any) -> Fraction | None:
    """A JSON number or numeric string as a Fraction (floats by their shortest repr)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return Fraction(value)
    if isinstance(value, float):
        return Fraction(repr(value)) if math.isfinite(value) else None
    if isinstance(value, str):
        return _parse_number(value)
    return None


def format_answer(value: Fraction | int | float) -> str:
    """Normalised answer text: integers without a point, others with at most 10 decimals.

    >>> format_answer(504.0), format_answer(Fraction(1, 2)), format_answer(-3), format_answer(Fraction(1, 3))
    ('504', '0.5', '-3', '0.3333333333')
    """
    q = value if isinstance(value, Fraction) else Fraction(repr(value) if isinstance(value, float) else value)
    if q.denominator == 1:
        return str(q.numerator)
    scale = 10**_DECIMALS
    scaled = round(q * scale)
    sign = "-" if scaled < 0 else ""
    whole, frac = divmod(abs(scaled), scale)
    text = f"{whole}.{frac:0{_DECIMALS}d}".rstrip("0").rstrip(".")
    return "0" if text == "0" else sign + text


def _matches(value: float, answer: Fraction) -> bool:
    """TRICE's check: equal within 0.01 after rounding both to 2 decimals."""
    if not math.isfinite(value):
        return False
    return abs(round(value, 2) - round(float(answer), 2)) <= 0.01 + 1e-9


def _verified(expression: str | None, answer: Fraction) -> str | None:
    """``expression`` if the calculator evaluates it to ``answer``, else None."""
    if not expression:
        return None
    try:
        value = evaluate(expression)
    except (CalculatorError, ArithmeticError):
        return None
    return expression if _matches(float(value), answer) else None


def _solution(expression: str | None) -> tuple[ToolCall, ...]:
    if expression is None:
        return ()
    return (ToolCall(name="calculator", arguments={"expression": expression}),)


def _log_load(what: str, split: str, tasks: Sequence[Task], skipped: int, source: Path) -> None:
    solved = sum(1 for t in tasks if t.solution)
    logger.info(
        "Loaded %d %s tasks (split=%s) from %s; skipped %d with a non-numeric answer; "
        "%d have a verified calculator solution",
        len(tasks),
        what,
        split,
        source,
        skipped,
        solved,
    )


def _clean(text: str) -> str:
    """Collapse runs of whitespace (the sources have stray leading, trailing and double spaces)."""
    return " ".join(text.split())


# ---------------------------------------------------------------------------------------------
# GSM8K
# ---------------------------------------------------------------------------------------------

_STEP_RE = re.compile(r"<<([^<>]*)>>")
_TOKEN_RE = re.compile(r"\d+(?:\.\d+)?|\.\d+")
_MAX_EXPRESSION_CHARS = 400


def _compose_steps(steps: Sequence[str], answer: Fraction) -> str | None:
    """One expression from GSM8K's ``<<expr=result>>`` steps that evaluates to ``answer``.

    A number token of a step that equals an earlier step's result is replaced by that
    step's (composed) expression in parentheses. The target step is the last one whose
    result is the answer (else the last step). Candidates, in order: the composed target,
    the target as written, then the same for the last step; the first that the calculator
    evaluates to the answer wins.
    """
    composed: list[tuple[str, str, Fraction | None]] = []  # (raw, composite, result)
    for step in steps:
        expr, sep, result_text = step.partition("=")
        expr = expr.strip()
        if not sep or not expr:
            continue
        result = _parse_number(result_text.split("=")[-1])

        def substitute(m: re.Match[str]) -> str:
            token = Fraction(m.group())
            for _, earlier, earlier_result in reversed(composed):
                if earlier_result == token and _TOKEN_RE.fullmatch(earlier) is None:
                    return f"({earlier})"
            return m.group()

        composite = _TOKEN_RE.sub(substitute, expr)
        if len(composite) > _MAX_EXPRESSION_CHARS:
            composite = expr
        composed.append((expr, composite, result))
    if not composed:
        return None
    last = len(composed) - 1
    target = next((i for i in range(last, -1, -1) if composed[i][2] == answer), last)
    order = [composed[target][1], composed[target][0], composed[last][1], composed[last][0]]
    for candidate in dict.fromkeys(order):
        if _verified(candidate, answer):
            return candidate
    return None


def load_gsm8k(split: str, data_dir: PathArg = None) -> list[Task]:
    """GSM8K (Cobbe et al., 2021) from ``gsm8k/{split}.jsonl``; splits ``train`` (7,473) and ``test`` (1,319).

    Task ids are ``gsm8k-{split}-{line}`` (0-based). ``meta`` holds ``steps`` (the
    ``<<expr=result>>`` annotations, without brackets) and ``rationale`` (the worked solution
    with the annotations removed and the ``#### answer`` line dropped).
    """
    check_choice("split", split, SPLITS["gsm8k"])
    path = require_file(data_dir, f"gsm8k/{split}.jsonl")
    tasks: list[Task] = []
    skipped = 0
    for i, (lineno, item) in enumerate(read_json_lines(path)):
        with record_of(path, f"line {lineno}"):
            text: str = item["answer"]
            rationale, _, final = text.rpartition("####")
            answer = _parse_number(final)
            if answer is None:
                skipped += 1
                continue
            steps = _STEP_RE.findall(rationale)
            tasks.append(
                Task(
                    id=f"gsm8k-{split}-{i}",
                    question=item["question"].strip(),
                    answer=format_answer(answer),
                    solution=_solution(_compose_steps(steps, answer)),
                    meta={
                        "dataset": "gsm8k",
                        "split": split,
                        "steps": steps,
                        "rationale": _STEP_RE.sub("", rationale).strip(),
                    },
                )
            )
    _log_load("GSM8K", split, tasks, skipped, path)
    return tasks


# ---------------------------------------------------------------------------------------------
# ASDiv
# ---------------------------------------------------------------------------------------------

_ASDIV_TRAIN_FOLDS = (0, 1, 2, 3)
_ASDIV_TEST_FOLDS = (4,)


def _asdiv_answer(text: str) -> Fraction | None:
    """``"9 (apples)"`` -> 9; ``"5/2"`` -> 5/2; ``"3:4"``, ``"Yes"``, ``"17; 12"`` -> None."""
    value = _parse_number(text)
    if value is None:
        m = _UNIT_RE.match(text.strip())
        if m:
            value = _parse_number(m.group(1))
    return value


_REMAINDER_RE = re.compile(r"\d+\s*r\s*\d+")


def _asdiv_expression(formula: str, answer: Fraction) -> str | None:
    """A verified expression from an ASDiv formula: ``"7+2=9"`` -> ``"7+2"``.

    A division with remainder (``"200/28=7 r4"``, answer 8 buses) becomes ``ceil(200/28)``
    or ``floor(200/28)``, whichever gives the answer. Formulas with several statements or
    no single ``=`` give None.
    """
    if ";" in formula or ":" in formula:
        return None
    sides = formula.split("=")
    if len(sides) != 2 or not sides[0].strip():
        return None
    left = sides[0].strip()
    candidates = [left]
    if _REMAINDER_RE.fullmatch(sides[1].strip()):
        candidates += [f"ceil({left})", f"floor({left})"]
    return next((c for c in candidates if _verified(c, answer)), None)


def load_asdiv(split: str, data_dir: PathArg = None) -> list[Task]:
    """ASDiv (Miao et al., 2020) from ``asdiv/ASDiv.xml``.

    Splits: ``train`` = ASDiv-A folds 0-3 (952), ``test`` = ASDiv-A fold 4 (266), as in TRICE;
    ``all`` = every problem of ASDiv.xml with a numeric answer. Tasks are in document order,
    ids are ``asdiv-{ID}`` (e.g. ``asdiv-nluds-0001``), the question is Body + " " + Question.
    ``meta`` holds ``formula``, ``solution_type``, ``grade`` and ``fold`` (ASDiv-A fold or None).
    """
    check_choice("split", split, SPLITS["asdiv"])
    path = require_file(data_dir, "asdiv/ASDiv.xml")
    folds: dict[str, int] = {}
    for k in range(5):
        fold_path = require_file(data_dir, f"asdiv/nfolds/asdiv-a/fold{k}.txt")
        for problem_id in fold_path.read_text(encoding="utf-8").split():
            folds[problem_id] = k
    wanted = {"train": _ASDIV_TRAIN_FOLDS, "test": _ASDIV_TEST_FOLDS}.get(split)
    tasks: list[Task] = []
    skipped = 0
    for problem in parse_xml(path).getroot().iter("Problem"):
        with record_of(path, f"Problem ID={problem.get('ID')!r}"):
            problem_id = problem.get("ID", "")
            fold = folds.get(problem_id)
            if wanted is not None and fold not in wanted:
                continue
            answer = _asdiv_answer(problem.findtext("Answer", ""))
            if answer is None:
                skipped += 1
                continue
            formula = problem.findtext("Formula", "").strip()
            body = _clean(problem.findtext("Body", ""))
            question = _clean(problem.findtext("Question", ""))
            grade = problem.get("Grade")
            tasks.append(
                Task(
                    id=f"asdiv-{problem_id}",
                    question=f"{body} {question}".strip(),
                    answer=format_answer(answer),
                    solution=_solution(_asdiv_expression(formula, answer)),
                    meta={
                        "dataset": "asdiv",
                        "split": split,
                        "formula": formula,
                        "solution_type": problem.findtext("Solution-Type", "").strip(),
                        "grade": int(grade) if grade and grade.isdigit() else grade,
                        "fold": fold,
                    },
                )
            )
    _log_load("ASDiv", split, tasks, skipped, path)
    return tasks


# ---------------------------------------------------------------------------------------------
# MAWPS
# ---------------------------------------------------------------------------------------------

_VARIABLE_RE = re.compile(r"[A-Za-z_][A-Za-z_0-9]*")
_LONE_VARIABLE_RE = re.compile(r"\(?\s*[A-Za-z_][A-Za-z_0-9]*\s*\)?")
_MAWPS_SPLIT_FILES = {"train": "trainset.json", "valid": "validset.json", "test": "testset.json"}


def _mawps_expression(equation: str) -> str | None:
    """The side of ``equation`` opposite a lone variable: ``"X=(8.0*45.0)"`` -> ``"(8.0*45.0)"``.

    ``"56*9=x"`` -> ``"56*9"``; a bare ``"9+9"`` is itself the expression. None when the
    variable is not alone on one side (``"9+x=12"``).
    """
    sides = [s.strip() for s in equation.split("=")]
    if len(sides) == 1:
        return sides[0] if sides[0] and not _VARIABLE_RE.search(sides[0]) else None
    if len(sides) != 2:
        return None
    for var_side, other in ((sides[0], sides[1]), (sides[1], sides[0])):
        if _LONE_VARIABLE_RE.fullmatch(var_side) and other and not _VARIABLE_RE.search(other):
            return other
    return None


def _norm_text(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def _load_mawps_source(data_dir: PathArg) -> tuple[list[dict[str, Any]], list[str], Path]:
    """mawps_source.json items and each item's MWPToolkit split (by 0-based position)."""
    source_path = require_file(data_dir, "mawps/mwptoolkit/mawps_source.json")
    items: list[dict[str, Any]] = read_json(source_path)
    if not isinstance(items, list):
        raise DataFormatError(f"{source_path}: expected a JSON list of problems, got {type(items).__name__}.")
    own_split = [""] * len(items)
    for name, file_name in _MAWPS_SPLIT_FILES.items():
        split_path = require_file(data_dir, f"mawps/mwptoolkit/{file_name}")
        for k, entry in enumerate(read_json(split_path)):
            with record_of(split_path, f"entry {k}"):
                # MWPToolkit ids are 1-based positions in MAWPS.json, which lists the same
                # problems in the same order as mawps_source.json; check the answers agree.
                pos = int(entry["id"]) - 1
                if not 0 <= pos < len(items):
                    raise ValueError(f"Expected MAWPS ids in 1..{len(items)} in {split_path}, got {entry['id']}")
                ans, sol = _to_fraction(entry.get("ans")), _to_fraction(items[pos]["lSolutions"][0])
                if ans is not None and sol is not None and abs(ans - sol) > Fraction(1, 10**6):
                    raise ValueError(
                        f"Expected {split_path} id {entry['id']} to be mawps_source.json item {pos} "
                        f"(answer {float(sol)}), got answer {float(ans)}: the files are out of step"
                    )
                own_split[pos] = name
    return items, own_split, source_path


def _mawps_task(task_id: str, question: str, answer: Fraction, equations: list[str], meta: dict[str, Any]) -> Task:
    expression = None
    if len(equations) == 1:
        expression = _verified(_mawps_expression(equations[0]), answer)
    return Task(
        id=task_id,
        question=_clean(html.unescape(question)),
        answer=format_answer(answer),
        solution=_solution(expression),
        meta={"dataset": "mawps", **meta, "equations": list(equations)},
    )


def load_mawps(split: str, subset: str | None = None, data_dir: PathArg = None) -> list[Task]:
    """MAWPS (Koncel-Kedziorski et al., 2016), whole or one of its subsets.

    Without ``subset``: the 2,373 problems of ``mawps/mwptoolkit/mawps_source.json``, split
    as MWPToolkit splits them (train 1,898 / valid 237 / test 238), or ``all``; ids are
    ``mawps-{iIndex}``.

    With ``subset`` (``multiarith``, ``addsub``, ``singleeq``, ``singleop``): the items of
    ``mawps/tora/{subset}.jsonl``, ids ``{subset}-{line}``. Equations are recovered by joining
    on normalised text (lower-case, alphanumerics only) to mawps_source.json; each item takes
    its matched problem's MWPToolkit split, and unmatched items are put in ``test``.

    ``meta`` holds ``equations``, ``mwptoolkit_split`` and, for subsets, ``subset`` and
    ``mawps_index`` (the matched iIndex or None).
    """
    check_choice("split", split, SPLITS["mawps"])
    if subset is not None:
        check_choice("subset", subset, MAWPS_SUBSETS)
    items, own_split, source_path = _load_mawps_source(data_dir)
    tasks: list[Task] = []
    skipped = 0
    if subset is None:
        for pos, item in enumerate(items):
            with record_of(source_path, f"item {pos}"):
                if split != "all" and own_split[pos] != split:
                    continue
                answer = _to_fraction(item["lSolutions"][0]) if item.get("lSolutions") else None
                if answer is None:
                    skipped += 1
                    continue
                meta = {"split": split, "mwptoolkit_split": own_split[pos] or None}
                tasks.append(_mawps_task(f"mawps-{item['iIndex']}", item["sQuestion"], answer, item["lEquations"], meta))
        _log_load("MAWPS", split, tasks, skipped, source_path)
        return tasks

    by_text: dict[str, list[int]] = {}
    for k, item in enumerate(items):
        by_text.setdefault(_norm_text(item["sQuestion"]), []).append(k)
    path = require_file(data_dir, f"mawps/tora/{subset}.jsonl")
    for i, (lineno, item) in enumerate(read_json_lines(path)):
        with record_of(path, f"line {lineno}"):
            answer = _to_fraction(item["target"])
            if answer is None:
                skipped += 1
                continue
            candidates = by_text.get(_norm_text(item["input"]), [])
            match = next(
                (p for p in candidates if _to_fraction(items[p]["lSolutions"][0]) == answer),
                candidates[0] if candidates else None,
            )
            item_split = own_split[match] if match is not None else "test"
            if split != "all" and item_split != split:
                continue
            meta = {
                "split": split,
                "subset": subset,
                "mwptoolkit_split": item_split if match is not None else None,
                "mawps_index": items[match]["iIndex"] if match is not None else None,
            }
            equations = items[match]["lEquations"] if match is not None else []
            tasks.append(_mawps_task(f"{subset}-{i}", item["input"], answer, equations, meta))
    _log_load(f"MAWPS/{subset}", split, tasks, skipped, path)
    return tasks


# ---------------------------------------------------------------------------------------------
# SVAMP
# ---------------------------------------------------------------------------------------------


def load_svamp(split: str, data_dir: PathArg = None) -> list[Task]:
    """SVAMP (Patel et al., 2021) from ``svamp/SVAMP.json``.

    Splits: ``train`` = the first ``round(0.8 * n)`` items in file order (800 of 1,000, as in
    TRICE), ``test`` = the rest (200), ``all``. Ids are ``svamp-{ID}`` lower-cased
    (``svamp-chal-1``); the question is Body + " " + Question; ``meta`` holds ``equation``
    and ``type``.
    """
    check_choice("split", split, SPLITS["svamp"])
    path = require_file(data_dir, "svamp/SVAMP.json")
    items: list[dict[str, Any]] = read_json(path)
    if not isinstance(items, list):
        raise DataFormatError(f"{path}: expected a JSON list of problems, got {type(items).__name__}.")
    n_train = round(0.8 * len(items))
    chosen = {"train": items[:n_train], "test": items[n_train:], "all": items}[split]
    tasks: list[Task] = []
    skipped = 0
    for k, item in enumerate(chosen):
        with record_of(path, f"item {k + (n_train if split == 'test' else 0)}"):
            answer = _to_fraction(item.get("Answer"))
            if answer is None:
                skipped += 1
                continue
            equation = _clean(str(item.get("Equation", "")))
            tasks.append(
                Task(
                    id=f"svamp-{str(item['ID']).lower()}",
                    question=f"{_clean(item.get('Body', ''))} {_clean(item.get('Question', ''))}".strip(),
                    answer=format_answer(answer),
                    solution=_solution(_verified(equation, answer)),
                    meta={"dataset": "svamp", "split": split, "equation": equation, "type": item.get("Type")},
                )
            )
    _log_load("SVAMP", split, tasks, skipped, path)
    return tasks


# ---------------------------------------------------------------------------------------------
# Procedural word problems
# ---------------------------------------------------------------------------------------------

_NAMES = (
    ("Ava", "she", "her"), ("Liam", "he", "his"), ("Maya", "she", "her"), ("Noah", "he", "his"),
    ("Sofia", "she", "her"), ("Ethan", "he", "his"), ("Amara", "she", "her"), ("Mateo", "he", "his"),
    ("Chloe", "she", "her"), ("Ravi", "he", "his"), ("Hana", "she", "her"), ("Kofi", "he", "his"),
    ("Lucia", "she", "her"), ("Omar", "he", "his"), ("Priya", "she", "her"), ("Jonas", "he", "his"),
    ("Mei", "she", "her"), ("Diego", "he", "his"), ("Zoe", "she", "her"), ("Samuel", "he", "his"),
    ("Fatima", "she", "her"), ("Lucas", "he", "his"), ("Ingrid", "she", "her"), ("Tariq", "he", "his"),
    ("Nia", "she", "her"), ("Felix", "he", "his"), ("Yuki", "she", "her"), ("Arjun", "he", "his"),
    ("Elena", "she", "her"), ("Marcus", "he", "his"), ("Leila", "she", "her"), ("Henry", "he", "his"),
)  # fmt: skip
_ITEMS = (
    "apples", "marbles", "stickers", "pencils", "seashells", "baseball cards", "stamps", "toy cars",
    "balloons", "oranges", "crayons", "beads", "buttons", "books", "coins", "postcards",
    "pine cones", "erasers", "ribbons", "lemons", "comic books", "trading cards", "paper cranes", "shells",
)  # fmt: skip
_CONTAINERS = ("boxes", "bags", "jars", "baskets", "crates", "packs", "tins", "trays")
_GROUPS = ("friends", "classmates", "cousins", "teammates", "neighbors")
_TREATS = ("cookies", "muffins", "cupcakes", "brownies", "pancakes")
_GOODS = (
    ("notebooks", 2, 9), ("pens", 1, 4), ("sandwiches", 4, 12), ("T-shirts", 8, 25), ("mugs", 5, 15),
    ("comic books", 3, 12), ("plants", 6, 20), ("lunch boxes", 7, 18), ("water bottles", 3, 10),
    ("scarves", 6, 19), ("candles", 2, 11), ("puzzles", 5, 16), ("picture frames", 4, 14), ("kites", 3, 13),
)  # fmt: skip
_TRIPS = (
    ("drives", "kilometers", 30, 110), ("drives", "miles", 20, 75), ("cycles", "kilometers", 8, 35),
    ("rides a motorbike", "kilometers", 25, 90), ("sails", "kilometers", 6, 40), ("rows", "kilometers", 3, 9),
)  # fmt: skip
_BIG_GOODS = ("laptop", "sofa", "bicycle", "television", "refrigerator", "camera", "piano")
_PRODUCTS = ("bottles", "phone cases", "bricks", "chairs", "light bulbs", "toys", "shoes")
_PURCHASES = ("a game", "a book", "a pair of shoes", "a jacket", "a gift", "a concert ticket")

_Generated = tuple[str, str, Fraction, str]  # question, expression, answer, template


def _cents(c: int) -> str:
    return f"{c // 100}.{c % 100:02d}"


def _person(rng: random.Random) -> tuple[str, str, str]:
    return _NAMES[rng.randrange(len(_NAMES))]


def _two_people(rng: random.Random) -> tuple[tuple[str, str, str], tuple[str, str, str]]:
    i = rng.randrange(len(_NAMES))
    j = (i + 1 + rng.randrange(len(_NAMES) - 1)) % len(_NAMES)
    return _NAMES[i], _NAMES[j]


# Level 1: one operation, small numbers.
def _l1_add(rng: random.Random) -> _Generated:
    (n, p, _), (m, _, _) = _two_people(rng)
    item = rng.choice(_ITEMS)
    a, b = rng.randint(2, 60), rng.randint(2, 40)
    if rng.random() < 0.5:
        q = f"{n} has {a} {item}. {p.capitalize()} gets {b} more {item} from {m}. How many {item} does {n} have now?"
    else:
        q = f"{n} has {a} {item} and {m} has {b} {item}. How many {item} do they have together?"
    return q, f"{a} + {b}", Fraction(a + b), "add"


def _l1_give(rng: random.Random) -> _Generated:
    (n, _, _), (m, _, _) = _two_people(rng)
    item = rng.choice(_ITEMS)
    a = rng.randint(10, 99)
    b = rng.randint(1, a - 1)
    if rng.random() < 0.5:
        q = f"{n} had {a} {item} and gave {b} of them to {m}. How many {item} does {n} have left?"
    else:
        q = f"{n} has {a} {item} and {m} has {b} {item}. How many more {item} does {n} have than {m}?"
    return q, f"{a} - {b}", Fraction(a - b), "subtract"


def _l1_boxes(rng: random.Random) -> _Generated:
    n, p, _ = _person(rng)
    item, box = rng.choice(_ITEMS), rng.choice(_CONTAINERS)
    a, b = rng.randint(2, 15), rng.randint(2, 25)
    if rng.random() < 0.5:
        q = f"{n} has {a} {box} with {b} {item} in each. How many {item} does {p} have in total?"
    else:
        q = f"{n} fills {a} {box}, putting {b} {item} in each one. How many {item} does {p} use?"
    return q, f"{a} * {b}", Fraction(a * b), "boxes"


def _l1_share(rng: random.Random) -> _Generated:
    n, _, _ = _person(rng)
    item, group = rng.choice(_ITEMS), rng.choice(_GROUPS)
    k, each = rng.randint(2, 12), rng.randint(2, 20)
    q = f"{n} shares {k * each} {item} equally among {k} {group}. How many {item} does each of them get?"
    return q, f"{k * each} / {k}", Fraction(each), "share_equally"


def _l1_speed(rng: random.Random) -> _Generated:
    n, p, _ = _person(rng)
    verb, unit, low, high = rng.choice(_TRIPS)
    v, t = rng.randint(low, high), rng.randint(2, 12)
    if rng.random() < 0.5:
        q = f"{n} {verb} at {v} {unit} per hour for {t} hours. How many {unit} does {p} travel?"
    else:
        q = f"{n} {verb} for {t} hours at a speed of {v} {unit} per hour. How far does {p} go, in {unit}?"
    return q, f"{v} * {t}", Fraction(v * t), "speed_time"


def _l1_price(rng: random.Random) -> _Generated:
    n, p, _ = _person(rng)
    goods, low, high = rng.choice(_GOODS)
    price, k = rng.randint(low, high), rng.randint(2, 12)
    q = f"{n} buys {k} {goods} for ${price} each. How many dollars does {p} spend?"
    return q, f"{k} * {price}", Fraction(k * price), "unit_price"


# Level 2: two operations.
def _l2_change(rng: random.Random) -> _Generated:
    n, p, _ = _person(rng)
    goods, low, high = rng.choice(_GOODS)
    price, k = rng.randint(low, high), rng.randint(2, 8)
    if rng.random() < 0.5:
        money = rng.choice([b for b in (10, 20, 50, 100, 200) if b > k * price][:3])
        start = f"{n} buys {k} {goods} for ${price} each and pays with a ${money} bill."
        ask = f"How much change does {p} get, in dollars?"
    else:
        money = k * price + rng.randint(1, 80)
        start = f"{n} has ${money}. {p.capitalize()} buys {k} {goods} for ${price} each."
        ask = f"How many dollars does {p} have left?"
    return f"{start} {ask}", f"{money} - {k} * {price}", Fraction(money - k * price), "change"


def _l2_boxes_loose(rng: random.Random) -> _Generated:
    n, _, _ = _person(rng)
    item, box = rng.choice(_ITEMS), rng.choice(_CONTAINERS)
    a, b, c = rng.randint(2, 12), rng.randint(3, 25), rng.randint(1, 20)
    q = f"{n} has {a} {box} of {item} with {b} {item} in each, plus {c} loose {item}. How many {item} does {n} have altogether?"
    return q, f"{a} * {b} + {c}", Fraction(a * b + c), "boxes_plus_loose"


def _l2_bake_share(rng: random.Random) -> _Generated:
    n, _, _ = _person(rng)
    treat, group = rng.choice(_TREATS), rng.choice(_GROUPS)
    k, each, eaten = rng.randint(2, 10), rng.randint(2, 15), rng.randint(1, 12)
    total = k * each + eaten
    q = (
        f"{n} bakes {total} {treat}, eats {eaten} of them, and shares the rest equally among "
        f"{k} {group}. How many {treat} does each of them get?"
    )
    return q, f"({total} - {eaten}) / {k}", Fraction(each), "bake_and_share"


def _l2_savings(rng: random.Random) -> _Generated:
    n, p, _ = _person(rng)
    a, w = rng.randint(3, 25), rng.randint(3, 12)
    s = rng.randint(1, a * w - 1)
    thing = rng.choice(_PURCHASES)
    q = f"{n} saves ${a} every week for {w} weeks, then spends ${s} on {thing}. How many dollars does {p} have left?"
    return q, f"{a} * {w} - {s}", Fraction(a * w - s), "savings"


def _l2_age(rng: random.Random) -> _Generated:
    (n, _, _), (m, _, _) = _two_people(rng)
    a, k, y = rng.randint(2, 15), rng.randint(2, 5), rng.randint(2, 20)
    q = f"{n} is {a} years old. {m} is {k} times as old as {n}. How old will {m} be in {y} years?"
    return q, f"{a} * {k} + {y}", Fraction(a * k + y), "age"


# Level 3: three operations, decimals and money.
def _l3_shopping(rng: random.Random) -> _Generated:
    n, p, _ = _person(rng)
    i = rng.randrange(len(_GOODS))
    j = (i + 1 + rng.randrange(len(_GOODS) - 1)) % len(_GOODS)
    (g1, lo1, hi1), (g2, lo2, hi2) = _GOODS[i], _GOODS[j]
    p1 = rng.randint(lo1 * 100, hi1 * 100 - 1) // 5 * 5
    p2 = rng.randint(lo2 * 100, hi2 * 100 - 1) // 5 * 5
    k1, k2 = rng.randint(2, 5), rng.randint(2, 4)
    cost = k1 * p1 + k2 * p2
    bill = next(b for b in (2000, 5000, 10000, 20000) if b > cost)
    q = (
        f"{n} buys {k1} {g1} at ${_cents(p1)} each and {k2} {g2} at ${_cents(p2)} each. "
        f"{p.capitalize()} pays with a ${bill // 100} bill. How much change does {p} receive, in dollars?"
    )
    expr = f"{bill // 100} - ({k1} * {_cents(p1)} + {k2} * {_cents(p2)})"
    return q, expr, Fraction(bill - cost, 100), "shopping_change"


def _l3_wage(rng: random.Random) -> _Generated:
    n, p, _ = _person(rng)
    wage = rng.randint(9, 24) * 100 + rng.choice((25, 50, 75))
    h1, h2 = rng.randint(2, 8), rng.randint(2, 8)
    earned = wage * (h1 + h2)
    spent = rng.randint(500, min(earned - 100, 6000))
    thing = rng.choice(_PURCHASES)
    q = (
        f"{n} earns ${_cents(wage)} per hour. {p.capitalize()} works {h1} hours on Saturday and "
        f"{h2} hours on Sunday, then spends ${_cents(spent)} on {thing}. "
        f"How much money does {p} have left, in dollars?"
    )
    expr = f"{_cents(wage)} * ({h1} + {h2}) - {_cents(spent)}"
    return q, expr, Fraction(earned - spent, 100), "wage"


def _l3_split_bill(rng: random.Random) -> _Generated:
    n, _, _ = _person(rng)
    k, pizzas = rng.randint(2, 6), rng.randint(2, 6)
    price = rng.randint(800, 2000) // 5 * 5
    food = pizzas * price
    each = -(-(food + 300) // k) + rng.randint(0, 150)
    tip = k * each - food
    q = (
        f"{n} and {k - 1} {'friend' if k == 2 else 'friends'} order {pizzas} pizzas at ${_cents(price)} each "
        f"and leave a ${_cents(tip)} tip. They split the total equally. "
        f"How much does each of them pay, in dollars?"
    )
    expr = f"({pizzas} * {_cents(price)} + {_cents(tip)}) / {k}"
    return q, expr, Fraction(each, 100), "split_bill"


def _l3_two_legs(rng: random.Random) -> _Generated:
    n, p, _ = _person(rng)
    v1, v2 = rng.randint(8, 30), rng.randint(8, 30)
    t1, t2 = rng.randint(3, 8), rng.randint(3, 7)  # half-hours
    walk = rng.randint(5, 40)  # tenths of a kilometer
    q = (
        f"{n} rides a bike at {v1} km per hour for {t1 / 2:g} hours, then at {v2} km per hour for "
        f"{t2 / 2:g} hours, and finally walks {walk / 10:g} km. How many kilometers does {p} travel in total?"
    )
    expr = f"{v1} * {t1 / 2:g} + {v2} * {t2 / 2:g} + {walk / 10:g}"
    return q, expr, Fraction(5 * (v1 * t1 + v2 * t2) + walk, 10), "speed_time_two_legs"


def _l3_recipe(rng: random.Random) -> _Generated:
    n, p, _ = _person(rng)
    treat = rng.choice(_TREATS)
    quarters, batch, mult = rng.randint(3, 14), rng.choice((6, 8, 10, 12, 16, 24)), rng.randint(2, 5)
    have = rng.randint(1, quarters * mult - 1)
    q = (
        f"A recipe needs {quarters / 4:g} cups of flour to make {batch} {treat}. {n} wants to make "
        f"{batch * mult} {treat} and already has {have / 4:g} cups of flour. "
        f"How many more cups of flour does {p} need?"
    )
    expr = f"{quarters / 4:g} * {batch * mult} / {batch} - {have / 4:g}"
    return q, expr, Fraction(quarters * mult - have, 4), "recipe_scaling"


# Level 4: large numbers and percentages, several operations.
def _l4_discount_tax(rng: random.Random) -> _Generated:
    n, p, _ = _person(rng)
    thing = rng.choice(_BIG_GOODS)
    price = rng.randint(50, 499) * 20
    off, coupon, tax = rng.randint(1, 8) * 5, rng.randint(10, 200), rng.randint(1, 15)
    sale = price * (100 - off) // 100 - coupon  # whole dollars: price is a multiple of 20
    q = (
        f"A {thing} costs ${price}. During a sale its price is reduced by {off}%, and {n} also uses a "
        f"${coupon} coupon. Then a sales tax of {tax}% is added to what {p} pays. "
        f"What is the final price, in dollars?"
    )
    expr = f"({price} * (100 - {off}) / 100 - {coupon}) * (100 + {tax}) / 100"
    return q, expr, Fraction(sale * (100 + tax), 100), "discount_coupon_tax"


def _l4_factory(rng: random.Random) -> _Generated:
    product = rng.choice(_PRODUCTS)
    jan, pct = rng.randint(100, 9000) * 100, rng.randint(1, 40)
    feb = jan * (100 + pct) // 100
    fewer = rng.randint(1000, feb // 2)
    q = (
        f"A factory made {jan} {product} in January. In February it made {pct}% more than in January, "
        f"and in March it made {fewer} fewer than in February. "
        f"How many {product} did it make in the three months together?"
    )
    expr = f"{jan} + {jan} * (100 + {pct}) / 100 + ({jan} * (100 + {pct}) / 100 - {fewer})"
    return q, expr, Fraction(jan + 2 * feb - fewer), "factory_growth"


def _l4_salary(rng: random.Random) -> _Generated:
    n, p, _ = _person(rng)
    salary, tax = rng.randint(300, 2500) * 100, rng.randint(10, 35)
    net = salary * (100 - tax) // 100
    rent = rng.randint(500, max(501, min(4000, net // 12 - 100)))
    q = (
        f"{n} earns ${salary} a year. {p.capitalize()} pays {tax}% of it in taxes and spends ${rent} "
        f"a month on rent. How many dollars does {p} have left at the end of the year?"
    )
    return q, f"{salary} * (100 - {tax}) / 100 - 12 * {rent}", Fraction(net - 12 * rent), "salary"


def _l4_warehouse(rng: random.Random) -> _Generated:
    product = rng.choice(_PRODUCTS)
    stock, days = rng.randint(1_000_000, 9_999_999), rng.randint(5, 30)
    per_day = rng.randint(1000, stock // days)
    delivery = rng.randint(10_000, 999_999)
    q = (
        f"A warehouse holds {stock} {product}. It ships {per_day} {product} a day for {days} days and "
        f"then receives a delivery of {delivery} {product}. How many {product} are in the warehouse now?"
    )
    return q, f"{stock} - {per_day} * {days} + {delivery}", Fraction(stock - per_day * days + delivery), "warehouse"


def _l4_city(rng: random.Random) -> _Generated:
    people = rng.randint(25, 24999) * 400
    kids, retired = rng.randint(2, 8) * 5, rng.randint(1, 6) * 5
    movers = rng.randint(100, 99999)
    q = (
        f"A city has {people} residents. {kids}% of them are children, and {retired}% of the adults are "
        f"retired. Next year {movers} working adults move to the city. "
        f"How many adults who are not retired live in the city then?"
    )
    expr = f"{people} * (100 - {kids}) / 100 * (100 - {retired}) / 100 + {movers}"
    answer = Fraction(people * (100 - kids) * (100 - retired), 10000) + movers
    return q, expr, answer, "city_percentages"


def _l4_interest(rng: random.Random) -> _Generated:
    n, p, _ = _person(rng)
    principal, rate, years = rng.randint(20, 9999) * 100, rng.randint(1, 9), rng.randint(2, 10)
    total = principal + principal * rate * years // 100
    withdraw = rng.randint(100, total // 2)
    q = (
        f"{n} puts ${principal} in a savings account that pays {rate}% simple interest per year. "
        f"After {years} years {p} withdraws ${withdraw}. How many dollars are left in the account?"
    )
    expr = f"{principal} + {principal} * {rate} / 100 * {years} - {withdraw}"
    return q, expr, Fraction(total - withdraw), "simple_interest"


_TEMPLATES: dict[int, tuple[Callable[[random.Random], _Generated], ...]] = {
    1: (_l1_add, _l1_give, _l1_boxes, _l1_share, _l1_speed, _l1_price),
    2: (_l2_change, _l2_boxes_loose, _l2_bake_share, _l2_savings, _l2_age),
    3: (_l3_shopping, _l3_wage, _l3_split_bill, _l3_two_legs, _l3_recipe),
    4: (_l4_discount_tax, _l4_factory, _l4_salary, _l4_warehouse, _l4_city, _l4_interest),
}
_LEVELS = (1, 2, 3, 4)
_PROCEDURAL_SIZES = {"train": 10_000, "valid": 1_000, "test": 1_000}
_PROCEDURAL_ID_RE = re.compile(r"math-(?P<split>[a-z]+)-L(?P<level>[1-4])-(?P<index>\d+)")


def _draw(split: str, level: int, index: int, attempt: int = 0) -> _Generated:
    """One generated problem; a pure function of its arguments."""
    seed = f"{split}:{level}:{index}" if attempt == 0 else f"{split}:{level}:{index}:{attempt}"
    rng = random.Random(seed)  # str seeds do not depend on PYTHONHASHSEED
    templates = _TEMPLATES[level]
    return templates[rng.randrange(len(templates))](rng)


@functools.lru_cache(maxsize=4)
def _train_questions(level: int) -> frozenset[str]:
    """Every question of the default-size train split at ``level`` (about 0.1 s to build)."""
    return frozenset(_draw("train", level, i)[0] for i in range(_PROCEDURAL_SIZES["train"]))


@functools.lru_cache(maxsize=8192)
def _procedural_task(split: str, level: int, index: int) -> Task:
    """Task ``index`` of ``split`` at ``level``: a pure function of its arguments.

    Held-out splits never repeat a question of the train split: a draw that does is redrawn
    with the next attempt number in its seed (one-step level-1 problems collide about 1 % of
    the time).
    """
    question, expression, answer, template = _draw(split, level, index)
    if split != "train":
        seen = _train_questions(level)
        attempt = 0
        while question in seen:
            attempt += 1
            question, expression, answer, template = _draw(split, level, index, attempt)
    return Task(
        id=f"math-{split}-L{level}-{index}",
        question=question,
        answer=format_answer(answer),
        solution=_solution(expression),
        meta={"dataset": "procedural", "split": split, "level": level, "template": template},
    )


class ProceduralMath(TaskSet):
    """Arithmetic word problems generated on the fly, deterministically; no files needed.

    Levels: 1 = one operation on small numbers; 2 = two operations; 3 = three operations
    with decimals and money; 4 = large numbers (4-7 digits) and percentages. With
    ``level=None`` the levels mix: task ``i`` has level ``1 + i % 4`` and is the very task
    ``i`` of that level's set. Task ``i`` is drawn from ``random.Random(f"{split}:{level}:{i}")``,
    so it is the same in every process. Answers are exact (computed with ``Fraction``) and the
    gold ``calculator`` expression evaluates to them.

    Args:
        split: ``"train"`` (10,000 tasks), ``"valid"`` or ``"test"`` (1,000 each).
        level: 1-4, or None to mix.
        size: Number of tasks, overriding the split's default.

    Example:
        >>> tasks = ProceduralMath("train", level=2)
        >>> task = tasks[17]
        >>> task.id, tasks.index_of(task.id), task == ProceduralMath("train")[17]
        ('math-train-L2-17', 17, True)
    """

    def __init__(self, split: str = "train", level: int | None = None, size: int | None = None) -> None:
        check_choice("split", split, SPLITS["procedural"])
        if level is not None and (isinstance(level, bool) or level not in _LEVELS):
            raise ValueError(f"Expected level to be one of 1, 2, 3, 4 or None; got {level!r}")
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
            raise ValueError(f"Expected size to be a positive int or None; got {size!r}")
        super().__init__("procedural" if level is None else f"procedural/L{level}", split)
        self.level = level
        self.size = _PROCEDURAL_SIZES[split] if size is None else size

    def __len__(self) -> int:
        return self.size

    def level_of(self, index: int) -> int:
        """The level of task ``index``."""
        return self.level if self.level is not None else 1 + index % 4

    def _get(self, index: int) -> Task:
        return _procedural_task(self.split, self.level_of(index), index)

    def index_of(self, task_id: str) -> int:
        m = _PROCEDURAL_ID_RE.fullmatch(task_id)
        if m is not None:
            index = int(m["index"])
            if m["split"] == self.split and index < self.size and int(m["level"]) == self.level_of(index):
                return index
        example = f"math-{self.split}-L{self.level_of(0)}-0"
        hint = ""
        if m is not None and int(m["index"]) < self.size:
            index = int(m["index"])
            hint = f" Did you mean 'math-{self.split}-L{self.level_of(index)}-{index}'?"
        raise KeyError(
            f"No task with id {task_id!r} in {self.name}/{self.split} ({self.size} tasks); ids look "
            f"like {example!r}.{hint}"
        )


# ---------------------------------------------------------------------------------------------
# One entry point
# ---------------------------------------------------------------------------------------------


def _source_files(dataset: str, split: str, subset: str | None) -> list[str]:
    """The files (relative to the data directory) that a load reads."""
    if dataset == "gsm8k":
        return [f"gsm8k/{split}.jsonl"]
    if dataset == "asdiv":
        return ["asdiv/ASDiv.xml"] + [f"asdiv/nfolds/asdiv-a/fold{k}.txt" for k in range(5)]
    if dataset == "mawps":
        files = ["mawps/mwptoolkit/mawps_source.json"]
        files += [f"mawps/mwptoolkit/{name}" for name in _MAWPS_SPLIT_FILES.values()]
        return files + ([f"mawps/tora/{subset}.jsonl"] if subset else [])
    return ["svamp/SVAMP.json"]


@functools.lru_cache(maxsize=64)
def _cached_tasks(dataset: str, split: str, subset: str | None, root: str, stamp: tuple[int, ...]) -> TaskSet:
    del stamp  # part of the cache key only: a changed file is loaded again
    if dataset == "gsm8k":
        tasks = load_gsm8k(split, root)
    elif dataset == "asdiv":
        tasks = load_asdiv(split, root)
    elif dataset == "mawps":
        tasks = load_mawps(split, subset, root)
    else:
        tasks = load_svamp(split, root)
    name = dataset if subset is None else f"{dataset}/{subset}"
    return ListTaskSet(tasks, name=name, split=split)


@functools.lru_cache(maxsize=64)
def _procedural(split: str, level: int | None, size: int | None) -> ProceduralMath:
    return ProceduralMath(split, level=level, size=size)


def math_tasks(
    dataset: str = "procedural",
    split: str = "train",
    *,
    subset: str | None = None,
    level: int | None = None,
    size: int | None = None,
    data_dir: PathArg = None,
) -> TaskSet:
    """The tasks of one math dataset split; repeated calls return the same cached object.

    Args:
        dataset: One of :data:`MATH_DATASETS`.
        split: ``train``/``test`` everywhere; ``valid`` for ``mawps`` and ``procedural``;
            ``all`` for ``asdiv``, ``mawps`` and ``svamp``.
        subset: For ``mawps`` only: one of :data:`MAWPS_SUBSETS`, or None for the whole set.
        level: For ``procedural`` only: 1-4, or None to mix levels.
        size: For ``procedural`` only: number of tasks, overriding the split's default.
        data_dir: The data directory; defaults to ``$TOOLENV_DATA``. Not used by ``procedural``.

    Raises:
        ValueError: Unknown dataset, split or subset (with a "Did you mean" hint), or an
            argument the dataset does not take.
        DataNotFoundError: No data directory set, or a needed file is missing.
    """
    check_choice("dataset", dataset, MATH_DATASETS)
    check_choice("split", split, SPLITS[dataset])
    if subset is not None:
        if dataset != "mawps":
            raise ValueError(f"Expected subset=None for dataset={dataset!r} (only 'mawps' has subsets), got {subset!r}")
        check_choice("subset", subset, MAWPS_SUBSETS)
    if dataset == "procedural":
        return _procedural(split, level, size)
    for field, value in (("level", level), ("size", size)):
        if value is not None:
            raise ValueError(
                f"Expected {field}=None for dataset={dataset!r} (only 'procedural' takes it), got {value!r}"
            )
    root = resolve_data_dir(data_dir)
    paths = [require_file(data_dir, rel) for rel in _source_files(dataset, split, subset)]
    stamp = tuple(p.stat().st_mtime_ns for p in paths)
    return _cached_tasks(dataset, split, subset, str(root.resolve()), stamp)
