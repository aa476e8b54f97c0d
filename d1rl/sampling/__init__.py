"""The one diffusion sampler shared by training (rollouts), evaluation and ``d1rl generate``.

Public API: :func:`generate` -> :class:`GenerationOutput`, and :class:`SamplerConfig` (the ``sampler=`` config
group) whose ``to_kwargs()`` feeds :func:`generate`.
"""

from __future__ import annotations

from d1rl.sampling.config import SamplerConfig
from d1rl.sampling.sampler import GenerationOutput, generate
from d1rl.sampling.schedule import steps_per_block, transfer_schedule

__all__ = ["GenerationOutput", "SamplerConfig", "generate", "steps_per_block", "transfer_schedule"]
