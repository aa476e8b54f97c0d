"""How many diffusion steps each block gets, and how many tokens each step unmasks.

Both rules come from the official samplers (LLaDA ``generate.py`` and d1's two copies, see
``docs/d1-reference.md`` §1 and the fixtures README §3.2):

* the ``gen_length`` completion is split into ``gen_length / block_length`` blocks decoded left to right;
* every block gets the same number of steps ``S``. LLaDA asserts ``steps % num_blocks == 0`` (``S = steps /
  num_blocks``); d1 silently uses ``S = max(1, steps // num_blocks)``, so it may run fewer steps than asked
  (``steps_rule="d1"``, our default because d1's recipes rely on it) -- ``steps_rule="strict"`` rejects such
  settings instead, like LLaDA;
* inside a block with ``m`` masked tokens, step ``i`` unmasks ``m // S`` tokens plus one more for the first
  ``m % S`` steps (LLaDA's "number of tokens transferred per step", which follows from the linear noise
  schedule: the expected number of tokens revealed per step is constant).
"""

from __future__ import annotations

import torch

STEPS_RULES = ("d1", "strict")


def num_blocks_for(gen_length: int, block_length: int) -> int:
    """Number of semi-autoregressive blocks; ``gen_length`` must be a multiple of ``block_length``."""
    if gen_length <= 0:
        raise ValueError(f"gen_length must be positive, got {gen_length}")
    if block_length <= 0:
        raise ValueError(f"block_length must be positive, got {block_length}")
    if gen_length % block_length != 0:
        raise ValueError(
            f"gen_length ({gen_length}) must be a multiple of block_length ({block_length}) "
            "(every official LLaDA/d1 sampler requires this)"
        )
    return gen_length // block_length


def steps_per_block(steps: int, num_blocks: int, rule: str = "d1") -> int:
    """Diffusion steps run inside every block.

    ``rule="d1"``: ``max(1, steps // num_blocks)`` exactly as d1's eval and trainer samplers (so e.g. 10 steps over
    4 blocks run 2 steps per block = 8 in total, and 2 steps over 4 blocks run 1 step per block = 4 in total).
    ``rule="strict"``: LLaDA's behaviour -- ``steps`` must be a positive multiple of ``num_blocks``.
    """
    if steps <= 0:
        raise ValueError(f"steps must be positive, got {steps}")
    if rule == "d1":
        return max(1, steps // num_blocks)
    if rule == "strict":
        if steps % num_blocks != 0:
            raise ValueError(
                f"steps ({steps}) is not a multiple of the number of blocks ({num_blocks}); "
                f"steps_rule='strict' rejects this like LLaDA's generate.py. Use steps_rule='d1' to run "
                f"max(1, steps // num_blocks) = {max(1, steps // num_blocks)} steps per block as d1 does"
            )
        return steps // num_blocks
    raise ValueError(f"unknown steps_rule {rule!r}; expected one of {STEPS_RULES}")


def transfer_schedule(num_masked: torch.Tensor, steps: int) -> torch.Tensor:
    """Tokens to unmask at each step of a block, per row.

    Args:
        num_masked: (B,) integer tensor, masked positions of each row in the block.
        steps: steps in the block (``S``).

    Returns:
        (B, S) int64 tensor; row r is ``num_masked[r] // S`` everywhere plus 1 on its first ``num_masked[r] % S``
        entries, so each row sums to ``num_masked[r]`` (8 tokens over 3 steps -> 3, 3, 2).
    """
    num_masked = num_masked.to(torch.int64).reshape(-1, 1)
    base = num_masked // steps
    extra = num_masked % steps
    step_index = torch.arange(steps, device=num_masked.device).unsqueeze(0)
    return base + (step_index < extra).to(torch.int64)
