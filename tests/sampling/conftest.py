"""Sampler tests run their tiny models on ONE torch thread.

The models here are so small that a second thread buys nothing, while on a shared 2-core machine two OpenMP
threads waiting on each other under load made the fixture tests 25x slower (1.3 s -> 31 s measured).
"""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
