"""What produced a result: code version (package version + git commit) and the device it ran on.

Every results file records these so a number can be traced back to the exact code and hardware.
"""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path
from typing import Any

_REPO_ROOT = Path(__file__).resolve().parents[2]


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(_REPO_ROOT), *args], capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def code_version() -> dict[str, Any]:
    """``{"d1rl": __version__, "git_commit": sha or None, "git_dirty": bool or None}``.

    The commit is read only when the package runs from a git checkout (an installed wheel has none).
    """
    import d1rl

    info: dict[str, Any] = {"d1rl": getattr(d1rl, "__version__", "unknown"), "git_commit": None, "git_dirty": None}
    if (_REPO_ROOT / ".git").exists():
        sha = _git("rev-parse", "HEAD")
        info["git_commit"] = sha
        if sha is not None:
            status = _git("status", "--porcelain", "--untracked-files=no")
            info["git_dirty"] = bool(status)
    return info


def device_info(device: Any = "cpu", world_size: int = 1) -> dict[str, Any]:
    """Device type/name, process count and library versions."""
    import torch

    dev = torch.device(device)
    info: dict[str, Any] = {
        "device": str(dev),
        "type": dev.type,
        "num_processes": int(world_size),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "host": platform.node(),
    }
    if dev.type == "cuda" and torch.cuda.is_available():
        info["name"] = torch.cuda.get_device_name(dev)
        info["cuda"] = torch.version.cuda
    else:
        info["name"] = platform.processor() or platform.machine()
        info["threads"] = torch.get_num_threads()
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:  # pragma: no cover
        pass
    return info
