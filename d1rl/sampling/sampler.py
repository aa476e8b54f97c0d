"""The one diffusion sampler: block-wise semi-autoregressive decoding with low-confidence (or random) remasking.

Reproduces the official LLaDA ``generate.py`` and d1's two copies of it (``eval/generate.py`` and
``DiffuGRPOTrainer.generate``) token for token in float64 (see ``tests/sampling``), and adds what they lack:
attention masks for left-padded batches (as LLaDA's newer code), an explicit ``torch.Generator``, per-position
decode steps and forward-pass / token-forward counts.

The loop, per block b and step i of that block (global step ``s``, counted over all blocks):

1. ``BlockLogits`` (``forward.py``): the logits of the current block only, from one model forward on the current
   x (a doubled batch with CFG) -- exactly (``cache="none"``) or with Fast-dLLM's approximate prefix/dual KV cache;
2. ``propose_tokens`` / ``token_confidence`` / ``ranking_key`` (``remasking.py``): candidate tokens and their
   confidence; then ``choose_positions`` (the ``schedule[r, i]`` most confident positions of each row) or, with
   ``threshold``, ``threshold_positions`` (every position above the threshold, at least the best one);
3. write the chosen candidates into x and record ``s`` as their decode step.

Fast paths (all off by default and in the d1 presets, on in ``configs/sampler/fast.yaml``): ``cache`` and
``threshold``. Both are approximations of the exact sampler (Fast-dLLM, arXiv 2505.22618), not reproductions of
d1; with them the sampler is no longer token-identical to LLaDA/d1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from d1rl.sampling.forward import CACHE_MODES, BlockLogits
from d1rl.sampling.remasking import (
    REMASKING_STRATEGIES,
    choose_positions,
    propose_tokens,
    ranking_key,
    threshold_positions,
    token_confidence,
)
from d1rl.sampling.schedule import num_blocks_for, steps_per_block, transfer_schedule

NOISE_LAYOUTS = ("block", "sequence")


@dataclass
class GenerationOutput:
    """Result of :func:`generate`.

    Attributes:
        sequences: (B, P + G) prompt (as given, padding included) followed by the generated tokens.
        decode_step: (B, G) the 0-based GLOBAL step (counted over all blocks; without ``threshold`` this is
            ``block * steps_per_block + step_in_block``) at which each generated position was unmasked (the
            fixtures' ``unmask_step``); -1 if it never was (only possible when the model predicts the mask token
            itself).
        nfe: number of model forward calls. One per step; a classifier-free-guidance step is ONE forward of a
            doubled (2B-row) batch and counts 1 (its compute is that of 2B rows).
        token_forwards: the sum over forwards of the query positions fed to the model, rows x positions (a CFG
            forward counts its 2B rows): proportional to the transformer's compute, and the measure on which the
            KV-cache modes differ (exact: every step feeds all P + G positions).
        steps_per_block: diffusion steps run inside each block (after ``steps_rule``); with ``threshold`` the
            step count depends on the data and this is the largest number any block took.
        num_blocks: ``gen_length // block_length``.
        trace: with ``record_trace=True``, (S + 1, B, P + G): ``trace[s]`` is the x fed to the model at step s and
            ``trace[S]`` the final sequences (the fixtures' ``x_trace``); otherwise None.
    """

    sequences: torch.Tensor
    decode_step: torch.Tensor
    nfe: int
    token_forwards: int
    steps_per_block: int
    num_blocks: int
    trace: torch.Tensor | None = None

    @property
    def completions(self) -> torch.Tensor:
        """(B, G) the generated tokens only."""
        return self.sequences[:, self.sequences.shape[1] - self.decode_step.shape[1] :]


class _Randomness:
    """Every random draw of the sampler, from one explicit generator.

    ``layout="block"`` (default) draws noise only for the current block. ``layout="sequence"`` draws it for the
    whole sequence and slices the block out, which consumes the generator exactly like the official samplers
    consume torch's global generator (``rand_like(logits)`` over (B, T, V), then ``rand(B, T)`` for random
    remasking): with a generator seeded like the official run, on the same device, sampled outputs match too.
    """

    def __init__(self, generator: torch.Generator | None, layout: str, batch: int, length: int, device: torch.device):
        if generator is None:
            # Never touch torch's global RNG: an unseeded private generator (non-reproducible by design).
            generator = torch.Generator(device=device)
            generator.seed()
        self.generator = generator
        self.layout = layout
        self.batch = batch
        self.length = length
        self.device = device

    def _rand(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        draws = torch.rand(shape, generator=self.generator, dtype=dtype, device=self.generator.device)
        return draws.to(self.device)

    def gumbel_uniform(self, start: int, stop: int, vocab: int, dtype: torch.dtype) -> torch.Tensor:
        if self.layout == "block":
            return self._rand((self.batch, stop - start, vocab), dtype)
        return self._rand((self.batch, self.length, vocab), dtype)[:, start:stop]

    def remasking_uniform(self, start: int, stop: int) -> torch.Tensor:
        # float32, as torch.rand's default in the official code.
        if self.layout == "block":
            return self._rand((self.batch, stop - start), torch.float32)
        return self._rand((self.batch, self.length), torch.float32)[:, start:stop]


def _adapter(model: Any, wanted: str) -> Any:
    """The model's ``d1rl.models.ModelAdapter`` (ids from its config), or an error naming what was wanted."""
    try:
        from d1rl.models import ModelAdapter

        return ModelAdapter.from_pretrained(model)
    except Exception as exc:  # noqa: BLE001 - re-raised with the reason
        raise ValueError(
            f"{wanted} was not given and could not be read from the model (d1rl.models.ModelAdapter.from_pretrained "
            f"failed: {type(exc).__name__}: {exc}); pass {wanted}=..."
        ) from exc


def _resolve_ids(
    model: Any,
    mask_id: int | None,
    eos_id: int | None,
    eot_id: int | None,
    logits_shift: int | None,
    *,
    need_eos: bool,
    need_eot: bool,
) -> tuple[int, int | None, int | None, int]:
    """Fill the ids the run needs from the model's adapter; only consult it when something is missing."""
    adapter = None
    if mask_id is None:
        adapter = _adapter(model, "mask_id")
        mask_id = adapter.mask_id
    if need_eos and eos_id is None:
        adapter = adapter or _adapter(model, "eos_id")
        eos_id = adapter.eos_id
    if need_eot and eot_id is None:
        # Optional: a vocabulary without <|eot_id|> simply has nothing to demote besides EOS.
        if adapter is None:
            try:
                adapter = _adapter(model, "eot_id")
            except ValueError:
                adapter = None
        eot_id = getattr(adapter, "eot_id", None)
    if logits_shift is None:
        logits_shift = int(getattr(adapter, "logits_shift", 0) or 0) if adapter is not None else 0
    return int(mask_id), eos_id, eot_id, logits_shift


def _check_inputs(input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> None:
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be (batch, prompt_length), got shape {tuple(input_ids.shape)}")
    if input_ids.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"input_ids must hold integer token ids, got {input_ids.dtype}")
    if attention_mask is not None and attention_mask.shape != input_ids.shape:
        raise ValueError(
            f"attention_mask shape {tuple(attention_mask.shape)} differs from input_ids shape {tuple(input_ids.shape)}"
        )


class _EvalMode:
    """Put every module in eval mode and restore each module's own flag afterwards (mixed states survive)."""

    def __init__(self, model: torch.nn.Module, enabled: bool):
        self.model = model
        self.enabled = enabled and isinstance(model, torch.nn.Module)
        self.saved: list[tuple[torch.nn.Module, bool]] = []

    def __enter__(self) -> None:
        if self.enabled:
            self.saved = [(m, m.training) for m in self.model.modules()]
            self.model.eval()

    def __exit__(self, *exc: object) -> None:
        for module, training in self.saved:
            module.training = training


def generate(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    gen_length: int,
    block_length: int,
    steps: int,
    temperature: float = 0.0,
    remasking: str = "low_confidence",
    cfg_scale: float = 0.0,
    mask_id: int | None = None,
    generator: torch.Generator | None = None,
    steps_rule: str = "d1",
    noise_dtype: torch.dtype = torch.float64,
    confidence_dtype: torch.dtype | None = torch.float64,
    logits_eos_inf: bool = False,
    confidence_eos_eot_inf: bool = False,
    eos_id: int | None = None,
    eot_id: int | None = None,
    logits_shift: int | None = None,
    noise_layout: str = "block",
    force_eval: bool = True,
    record_trace: bool = False,
    cache: str = "none",
    threshold: float | None = None,
    cache_refresh: int = 0,
) -> GenerationOutput:
    """Generate ``gen_length`` tokens after each (left-padded) prompt by masked-diffusion decoding.

    Args:
        model: mask predictor, ``model(ids, attention_mask=mask).logits`` -> (B, T, V).
        input_ids: (B, P) prompts, LEFT-padded.
        attention_mask: (B, P) 1 = real token, 0 = pad, or None. With a mask, pad keys are never attended (the mask
            is extended with ones over the generated part, as LLaDA's newer generate.py does) so a prompt's
            completion does not depend on the rest of the batch. None reproduces d1, whose samplers never pass a
            mask (pads are then visible to the model). Pads are never unmasked either way.
        gen_length: tokens to generate (G); a multiple of ``block_length``.
        block_length: semi-autoregressive block size (d1: 32).
        steps: total diffusion steps (d1 eval: gen_length // 2; rollouts: 128).
        temperature: 0 = greedy; > 0 = Gumbel-max sampling at that temperature.
        remasking: "low_confidence" (unmask the most confident candidates) or "random".
        cfg_scale: classifier-free guidance scale, 0 = off (see ``forward.compute_logits``).
        mask_id: mask token id; None = ``ModelAdapter.from_pretrained(model).mask_id`` (config mask_token_id).
        generator: the ONLY source of randomness (temperature > 0 or random remasking); None = a fresh unseeded
            private generator. Noise is drawn on the generator's device.
        steps_rule: "d1" (``max(1, steps // num_blocks)`` steps per block) or "strict" (LLaDA: steps must be a
            multiple of the number of blocks, else ValueError).
        noise_dtype: dtype of the Gumbel noise and of the logits it is applied to (LLaDA float64; d1 eval float32;
            d1 trainer the model dtype, bf16).
        confidence_dtype: dtype of the confidence softmax (LLaDA Mar-2025 float64; None = logits dtype, as d1).
        logits_eos_inf: set the EOS logit to -inf before sampling and confidence (LLaDA HEAD option).
        confidence_eos_eot_inf: EOS/EOT candidates rank below all others (LLaDA HEAD option; see
            ``remasking.ranking_key`` for how this differs from the literal HEAD code).
        eos_id, eot_id: ids for the two options above; None = from the model's ModelAdapter.
        logits_shift: 0 for LLaDA (logits[:, i] predicts position i); None = the ModelAdapter's value when the adapter
            is consulted for a missing id, else 0.
        noise_layout: "block" (default) or "sequence" (draw like the official code; see ``_Randomness``).
        force_eval: run in eval() mode (restoring every module's mode afterwards). d1's trainer samples in
            train() mode (LoRA dropout active); False keeps the caller's mode to reproduce that.
        record_trace: also return the full trajectory x at every step (memory S x B x T).
        cache: "none" (exact, every step a full forward), or Fast-dLLM's approximate block-wise KV cache:
            "prefix" (at each block's first step one full forward; the later steps feed the block and everything
            after it, reusing that forward's keys/values of the prompt and finished blocks) or "dual" (the later
            steps feed only the block, reusing the keys/values of every other position). Needs a model that
            takes ``kv_cache`` (``d1rl.models.LLaDAModelLM``) and ``logits_shift = 0``; works with CFG (the
            cache then holds the doubled batch). See ``forward.BlockLogits``.
        threshold: None (unmask the scheduled number of positions per step), or confidence-threshold parallel
            decoding in (0, 1]: every step unmasks each masked position of the block whose confidence exceeds it,
            and at least the most confident one. A block then ends when it has no masks left, so the number of
            steps depends on the data and ``steps`` is NOT used (a block takes at most ``block_length`` steps);
            the batch steps together, so a block takes as many steps as its slowest row. 1.0 is never exceeded:
            one position per step. Needs ``remasking="low_confidence"``.

    Returns:
        :class:`GenerationOutput` with ``sequences`` (B, P+G), ``decode_step`` (B, G), ``nfe``, ``token_forwards``.
    """
    _check_inputs(input_ids, attention_mask)
    if remasking not in REMASKING_STRATEGIES:
        raise ValueError(f"unknown remasking {remasking!r}; expected one of {REMASKING_STRATEGIES}")
    if noise_layout not in NOISE_LAYOUTS:
        raise ValueError(f"unknown noise_layout {noise_layout!r}; expected one of {NOISE_LAYOUTS}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if cfg_scale < 0:
        raise ValueError(f"cfg_scale must be >= 0, got {cfg_scale}")
    check_fast_options(cache, threshold, remasking, noise_layout, cache_refresh=cache_refresh)
    num_blocks = num_blocks_for(gen_length, block_length)
    spb = steps_per_block(steps, num_blocks, steps_rule)

    mask_id, eos_id, eot_id, logits_shift = _resolve_ids(
        model, mask_id, eos_id, eot_id, logits_shift,
        need_eos=logits_eos_inf or confidence_eos_eot_inf, need_eot=confidence_eos_eot_inf,
    )

    with torch.no_grad(), _EvalMode(model, force_eval):
        return _run(
            model,
            input_ids,
            attention_mask,
            gen_length=gen_length,
            block_length=block_length,
            num_blocks=num_blocks,
            spb=spb,
            temperature=float(temperature),
            remasking=remasking,
            cfg_scale=float(cfg_scale),
            mask_id=mask_id,
            rng=_Randomness(generator, noise_layout, input_ids.shape[0], input_ids.shape[1] + gen_length,
                            input_ids.device),
            noise_dtype=noise_dtype,
            confidence_dtype=confidence_dtype,
            eos_id=eos_id if logits_eos_inf else None,
            demote_ids=[i for i in (eos_id, eot_id) if i is not None] if confidence_eos_eot_inf else [],
            logits_shift=logits_shift,
            record_trace=record_trace,
            cache=cache,
            threshold=None if threshold is None else float(threshold),
            cache_refresh=int(cache_refresh),
        )


def check_fast_options(cache: str, threshold: float | None, remasking: str, noise_layout: str,
                       prefix: str = "", cache_refresh: int = 0) -> None:
    """Reject fast-path settings that are out of range or meaningless together (``prefix`` names the config
    section in the messages, e.g. "sampler.")."""
    if cache not in CACHE_MODES:
        raise ValueError(f"{prefix}cache: unknown cache mode {cache!r}; expected one of {CACHE_MODES}")
    if isinstance(cache_refresh, bool) or int(cache_refresh) != cache_refresh or cache_refresh < 0:
        raise ValueError(f"{prefix}cache_refresh must be an integer >= 0 (0 = only at block boundaries), "
                         f"got {cache_refresh!r}")
    if cache_refresh and cache == "none":
        raise ValueError(f"{prefix}cache_refresh={cache_refresh} needs {prefix}cache: prefix or dual "
                         "(without a cache every step is a full forward anyway)")
    if threshold is not None:
        if isinstance(threshold, bool) or not 0.0 < float(threshold) <= 1.0:
            raise ValueError(
                f"{prefix}threshold must be in (0, 1] or null, got {threshold!r} (a confidence is a probability; "
                "1.0 = never exceeded = one token per step)"
            )
        if remasking != "low_confidence":
            raise ValueError(
                f"{prefix}threshold needs remasking='low_confidence' (a threshold on random remasking's uniform "
                f"draws would unmask at random), got remasking={remasking!r}"
            )
    if noise_layout != "block" and (cache != "none" or threshold is not None):
        raise ValueError(
            f"{prefix}noise_layout={noise_layout!r} reproduces the official samplers' random stream, which the fast "
            "paths (cache / threshold) do not follow anyway; use noise_layout='block'"
        )


def _run(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    *,
    gen_length: int,
    block_length: int,
    num_blocks: int,
    spb: int,
    temperature: float,
    remasking: str,
    cfg_scale: float,
    mask_id: int,
    rng: _Randomness,
    noise_dtype: torch.dtype,
    confidence_dtype: torch.dtype | None,
    eos_id: int | None,
    demote_ids: list[int],
    logits_shift: int,
    record_trace: bool,
    cache: str,
    threshold: float | None,
    cache_refresh: int,
) -> GenerationOutput:
    batch, prompt_length = input_ids.shape
    device = input_ids.device
    input_ids = input_ids.to(torch.int64)
    x = torch.cat([input_ids, input_ids.new_full((batch, gen_length), mask_id)], dim=1)
    full_mask = None
    if attention_mask is not None and not bool(attention_mask.all()):
        # An all-ones mask changes nothing (the official model ignores it too); skipping it keeps fast kernels.
        full_mask = torch.cat([attention_mask, attention_mask.new_ones((batch, gen_length))], dim=1)
    # "Prompt positions" for CFG: everything that was not mask at the start, pads included (LLaDA/d1).
    prompt_index = x != mask_id if cfg_scale > 0 else None
    block_logits = BlockLogits(model, full_mask, cache=cache, cfg_scale=cfg_scale, prompt_index=prompt_index,
                               mask_id=mask_id, logits_shift=logits_shift, cache_refresh=cache_refresh)

    decode_step = torch.full((batch, gen_length), -1, dtype=torch.int64, device=device)
    trace: list[torch.Tensor] = []
    step = 0  # global step, over all blocks
    most_steps = 0
    for block in range(num_blocks):
        start = prompt_length + block * block_length
        stop = start + block_length
        if threshold is None:
            schedule = transfer_schedule((x[:, start:stop] == mask_id).sum(dim=1), spb)  # (B, spb)
            max_per_step = schedule.max(dim=0).values.tolist()  # one host sync per block, not per step
            block_steps = spb
        else:
            # Every step unmasks at least one position per row, so a block needs at most block_length steps
            # (the bound also ends a block whose model keeps proposing the mask token itself).
            block_steps = block_length
        i = 0
        while i < block_steps:
            block_x = x[:, start:stop]
            if threshold is not None and i > 0 and not bool((block_x == mask_id).any()):
                break  # the data-dependent end of a block: one host sync per step in threshold mode
            if record_trace:
                trace.append(x.clone())
            logits = block_logits(x, start, stop, step_in_block=i)
            key, x0 = _candidates(
                logits, block_x, start=start, stop=stop, temperature=temperature, remasking=remasking,
                mask_id=mask_id, rng=rng, noise_dtype=noise_dtype, confidence_dtype=confidence_dtype, eos_id=eos_id,
                demote_ids=demote_ids,
            )
            if threshold is None:
                chosen = choose_positions(key, schedule[:, i], max_per_step[i])
            else:
                chosen = threshold_positions(key, threshold)
            x[:, start:stop] = torch.where(chosen, x0, block_x)
            written = decode_step[:, start - prompt_length : stop - prompt_length]
            written.masked_fill_(chosen & (x0 != mask_id), step)
            step += 1
            i += 1
        most_steps = max(most_steps, i)
    if record_trace:
        trace.append(x.clone())
    return GenerationOutput(
        sequences=x,
        decode_step=decode_step,
        nfe=block_logits.nfe,
        token_forwards=block_logits.token_forwards,
        steps_per_block=spb if threshold is None else most_steps,
        num_blocks=num_blocks,
        trace=torch.stack(trace) if record_trace else None,
    )


def _candidates(
    logits: torch.Tensor,
    block_x: torch.Tensor,
    *,
    start: int,
    stop: int,
    temperature: float,
    remasking: str,
    mask_id: int,
    rng: _Randomness,
    noise_dtype: torch.dtype,
    confidence_dtype: torch.dtype | None,
    eos_id: int | None,
    demote_ids: list[int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """One step's candidates for the current block: (ranking key (B, K), candidate tokens (B, K)).

    The random draws (Gumbel noise, random-remasking uniforms) are made here, for the current block only with the
    default layout, in the same order in every mode.
    """
    if eos_id is not None:
        logits = logits.index_fill(-1, torch.tensor([eos_id], device=logits.device), float("-inf"))
    uniform = rng.gumbel_uniform(start, stop, logits.shape[-1], noise_dtype) if temperature > 0 else None
    x0 = propose_tokens(logits, temperature, uniform)
    conf_uniform = rng.remasking_uniform(start, stop) if remasking == "random" else None
    confidence = token_confidence(logits, x0, remasking, dtype=confidence_dtype, uniform=conf_uniform)
    demoted = None
    if demote_ids:
        demoted = torch.isin(x0, torch.tensor(demote_ids, device=x0.device))
    return ranking_key(confidence, block_x == mask_id, demoted), x0
