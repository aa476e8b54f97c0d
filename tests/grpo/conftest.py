"""Makes tests/grpo importable by module name (grpo_helpers, and grpo_test_rewards for task.extra_rewards)."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
