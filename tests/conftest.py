"""Shared test helpers.

A test that needs a package the README's test command installs *fails* when it is missing, so
CI cannot go green without it. Set ``TOOLENV_ALLOW_MISSING=1`` to skip those tests instead (a
partial install on purpose).
"""

from __future__ import annotations

import os
from types import ModuleType

import pytest

__all__ = ["require"]


def require(module: str, install: str) -> ModuleType:
    """Import ``module``; fail (or skip, with ``TOOLENV_ALLOW_MISSING=1``) naming the install command."""
    try:
        return __import__(module, fromlist=["_"])
    except ImportError as e:
        message = f"{module} is not installed ({e}); install it with: {install}"
        if os.environ.get("TOOLENV_ALLOW_MISSING") == "1":
            pytest.skip(message)
        pytest.fail(message + " (or set TOOLENV_ALLOW_MISSING=1 to skip)", pytrace=False)
