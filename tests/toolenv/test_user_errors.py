"""A user's mistakes in the Python API: caught when the env is built, named, with the allowed values."""

from __future__ import annotations

import math
from pathlib import Path

import gymnasium as gym
import pytest

import toolenv
from rewards.math import numeric_match, trice_score, uses_tool
from rewards.steps import step_rewards
from toolenv.datasets import load_asdiv, load_gsm8k, load_mawps
from toolenv.datasets.base import DataFormatError


def test_a_misspelt_kwarg_names_the_accepted_ones() -> None:
    with pytest.raises(TypeError, match=r"unknown kwarg 'levle'\. Did you mean 'level'\? Accepted: .*reward_weights"):
        gym.make("toolenv/Math-v0", levle=2)
    with pytest.raises(ValueError, match="Did you mean 'level'"):
        toolenv.check_env_args("toolenv/Math-v0", {"levle": 2})


@pytest.mark.parametrize(("weights", "error", "says"), [
    ({"answer_correct": math.nan}, ValueError, "finite number"),
    ({"answer_correct": math.inf}, ValueError, "finite number"),
    ([1.0], TypeError, "mapping of term names"),
    ({"answer_corect": 1.0}, ValueError, "Did you mean 'answer_correct'"),
])
def test_reward_weights_are_finite_numbers_in_a_mapping(weights: object, error: type, says: str) -> None:
    with pytest.raises(error, match=says):
        gym.make("toolenv/Math-v0", reward_weights=weights)


def test_answer_reward_must_be_a_function() -> None:
    with pytest.raises(TypeError, match="Expected answer_reward to be a batch reward function"):
        gym.make("toolenv/Math-v0", answer_reward="exact")


def test_reward_functions_refuse_a_lone_string() -> None:
    for fn in (numeric_match, trice_score):
        with pytest.raises(TypeError, match=r"wrap a single completion in a list"):
            fn("12", answer="12")
    with pytest.raises(TypeError, match="batch"):
        uses_tool("calculator(1+1)")
    assert numeric_match(["12"], answer="12") == [1.0]


def test_step_rewards_refuse_unknown_term_names() -> None:
    with pytest.raises(ValueError, match="Did you mean 'contribution'"):
        step_rewards([{"contribution": 1.0}], {"contributon": 1.0})
    assert step_rewards([{"contribution": 1.0}], {"contribution": 0.5, "step_cost": -1.0}) == [0.5]


def test_old_versions_point_to_the_new_one() -> None:
    with pytest.raises(ValueError, match="use `toolenv/APIChain-L1-v1` instead"):
        toolenv.check_env_args("toolenv/APIChain-L1-v0")


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


GOOD = '{"question": "What is 1+1?", "answer": "1+1=<<1+1=2>>2\\n#### 2"}\n'


@pytest.mark.parametrize(("third_line", "says"), [
    ('{"question": "x", ', "line 3: not valid JSON"),
    ('{"question": "x"}', "line 3: missing key 'answer'"),
    ('{"question": 5, "answer": "#### 3"}', "line 3: malformed record"),
    ('["a list"]', "line 3: malformed record"),
])
def test_a_malformed_gsm8k_line_is_named_by_file_and_line(tmp_path: Path, third_line: str, says: str) -> None:
    _write(tmp_path / "gsm8k" / "train.jsonl", GOOD + "\n" + third_line + "\n")  # line 2 is blank
    with pytest.raises(DataFormatError, match=rf"train\.jsonl, {says}"):
        load_gsm8k("train", data_dir=tmp_path)


def test_a_truncated_asdiv_xml_is_named_by_file_and_line(tmp_path: Path) -> None:
    _write(tmp_path / "asdiv" / "ASDiv.xml", '<Machine-Reading-Corpus-File>\n<ProblemSet>\n<Problem ID="nluds-0001">\n<Body>x')
    for k in range(5):
        _write(tmp_path / "asdiv" / "nfolds" / "asdiv-a" / f"fold{k}.txt", "nluds-0001\n")
    with pytest.raises(DataFormatError, match=r"ASDiv\.xml, line \d+ column \d+: not well-formed XML"):
        load_asdiv("train", data_dir=tmp_path)


def test_a_malformed_mawps_file_names_the_file(tmp_path: Path) -> None:
    _write(tmp_path / "mawps" / "mwptoolkit" / "mawps_source.json", '[{"iIndex": 1, "sQuestion": "x"')
    for name in ("trainset", "validset", "testset"):
        _write(tmp_path / "mawps" / "mwptoolkit" / f"{name}.json", "[]")
    with pytest.raises(DataFormatError, match=r"mawps_source\.json, line 1 column \d+: not valid JSON"):
        load_mawps("train", data_dir=tmp_path)
    _write(tmp_path / "mawps" / "mwptoolkit" / "mawps_source.json", '{"not": "a list"}')
    with pytest.raises(DataFormatError, match="expected a JSON list"):
        load_mawps("train", data_dir=tmp_path)
