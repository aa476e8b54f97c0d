"""The model-facing core of evaluation: pre-tokenised items in, completion token ids out.

It knows nothing about tokenizers, tasks or files, so it can be driven with the raw token ids of the reference
fixture model (which ships without a tokenizer) and checked for determinism on its own.

Batches are formed once, from the rank's shard in order, with FIXED boundaries (items ``[k*B, (k+1)*B)``). On
resume a batch is skipped only if all its items are done; a partly written batch is regenerated whole and only its
missing items are reported. Keeping the batch composition fixed is what makes an interrupted-and-resumed run equal
an uninterrupted one even when the result would depend on the batch (temperature > 0 draws its noise per batch).

Prompts are LEFT-padded and passed with an attention mask (1 = real token), so a prompt's completion does not
depend on how much padding its batch-mates force on it. d1 passes no mask, which makes its scores depend on batch
size and GPU count (d1-reference §8 item 11).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import torch

from d1rl.evaluation.records import ItemKey
from d1rl.sampling.padding import left_pad


@dataclass(frozen=True)
class EvalItem:
    """One prompt to complete: the task, its index in the task's evaluated list, and its token ids.

    ``row`` (the dataset row, for grading) and ``prompt_text`` are optional so that pure-token tests need neither.
    """

    task: str
    index: int
    prompt_ids: tuple[int, ...]
    row: Mapping[str, Any] | None = field(default=None, compare=False, hash=False)
    prompt_text: str | None = field(default=None, compare=False, hash=False)

    def key(self, gen_length: int) -> ItemKey:
        return ItemKey(self.task, gen_length, self.index)


@dataclass
class Completion:
    """The generated part for one item, plus what it cost."""

    item: EvalItem
    gen_length: int
    completion_ids: list[int]
    nfe: int
    seconds: float  # wall time of the item's batch divided by the batch size
    batch_size: int


GenerateFn = Callable[..., Any]


def plan_batches(items: Sequence[EvalItem], batch_size: int) -> list[list[EvalItem]]:
    """Consecutive chunks of ``batch_size`` items (the last may be shorter)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return [list(items[i : i + batch_size]) for i in range(0, len(items), batch_size)]


def batch_seed(seed: int, task: str, gen_length: int, first_index: int) -> int:
    """A stable 63-bit seed for one batch's sampling generator (independent of rank, run and Python hash salt)."""
    digest = hashlib.sha256(f"d1rl-eval|{seed}|{task}|{gen_length}|{first_index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def run_batches(
    model: Any,
    items: Sequence[EvalItem],
    *,
    gen_length: int,
    batch_size: int,
    pad_id: int,
    sampler_kwargs: Mapping[str, Any],
    seed: int,
    device: Any = "cpu",
    done: Iterable[ItemKey] = (),
    generate_fn: GenerateFn | None = None,
) -> Iterator[Completion]:
    """Generate completions of ``gen_length`` tokens for ``items``, one batch at a time, skipping finished ones.

    ``sampler_kwargs`` are passed to ``generate_fn`` (default :func:`d1rl.sampling.generate`) as keywords; it must
    already contain ``steps``/``block_length``/``mask_id``/...; this function adds ``gen_length``,
    ``attention_mask`` and a per-batch ``generator``. Yields one :class:`Completion` per item that was not in
    ``done``, in item order, as soon as its batch finishes.
    """
    if generate_fn is None:
        from d1rl.sampling import generate as generate_fn  # type: ignore[no-redef]
    reserved = {"gen_length", "generator", "attention_mask", "input_ids"} & set(sampler_kwargs)
    if reserved:
        raise ValueError(f"sampler_kwargs must not set {sorted(reserved)}: run_batches sets them per batch")
    done_set = set(done)
    for batch in plan_batches(items, batch_size):
        todo = [it for it in batch if it.key(gen_length) not in done_set]
        if not todo:
            continue
        input_ids, attention_mask = left_pad([it.prompt_ids for it in batch], pad_id)
        input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
        generator = torch.Generator(device=input_ids.device)
        generator.manual_seed(batch_seed(seed, batch[0].task, gen_length, batch[0].index))
        start = time.perf_counter()
        with torch.inference_mode():
            out = generate_fn(
                model,
                input_ids,
                attention_mask,
                gen_length=gen_length,
                generator=generator,
                **dict(sampler_kwargs),
            )
        seconds = (time.perf_counter() - start) / len(batch)
        sequences = out.sequences if hasattr(out, "sequences") else out
        nfe = int(getattr(out, "nfe", 0) or 0)
        if sequences.shape[0] != len(batch) or sequences.shape[1] != input_ids.shape[1] + gen_length:
            raise RuntimeError(
                f"sampler returned sequences of shape {tuple(sequences.shape)}, expected "
                f"({len(batch)}, {input_ids.shape[1] + gen_length})"
            )
        generated = sequences[:, input_ids.shape[1] :].tolist()
        for row, it in enumerate(batch):
            if it.key(gen_length) in done_set:
                continue
            yield Completion(it, gen_length, generated[row], nfe, seconds, len(batch))
