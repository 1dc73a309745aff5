"""Tests marked ``gpu`` skip cleanly where there is no CUDA device (``pytest -m gpu``); tests
marked ``slow`` (training to a bar) get an hour instead of the default run's per-test
timeout (``timeout`` in pyproject.toml)."""

from __future__ import annotations

import pytest
import torch

SLOW_TIMEOUT_S = 3600


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "slow" in item.keywords and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(SLOW_TIMEOUT_S))
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
