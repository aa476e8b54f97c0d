"""``SamplerConfig``: the schema of the ``sampler=`` config group (presets in ``configs/sampler/``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch

from d1rl.sampling.remasking import REMASKING_STRATEGIES
from d1rl.sampling.sampler import NOISE_LAYOUTS, check_fast_options
from d1rl.sampling.schedule import STEPS_RULES, num_blocks_for, steps_per_block

_DTYPES = {
    "float64": torch.float64,
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


def _dtype(name: Optional[str], key: str) -> Optional[torch.dtype]:
    if name is None:
        return None
    if name not in _DTYPES:
        raise ValueError(f"sampler.{key}: unknown dtype {name!r}; expected one of {sorted(_DTYPES)} or null")
    return _DTYPES[name]


@dataclass
class SamplerConfig:
    """Settings of the masked-diffusion sampler (:func:`d1rl.sampling.generate`).

    Defaults are d1's evaluation settings (d1 ``eval/eval.py`` + ``eval/generate.py``); the rollout settings of
    diffu-GRPO are the ``d1_rollout`` preset. Source files: LLaDA ``generate.py`` (ML-GSAI/LLaDA, Mar 2025 d5634da
    and HEAD), d1 ``eval/generate.py`` and ``diffu-grpo/diffu_grpo_trainer.py`` (@837888f).

    Attributes:
        gen_length: tokens to generate (d1 eval.py default 128, run at 128/256/512; rollouts 256 =
            max_completion_length in d1 train.yaml).
        block_length: semi-autoregressive block size (d1 eval.py and train.yaml: 32; LLaDA default 128).
        steps: total diffusion steps; null = gen_length // 2, which d1 eval.py FORCES (its --diffusion_steps is
            overwritten), i.e. 2 tokens per step; rollouts: 128 (d1 train.yaml diffusion_steps).
        temperature: 0 = greedy (d1 eval; LLaDA default); > 0 = Gumbel-max sampling (d1 rollouts: 0.9, the
            DiffuGRPOConfig default, not overridden by train.yaml).
        remasking: "low_confidence" (all d1 runs, LLaDA default) or "random" (LLaDA option).
        cfg_scale: classifier-free guidance scale, 0 = off (default everywhere in LLaDA and d1).
        steps_rule: "d1" = max(1, steps // num_blocks) steps per block (both d1 samplers); "strict" = reject steps
            not divisible by the number of blocks (LLaDA asserts it).
        noise_dtype: dtype of the Gumbel noise and logits (LLaDA float64; d1 eval float32; d1 trainer bf16).
        confidence_dtype: dtype of the confidence softmax (LLaDA Mar-2025 float64; null = logits dtype as d1 and
            LLaDA after commit f51cb17).
        logits_eos_inf: forbid EOS by setting its logit to -inf (LLaDA HEAD generate.py option; off in d1).
        confidence_eos_eot_inf: rank EOS/EOT candidates last (LLaDA HEAD generate.py option; off in d1).
        noise_layout: "block" = draw noise for the current block only (ours); "sequence" = draw it for the whole
            sequence like the official code, so a seeded generator reproduces its random stream.
        force_eval: sample in eval() mode (ours); false keeps the model's mode (d1's trainer samples in train()
            mode, with LoRA dropout active).
        mask_id: mask token id; null = the model config's mask_token_id (LLaDA-8B: 126336).
        eos_id: EOS id for the EOS options; null = from the model/tokenizer (LLaDA-8B: 126081).
        eot_id: EOT id for confidence_eos_eot_inf; null = from the model/tokenizer (LLaDA-8B: 126348).
        cache: "none" (exact: a full forward every step, as LLaDA and d1) or Fast-dLLM's approximate block-wise KV
            cache (arXiv 2505.22618): "prefix" (reuse the keys/values of the prompt and finished blocks inside a
            block) or "dual" (also those of the positions after the block). Off ("none") in the d1 presets; "dual"
            in the ``fast`` preset.
        cache_refresh: with a cache, also rebuild it by a full forward at every N-th step of a block (ours; 0 =
            only at block boundaries, as Fast-dLLM; 1 = every step, i.e. exact).
        threshold: null (the scheduled number of tokens per step, as LLaDA and d1) or confidence-threshold
            parallel decoding in (0, 1] (Fast-dLLM): each step unmasks every masked position of the block whose
            confidence exceeds it, at least one. The steps per block then depend on the data and ``steps`` is
            not used. Off in the d1 presets; the ``fast`` preset's value is measured (see fast.yaml).
    """

    gen_length: int = 128
    block_length: int = 32
    steps: Optional[int] = None
    temperature: float = 0.0
    remasking: str = "low_confidence"
    cfg_scale: float = 0.0
    steps_rule: str = "d1"
    noise_dtype: str = "float64"
    confidence_dtype: Optional[str] = "float64"
    logits_eos_inf: bool = False
    confidence_eos_eot_inf: bool = False
    noise_layout: str = "block"
    force_eval: bool = True
    mask_id: Optional[int] = None
    eos_id: Optional[int] = None
    eot_id: Optional[int] = None
    cache: str = "none"
    cache_refresh: int = 0
    threshold: Optional[float] = None

    def __post_init__(self) -> None:
        if self.remasking not in REMASKING_STRATEGIES:
            raise ValueError(f"sampler.remasking: {self.remasking!r} is not one of {REMASKING_STRATEGIES}")
        if self.steps_rule not in STEPS_RULES:
            raise ValueError(f"sampler.steps_rule: {self.steps_rule!r} is not one of {STEPS_RULES}")
        if self.noise_layout not in NOISE_LAYOUTS:
            raise ValueError(f"sampler.noise_layout: {self.noise_layout!r} is not one of {NOISE_LAYOUTS}")
        if self.temperature < 0:
            raise ValueError(f"sampler.temperature must be >= 0, got {self.temperature}")
        if self.cfg_scale < 0:
            raise ValueError(f"sampler.cfg_scale must be >= 0, got {self.cfg_scale}")
        if self.steps is not None and self.steps <= 0:
            raise ValueError(f"sampler.steps must be positive or null (= gen_length // 2), got {self.steps}")
        _dtype(self.noise_dtype, "noise_dtype")
        _dtype(self.confidence_dtype, "confidence_dtype")
        check_fast_options(self.cache, self.threshold, self.remasking, self.noise_layout, prefix="sampler.",
                           cache_refresh=self.cache_refresh)
        try:
            blocks = num_blocks_for(self.gen_length, self.block_length)
            steps_per_block(self.resolved_steps(), blocks, self.steps_rule)
        except ValueError as exc:
            raise ValueError(f"sampler: {exc}") from exc

    def resolved_steps(self) -> int:
        """``steps``, or ``gen_length // 2`` when null (d1 eval.py's forced value; at least 1)."""
        return self.steps if self.steps is not None else max(1, self.gen_length // 2)

    def to_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :func:`d1rl.sampling.generate` (besides model, input_ids, attention_mask,
        generator)."""
        return {
            "gen_length": self.gen_length,
            "block_length": self.block_length,
            "steps": self.resolved_steps(),
            "temperature": self.temperature,
            "remasking": self.remasking,
            "cfg_scale": self.cfg_scale,
            "steps_rule": self.steps_rule,
            "noise_dtype": _dtype(self.noise_dtype, "noise_dtype"),
            "confidence_dtype": _dtype(self.confidence_dtype, "confidence_dtype"),
            "logits_eos_inf": self.logits_eos_inf,
            "confidence_eos_eot_inf": self.confidence_eos_eot_inf,
            "noise_layout": self.noise_layout,
            "force_eval": self.force_eval,
            "mask_id": self.mask_id,
            "eos_id": self.eos_id,
            "eot_id": self.eot_id,
            "cache": self.cache,
            "cache_refresh": self.cache_refresh,
            "threshold": self.threshold,
        }
