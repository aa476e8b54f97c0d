"""Per-token log-probability estimators for masked diffusion LMs, behind a small registry.

A masked diffusion LM has no tractable sequence likelihood, so policy-gradient methods need an estimator of
``log π(o_k | q)`` per completion token. The registry lets new estimators (MC-ELBO, coupled masks, ...) slot in by
name without touching the trainer: ``get_estimator("one_step", mask_id=...)``.

``one_step`` is d1's mean-field estimator (d1-reference.md §2.3): mask EVERY completion token and each prompt token
with probability ``p_mask_prompt``, run ONE forward pass, and read ``log f_θ(o_k | q' ⊕ [MASK]^G)`` for each k.
The random prompt mask acts as a regulariser; the same mask must be used for the old, reference and current
log-probs of one inner iteration so the ratio compares like with like — hence explicit generators from
:func:`mask_generator` rather than d1's global re-seeding.

Two options that d1 does not have: the output head is evaluated only at completion positions, without ever
materialising the full-vocabulary log-softmax (``head``; :mod:`d1rl.diffusion.model_head` — same numbers, far less
memory), and ``group_size`` > 1 draws ONE prompt mask per prompt so that the completions of a prompt share one
model input and one forward (an estimator change vs d1, see :class:`OneStepEstimator`).
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

import torch

from d1rl.diffusion.log_softmax import selective_log_softmax
from d1rl.diffusion.model_head import HEAD_MODES, HeadPlan, completion_log_probs, plan_head

__all__ = [
    "mask_generator",
    "selective_log_softmax",
    "LogProbEstimator",
    "OneStepEstimator",
    "register_estimator",
    "get_estimator",
    "available_estimators",
]

_SEED_MASK = (1 << 63) - 1


def mask_generator(
    seed: int, step: int, inner_iteration: int, rank: int, device: torch.device | str = "cpu"
) -> torch.Generator:
    """A fresh ``torch.Generator`` for the estimator's random masks, keyed by ``(seed, step, inner_iteration, rank)``.

    The key is packed as four signed 64-bit little-endian integers, hashed with BLAKE2b (8-byte digest, the fixed
    personalisation ``b"d1rl-mask"``), and the top bit is cleared to give a 63-bit seed. This is stable across
    processes, machines and Python versions (unlike ``hash()``), distinct keys give unrelated streams, and resuming
    at ``(step, inner_iteration)`` reproduces the masks exactly without any global state. Old, reference and
    current log-probs of one inner iteration build the generator from the same key and therefore see the same mask.

    Note: a CUDA generator produces different numbers than a CPU generator with the same seed. Use
    ``device="cpu"`` (the default; the estimator draws on the generator's device and moves the mask) when masks
    must be identical across hardware.
    """
    for name, value in (("seed", seed), ("step", step), ("inner_iteration", inner_iteration), ("rank", rank)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"mask_generator: {name} must be an int, got {type(value).__name__}")
        if not -(1 << 63) <= value < (1 << 63):
            raise ValueError(f"mask_generator: {name}={value} does not fit in 64 bits")
    key = struct.pack("<4q", seed, step, inner_iteration, rank)
    digest = hashlib.blake2b(key, digest_size=8, person=b"d1rl-mask").digest()
    derived = int.from_bytes(digest, "little") & _SEED_MASK
    gen = torch.Generator(device=device)
    gen.manual_seed(derived)
    return gen


class LogProbEstimator(Protocol):
    """What the trainer needs from an estimator: per-token log-probs of the completion, (B, G).

    ``group_size`` > 1 asks for one shared model input per group of that many consecutive rows (the completions of
    one prompt); an estimator that cannot share raises on it.
    """

    def noise(
        self,
        input_ids: torch.Tensor,
        prompt_length: int,
        generator: torch.Generator | None,
        attention_mask: torch.Tensor | None = None,
        group_size: int = 1,
    ) -> torch.Tensor: ...

    def log_probs(
        self,
        model: Callable[..., Any],
        input_ids: torch.Tensor,
        prompt_length: int,
        generator: torch.Generator | None = None,
        attention_mask: torch.Tensor | None = None,
        noised_ids: torch.Tensor | None = None,
        group_size: int = 1,
    ) -> torch.Tensor: ...


def _check_groups(name: str, x: torch.Tensor, group_size: int) -> None:
    """Rows of ``x`` must be identical within each block of ``group_size`` consecutive rows."""
    n = x.shape[0]
    if n % group_size:
        raise ValueError(f"{n} rows cannot be split into groups of group_size={group_size} (share_prompt_mask)")
    grouped = x.reshape(n // group_size, group_size, *x.shape[1:])
    if not bool((grouped == grouped[:, :1]).all()):
        raise ValueError(
            f"{name} differ within a group of {group_size} consecutive rows: a shared prompt mask needs the rows of "
            "each group to be the same prompt (completions of one prompt, contiguous)"
        )


@dataclass
class OneStepEstimator:
    """d1's one-step mean-field estimator (d1-reference.md §2.3), with two memory/compute options.

    The model input of d1's estimator — randomly masked prompt + fully masked completion — does not depend on the
    completion. So when the ``group_size`` completions of one prompt also share ONE prompt mask (``group_size`` > 1
    in :meth:`noise` / :meth:`log_probs`; ``algorithm.share_prompt_mask``), they share one model input: one forward
    (and one backward) per prompt serves the whole group, each completion's log-probs being read from the same
    logits. This is an estimator change vs d1, which draws the prompt mask per row: the mask noise is then
    correlated within a group (same regulariser draw for all G completions of a prompt) instead of independent.
    The log-prob of each completion is still an unbiased draw of d1's estimator; only the G draws are coupled.

    Attributes:
        mask_id: the model's mask token id (from the model adapter; required, never hard-coded).
        p_mask_prompt: probability of masking each prompt token (d1 train.yaml: 0.15; d1 config default 0.3).
        mask_prompt_padding: whether left-pad prompt positions may be masked too (d1: True — it masks pads like any
            prompt token). False needs an ``attention_mask`` and keeps positions with ``attention_mask == 0``
            unmasked.
        logits_shift: 0 for LLaDA (logits[i] predicts token i); 1 for models with shifted logits (Dream).
        chunk_rows: rows of V scores per chunk in the log-softmax kernels (None = automatic).
        head: how the output head is evaluated (:mod:`d1rl.diffusion.model_head`): "auto" (default; ours, d1 has
            no such option: fused for LLaDA, else logits_to_keep, else full logits), "fused", "keep" or "full"
            (d1's full (B, L, V) logits). The numbers are the same in every mode; only memory differs.
    """

    mask_id: int
    p_mask_prompt: float = 0.15
    mask_prompt_padding: bool = True
    logits_shift: int = 0
    chunk_rows: int | None = None
    head: str = "auto"

    def __post_init__(self) -> None:
        if self.mask_id is None or int(self.mask_id) < 0:
            raise ValueError(f"OneStepEstimator needs a valid mask_id, got {self.mask_id!r}")
        if not 0.0 <= self.p_mask_prompt <= 1.0:
            raise ValueError(f"p_mask_prompt must be in [0, 1], got {self.p_mask_prompt}")
        if self.logits_shift < 0:
            raise ValueError(f"logits_shift must be >= 0, got {self.logits_shift}")
        if self.head not in HEAD_MODES:
            raise ValueError(f"head={self.head!r} is not one of {list(HEAD_MODES)}")

    def _check(self, input_ids: torch.Tensor, prompt_length: int, group_size: int = 1) -> int:
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (B, L), got shape {tuple(input_ids.shape)}")
        prompt_length = int(prompt_length)
        if not self.logits_shift <= prompt_length < input_ids.shape[1]:
            raise ValueError(
                f"prompt_length={prompt_length} must be in [{self.logits_shift}, {input_ids.shape[1]}) "
                f"for input of length {input_ids.shape[1]}"
            )
        if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
            raise ValueError(f"group_size must be an int >= 1, got {group_size!r}")
        return prompt_length

    def prompt_mask(
        self,
        input_ids: torch.Tensor,
        prompt_length: int,
        generator: torch.Generator | None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, prompt_length) bool: which prompt positions get masked.

        The uniforms are drawn over the FULL (B, L) shape on the generator's device, exactly as d1 does, so that a
        CPU ``torch.Generator().manual_seed(s)`` reproduces d1's ``set_seed(s)`` patterns; the completion part of
        the draw is unused (all completion tokens are masked anyway).
        """
        prompt_length = self._check(input_ids, prompt_length)
        batch, length = input_ids.shape
        gen_device = generator.device if generator is not None else input_ids.device
        u = torch.rand((batch, length), generator=generator, device=gen_device).to(input_ids.device)
        pm = u[:, :prompt_length] < self.p_mask_prompt
        if not self.mask_prompt_padding:
            if attention_mask is None:
                raise ValueError("mask_prompt_padding=False needs an attention_mask to know which positions are pads")
            pm &= attention_mask[:, :prompt_length].to(device=pm.device).bool()
        return pm

    def noise(
        self,
        input_ids: torch.Tensor,
        prompt_length: int,
        generator: torch.Generator | None,
        attention_mask: torch.Tensor | None = None,
        group_size: int = 1,
    ) -> torch.Tensor:
        """The noised sequence: completion fully masked, prompt tokens masked per :meth:`prompt_mask`.

        ``group_size`` > 1: the rows come in groups of that many consecutive rows with the same prompt (checked);
        ONE prompt mask is drawn per group — uniforms of shape (B / group_size, L), i.e. :meth:`prompt_mask` of the
        first row of every group — and repeated over its rows, so all rows of a group get the same model input.
        """
        prompt_length = self._check(input_ids, prompt_length, group_size)
        if group_size == 1:
            pm = self.prompt_mask(input_ids, prompt_length, generator, attention_mask)
        else:
            _check_groups("prompts (input_ids[:, :prompt_length])", input_ids[:, :prompt_length], group_size)
            if attention_mask is not None:
                _check_groups("prompt attention masks", attention_mask[:, :prompt_length], group_size)
            firsts = slice(None, None, group_size)
            pm = self.prompt_mask(input_ids[firsts], prompt_length, generator,
                                  None if attention_mask is None else attention_mask[firsts])
            pm = pm.repeat_interleave(group_size, dim=0)
        noised = input_ids.clone()
        noised[:, :prompt_length].masked_fill_(pm, self.mask_id)
        noised[:, prompt_length:] = self.mask_id
        return noised

    def plan(self, model: Callable[..., Any]) -> HeadPlan:
        """How the output head of ``model`` will be evaluated under this estimator's ``head`` setting."""
        return plan_head(model, self.head)

    def log_probs(
        self,
        model: Callable[..., Any],
        input_ids: torch.Tensor,
        prompt_length: int,
        generator: torch.Generator | None = None,
        attention_mask: torch.Tensor | None = None,
        noised_ids: torch.Tensor | None = None,
        group_size: int = 1,
    ) -> torch.Tensor:
        """(B, G) per-token log p of the original completion tokens ``input_ids[:, prompt_length:]`` from ONE forward.

        ``noised_ids`` overrides the noising (e.g. to reuse a stored pattern); otherwise ``generator`` must be given
        (an explicit generator is required so old/ref/current calls cannot silently get different masks).
        ``attention_mask`` is passed to the model only when given (d1 passes none); with d1's settings it is used
        only for ``mask_prompt_padding=False``. The output head runs only at completion positions (see ``head``).
        Gradients flow to the model when autograd is enabled.

        ``group_size`` > 1 (shared prompt mask): rows come in groups of ``group_size`` consecutive rows with the same
        model input (checked: same prompt, same noised ids); the model sees only the first row of each group
        (B / group_size sequences) and every row of the group reads its log-probs from those logits. The result
        equals the per-row computation on the same noised ids (to float reassociation), gradients included.
        """
        prompt_length = self._check(input_ids, prompt_length, group_size)
        if noised_ids is None:
            if generator is None:
                raise ValueError("OneStepEstimator.log_probs needs a generator (see mask_generator) or noised_ids")
            noised_ids = self.noise(input_ids, prompt_length, generator, attention_mask, group_size)
        elif noised_ids.shape != input_ids.shape:
            raise ValueError(f"noised_ids shape {tuple(noised_ids.shape)} != input_ids shape {tuple(input_ids.shape)}")
        targets = input_ids[:, prompt_length:]
        if group_size == 1:
            return completion_log_probs(
                model, noised_ids, attention_mask, targets[..., None], prompt_length=prompt_length,
                logits_shift=self.logits_shift, head=self.head, chunk_rows=self.chunk_rows,
            ).squeeze(-1)
        _check_groups("noised_ids", noised_ids, group_size)
        if attention_mask is not None:
            _check_groups("attention masks", attention_mask, group_size)
        firsts = slice(None, None, group_size)
        batch, gen = targets.shape
        groups = batch // group_size
        # (B, G) -> (B/g, G, g): the g completions of a group as K ids per completion position
        grouped = targets.reshape(groups, group_size, gen).transpose(1, 2)
        lp = completion_log_probs(
            model, noised_ids[firsts], None if attention_mask is None else attention_mask[firsts], grouped,
            prompt_length=prompt_length, logits_shift=self.logits_shift, head=self.head, chunk_rows=self.chunk_rows,
        )
        return lp.transpose(1, 2).reshape(batch, gen)

    def log_probs_many(
        self,
        model: Callable[..., Any],
        input_ids: torch.Tensor,
        prompt_length: int,
        generators: Sequence[torch.Generator],
        attention_mask: torch.Tensor | None = None,
        group_size: int = 1,
    ) -> torch.Tensor:
        """(K, B, G) log-probs for K mask patterns (one per generator) from ONE stacked forward of K·B rows.

        This is how d1 computes old/ref log-probs for all μ inner iterations at once; each pattern equals what
        :meth:`log_probs` would give with the same generator (rows of a bidirectional model are independent).
        """
        prompt_length = self._check(input_ids, prompt_length, group_size)
        if len(generators) == 0:
            raise ValueError("log_probs_many needs at least one generator")
        noised = torch.cat([self.noise(input_ids, prompt_length, g, attention_mask, group_size) for g in generators])
        k = len(generators)
        mask_k = None if attention_mask is None else attention_mask.repeat(k, 1)
        out = self.log_probs(model, input_ids.repeat(k, 1), prompt_length, attention_mask=mask_k, noised_ids=noised,
                             group_size=group_size)
        return out.view(k, input_ids.shape[0], -1)


_REGISTRY: dict[str, Callable[..., Any]] = {}


def register_estimator(name: str, factory: Callable[..., Any] | None = None):
    """Register an estimator factory under ``name``; usable as ``register_estimator("x", Cls)`` or as a decorator."""

    def _do(f: Callable[..., Any]):
        if name in _REGISTRY and _REGISTRY[name] is not f:
            raise ValueError(f"estimator {name!r} is already registered")
        _REGISTRY[name] = f
        return f

    return _do(factory) if factory is not None else _do


def get_estimator(name: str, **kwargs: Any):
    """Build the estimator registered as ``name`` with ``kwargs`` (e.g. ``mask_id``, ``p_mask_prompt``)."""
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown log-prob estimator {name!r}; available: {sorted(_REGISTRY)}") from None
    return factory(**kwargs)


def available_estimators() -> list[str]:
    return sorted(_REGISTRY)


register_estimator("one_step", OneStepEstimator)
