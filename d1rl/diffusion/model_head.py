"""Completion-token log-probs from a model forward, computing as little of the output head as possible.

The one-step estimator needs ``log p(o_c | noised input)`` at the C completion positions only, but a plain forward
returns logits for all L = P + C positions over the whole vocabulary. Three ways to get them, from leanest to the
most general (``head`` argument, ``algorithm.logprob_head`` in the trainer):

* ``"fused"`` — LLaDA models only: the model runs with ``logits_to_keep`` = the completion positions and a
  forward pre-hook on the output head captures the head's input (final-norm hidden states, (B, C, d)) and hands
  the head an empty tensor; :func:`~d1rl.diffusion.log_softmax.fused_linear_log_softmax` then produces the
  log-probs chunk by chunk. Neither the (B, C, V) logits nor their gradient exist at any time.
* ``"keep"`` — any model whose ``forward`` accepts ``logits_to_keep`` (transformers' convention, an int = last k
  positions): the head runs on the completion positions only, (B, C, V) logits, then the chunked
  :func:`~d1rl.diffusion.log_softmax.selective_log_softmax`.
* ``"full"`` — any model: full (B, L, V) logits, sliced (the previous behaviour; d1 additionally builds a full
  log-softmax).
* ``"auto"`` (default) — fused for a LLaDA model with a plain ``nn.Linear`` head, else keep if the model takes
  ``logits_to_keep``, else full with a one-time warning.

All modes give the same numbers (up to floating-point reassociation: ~1e-15 in float64). Wrappers are looked
through to find the real model: DDP/DeepSpeed/compiled wrappers (accelerate's ``extract_model_from_parallel``) and
PEFT (``get_base_model``; PeftModel's generic ``forward`` passes keyword arguments through unchanged). A head
adapted by LoRA (a target named ``ff_out`` also matches LLaDA's head) or quantised is not a plain ``nn.Linear``,
so ``auto`` uses ``keep`` for it. ``fused`` reads the head weight outside the head's own forward, so it is not
for parameter-sharding engines (FSDP, DeepSpeed ZeRO-3); d1 used ZeRO-2, where it works.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
from torch import nn

from d1rl.diffusion.log_softmax import fused_linear_log_softmax, selective_log_softmax

log = logging.getLogger(__name__)

HEAD_MODES = ("auto", "fused", "keep", "full")

__all__ = ["HEAD_MODES", "HeadPlan", "plan_head", "unwrap_model", "completion_log_probs", "model_logits"]

_WARNED: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _WARNED:
        _WARNED.add(key)
        log.warning(message)


def unwrap_model(model: Any) -> Any:
    """The model that actually defines the forward: through DDP/DeepSpeed/compile wrappers and PEFT wrappers."""
    try:
        from accelerate.utils import extract_model_from_parallel
    except ImportError:  # pragma: no cover - accelerate is a dependency
        extract_model_from_parallel = None
    for _ in range(8):  # wrappers nest at most a few levels deep
        inner = model
        if extract_model_from_parallel is not None and isinstance(inner, nn.Module):
            inner = extract_model_from_parallel(inner)  # keep_fp32_wrapper: never mutate the model
        get_base = getattr(type(inner), "get_base_model", None)  # PEFT; looked up on the class, not via __getattr__
        if callable(get_base):
            inner = inner.get_base_model()
        if inner is model:
            return model
        model = inner
    return model


def _accepts_logits_to_keep(inner: Any) -> bool:
    forward = getattr(type(inner), "forward", None)
    if forward is None:
        forward = getattr(inner, "__call__", None)
    try:
        return "logits_to_keep" in inspect.signature(forward).parameters
    except (TypeError, ValueError):
        return False


@dataclass(frozen=True)
class HeadPlan:
    """How :func:`completion_log_probs` will evaluate a given model.

    Attributes:
        mode: "fused", "keep" or "full" (resolved; never "auto").
        head: the output head module (fused only), the target of the capture hook.
        scale: multiplier the model applies to the head output (LLaDA ``scale_logits``: 1/sqrt(d_model)).
        reason: why this mode was chosen (for logs and error messages).
    """

    mode: str
    head: nn.Linear | None = None
    scale: float = 1.0
    reason: str = ""


def _fused_head(inner: Any) -> tuple[nn.Linear | None, float, str]:
    """(head, scale, "") when the fused path is exact for ``inner``, else (None, 1, why not)."""
    config = getattr(inner, "config", None)
    if getattr(config, "model_type", None) != "llada":
        return None, 1.0, f"the model is not a LLaDA model (model_type {getattr(config, 'model_type', None)!r})"
    if not _accepts_logits_to_keep(inner):
        return None, 1.0, "its forward takes no logits_to_keep"
    get_head = getattr(inner, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    if head is None:
        return None, 1.0, "it has no separate output head (weight tying)"
    if type(head) is not nn.Linear:
        return None, 1.0, f"its output head is a {type(head).__name__} (LoRA-adapted or quantised), not nn.Linear"
    if head.weight.dim() != 2 or head.weight.numel() == 0:
        return None, 1.0, "its head weight is not materialised (parameter sharding)"
    scale = 1.0 / math.sqrt(config.d_model) if getattr(config, "scale_logits", False) else 1.0
    return head, scale, ""


def plan_head(model: Any, requested: str = "auto") -> HeadPlan:
    """Resolve ``requested`` (one of :data:`HEAD_MODES`) for ``model``; an impossible explicit choice is an error."""
    if requested not in HEAD_MODES:
        raise ValueError(f"log-prob head mode {requested!r} is not one of {list(HEAD_MODES)}")
    if requested == "full":
        return HeadPlan("full", reason="requested")
    inner = unwrap_model(model)
    if requested in ("auto", "fused"):
        head, scale, why_not = _fused_head(inner)
        if head is not None:
            return HeadPlan("fused", head=head, scale=scale, reason="LLaDA model with a plain nn.Linear head")
        if requested == "fused":
            raise ValueError(f"log-prob head mode 'fused' (algorithm.logprob_head) is not possible: {why_not}; "
                             "use 'keep' or 'auto'")
    if _accepts_logits_to_keep(inner):
        return HeadPlan("keep", reason="the model's forward takes logits_to_keep")
    if requested == "keep":
        raise ValueError(f"log-prob head mode 'keep' (algorithm.logprob_head) needs a model whose forward takes "
                         f"logits_to_keep; {type(inner).__name__}.forward does not. Use 'full' or 'auto'")
    _warn_once(
        f"full:{type(inner).__qualname__}",
        f"{type(inner).__name__}.forward takes no logits_to_keep: the estimator computes full (B, L, V) logits for "
        "every log-prob pass (more memory); set algorithm.logprob_head=full to silence this warning",
    )
    return HeadPlan("full", reason=f"{type(inner).__name__}.forward takes no logits_to_keep")


def _logits_of(out: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    logits = getattr(out, "logits", None)
    if logits is None and isinstance(out, (tuple, list)):
        logits = out[0]
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"model output has no logits tensor (got {type(out).__name__})")
    return logits


def model_logits(model: Callable[..., Any], input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                 **kwargs: Any) -> torch.Tensor:
    """``model(input_ids[, attention_mask=...], **kwargs)`` logits; the mask is passed only when given (d1: never)."""
    if attention_mask is not None:
        kwargs["attention_mask"] = attention_mask
    return _logits_of(model(input_ids, **kwargs))


@contextlib.contextmanager
def _capture_head_input(head: nn.Module) -> Iterator[list[tuple[torch.Tensor, torch.dtype]]]:
    """While active, every call of ``head`` records its input and computes on an EMPTY slice of it instead (zero
    positions, so the (B, C, V) logits are never built); the model's own logits output is then (B, 0, V).

    Each record also holds the dtype the head's matmul would have run in: under autocast (accelerate's mixed
    precision wraps the model's forward, not our later kernel call) that is the autocast dtype, so the fused
    kernel computes the logits in the same precision as the model's head would have.
    """
    captured: list[tuple[torch.Tensor, torch.dtype]] = []

    def pre_hook(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        x = args[0]
        device_type = x.device.type
        if torch.is_autocast_enabled(device_type):
            dtype = torch.get_autocast_dtype(device_type)
        else:
            dtype = torch.promote_types(x.dtype, module.weight.dtype)
        captured.append((x, dtype))
        return (x[..., :0, :],) + tuple(args[1:])

    handle = head.register_forward_pre_hook(pre_hook)
    try:
        yield captured
    finally:
        handle.remove()


def completion_log_probs(
    model: Callable[..., Any],
    noised_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    targets: torch.Tensor,
    *,
    prompt_length: int,
    logits_shift: int = 0,
    head: str | HeadPlan = "auto",
    chunk_rows: int | None = None,
) -> torch.Tensor:
    """(M, C, K) log p of ``targets`` (M, C, K) at the C = L − prompt_length completion positions, ONE forward.

    ``noised_ids`` (M, L) is the model input; position ``prompt_length + c`` is predicted by the logits at
    ``prompt_length + c − logits_shift``. K ids per position are read from the same distribution (K > 1: the
    completions of one prompt sharing one model input).
    """
    plan = head if isinstance(head, HeadPlan) else plan_head(model, head)
    m, length = noised_ids.shape
    c = length - int(prompt_length)
    s = int(logits_shift)
    if targets.dim() != 3 or targets.shape[:2] != (m, c):
        raise ValueError(f"targets must be (M, C, K) = ({m}, {c}, K), got shape {tuple(targets.shape)}")
    if plan.mode == "full":
        logits = model_logits(model, noised_ids, attention_mask)
        if logits.shape[:2] != (m, length):
            raise ValueError(f"logits shape {tuple(logits.shape)} does not match the model input {(m, length)}")
        return selective_log_softmax(logits[:, prompt_length - s : length - s], targets, chunk_rows)
    # The last C + s positions hold the logits of the C completion tokens (the first C of them), as an int so that
    # any model following transformers' logits_to_keep convention understands it.
    n_keep = c + s
    if plan.mode == "keep":
        logits = model_logits(model, noised_ids, attention_mask, logits_to_keep=n_keep)
        if logits.shape[1] == length and n_keep != length:  # the model accepted but ignored logits_to_keep
            _warn_once(f"ignored:{type(unwrap_model(model)).__qualname__}",
                       "the model ignored logits_to_keep and returned logits for every position")
            logits = logits[:, length - n_keep :]
        if logits.shape[:2] != (m, n_keep):
            raise ValueError(f"logits shape {tuple(logits.shape)} with logits_to_keep={n_keep}: expected {(m, n_keep)}")
        return selective_log_softmax(logits[:, :c], targets, chunk_rows)
    if plan.mode != "fused" or plan.head is None:
        raise ValueError(f"unresolved head plan {plan}")
    with _capture_head_input(plan.head) as captured:
        model_logits(model, noised_ids, attention_mask, logits_to_keep=n_keep)
    if len(captured) != 1 or captured[0][0].shape[:2] != (m, n_keep):
        shapes = [tuple(x.shape) for x, _ in captured]
        raise RuntimeError(f"fused log-prob head: expected one head call on ({m}, {n_keep}, d) inputs, saw {shapes}; "
                           "set algorithm.logprob_head=keep")
    hidden, matmul_dtype = captured[0]
    return fused_linear_log_softmax(hidden[:, :c], plan.head.weight, targets, bias=plan.head.bias, scale=plan.scale,
                                    chunk_rows=chunk_rows, matmul_dtype=matmul_dtype)
