"""SFT data: rows -> (prompt messages, completion) -> token sequences with a prompt length -> padded batches ->
masked-diffusion noise.

Sources (``data.source``):

* ``s1k`` — simplescaling/s1K formatted as d1 does (d1-reference §4): user = system prompt + "\\n\\n" + question;
  assistant = ``"<reasoning>" + thinking_trajectories[0] + "</reasoning>\\n<answer>" + attempt + "</answer>"``.
* ``json`` — a local chat file (``messages`` ending with the assistant turn) or prompt-completion file.
* ``task`` — a d1rl task's training prompt + ``Task.sft_completion(row)`` (e.g. the synthetic task).

Tokenisation: the conversation is rendered with the tokenizer's chat template. By default the prompt is exactly the
rendered user turn(s) + assistant header, and the target is the assistant content up to and including its
end-of-turn token. ``data.d1_compat`` reproduces d1 instead: LLaDA's template appends one more assistant header after
the answer and d1 keeps it in the target; d1 counts the prompt on ``prompt_text + "\\n"``.

Noise is drawn per row from a generator keyed by (seed, epoch, row id), so a row's t and mask do not depend on
which batch, rank or world size it lands in — the property that makes 2 processes equal 1 process, and resume exact.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from d1rl.training.batching import keyed_generator
from d1rl.training.sft.config import SFTDataConfig

log = logging.getLogger(__name__)


class SFTDataError(ValueError):
    """The SFT data cannot be built: missing field, bad row, unreadable file, nothing left after filtering."""


@dataclass
class Conversation:
    """One training example before tokenisation."""

    prompt: list[dict[str, str]]
    completion: str
    source_index: int


@dataclass
class SFTExample:
    """One tokenised example: ``input_ids`` = prompt + answer (unpadded, truncated to max_length)."""

    input_ids: list[int]
    prompt_length: int
    source_index: int


@dataclass
class SFTBatch:
    """A padded batch.

    Attributes:
        input_ids: (B, L) clean ids, right-padded with the pad (EOS) id.
        prompt_lengths: (B,) prompt tokens per row.
        lengths: (B,) real tokens per row (prompt + answer, before padding).
        row_ids: (B,) dataset row ids (the keys of each row's noise stream).
        attention_mask: (B, L) 1 = real token, or None when padding is a visible target (d1).
        answer_mask: (B, L) True at real answer tokens, or None when every non-prompt position is a target (d1).
        answer_lengths: (B,) real answer tokens, or None (= L − prompt_length, d1).
    """

    input_ids: torch.Tensor
    prompt_lengths: torch.Tensor
    lengths: torch.Tensor
    row_ids: torch.Tensor
    attention_mask: torch.Tensor | None = None
    answer_mask: torch.Tensor | None = None
    answer_lengths: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> "SFTBatch":
        def move(x: torch.Tensor | None) -> torch.Tensor | None:
            return None if x is None else x.to(device)

        return SFTBatch(
            move(self.input_ids), move(self.prompt_lengths), move(self.lengths), move(self.row_ids),
            move(self.attention_mask), move(self.answer_mask), move(self.answer_lengths),
        )


# ---------------------------------------------------------------------------------------------------- raw rows


def _field(row: Mapping[str, Any], key: str, where: str, option: str) -> Any:
    if key not in row or row[key] is None:
        raise SFTDataError(
            f"{where}: has no field {key!r} ({option}={key!r}); fields present: {sorted(row)[:20]}"
        )
    return row[key]


def _with_system(system_prompt: str | None, text: str) -> str:
    return f"{system_prompt}\n\n{text}" if system_prompt else text


def s1k_conversation(row: Mapping[str, Any], cfg: SFTDataConfig, index: int, where: str) -> Conversation:
    """d1's s1K formatting (d1-reference §4): reasoning trace and attempt inside the d1 tags, no newlines inside."""
    here = f"{where}, row {index}"
    question = _field(row, cfg.question_column, here, "data.question_column")
    traces = _field(row, cfg.reasoning_column, here, "data.reasoning_column")
    attempt = _field(row, cfg.attempt_column, here, "data.attempt_column")
    if isinstance(traces, (list, tuple)):
        if not traces:
            raise SFTDataError(f"{here}: {cfg.reasoning_column!r} is an empty list")
        trace = traces[0]  # d1 uses the first trajectory
    else:
        trace = traces
    completion = f"<reasoning>{trace}</reasoning>\n<answer>{attempt}</answer>"
    prompt = [{"role": "user", "content": _with_system(cfg.system_prompt, str(question))}]
    return Conversation(prompt, completion, index)


def _as_messages(value: Any, here: str, column: str) -> list[dict[str, str]]:
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if not isinstance(value, (list, tuple)) or not all(isinstance(m, Mapping) for m in value):
        raise SFTDataError(f"{here}: {column!r} must be a string or a list of {{role, content}} messages")
    for m in value:
        if "role" not in m or "content" not in m:
            raise SFTDataError(f"{here}: a message in {column!r} lacks 'role' or 'content': {dict(m)!r:.200}")
    return [{"role": str(m["role"]), "content": str(m["content"])} for m in value]


def json_conversation(row: Mapping[str, Any], cfg: SFTDataConfig, index: int, where: str) -> Conversation:
    """A chat row (messages ending with the assistant turn) or a prompt-completion row."""
    here = f"{where}, row {index}"
    if cfg.format == "chat":
        messages = _as_messages(_field(row, cfg.messages_column, here, "data.messages_column"), here, cfg.messages_column)
        if len(messages) < 2 or messages[-1]["role"] != "assistant":
            raise SFTDataError(f"{here}: {cfg.messages_column!r} must end with an assistant message (the target)")
        prompt, completion = messages[:-1], messages[-1]["content"]
    else:
        prompt = _as_messages(_field(row, cfg.prompt_column, here, "data.prompt_column"), here, cfg.prompt_column)
        raw = _field(row, cfg.completion_column, here, "data.completion_column")
        if isinstance(raw, str):
            completion = raw
        else:
            msgs = _as_messages(raw, here, cfg.completion_column)
            if len(msgs) != 1 or msgs[0]["role"] != "assistant":
                raise SFTDataError(f"{here}: {cfg.completion_column!r} must be a string or one assistant message")
            completion = msgs[0]["content"]
    if cfg.system_prompt:
        first_user = next((i for i, m in enumerate(prompt) if m["role"] == "user"), None)
        if first_user is None:
            raise SFTDataError(f"{here}: no user message to put data.system_prompt into")
        prompt = [dict(m) for m in prompt]
        prompt[first_user]["content"] = _with_system(cfg.system_prompt, prompt[first_user]["content"])
    return Conversation(prompt, completion, index)


def _read_local_or_hub(path: str, hub_split: str) -> tuple[list[dict[str, Any]], str]:
    from d1rl.tasks.data import DataUnavailableError, read_rows

    p = Path(path)
    if p.exists():
        try:
            return read_rows(p), str(p)
        except DataUnavailableError as err:
            raise SFTDataError(f"data.path={path}: {err}") from None
    if p.suffix.lower() in (".json", ".jsonl", ".csv", ".parquet") or path.startswith((".", "/")):
        raise SFTDataError(f"data.path={path}: file not found")
    import datasets

    try:
        ds = datasets.load_dataset(path, split=hub_split)
    except Exception as err:  # offline, missing, ...
        raise SFTDataError(
            f"data.path={path}: could not load hub dataset split {hub_split!r} ({type(err).__name__}: {err}); "
            "without internet, download it elsewhere and set data.path to a local .jsonl/.parquet file"
        ) from None
    return ds.to_list(), f"hub {path}"


def load_conversations(cfg: SFTDataConfig, task_cfg: Any = None, *, split: str | None = None) -> list[Conversation]:
    """Training conversations (``split=None``) or the ``data.eval_split`` conversations."""
    if cfg.source == "task":
        from d1rl.tasks import get_task

        task = get_task(task_cfg.name, task_cfg)
        name = split or cfg.task_split
        rows = task.load_split(name).to_list()
        out = []
        for i, row in enumerate(rows):
            completion = task.sft_completion(row)
            if completion is None:
                raise SFTDataError(
                    f"task {task_cfg.name!r} (data.source=task) gives no SFT completion for row {i} of split "
                    f"{name!r}; use a task with reference completions or data.source=json"
                )
            out.append(Conversation(task.train_prompt(row), completion, i))
        return out
    path = split or cfg.path
    rows, where = _read_local_or_hub(path, cfg.hub_split)
    if not rows:
        raise SFTDataError(f"data.path={path}: no rows")
    convert = s1k_conversation if cfg.source == "s1k" else json_conversation
    return [convert(row, cfg, i, where) for i, row in enumerate(rows)]


# ---------------------------------------------------------------------------------------------------- tokenising


def _render(tokenizer: Any, messages: list[dict[str, str]], generation_prompt: bool) -> str:
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    if not isinstance(text, str):
        raise TypeError(f"apply_chat_template returned {type(text).__name__}, expected str")
    return text


def tokenize_conversations(
    conversations: Sequence[Conversation],
    tokenizer: Any,
    *,
    max_length: int,
    d1_compat: bool,
    eot_id: int | None,
) -> tuple[list[SFTExample], int]:
    """Tokenise; returns (examples, number dropped because the prompt alone fills ``max_length``).

    The template already contains BOS, so texts are tokenised with ``add_special_tokens=False`` (LLaDA's tokenizer
    has ``add_bos_token=False``, so this is also what d1 got).
    """
    if getattr(tokenizer, "chat_template", None) is None:
        raise SFTDataError(f"tokenizer {type(tokenizer).__name__} has no chat_template; SFT data are chat messages")
    prompts, answers = [], []
    for conv in conversations:
        prompt_text = _render(tokenizer, conv.prompt, True)
        full_text = _render(tokenizer, conv.prompt + [{"role": "assistant", "content": conv.completion}], False)
        if d1_compat:
            # d1: prompt length counted on prompt_text + "\n"; the target is the rest of the full rendering,
            # including the assistant header LLaDA's template appends after the answer.
            prompts.append(prompt_text + "\n")
            answers.append(full_text)
        else:
            if not full_text.startswith(prompt_text):
                raise SFTDataError(
                    f"row {conv.source_index}: the chat template renders the conversation with a different prefix "
                    "than the prompt alone; cannot locate the answer"
                )
            prompts.append(prompt_text)
            answers.append(full_text[len(prompt_text) :])
    enc_p = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    enc_a = tokenizer(answers, add_special_tokens=False)["input_ids"]
    examples, dropped, truncated = [], 0, 0
    for conv, p_ids, a_ids in zip(conversations, enc_p, enc_a):
        if d1_compat:
            ids, prompt_len = list(a_ids), len(p_ids)  # a_ids is the full sequence here
        else:
            if eot_id is not None and eot_id in a_ids:
                a_ids = a_ids[: a_ids.index(eot_id) + 1]  # drop what the template appends after the turn
            ids, prompt_len = list(p_ids) + list(a_ids), len(p_ids)
        cut = len(ids) > max_length
        ids = ids[:max_length]
        if prompt_len >= len(ids):
            dropped += 1
            continue
        truncated += cut
        examples.append(SFTExample(ids, prompt_len, conv.source_index))
    if truncated:
        log.warning("truncated %d of %d rows to data.max_length=%d (their answers lose their end)",
                    truncated, len(conversations), max_length)
    return examples, dropped


# ---------------------------------------------------------------------------------------------------- splits


@dataclass
class SFTDatasets:
    train: list[SFTExample]
    eval: list[SFTExample]


def _holdout_count(n: int, eval_size: float) -> int:
    if eval_size <= 0:
        return 0
    count = math.ceil(eval_size * n) if eval_size < 1 else int(eval_size)
    return min(count, n - 1)


def build_sft_datasets(
    cfg: SFTDataConfig, tokenizer: Any, *, eot_id: int | None, task_cfg: Any = None
) -> SFTDatasets:
    """Load, split (held-out rows or an eval split), cap and tokenise. Errors name the config key / row."""
    cfg.validate()
    convs = load_conversations(cfg, task_cfg)
    if cfg.eval_split:
        train_convs, eval_convs = convs, load_conversations(cfg, task_cfg, split=cfg.eval_split)
    else:
        perm = torch.randperm(len(convs), generator=keyed_generator(cfg.split_seed, "sft-holdout")).tolist()
        n_eval = _holdout_count(len(convs), cfg.eval_size)
        eval_convs = [convs[i] for i in perm[:n_eval]]
        train_convs = [convs[i] for i in perm[n_eval:]]
    if cfg.max_rows is not None:
        train_convs = train_convs[: cfg.max_rows]
    if cfg.max_eval_rows is not None:
        eval_convs = eval_convs[: cfg.max_eval_rows]
    kw = dict(max_length=cfg.max_length, d1_compat=cfg.d1_compat, eot_id=eot_id)
    train, dropped = tokenize_conversations(train_convs, tokenizer, **kw)
    if dropped:
        log.warning("dropped %d training rows whose prompt alone is >= data.max_length=%d", dropped, cfg.max_length)
    evals, dropped_eval = tokenize_conversations(eval_convs, tokenizer, **kw) if eval_convs else ([], 0)
    if dropped_eval:
        log.warning("dropped %d eval rows whose prompt alone is >= data.max_length=%d", dropped_eval, cfg.max_length)
    if not train:
        raise SFTDataError(f"no training rows left (data.max_length={cfg.max_length} too small for every prompt?)")
    return SFTDatasets(train, evals)


# ---------------------------------------------------------------------------------------------------- batches


def collate(
    examples: Sequence[SFTExample],
    row_ids: Sequence[int],
    *,
    pad_id: int,
    padding: str,
    max_length: int,
    pad_is_target: bool,
) -> SFTBatch:
    """Right-pad ``examples`` with ``pad_id`` (d1: EOS) to ``max_length`` or to the longest row."""
    lengths = torch.tensor([len(e.input_ids) for e in examples], dtype=torch.long)
    width = max_length if padding == "max_length" else int(lengths.max())
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    for b, e in enumerate(examples):
        ids[b, : len(e.input_ids)] = torch.tensor(e.input_ids, dtype=torch.long)
    prompt_lengths = torch.tensor([e.prompt_length for e in examples], dtype=torch.long)
    batch = SFTBatch(ids, prompt_lengths, lengths, torch.tensor(list(row_ids), dtype=torch.long))
    if not pad_is_target:
        pos = torch.arange(width)[None, :]
        batch.attention_mask = (pos < lengths[:, None]).long()
        batch.answer_mask = (pos >= prompt_lengths[:, None]) & (pos < lengths[:, None])
        batch.answer_lengths = lengths - prompt_lengths
    return batch


@dataclass
class NoisedBatch:
    noisy_ids: torch.Tensor
    masked: torch.Tensor
    t: torch.Tensor


def noise_batch(
    batch: SFTBatch,
    mask_id: int,
    *,
    stream: tuple[int | str, ...] | None = None,
    generator: torch.Generator | None = None,
    t: torch.Tensor | None = None,
    eps: float = 1e-3,
) -> NoisedBatch:
    """Mask answer tokens with probability t per row.

    Two ways to draw the randomness:

    * ``stream`` (the trainer's): row b uses ``keyed_generator(*stream, row_id[b])`` — first its t (unless ``t``
      is given), then its uniforms over its own positions — so the row's noise is independent of its batch-mates,
      its rank and the padding width (when padding is not a target).
    * ``generator`` (d1's collator): one generator for the batch: t (unless given) then one (B, L) uniform draw.

    ``t``: raw times in [0, 1] (mapped through ``eps`` here), e.g. d1's linspace for eval rows.
    """
    from d1rl.diffusion.sft import apply_t_eps, noise_for_sft, sample_t

    if (stream is None) == (generator is None):
        raise ValueError("give exactly one of stream= or generator=")
    B, L = batch.input_ids.shape
    device = batch.input_ids.device
    if generator is not None:
        t_eff = sample_t(B, generator, eps, device=device) if t is None else apply_t_eps(t.to(device), eps)
        noisy, masked = noise_for_sft(batch.input_ids, batch.prompt_lengths, t_eff, mask_id, generator, batch.answer_mask)
        return NoisedBatch(noisy, masked, t_eff)
    ts, noisy_rows, masked_rows = [], [], []
    for b in range(B):
        gen = keyed_generator(*stream, int(batch.row_ids[b]))
        t_b = sample_t(1, gen, eps) if t is None else apply_t_eps(t[b : b + 1].float().cpu(), eps)
        # When padding is not a target, noise only the row's own tokens, so its draw ignores the padding width.
        width = L if batch.answer_mask is None else int(batch.lengths[b])
        row = batch.input_ids[b : b + 1, :width]
        noisy_b, masked_b = noise_for_sft(row, batch.prompt_lengths[b : b + 1], t_b.to(device), mask_id, gen)
        if width < L:
            noisy_b = torch.cat([noisy_b, batch.input_ids[b : b + 1, width:]], dim=1)
            masked_b = torch.cat([masked_b, torch.zeros((1, L - width), dtype=torch.bool, device=device)], dim=1)
        ts.append(t_b.to(device))
        noisy_rows.append(noisy_b)
        masked_rows.append(masked_b)
    return NoisedBatch(torch.cat(noisy_rows), torch.cat(masked_rows), torch.cat(ts))
