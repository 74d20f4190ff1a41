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
    assert out.returncode == 0 and "agents: archer, bc, dpo, grpo, ppo, rft, rrhf, step-ppo" in out.stdout
    out = run("bench")
    assert out.returncode == 0 and all(f"  {name}" in out.stdout for name in ("env", "rollout", "trice", "steptool"))
    out = run("train", "nosuch")
    assert out.returncode != 0 and "Unknown agent 'nosuch'" in out.stderr


MISTAKES = [
    (["train", "ppo", "--env", "toolenv/Maht-v0"], "Did you mean 'toolenv/Math-v0'"),
    (["train", "ppo", "--kw", "levle=2"], "Did you mean 'level'"),
    (["train", "ppo", "--device", "gpu"], "'gpu'"),
    (["train", "ppo", "--model", "runs/nothing/here"], "does not exist"),
    (["train", "ppo", "--model", "smollm2-135mm"], "Did you mean 'smollm2-135m'"),
    (["train", "ppo", "--lr", "nan"], "Expected lr to be a finite number"),
    (["train", "ppo", "--out", __file__], "is a file"),
    (["train", "nosuch.agent"], "Cannot import agent module 'nosuch.agent'"),
    (["train", "ppoo"], "Did you mean 'ppo'"),
    (["play", "toolenv/Math-v0", "--index", "99999999"], "options['index']"),
    (["play", "toolenv/Math-v0", "--kw", "levle=2"], "Did you mean 'level'"),
    (["eval", "--model", "smollm2-135mm", "--env", "toolenv/Math-Test-v0", "--out", "x"], "Did you mean 'smollm2-135m'"),
    (["eval", "--model", "smollm2-135m", "--env", "toolenv/Math-Test-v0", "--out", "x", "--episodes", "0"], "--episodes"),
    (["eval", "--model", "smollm2-135m", "--env", "toolenv/Math-Tset-v0", "--out", "x"], "Did you mean 'toolenv/Math-Test-v0'"),
    (["bench", "trice", "--model", "./missing-model"], "does not exist"),
    (["bench", "trice", "--bc-steps", "0"], "--bc-steps"),
    (["bench", "steptool", "--kw", "protocl=react"], "Did you mean 'protocol'"),
    (["bench", "steptool", "--lr", "nan"], "finite"),
    (["bench", "steptool", "--protocol", "jsn"], "invalid choice: 'jsn'"),
    (["bench", "ste", "--model", "nope/x/y"], "does not exist"),
    (["bench", "rollout", "--model", "smollm2-135mm"], "Did you mean 'smollm2-135m'"),
    (["bench", "env", "--episodes", "0"], "--episodes >= 1"),
    (["ste", "fliter"], "Did you mean 'filter'"),
    (["ste", "filter", "missing.jsonl"], "expected an existing JSONL file"),
    (["ste", "explore", "--apis", "apichain:get_cty", "--model", "smollm2-135m", "--out", "x.jsonl"], "Did you mean 'get_city'"),
    (["ste", "explore", "--apis", "calculator", "--model", "smollm2-135mm", "--out", "x.jsonl"], "Did you mean 'smollm2-135m'"),
]


@pytest.mark.parametrize(("argv", "says"), MISTAKES, ids=[" ".join(a) for a, _ in MISTAKES])
def test_a_mistake_is_one_line_and_no_traceback(argv: list[str], says: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = subprocess.run([sys.executable, "-m", "toolenv.cli", *argv], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 2, (out.returncode, out.stderr[-2000:])
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert says in lines[0]


def test_train_without_an_agent_is_a_usage_error() -> None:
    out = run("train")
    assert out.returncode == 2 and "usage: toolenv train AGENT" in out.stderr
    assert run("train", "--help").returncode == 0


def test_train_finds_an_agent_module_in_the_current_folder(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "mylab").mkdir()
    (tmp_path / "mylab" / "__init__.py").write_text("")
    (tmp_path / "mylab" / "agent.py").write_text(
        "from dataclasses import dataclass\nfrom pathlib import Path\nfrom agents.config import TrainConfig\n\n"
        "@dataclass\nclass Config(TrainConfig):\n    pass\n\n"
        "def train(cfg):\n    Path(cfg.out).mkdir(parents=True, exist_ok=True)\n    return Path(cfg.out)\n"
    )
    out = subprocess.run([sys.executable, "-m", "toolenv.cli", "train", "mylab.agent", "--out", "result"],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert (tmp_path / "result").is_dir()
    # the hint evaluates on the held-out variant, not on the training env
    assert "--env toolenv/Math-Test-v0" in out.stdout


def test_each_agent_help_shows_its_own_defaults() -> None:
    out = run("train", "step-ppo", "--help")
    assert out.returncode == 0
    text = " ".join(out.stdout.split())
    assert "(default: 'runs/step-ppo')" in text and "(default: 'step')" in text
    assert "--kw KEY=VALUE" in text and "--env-kwargs" not in text


def test_play_offers_every_protocol() -> None:
    from toolenv.protocols import PROTOCOLS

    text = run("play", "--help").stdout
    for name in PROTOCOLS:
        assert name in text
