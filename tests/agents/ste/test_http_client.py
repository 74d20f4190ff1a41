"""The OpenAI-compatible client against a misbehaving server on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from agents.ste.chat import OpenAIChatModel
from tests.conftest import local_http_server

Behaviour = Callable[[BaseHTTPRequestHandler], None]


def _reply(content: Any) -> bytes:
    return json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()


class _Server:
    def __init__(self) -> None:
        self.behaviours: list[Behaviour] = []
        self.seen_auth: list[str | None] = []
        self.calls = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                server.seen_auth.append(self.headers.get("Authorization"))
                behave = server.behaviours[min(server.calls, len(server.behaviours) - 1)]
                server.calls += 1
                behave(self)

            do_GET = do_POST  # noqa: N815

        self.handler = Handler
        self.url = ""


@pytest.fixture
def server() -> Iterator[_Server]:
    s = _Server()
    with local_http_server(s.handler) as url:
        s.url = url + "/v1"
        yield s


def ok(content: Any) -> Behaviour:
    def behave(h: BaseHTTPRequestHandler) -> None:
        body = _reply(content)
        h.send_response(200)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)
    return behave


def trickle(h: BaseHTTPRequestHandler) -> None:
    body = _reply("slow")
    h.send_response(200)
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    try:
        for b in body:
            h.wfile.write(bytes([b]))
            h.wfile.flush()
            time.sleep(0.1)
    except OSError:
        pass


def huge(h: BaseHTTPRequestHandler) -> None:
    h.send_response(200)
    h.end_headers()
    try:
        for _ in range(200):
            h.wfile.write(b" " * 65536)
    except OSError:
        pass


def bad_status(h: BaseHTTPRequestHandler) -> None:
    h.wfile.write(b"NOT HTTP AT ALL\r\n\r\n")
    h.close_connection = True


def cut_body(h: BaseHTTPRequestHandler) -> None:
    h.send_response(200)
    h.send_header("Content-Length", "1000")
    h.end_headers()
    h.wfile.write(b'{"choices": [')
    h.close_connection = True


def deep_json(h: BaseHTTPRequestHandler) -> None:
    body = b"[" * 100_000 + b"]" * 100_000
    h.send_response(200)
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    h.wfile.write(body)


def redirect_to(url: str) -> Behaviour:
    def behave(h: BaseHTTPRequestHandler) -> None:
        h.send_response(307)
        h.send_header("Location", url)
        h.send_header("Content-Length", "0")
        h.end_headers()
    return behave


def _client(url: str, **kw: Any) -> OpenAIChatModel:
    return OpenAIChatModel("m", url, api_key="SECRET", backoff=0.0, **kw)


def _ask(model: OpenAIChatModel) -> str:
    return model.chat([[{"role": "user", "content": "hi"}]], max_new_tokens=8)[0]


def test_a_trickling_server_cannot_stretch_the_deadline(server: _Server) -> None:
    server.behaviours = [trickle]
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="gave up after 2 attempts"):
        _ask(_client(server.url, timeout=0.5, max_retries=1))
    assert time.monotonic() - start < 3.0  # two attempts of 0.5 s, not 0.1 s per byte x 60 bytes each


def test_a_huge_body_is_capped(server: _Server) -> None:
    server.behaviours = [huge]
    with pytest.raises(RuntimeError, match="more than 1,000,000 bytes"):
        _ask(_client(server.url, max_body_bytes=1_000_000, max_retries=0))


@pytest.mark.parametrize("broken", [bad_status, cut_body, deep_json])
def test_transport_and_decoding_failures_are_retried(server: _Server, broken: Behaviour) -> None:
    server.behaviours = [broken, ok("fine")]
    assert _ask(_client(server.url, max_retries=2)) == "fine"
    server.calls = 0
    server.behaviours = [broken]
    with pytest.raises(RuntimeError, match="gave up after 2 attempts"):
        _ask(_client(server.url, max_retries=1))


@pytest.mark.parametrize(("content", "text"), [([{"type": "text", "text": "4"}, {"type": "text", "text": "2"}], "42"),
                                                (5, "5"), (None, "")])
def test_content_is_normalised_to_text(server: _Server, content: Any, text: str) -> None:
    server.behaviours = [ok(content)]
    assert _ask(_client(server.url)) == text


def test_no_credentials_across_origins(server: _Server) -> None:
    other = _Server()
    with local_http_server(other.handler) as url:
        other.behaviours = [ok("stolen")]
        server.behaviours = [redirect_to(url.replace("127.0.0.1", "localhost") + "/v1/chat/completions")]
        with pytest.raises(RuntimeError, match="redirected .* to another origin"):
            _ask(_client(server.url, max_retries=0))
        assert other.seen_auth == []  # the key never reached the other origin
        assert server.seen_auth == ["Bearer SECRET"]


def test_a_refused_port_is_retried_then_one_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(RuntimeError, match=r"could not reach .*gave up after 2 attempts"):
        _ask(_client(f"http://127.0.0.1:{port}/v1", max_retries=1))
