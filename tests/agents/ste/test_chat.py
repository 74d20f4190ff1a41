"""The chat-model interface: scripted replies, an OpenAI-compatible server (a local stub), a tiny local model."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from agents.ste.chat import (
    ChatModel,
    LocalChatModel,
    OpenAIChatModel,
    ScriptedChatModel,
    cut_at_stop,
    is_prefill,
    load_chat_model,
)
from tests.conftest import local_http_server

USER = [{"role": "user", "content": "hello"}]


def test_cut_at_stop_takes_the_earliest_stop() -> None:
    assert cut_at_stop("a Thought: b\nObservation: c", ["\nObservation:", "Thought:"]) == "a "
    assert cut_at_stop("abc", []) == "abc"
    assert cut_at_stop("abc", [""]) == "abc"


# --------------------------------------------------------------------------- scripted
def test_scripted_replies_in_order_and_records() -> None:
    m = ScriptedChatModel(["one\nObservation: x", "two"])
    assert isinstance(m, ChatModel)
    out = m.chat([USER, [{"role": "user", "content": "again"}]], max_new_tokens=7, stop=["\nObservation:"])
    assert out == ["one", "two"]
    assert m.conversations == [USER, [{"role": "user", "content": "again"}]]
    assert m.calls == [{"n": 2, "max_new_tokens": 7, "temperature": 0.0, "stop": ("\nObservation:",)}]
    assert m.remaining == 0
    with pytest.raises(RuntimeError, match="ran out of replies"):
        m.chat([USER])


def test_scripted_function_of_the_conversation_and_copies() -> None:
    conv = [{"role": "user", "content": "ping"}]
    m = ScriptedChatModel(lambda c: c[-1]["content"].upper())
    assert m.chat([conv]) == ["PING"]
    conv[0]["content"] = "changed"
    assert m.conversations[0][0]["content"] == "ping"


def test_scripted_prefill_passes_through() -> None:
    conv = [{"role": "user", "content": "2+3?"}, {"role": "assistant", "content": "Final Answer:"}]
    m = ScriptedChatModel([" 5\nObservation: x"])
    assert is_prefill(conv) and not is_prefill(conv[:1]) and not is_prefill([])
    assert m.chat([conv], stop=["\nObservation:"]) == [" 5"]  # the scripted reply is the continuation
    assert m.conversations == [conv]


def test_bad_request_arguments() -> None:
    m = ScriptedChatModel(["x"])
    with pytest.raises(ValueError, match="temperature"):
        m.chat([USER], temperature=-1)
    with pytest.raises(ValueError, match="max_new_tokens"):
        m.chat([USER], max_new_tokens=0)


# --------------------------------------------------------------------------- OpenAI-compatible server
class _Stub:
    """Answers chat completions; a script of status codes makes it fail first."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.fail_with: list[int] = []
        self.lock = threading.Lock()

    def handler(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with stub.lock:
                    stub.requests.append(body)
                    stub.headers.append(dict(self.headers))
                    status = stub.fail_with.pop(0) if stub.fail_with else 200
                if self.path != "/v1/chat/completions":
                    status = 404
                if status != 200:
                    payload = json.dumps({"error": {"message": f"status {status}"}}).encode()
                else:
                    reply = "echo: " + body["messages"][-1]["content"] + "\nObservation: hallucinated"
                    payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": reply}}]}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        return Handler


@pytest.fixture
def server() -> Iterator[tuple[str, _Stub]]:
    stub = _Stub()
    with local_http_server(stub.handler()) as url:
        yield url + "/v1", stub


def test_openai_chat_round_trip(server: tuple[str, _Stub], monkeypatch: pytest.MonkeyPatch) -> None:
    url, stub = server
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    m = OpenAIChatModel("served", url + "/", backoff=0.0)
    convs = [
        [{"role": "system", "content": "s"}, {"role": "user", "content": f"q{i}"},
         {"role": "assistant", "content": "a"}, {"role": "tool", "content": f"out{i}"}]
        for i in range(5)
    ]
    out = m.chat(convs, max_new_tokens=9, temperature=0.5, stop=["\nObservation:"])
    assert out == [f"echo: Observation: out{i}" for i in range(5)]  # order kept; cut at the stop string
    body = stub.requests[0]
    assert body["model"] == "served" and body["max_tokens"] == 9 and body["temperature"] == 0.5
    assert body["stop"] == ["\nObservation:"]
    assert [msg["role"] for msg in body["messages"]] == ["system", "user", "assistant", "user"]
    assert stub.headers[0]["Authorization"] == "Bearer sk-test"
    assert m.name == "served"


def test_openai_prefill_flags_only_when_prefilling(server: tuple[str, _Stub]) -> None:
    url, stub = server
    m = OpenAIChatModel("served", url, backoff=0.0, concurrency=1)
    prefilled = USER + [{"role": "assistant", "content": "Thought:"}]
    assert m.chat([USER, prefilled], stop=["\nObservation:"]) == ["echo: hello", "echo: Thought:"]
    plain, continued = stub.requests
    assert "continue_final_message" not in plain and "add_generation_prompt" not in plain
    assert continued["continue_final_message"] is True and continued["add_generation_prompt"] is False
    assert continued["messages"][-1] == {"role": "assistant", "content": "Thought:"}  # sent last, as it is


def test_openai_retries_rate_limits_and_server_errors(server: tuple[str, _Stub]) -> None:
    url, stub = server
    stub.fail_with = [429, 503]
    m = OpenAIChatModel("served", url, api_key="k", backoff=0.0, max_retries=2)
    assert m.chat([USER]) == ["echo: hello\nObservation: hallucinated"]
    assert len(stub.requests) == 3


def test_openai_gives_up_with_a_clear_error(server: tuple[str, _Stub]) -> None:
    url, stub = server
    stub.fail_with = [500, 500, 500]
    m = OpenAIChatModel("served", url, api_key="k", backoff=0.0, max_retries=1)
    with pytest.raises(RuntimeError, match=r"HTTP 500.*gave up after 2 attempts"):
        m.chat([USER])


def test_openai_client_errors_are_not_retried(server: tuple[str, _Stub]) -> None:
    url, stub = server
    stub.fail_with = [401]
    m = OpenAIChatModel("served", url, api_key="bad", backoff=0.0)
    with pytest.raises(RuntimeError, match="HTTP 401.*status 401"):
        m.chat([USER])
    assert len(stub.requests) == 1
    with pytest.raises(RuntimeError, match="HTTP 404"):
        OpenAIChatModel("served", url.removesuffix("/v1"), backoff=0.0).chat([USER])


def test_openai_unreachable_server() -> None:
    m = OpenAIChatModel("served", "http://127.0.0.1:9/v1", backoff=0.0, max_retries=1, timeout=2)
    with pytest.raises(RuntimeError, match="could not reach"):
        m.chat([USER])
    with pytest.raises(ValueError, match="base_url"):
        OpenAIChatModel("served", "localhost:8000")


# --------------------------------------------------------------------------- local model
def test_local_chat_greedy_batched_equals_one_by_one() -> None:
    from tests.agents.conftest import tiny_policy

    m = LocalChatModel(tiny_policy(lora=False), name="tiny", batch_size=2)
    convs = [
        [{"role": "user", "content": "How many apples?"}],
        [{"role": "system", "content": "You can use these tools"}, {"role": "user", "content": "12*7"},
         {"role": "assistant", "content": "Action: calculator"}, {"role": "tool", "content": "84"}],
        [{"role": "user", "content": "0 1 2"}],
    ]
    batched = m.chat(convs, max_new_tokens=6)
    assert len(batched) == 3 and all(isinstance(r, str) for r in batched)
    assert batched == [m.chat([c], max_new_tokens=6)[0] for c in convs]
    assert m.chat(convs, max_new_tokens=6) == batched  # greedy is deterministic
    sampled = m.chat(convs, max_new_tokens=6, temperature=1.0)
    assert len(sampled) == 3
    assert m.chat([], max_new_tokens=6) == []


def test_local_chat_cuts_at_stop_strings() -> None:
    from tests.agents.conftest import tiny_policy

    m = LocalChatModel(tiny_policy(lora=False))
    free = m.chat([USER], max_new_tokens=12)[0]
    if len(free) > 2:
        stop = free[1:3]
        cut = m.chat([USER], max_new_tokens=12, stop=[stop])[0]
        assert stop not in cut and free.startswith(cut)


def test_local_chat_prefill_continues_the_prefix() -> None:
    import torch

    from agents.rollout import ChatFormat
    from tests.agents.conftest import tiny_policy

    policy = tiny_policy(lora=False)
    m = LocalChatModel(policy, batch_size=2)
    prefix = "Thought: I should call f.\nAction: f\nAction Input: {"
    conv = [{"role": "system", "content": "tools"}, {"role": "user", "content": "12*7"}]
    replies = m.chat([conv + [{"role": "assistant", "content": prefix}], conv], max_new_tokens=8)
    # by hand: the template's prompt with the generation prompt, then the prefix's plain tokens
    fmt = ChatFormat(policy.tokenizer)
    ids = fmt.prompt_ids(conv) + fmt.encode(prefix)
    with torch.no_grad():
        out = policy.model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                    max_new_tokens=8, do_sample=False, eos_token_id=policy.eos_token_ids,
                                    pad_token_id=policy.tokenizer.pad_token_id)
    new = out[0, len(ids):].tolist()
    eos = set(policy.eos_token_ids)
    new = new[: next((i + 1 for i, t in enumerate(new) if t in eos), len(new))]
    whole = policy.tokenizer.decode(ids[-len(fmt.encode(prefix)):] + new, skip_special_tokens=True)
    assert whole.startswith(prefix)
    assert replies[0] == whole[len(prefix):]  # only the continuation
    assert replies[1] == m.chat([conv], max_new_tokens=8)[0]  # a plain conversation in the same batch is unchanged


def test_load_chat_model(tiny_model_dir: Path) -> None:
    local = load_chat_model(str(tiny_model_dir), device="cpu")
    assert isinstance(local, LocalChatModel) and local.name == str(tiny_model_dir)
    assert local.chat([USER], max_new_tokens=3)[0] is not None
    remote = load_chat_model("gpt-x", base_url="http://localhost:1/v1", api_key="k")
    assert isinstance(remote, OpenAIChatModel)
    with pytest.raises(ValueError, match="backend"):
        load_chat_model(str(tiny_model_dir), backend="tgi")
