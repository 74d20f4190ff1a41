from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import gymnasium as gym
import pytest

import toolenv  # noqa: F401  (registers the ids)
from toolenv.datasets import DataNotFoundError


def make_or_skip(env_id: str, **kwargs: Any) -> gym.Env:
    """``gym.make``, skipping the test cleanly when the env's data directory is absent."""
    try:
        return gym.make(env_id, **kwargs)
    except DataNotFoundError as e:
        pytest.skip(f"data not available: {str(e).splitlines()[0]}")


@pytest.fixture
def data_dir() -> Path:
    value = os.environ.get("TOOLENV_DATA")
    if not value or not Path(value).is_dir():
        pytest.skip("TOOLENV_DATA not set")
    return Path(value)
