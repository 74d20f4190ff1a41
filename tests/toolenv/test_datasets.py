"""Tests for toolenv.datasets: data-directory handling, the math loaders and ProceduralMath.

Tests that read real data need ``TOOLENV_DATA`` (CI points it at ``../shared/data``) and are
skipped without it; the SVAMP, error-message and procedural tests need no data.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from toolenv.datasets import (
    DATA_ENV_VAR,
    DataNotFoundError,
    ListTaskSet,
    ProceduralMath,
    load_asdiv,
    load_gsm8k,
    load_mawps,
    load_svamp,
    math_tasks,
    require_file,
    resolve_data_dir,
)
from toolenv.datasets.math import format_answer
from toolenv.tools.calculator import evaluate
from toolenv.types import Task

REPO_ROOT = Path(__file__).resolve().parents[2]
ANSWER_RE = re.compile(r"-?(0|[1-9]\d*)(\.\d*[1-9])?")


@pytest.fixture
def data_dir() -> Path:
    """The real data directory from ``TOOLENV_DATA``; skips when it is unset or missing."""
    value = os.environ.get(DATA_ENV_VAR)
    if not value:
        pytest.skip("TOOLENV_DATA not set")
    path = Path(value)
    if not path.is_dir():
        pytest.skip(f"TOOLENV_DATA={value} does not exist")
    return path


def solved_rate(tasks: Iterable[Task]) -> float:
    tasks = list(tasks)
    return sum(1 for t in tasks if t.solution) / len(tasks)


def assert_well_formed(tasks: Iterable[Task]) -> None:
    """Answers are normalised numbers; every gold expression evaluates to its answer (TRICE's check)."""
    for task in tasks:
        assert ANSWER_RE.fullmatch(task.answer), task
        assert task.question and task.question == task.question.strip(), task
        assert task.meta["dataset"] in task.id or task.meta.get("subset", "") in task.id
        if task.solution:
            (call,) = task.solution
            assert call.name == "calculator"
            value = evaluate(call.arguments["expression"])
            assert abs(round(value, 2) - round(float(Fraction(task.answer)), 2)) <= 0.01 + 1e-9, task


# --------------------------------------------------------------------------------------------
# Real data
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("split", "count", "min_rate"), [("train", 7473, 0.9), ("test", 1319, 0.9)])
def test_gsm8k_counts_and_solutions(data_dir: Path, split: str, count: int, min_rate: float) -> None:
    tasks = math_tasks("gsm8k", split, data_dir=data_dir)
    assert len(tasks) == count
    assert solved_rate(tasks) > min_rate
    assert_well_formed(tasks)
    assert tasks[5].id == f"gsm8k-{split}-5" and tasks.index_of(f"gsm8k-{split}-5") == 5


def test_gsm8k_first_train_task(data_dir: Path) -> None:
    task = load_gsm8k("train", data_dir)[0]
    assert task.id == "gsm8k-train-0"
    assert task.question.startswith("Natalia sold clips to 48 of her friends")
    assert task.answer == "72"
    assert evaluate(task.solution[0].arguments["expression"]) == 72
    assert task.meta["steps"] == ["48/2=24", "48+24=72"]
    assert "<<" not in task.meta["rationale"] and "####" not in task.meta["rationale"]


def test_gsm8k_answers_with_commas_and_signs(data_dir: Path) -> None:
    answers = {t.answer for t in math_tasks("gsm8k", "test", data_dir=data_dir)}
    assert "114200" in answers and "-10" in answers  # "114,200" and "-10" in the source
    assert not any("," in a for a in answers)


@pytest.mark.parametrize(("split", "count"), [("train", 952), ("test", 266), ("all", 2093)])
def test_asdiv_counts_and_solutions(data_dir: Path, split: str, count: int) -> None:
    tasks = math_tasks("asdiv", split, data_dir=data_dir)
    assert len(tasks) == count
    assert solved_rate(tasks) > (0.9 if split != "all" else 0.7)
    assert_well_formed(tasks)


def test_asdiv_fields(data_dir: Path) -> None:
    train, test = load_asdiv("train", data_dir), load_asdiv("test", data_dir)
    assert not {t.id for t in train} & {t.id for t in test}
    first = load_asdiv("all", data_dir)[0]
    assert first.id == "asdiv-nluds-0001"
    assert (
        first.question == "Seven red apples and two green apples are in the basket. How many apples are in the basket?"
    )
    assert first.answer == "9"
    assert first.solution[0].arguments == {"expression": "7+2"}
    assert first.meta["formula"] == "7+2=9" and first.meta["grade"] == 1
    assert first.meta["solution_type"] == "Addition"
    # Answers with a remainder ("200/28=7 r4", 8 machines) get ceil/floor expressions.
    by_id = {t.id: t for t in train + test}
    assert by_id["asdiv-nluds-0754"].answer == "8"
    assert by_id["asdiv-nluds-0754"].solution[0].arguments["expression"] == "ceil(200/28)"


@pytest.mark.parametrize(("split", "count"), [("train", 1898), ("valid", 237), ("test", 238), ("all", 2373)])
def test_mawps_counts_and_solutions(data_dir: Path, split: str, count: int) -> None:
    tasks = math_tasks("mawps", split, data_dir=data_dir)
    assert len(tasks) == count
    assert solved_rate(tasks) > 0.8
    assert_well_formed(tasks)


def test_mawps_fields_and_split_alignment(data_dir: Path) -> None:
    first = load_mawps("all", data_dir=data_dir)[0]
    assert first.id == "mawps-3238" and first.answer == "504"
    assert first.meta["equations"] == ["56*9=x"]
    assert first.solution[0].arguments == {"expression": "56*9"}
    splits = {s: {t.id for t in load_mawps(s, data_dir=data_dir)} for s in ("train", "valid", "test")}
    assert len(splits["train"] | splits["valid"] | splits["test"]) == 2373
    # MWPToolkit's ids are positions in MAWPS.json, which has mawps_source.json's order.
    source = json.loads((data_dir / "mawps/mwptoolkit/mawps_source.json").read_text())
    mawps = json.loads((data_dir / "mawps/mwptoolkit/MAWPS.json").read_text())
    assert [m["id"] for m in mawps] == list(range(1, len(source) + 1))
    assert all(float(s["lSolutions"][0]) == float(m["ans"]) for s, m in zip(source, mawps, strict=True))

    def norm(text: str) -> str:
        return re.sub(r"[^a-z0-9]", "", text.lower())

    same_text = sum(norm(s["sQuestion"]) == norm(m["original_text"]) for s, m in zip(source, mawps, strict=True))
    assert same_text / len(source) > 0.99


@pytest.mark.parametrize(
    ("subset", "count", "min_rate"),
    [("multiarith", 600, 0.99), ("addsub", 395, 0.85), ("singleeq", 508, 0.75), ("singleop", 562, 0.95)],
)
def test_mawps_subsets(data_dir: Path, subset: str, count: int, min_rate: float) -> None:
    everything = math_tasks("mawps", "all", subset=subset, data_dir=data_dir)
    assert len(everything) == count
    assert everything.name == f"mawps/{subset}"
    assert solved_rate(everything) > min_rate
    assert_well_formed(everything)
    parts = [math_tasks("mawps", s, subset=subset, data_dir=data_dir) for s in ("train", "valid", "test")]
    assert sum(len(p) for p in parts) == count
    assert set().union(*({t.id for t in p} for p in parts)) == {t.id for t in everything}
    assert everything[0].id == f"{subset}-0"


def test_math_tasks_is_cached(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DATA_ENV_VAR, str(data_dir))
    first = math_tasks("asdiv", "test")
    assert math_tasks("asdiv", "test", data_dir=data_dir) is first
    assert math_tasks("asdiv", "test", data_dir=str(data_dir)) is first
    assert math_tasks("asdiv", "train") is not first


# --------------------------------------------------------------------------------------------
# SVAMP, from a small file in the real format
# --------------------------------------------------------------------------------------------

SVAMP_ITEMS: list[dict[str, Any]] = [
    {"ID": "chal-1", "Body": "Each pack of dvds costs 76 dollars. If there is a discount of 25 dollars on each pack", "Question": "How much do you have to pay to buy each pack?", "Equation": "( 76.0 - 25.0 )", "Answer": 51.0, "Type": "Subtraction"},
    {"ID": "chal-2", "Body": "Dan had $ 3 left with him after he bought a candy bar. If he had $ 4 at the start,", "Question": "How much did the candy bar cost?", "Equation": "( 4.0 - 3.0 )", "Answer": 1.0, "Type": "Subtraction"},
    {"ID": "chal-3", "Body": "Paco had 26 salty cookies and 17 sweet cookies. He ate 14 sweet cookies and 9 salty cookies.", "Question": "How many salty cookies did Paco have left?", "Equation": "( 26.0 - 9.0 )", "Answer": 17.0, "Type": "Subtraction"},
    {"ID": "chal-4", "Body": "43 children were riding on the bus. At the bus stop some children got off the bus. Then there were 21 children left on the bus.", "Question": "How many more children were on the bus before the bus stop than there are now?", "Equation": "( 43.0 - 21.0 )", "Answer": 22.0, "Type": "Subtraction"},
    {"ID": "chal-5", "Body": "Jack had 8 action figures and 9 books on a shelf. He added 10 more books to the shelf.", "Question": "How many books were on his shelf in all?", "Equation": "( 9.0 + 10.0 )", "Answer": 19.0, "Type": "Addition"},
    {"ID": "chal-6", "Body": "Each bag contains 23 pounds of oranges.", "Question": "How many pounds of oranges are in 45 bags?", "Equation": "( 23.0 * 45.0 )", "Answer": 1035.0, "Type": "Multiplication"},
    {"ID": "chal-7", "Body": "Mary is baking a cake. The recipe calls for 12 cups of flour and 14 cups of sugar. She already put in 10 cups of flour.", "Question": "How many cups of flour does she need to add?", "Equation": "( 12.0 - 10.0 )", "Answer": 2.0, "Type": "Subtraction"},
    {"ID": "chal-8", "Body": "He has 12 apples and shares them equally among 8 friends.", "Question": "How many apples does each friend get?", "Equation": "( 12.0 / 8.0 )", "Answer": 1.5, "Type": "Common-Division"},
    {"ID": "chal-9", "Body": "A book has 3 chapters.", "Question": "How many pages does it have?", "Equation": "( 3.0 * 7.0 )", "Answer": 20.0, "Type": "Multiplication"},
    {"ID": "chal-10", "Body": "Rachel had to complete 2 pages of math homework and 3 more pages of reading.", "Question": "How many pages of reading homework did she have?", "Equation": "( 2.0 + 3.0 )", "Answer": 5.0},
]  # fmt: skip


@pytest.fixture
def svamp_dir(tmp_path: Path) -> Path:
    (tmp_path / "svamp").mkdir()
    (tmp_path / "svamp" / "SVAMP.json").write_text(json.dumps(SVAMP_ITEMS, indent=4))
    return tmp_path


def test_svamp_loader(svamp_dir: Path) -> None:
    train, test = load_svamp("train", svamp_dir), load_svamp("test", svamp_dir)
    everything = math_tasks("svamp", "all", data_dir=svamp_dir)
    assert (len(train), len(test), len(everything)) == (8, 2, 10)
    assert [t.id for t in train + test] == [t.id for t in everything]
    first = train[0]
    assert first.id == "svamp-chal-1"
    assert first.question == SVAMP_ITEMS[0]["Body"] + " " + SVAMP_ITEMS[0]["Question"]
    assert first.answer == "51"
    assert first.solution[0].arguments == {"expression": "( 76.0 - 25.0 )"}
    assert first.meta["type"] == "Subtraction" and first.meta["equation"] == "( 76.0 - 25.0 )"
    assert train[7].answer == "1.5" and train[7].solution
    assert train[8 - 8].meta["split"] == "train" and test[0].meta["split"] == "test"
    assert test[0].id == "svamp-chal-9" and test[0].solution == ()  # 3*7 is not 20: no solution
    assert test[1].meta["type"] is None and test[1].solution
    assert_well_formed(everything)


# --------------------------------------------------------------------------------------------
# Missing data and bad arguments
# --------------------------------------------------------------------------------------------


def test_no_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DATA_ENV_VAR, raising=False)
    with pytest.raises(DataNotFoundError, match="TOOLENV_DATA") as info:
        math_tasks("gsm8k", "test")
    assert "data_dir=" in str(info.value)
    with pytest.raises(DataNotFoundError):
        resolve_data_dir()
    assert isinstance(info.value, FileNotFoundError)
    # The generator needs no data.
    assert len(math_tasks("procedural", "test")) == 1000


def test_missing_file_names_setting_and_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DATA_ENV_VAR, str(tmp_path))
    expected = tmp_path / "gsm8k" / "test.jsonl"
    with pytest.raises(DataNotFoundError) as info:
        math_tasks("gsm8k", "test")
    message = str(info.value)
    assert f"Expected GSM8K file at {expected}" in message
    assert f"TOOLENV_DATA={tmp_path}" in message
    other = tmp_path / "elsewhere"
    with pytest.raises(DataNotFoundError) as info:
        load_mawps("train", "multiarith", data_dir=other)
    assert str(other / "mawps" / "mwptoolkit" / "mawps_source.json") in str(info.value)
    assert f"data_dir={other}" in str(info.value) and "does not exist" in str(info.value)
    with pytest.raises(DataNotFoundError, match="SVAMP"):
        require_file(tmp_path, "svamp/SVAMP.json")


@pytest.mark.parametrize(
    ("kwargs", "field", "suggestion"),
    [
        ({"dataset": "gsm8j"}, "dataset", "gsm8k"),
        ({"dataset": "gsm8k", "split": "tset"}, "split", "test"),
        ({"dataset": "asdiv", "split": "valid"}, "split", None),
        ({"dataset": "mawps", "split": "train", "subset": "multarith"}, "subset", "multiarith"),
        ({"dataset": "procedural", "split": "trian"}, "split", "train"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], field: str, suggestion: str | None) -> None:
    with pytest.raises(ValueError, match=f"Expected {field} to be one of") as info:
        math_tasks(**kwargs)
    if suggestion:
        assert f"Did you mean {suggestion!r}?" in str(info.value)


def test_arguments_for_other_datasets_are_refused() -> None:
    with pytest.raises(ValueError, match="subset"):
        math_tasks("gsm8k", "test", subset="multiarith")
    with pytest.raises(ValueError, match="level"):
        math_tasks("gsm8k", "test", level=2)
    with pytest.raises(ValueError, match="level"):
        ProceduralMath("train", level=5)
    with pytest.raises(ValueError, match="size"):
        ProceduralMath("train", size=0)


def test_list_task_set() -> None:
    tasks = ListTaskSet([Task(f"t-{i}", f"q{i}", str(i)) for i in range(5)], name="t", split="test")
    assert len(tasks) == 5 and tasks[-1].id == "t-4" and [t.id for t in tasks[1:3]] == ["t-1", "t-2"]
    assert tasks.index_of("t-3") == 3
    with pytest.raises(KeyError, match="Did you mean 't-3'"):
        tasks.index_of("t-3x")
    with pytest.raises(IndexError):
        tasks[5]
    with pytest.raises(ValueError, match="unique"):
        ListTaskSet([Task("a", "q", "1"), Task("a", "q", "1")], name="t", split="test")


def test_format_answer() -> None:
    assert format_answer(504.0) == "504"
    assert format_answer(Fraction(1, 2)) == "0.5"
    assert format_answer(-3) == "-3"
    assert format_answer(Fraction(5, 6)) == "0.8333333333"
    assert format_answer(0.30000000000000004) == "0.3"


# --------------------------------------------------------------------------------------------
# ProceduralMath
# --------------------------------------------------------------------------------------------


def test_procedural_sizes_and_ids() -> None:
    assert len(ProceduralMath("train")) == 10_000 and len(ProceduralMath("test")) == 1_000
    assert len(ProceduralMath("train", level=3, size=50)) == 50
    mixed = math_tasks("procedural", "train")
    assert [mixed[i].meta["level"] for i in range(8)] == [1, 2, 3, 4, 1, 2, 3, 4]
    assert mixed[6] == ProceduralMath("train", level=3)[6]
    assert mixed[6].id == "math-train-L3-6"
    assert mixed[-1].id == "math-train-L4-9999"
    with pytest.raises(IndexError):
        mixed[10_000]


def test_procedural_is_deterministic() -> None:
    a, b = ProceduralMath("train", level=2), ProceduralMath("train", level=2)
    assert [a[i] for i in range(50)] == [b[i] for i in range(50)]
    assert ProceduralMath("test", level=2)[0] != a[0]
    code = (
        "import json; from toolenv.datasets import ProceduralMath; "
        "print(json.dumps([ProceduralMath('train', level=l)[i].to_dict() for l in (1, 2, 3, 4) for i in (0, 17, 9999)]))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(REPO_ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    here = [ProceduralMath("train", level=lvl)[i].to_dict() for lvl in (1, 2, 3, 4) for i in (0, 17, 9999)]
    assert json.loads(out.stdout) == here


@pytest.mark.parametrize("level", [1, 2, 3, 4])
def test_procedural_solutions_match_answers(level: int) -> None:
    tasks = ProceduralMath("train", level=level)
    templates = set()
    for i in range(2000):
        task = tasks[i]
        assert task.meta == {
            "dataset": "procedural",
            "split": "train",
            "level": level,
            "template": task.meta["template"],
        }
        assert ANSWER_RE.fullmatch(task.answer), task
        value = evaluate(task.solution[0].arguments["expression"])
        assert abs(value - float(Fraction(task.answer))) <= 1e-6 * max(1.0, abs(value)), task
        templates.add(task.meta["template"])
    assert len(templates) >= 5
    questions = {tasks[i].question for i in range(2000)}
    assert len(questions) >= 0.99 * 2000


def test_procedural_templates() -> None:
    tasks = ProceduralMath("train")
    templates = {tasks[i].meta["template"] for i in range(4000)}
    assert len(templates) >= 12
    level4 = [ProceduralMath("test", level=4)[i] for i in range(200)]
    assert any("%" in t.question for t in level4)
    assert any(re.search(r"\d{4,7}", t.question) for t in level4)
    level3 = [ProceduralMath("test", level=3)[i] for i in range(200)]
    assert any(re.search(r"\$\d+\.\d\d", t.question) for t in level3)


def test_procedural_index_of() -> None:
    mixed, level2 = ProceduralMath("test"), ProceduralMath("test", level=2)
    for i in (0, 1, 2, 3, 517, 999):
        assert mixed.index_of(mixed[i].id) == i
    assert level2.index_of("math-test-L2-517") == 517
    with pytest.raises(KeyError, match="Did you mean 'math-test-L2-5'"):
        mixed.index_of("math-test-L1-5")  # task 5 of the mix has level 2
    for bad in ("math-train-L2-5", "math-test-L2-1000", "gsm8k-test-5"):
        with pytest.raises(KeyError):
            level2.index_of(bad)


def test_procedural_held_out_splits_never_repeat_a_train_question() -> None:
    from toolenv.datasets import ProceduralMath

    for level in (1, 2):
        train = {t.question for t in ProceduralMath("train", level=level)}
        for split in ("test", "valid"):
            held_out = ProceduralMath(split, level=level)
            assert not train & {t.question for t in held_out}
