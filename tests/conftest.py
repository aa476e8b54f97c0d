"""Test-wide set-up: offline hub, pinned threads, and paths to the shared fixtures and data."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("D1RL_SHARED", REPO_ROOT.parent / "shared")).resolve()
FIXTURES = SHARED / "fixtures"
DATA = SHARED / "data"

# One intra-op thread: the tensors in these tests are tiny, and on a 2-core machine that runs anything else torch's
# second thread spin-waits (measured: a small trainer run 0.44 s with 1 thread, 10 s with 2 under load).
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.exists():
        pytest.fail(f"../shared not found at {SHARED}; set D1RL_SHARED")
    return SHARED


@pytest.fixture(scope="session")
def fixtures_dir(shared_dir: Path) -> Path:
    return shared_dir / "fixtures"


@pytest.fixture(scope="session")
def data_dir(shared_dir: Path) -> Path:
    return shared_dir / "data"


@pytest.fixture(scope="session")
def reference(fixtures_dir: Path):
    """(cases.json dict, tensors dict) of the official reference vectors."""
    import json

    from safetensors.torch import load_file

    meta = json.loads((fixtures_dir / "reference" / "cases.json").read_text())
    tensors = load_file(str(fixtures_dir / "reference" / meta["tensor_file"]))
    return meta, tensors
