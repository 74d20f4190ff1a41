"""``toolenv serve``: an env behind OpenEnv's server, played through OpenEnv's own client, several sessions at once, over MCP too."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

pytest.importorskip("openenv")
httpx = pytest.importorskip("httpx")

from openenv.core.generic_client import GenericEnvClient  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "toolenv.cli", "serve", "toolenv/Math-v0", "--port", str(port), "--max-sessions", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
        if proc.poll() is not None:
            pytest.fail(f"the server exited: {proc.stderr.read()[-2000:]}")  # type: ignore[union-attr]
    else:
        proc.kill()
        pytest.fail("the server did not come up in 60 s")
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def _client(url: str) -> object:
    return GenericEnvClient(base_url=url).sync()


def test_gold_and_malformed_episodes_with_terms_in_the_observation(server: str) -> None:
    import gymnasium as gym

    import toolenv  # noqa: F401

    gold = gym.make("toolenv/Math-v0")
    gold.reset(options={"index": 2})
    actions = gold.unwrapped.gold_actions()
    with _client(server) as env:  # type: ignore[attr-defined]
        first = env.reset(index=2)
        assert first.observation["toolenv"]["task"]["id"] == gold.unwrapped.task.id and not first.done
        results = [env.step({"text": a}) for a in actions]
        assert results[-1].done and results[-1].reward == 1.0
        episode = results[-1].observation["toolenv"]["episode"]
        assert episode["success"] and episode["terms"]["answer_correct"] == 1.0 and episode["num_tool_calls"] == len(actions) - 1
        # malformed: an unclosed call is an observation and the format_error term, never an error
        env.reset(index=2)
        bad = env.step({"text": "calculator(1+"})
        assert not bad.done and bad.reward == pytest.approx(-0.1) and bad.observation["text"].startswith("Invalid action")
        assert bad.observation["toolenv"]["reward_terms"]["format_error"] == pytest.approx(-0.1)
        # parsed calls (a trainer's tool_calls) score as the text did
        parsed = env.step({"tool_calls": [{"name": "calculator", "arguments": {"expression": "2+3"}}]})
        assert parsed.observation["text"] == "5" and parsed.observation["toolenv"]["reward_raw"]["call_succeeded"] == 1.0


def test_sessions_are_separate_envs_up_to_max_sessions_and_slots_come_back(server: str) -> None:
    a, b = _client(server), _client(server)
    with a, b:  # type: ignore[attr-defined]
        ra, rb = a.reset(index=0), b.reset(index=1)  # type: ignore[attr-defined]
        assert ra.observation["toolenv"]["task"]["id"] != rb.observation["toolenv"]["task"]["id"]
        a.step({"text": "calculator(1+1)"})  # type: ignore[attr-defined]
        assert b.step({"content": "0"}).done  # type: ignore[attr-defined]  # b's episode is its own
        assert not a.step({"text": "calculator(2+2)"}).done  # type: ignore[attr-defined]
        assert _refused(server)  # a third is refused while two are open, with OpenEnv's capacity error
    # closing freed both slots: two new sessions work
    with _client(server) as c, _client(server) as d:  # type: ignore[attr-defined]
        assert not c.reset().done and not d.reset().done
    # a client that vanishes mid-episode (killed, no close message) frees its slot too
    code = ("from openenv.core.generic_client import GenericEnvClient; import os\n"
            f"e = GenericEnvClient(base_url='{server}').sync(); e.connect(); e.reset(); e.step({{'text': 'calculator(1+1)'}}); os._exit(0)")
    for _ in range(2):
        subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    time.sleep(1.0)
    with _client(server) as c, _client(server) as d:  # type: ignore[attr-defined]
        assert not c.reset().done and not d.reset().done


def _refused(url: str) -> bool:
    """Whether a new WebSocket session gets OpenEnv's CAPACITY_REACHED error (the server sends it first, then closes)."""
    import json

    from websockets.sync.client import connect

    with connect(url.replace("http://", "ws://") + "/ws") as ws:
        reply = json.loads(ws.recv(timeout=30))
    return reply.get("type") == "error" and reply["data"].get("code") == "CAPACITY_REACHED" and reply["data"].get("max_sessions") == 2


def test_tools_are_listed_and_callable_over_mcp(server: str) -> None:
    calls = iter(range(1, 100))

    def rpc(method: str, **params: object) -> dict:
        reply = httpx.post(f"{server}/mcp", json={"jsonrpc": "2.0", "method": method, "params": params, "id": next(calls)}, timeout=30).json()
        assert "error" not in reply, reply
        return reply["result"]

    session = rpc("openenv/session/create")["session_id"]
    try:
        tools = {t["name"]: t for t in rpc("tools/list", session_id=session)["tools"]}
        schema = tools["calculator"].get("inputSchema") or tools["calculator"].get("input_schema")
        assert set(tools) == {"calculator", "final_answer"} and schema["required"] == ["expression"]
        out = rpc("tools/call", session_id=session, name="calculator", arguments={"expression": "6*7"})["structured_content"]
        assert out["output"] == "42" and out["metadata"]["reward_raw"]["call_succeeded"] == 1.0 and not out["done"]
        end = rpc("tools/call", session_id=session, name="final_answer", arguments={"answer": "42"})["structured_content"]
        assert end["done"] and "episode" in end["metadata"] and end["metadata"]["episode"]["num_tool_calls"] == 1
    finally:
        rpc("openenv/session/close", session_id=session)


def test_serve_mistakes_are_one_line() -> None:
    out = subprocess.run([sys.executable, "-m", "toolenv.cli", "serve", "toolenv/Mat-v0"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "Did you mean 'toolenv/Math-v0'" in out.stderr and "Traceback" not in out.stderr
    out = subprocess.run([sys.executable, "-m", "toolenv.cli", "serve", "toolenv/Math-v0", "--max-sessions", "0"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2 and "--max-sessions" in out.stderr
