"""Shared fixtures for the model tests: one tiny model built per session into a temp dir."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from d1rl.models.tiny import build_tiny

    return build_tiny(tmp_path_factory.mktemp("tiny") / "model")
