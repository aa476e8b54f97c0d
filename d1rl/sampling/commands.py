"""``d1rl generate``: sample completions for a few prompts with the shared sampler (a Hydra command).

Examples::

    d1rl generate prompts='["What is 2+3?"]'                       # embedded tiny model, d1 eval decoding
    d1rl generate model=llada_8b_instruct sampler=d1_rollout prompts_file=prompts.jsonl output_file=out.jsonl
    d1rl generate sampler=fast prompts='["What is 2+3?"]'         # Fast-dLLM dual KV cache + threshold (approximate)
    d1rl generate --cfg job                                       # print the composed config

Prompts are chat-templated with the model's tokenizer (one user turn, optional system prompt), followed by the
optional ``prefill`` (d1's evaluation appends "<reasoning>"), batched with LEFT padding and an attention mask (so
a completion does not depend on the other prompts of its batch), and decoded after generation.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional, Sequence

import torch

from d1rl.atomic_io import write_jsonl_atomic
from d1rl.models import ModelConfig
from d1rl.sampling.config import SamplerConfig
from d1rl.sampling.padding import left_pad as _left_pad


@dataclass
class GenerateJobConfig:
    """Settings of ``d1rl generate``.

    Attributes:
        model: which model/tokenizer to load (``model=`` group; ``tiny`` = the embedded tiny LLaDA).
        sampler: decoding settings (``sampler=`` group; default the d1 evaluation preset).
        prompts: prompts given inline, e.g. ``prompts='["What is 2+3?"]'``.
        prompts_file: a file of prompts: ``.jsonl`` (one JSON string or object with ``prompt``/``question`` (text)
            or ``messages`` (chat list) per line), ``.json`` (a list of those), else plain text with one prompt per
            non-empty line. Used after the inline ``prompts``.
        system_prompt: optional system message put before every prompt (none in d1).
        prefill: text appended after the chat template, e.g. "<reasoning>" as d1's evaluation does.
        chat_template: apply the tokenizer's chat template (true; false = tokenize the raw prompt text).
        max_prompt_length: keep only the last N prompt tokens (d1 training: 200); null = no truncation.
        batch_size: prompts per sampler call (d1 eval.py: 4 by default, run_eval.sh 8; 4 at 512 tokens).
        seed: seed of the sampler's torch.Generator (matters only for temperature > 0 / random remasking).
        output_file: optional JSONL file with one record per prompt, written atomically at the end.
        skip_special_tokens: drop special tokens (EOS padding, EOT) when decoding completions (d1 eval keeps them).
        print_completions: print every prompt and completion to stdout.
        output_dir: Hydra's run directory (config snapshot in .hydra/).
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    prompts: List[str] = field(default_factory=list)
    prompts_file: Optional[str] = None
    system_prompt: Optional[str] = None
    prefill: str = ""
    chat_template: bool = True
    max_prompt_length: Optional[int] = None
    batch_size: int = 8
    seed: int = 42
    output_file: Optional[str] = None
    skip_special_tokens: bool = True
    print_completions: bool = True
    output_dir: str = "runs/generate"


# --------------------------------------------------------------------------------------------------- prompts


def _item_from_json(value: Any, where: str) -> str | list[dict]:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        if isinstance(value.get("messages"), list):
            return value["messages"]
        for key in ("prompt", "question"):
            if isinstance(value.get(key), str):
                return value[key]
    raise ValueError(f"{where}: expected a string or an object with 'prompt', 'question' or 'messages'")


def load_prompts_file(path: str | Path) -> list[str | list[dict]]:
    """Prompts from a text, JSON or JSONL file (see ``GenerateJobConfig.prompts_file``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompts_file {str(path)!r} does not exist")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        items = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not valid JSON ({exc.msg})") from exc
            items.append(_item_from_json(value, f"{path}:{number}"))
        return items
    if path.suffix == ".json":
        data = json.loads(text)
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a JSON list of prompts")
        return [_item_from_json(v, f"{path}[{i}]") for i, v in enumerate(data)]
    return [line for line in text.splitlines() if line.strip()]


def build_prompt_texts(
    items: Sequence[str | list[dict]],
    tokenizer: Any,
    *,
    chat_template: bool = True,
    system_prompt: str | None = None,
    prefill: str = "",
) -> list[str]:
    """The exact text fed to the tokenizer for each prompt: chat template (+ generation header) + prefill."""
    texts = []
    for item in items:
        if not chat_template:
            if not isinstance(item, str):
                raise ValueError("chat messages need chat_template=true")
            texts.append(item + prefill)
            continue
        if getattr(tokenizer, "chat_template", None) is None:
            raise ValueError("the tokenizer has no chat template; set chat_template=false to use raw prompts")
        messages = [{"role": "user", "content": item}] if isinstance(item, str) else list(item)
        if system_prompt:
            messages = [{"role": "system", "content": system_prompt}, *messages]
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        texts.append(text + prefill)
    return texts


def left_pad(
    sequences: Sequence[Sequence[int]], pad_id: int, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`d1rl.sampling.padding.left_pad` where an empty prompt is an error naming its row (a bad input line)."""
    return _left_pad(sequences, pad_id, device, allow_empty_rows=False)


# --------------------------------------------------------------------------------------------------- command


def _special_ids(model: Any, tokenizer: Any) -> Any:
    from d1rl.models import ModelAdapter

    return ModelAdapter.from_pretrained(model, tokenizer)


def run_generate(cfg: Any) -> int:
    """Generate completions for every prompt of a ``GenerateJobConfig``; returns the exit code."""
    from tqdm.auto import tqdm

    from d1rl.models import load_model_and_tokenizer
    from d1rl.sampling.sampler import generate

    items: list[str | list[dict]] = list(cfg.prompts)
    if cfg.prompts_file:
        items += load_prompts_file(cfg.prompts_file)
    if not items:
        raise ValueError("no prompts: set prompts='[\"...\"]' or prompts_file=PATH")
    if cfg.batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {cfg.batch_size}")

    model, tokenizer = load_model_and_tokenizer(cfg.model)
    adapter = _special_ids(model, tokenizer)
    kwargs = cfg.sampler.to_kwargs()
    for key, value in (("mask_id", adapter.mask_id), ("eos_id", adapter.eos_id),
                       ("eot_id", getattr(adapter, "eot_id", None))):
        if kwargs.get(key) is None:
            kwargs[key] = value
    kwargs.setdefault("logits_shift", getattr(adapter, "logits_shift", 0))
    pad_id = adapter.pad_id if adapter.pad_id is not None else adapter.eos_id
    device = next(model.parameters()).device

    texts = build_prompt_texts(items, tokenizer, chat_template=cfg.chat_template,
                               system_prompt=cfg.system_prompt, prefill=cfg.prefill)
    encoded = [tokenizer(t, add_special_tokens=not cfg.chat_template)["input_ids"] for t in texts]
    if cfg.max_prompt_length is not None:
        encoded = [ids[-cfg.max_prompt_length :] for ids in encoded]

    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    records: list[dict] = []
    started = time.perf_counter()
    total_nfe = 0
    total_token_forwards = 0
    starts = range(0, len(items), cfg.batch_size)
    for start in tqdm(starts, desc="generate", unit="batch", disable=len(starts) < 2):
        chunk = encoded[start : start + cfg.batch_size]
        ids, mask = left_pad(chunk, pad_id, device)
        out = generate(model, ids, mask, generator=generator, **kwargs)
        total_nfe += out.nfe
        total_token_forwards += out.token_forwards
        completions = out.completions.cpu()
        decoded = tokenizer.batch_decode(completions, skip_special_tokens=cfg.skip_special_tokens)
        for offset, text in enumerate(decoded):
            index = start + offset
            records.append({
                "index": index,
                "prompt": items[index],
                "input_text": texts[index],
                "num_prompt_tokens": len(chunk[offset]),
                "completion": text,
                "completion_ids": completions[offset].tolist(),
                "nfe": out.nfe,
                "token_forwards": out.token_forwards,  # of the whole batch (rows x positions fed)
            })
            if cfg.print_completions:
                print(f"=== [{index}] {items[index] if isinstance(items[index], str) else json.dumps(items[index])}")
                print(text, flush=True)
    elapsed = time.perf_counter() - started
    generated = len(items) * cfg.sampler.gen_length
    print(f"generated {generated} tokens for {len(items)} prompts in {elapsed:.2f}s "
          f"({generated / max(elapsed, 1e-9):.1f} tokens/s, {total_nfe} forward passes, "
          f"{total_token_forwards / max(generated, 1):.1f} token-forwards per generated token)", file=sys.stderr)
    if cfg.output_file:
        path = write_jsonl_atomic(cfg.output_file, records)
        print(f"wrote {len(records)} records to {path}", file=sys.stderr)
    return 0


def generate_main(argv: Sequence[str]) -> int:
    """Entry point of ``d1rl generate`` (Hydra: overrides, ``--cfg job``, ``--config-name``)."""
    from d1rl.config import register_schema, run_hydra, to_object

    register_schema("generate_schema", GenerateJobConfig)

    def task(cfg: Any) -> int:
        return run_generate(to_object(cfg, GenerateJobConfig))

    return run_hydra(argv, prog="d1rl generate", config_name="generate", task_fn=task)
