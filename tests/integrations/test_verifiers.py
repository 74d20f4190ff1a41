"""toolenv in verifiers v1: the taskset and env load as verifiers builds them; an episode records each term by name.

Two routes: a scripted player with verifiers' own ``Segment`` and ``Trace`` types driving the env's
``run`` in-process, and verifiers' real runtime — ``vf-eval`` with its ``null`` chat harness (a
program ``uv`` prepares from PyPI) in a subprocess runtime, talking to a scripted OpenAI-compatible
server on 127.0.0.1 that plays each task's gold actions after one malformed turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import gymnasium as gym
import pytest

vf = pytest.importorskip("verifiers.v1")
from verifiers.v1.agent import AssistantMessage, Segment  # noqa: E402

import toolenv  # noqa: E402, F401
from tests.conftest import local_http_server  # noqa: E402
from toolenv.integrations.verifiers import load_environment  # noqa: E402


class ScriptedPlayer:
    """verifiers' ``agents.player`` for one episode: replies from a script, user turns recorded."""

    def __init__(self, replies: list[str]) -> None:
        self.replies = list(replies)
        self.user_turns: list[str | None] = []
        self.trace = vf.Trace.model_construct(rewards={}, metrics={}, info={})

    @contextlib.asynccontextmanager
    async def interaction(self, task: Any) -> AsyncIterator[Any]:
        player = self

        class Interaction:
            trace = player.trace

            async def turn(self, message: str | None = None) -> Segment:
                player.user_turns.append(message)
                if not player.replies:
                    return Segment(messages=[], terminated=True)
                return Segment(messages=[AssistantMessage(content=player.replies.pop(0))])

        yield Interaction()


class Agents:
    def __init__(self, player: ScriptedPlayer) -> None:
        self.player = player


def test_taskset_holds_the_envs_tasks_with_its_prompts() -> None:
    env = load_environment("toolenv/APIChain-L1-v1", episodes=4)
    tasks = list(env.taskset.load())
    reference = gym.make("toolenv/APIChain-L1-v1")
    _, info = reference.reset(options={"index": 2})
    assert len(tasks) == 4 and tasks[2].data.prompt == info["prompt"] and tasks[2].data.system_prompt == reference.unwrapped.system_prompt
    with pytest.raises(ValueError, match="Unknown env id"):
        load_environment("toolenv/APIChain-L1-v9")


def test_an_episode_records_each_reward_term_by_name() -> None:
    env = load_environment("toolenv/APIChain-L1-v1", episodes=3)
    task = list(env.taskset.load())[1]
    reference = gym.make("toolenv/APIChain-L1-v1")
    reference.reset(options={"index": 1})
    gold = reference.unwrapped.gold_actions()
    player = ScriptedPlayer(["<tool_call>{oops</tool_call>", *gold])  # a malformed turn first: an observation, not an error
    asyncio.run(env.run(task, Agents(player)))
    rewards = {name: r.score for name, r in player.trace.rewards.items()}
    returns = [reference.step(a)[1] for a in gold]
    assert set(rewards) == set(reference.unwrapped.reward_weights)  # every term, by name
    assert rewards["format_error"] == pytest.approx(-0.1) and sum(rewards.values()) == pytest.approx(sum(returns) - 0.1)
    assert player.trace.metrics["success"] == 1.0 and player.trace.metrics["num_format_errors"] == 1.0
    assert player.user_turns[0] is None and player.user_turns[1].startswith("Invalid action")  # the model opens; observations answer
    assert player.trace.info["toolenv"]["step_rewards"] is not None


@contextlib.contextmanager
def scripted_openai_server(script: dict[str, list[str]]) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """An OpenAI-compatible chat server on 127.0.0.1: the reply is ``script[first user message][assistant turns so far]``.

    Streams (server-sent events) when asked, as verifiers' harness does; yields its base URL and the request bodies it saw.
    """
    requests: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            requests.append(body)
            messages = body["messages"]
            first = next(m["content"] for m in messages if m["role"] == "user")
            turn = sum(m["role"] == "assistant" for m in messages)
            replies = script[first if isinstance(first, str) else "".join(p["text"] for p in first)]
            reply = replies[turn] if turn < len(replies) else "done"
            head = {"id": f"c{len(requests)}", "created": 0, "model": body["model"]}
            usage = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
            if not body.get("stream"):
                data = json.dumps({**head, "object": "chat.completion", "usage": usage, "choices": [
                    {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": reply}}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            chunk = {**head, "object": "chat.completion.chunk"}
            for event in ({**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": reply}, "finish_reason": None}]},
                          {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
                          {**chunk, "choices": [], "usage": usage}):
                self.wfile.write(b"data: " + json.dumps(event).encode() + b"\n\n")
            self.wfile.write(b"data: [DONE]\n\n")

        def log_message(self, *args: Any) -> None:
            pass

    with local_http_server(Handler) as url:
        yield url + "/v1", requests


def test_vf_eval_plays_the_env_through_verifiers_runtime(tmp_path: Path) -> None:
    bin_dir = Path(sys.executable).parent
    if shutil.which("uv", path=str(bin_dir)) is None and shutil.which("uv") is None:
        pytest.skip("verifiers' runtime prepares its harness with uv: pip install 'toolenv[verifiers]'")
    env_id, n = "toolenv/APIChain-L1-v1", 2
    reference = gym.make(env_id)
    script = {}
    for i in range(n):
        _, info = reference.reset(options={"index": i})
        script[str(info["prompt"])] = ["<tool_call>{oops</tool_call>", *reference.unwrapped.gold_actions()]
    with scripted_openai_server(script) as (base_url, requests):
        run = subprocess.run(
            [str(bin_dir / "vf-eval"), "toolenv_verifiers", "--env.taskset.env-id", env_id, "--env.taskset.episodes", str(n),
             "--env.player.runtime.type", "subprocess", "-m", "scripted", "--client.base-url", base_url,
             "--client.api-key-var", "SCRIPTED_KEY", "--no-push", "-o", str(tmp_path)],
            env={**os.environ, "SCRIPTED_KEY": "none", "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"},
            capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    records = [json.loads(line) for line in next(tmp_path.glob("*/traces.jsonl")).read_text().splitlines()]
    traces = {r["task"]["data"]["index"]: t for r in records for t in r["traces"]}
    assert sorted(traces) == list(range(n))
    for i, trace in traces.items():
        assert not trace.get("errors"), trace.get("errors")
        reference.reset(options={"index": i})
        gold = reference.unwrapped.gold_actions()
        returns = [reference.step("<tool_call>{oops</tool_call>")[1]] + [reference.step(a)[1] for a in gold]
        rewards = {name: r["score"] for name, r in trace["rewards"].items()}
        assert set(rewards) == set(reference.unwrapped.reward_weights)  # every term, by name, in verifiers' own record
        assert sum(rewards.values()) == pytest.approx(sum(returns)) and rewards["format_error"] == pytest.approx(-0.1)
        assert trace["metrics"]["success"] == 1.0 and trace["metrics"]["num_format_errors"] == 1.0
        assert trace["metrics"]["turns"] == len(gold) + 1
    # the env's observations reached the model as user turns: the malformed call's error first
    second_turns = [r for r in requests if sum(m["role"] == "assistant" for m in r["messages"]) == 1]
    assert len(second_turns) == n and all(r["messages"][-1]["content"].startswith("Invalid action") for r in second_turns)
