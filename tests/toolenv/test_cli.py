"""The ``toolenv`` command line, run as a person would: through a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import toolenv


def run(*args: str, stdin: str = "", env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "toolenv.cli", *args],
        input=stdin, capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})},
    )


def test_list_shows_every_id_with_tools_and_datasets() -> None:
    out = run("list")
    assert out.returncode == 0, out.stderr
    for env_id in toolenv.ENV_INFO:
        assert env_id in out.stdout
    assert "tools: calculator; datasets: procedural:train" in out.stdout
    parsed = json.loads(run("list", "--json").stdout)
    assert {e["id"] for e in parsed} == set(toolenv.ENV_INFO)


def test_list_does_not_import_torch() -> None:
    code = "import sys; from toolenv.cli import main; main(['list']); assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


def test_play_an_episode_to_success() -> None:
    first = run("play", "toolenv/Math-v0", "--seed", "3", "--show-answer", stdin="")
    answer = first.stdout.split("[gold answer: ")[1].split(";")[0]
    out = run("play", "toolenv/Math-v0", "--seed", "3", stdin=f"calculator(1+1)\n{answer}\n")
    assert out.returncode == 0, out.stderr
    assert "Given a math problem" in out.stdout
    assert "reward +0.00" in out.stdout and "reward +1.00  (answer_correct +1.00)" in out.stdout
    assert "episode over: solved" in out.stdout


def test_play_react_with_escaped_newlines_and_bad_input() -> None:
    stdin = "garbage\\nmore\nAction: calculator\\nAction Input: {\"expression\": \"6*7\"}\nFinal Answer: 1\n"
    out = run("play", "toolenv/Math-v0", "--protocol", "react", "--index", "0", stdin=stdin)
    assert out.returncode == 0, out.stderr
    assert "Invalid action: Could not find 'Action:'" in out.stdout and "format_error -0.10" in out.stdout
    assert "Observation: 42" in out.stdout and "episode over" in out.stdout


def test_play_unknown_id_suggests() -> None:
    out = run("play", "toolenv/Mat-v0", stdin="")
    assert out.returncode != 0 and "Did you mean 'toolenv/Math-v0'?" in out.stderr


def test_play_missing_data_names_the_setting(tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = run("play", "toolenv/GSM8K-v0", stdin="", env={"TOOLENV_DATA": str(tmp_path)})
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert out.stderr.startswith("error: cannot make toolenv/GSM8K-v0:") and "TOOLENV_DATA" in out.stderr and "gsm8k" in out.stderr


@pytest.mark.slow
def test_bench_env_prints_a_table() -> None:
    out = run("bench", "env", "--env", "toolenv/Math-v0", "--episodes", "300")
    assert out.returncode == 0, out.stderr
    assert "| toolenv/Math-v0 | trice |" in out.stdout and "| toolenv/Math-v0 | json |" in out.stdout


def test_train_and_bench_help_list_the_choices() -> None:
    out = run("train", "--help")
    assert out.returncode == 0 and "agents: bc, dpo, grpo, ppo, rrhf, step-ppo" in out.stdout
    out = run("bench")
    assert out.returncode == 0 and all(f"  {name}" in out.stdout for name in ("env", "rollout", "trice", "steptool"))
    out = run("train", "nosuch")
    assert out.returncode != 0 and "Unknown agent 'nosuch'" in out.stderr
