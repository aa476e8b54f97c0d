"""Training: the engine on Accelerate (:mod:`d1rl.training.engine`) and the trainers built on it (SFT in
:mod:`d1rl.training.sft`; diffu-GRPO is written on the same engine).

Config groups: ``trainer=`` (:class:`TrainerConfig`) and ``logger=`` (:class:`LoggerConfig`).
"""

from __future__ import annotations

from d1rl.training.batching import DataPosition, GlobalBatchSchedule, derive_seed, keyed_generator
from d1rl.training.config import LoggerConfig, TrainerConfig
from d1rl.training.engine import Engine, evaluation_mode

__all__ = [
    "DataPosition",
    "Engine",
    "GlobalBatchSchedule",
    "LoggerConfig",
    "TrainerConfig",
    "derive_seed",
    "evaluation_mode",
    "keyed_generator",
]
