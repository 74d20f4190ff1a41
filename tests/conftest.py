"""Shared test helpers.

A test that needs a package the README's test command installs *fails* when it is missing, so
CI cannot go green without it. Set ``TOOLENV_ALLOW_MISSING=1`` to skip those tests instead (a
partial install on purpose).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import ModuleType

import pytest

__all__ = ["local_http_server", "require"]


@contextlib.contextmanager
def local_http_server(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """``handler`` served on 127.0.0.1 at a free port from a daemon thread; yields ``http://127.0.0.1:PORT``, shut down on exit."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def require(module: str, install: str) -> ModuleType:
    """Import ``module``; fail (or skip, with ``TOOLENV_ALLOW_MISSING=1``) naming the install command."""
    try:
        return __import__(module, fromlist=["_"])
    except ImportError as e:
        message = f"{module} is not installed ({e}); install it with: {install}"
        if os.environ.get("TOOLENV_ALLOW_MISSING") == "1":
            pytest.skip(message)
        pytest.fail(message + " (or set TOOLENV_ALLOW_MISSING=1 to skip)", pytrace=False)
