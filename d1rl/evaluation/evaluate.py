"""One evaluation job: tasks x generation lengths for one model, sharded, resumable, reported.

The order of events on every rank (R ranks, this one is r):

1. load each task's evaluated rows (d1's 256-item subset for Countdown/Sudoku, ``limit``) — cheap, every rank;
2. check ``eval_config.json`` in the output directory against this run's settings (resume only), or wipe the old
   records (``resume=false``); barrier;
3. repair this rank's record file (a torn last line from a kill); barrier; read every record file (any world size)
   to learn which (task, gen_length, index) are done; barrier;
4. if this rank's shard (items r, r+R, ...) has work left: load the model, tokenise the prompts, generate batch by
   batch and append one record per item as soon as its batch is done;
5. barrier; the main process reads all records, checks that every item is there exactly once, and writes
   ``results.json`` (atomically), prints the table and draws ``accuracy_vs_length.png``.

The results are a pure function of the records, so an interrupted-and-resumed run reports what an uninterrupted
one does.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from d1rl.evaluation.config import EvalJobConfig
from d1rl.evaluation.plot import plot_accuracy_vs_length
from d1rl.evaluation.provenance import code_version, device_info
from d1rl.evaluation.records import ItemKey, RecordWriter, read_records, record_files, record_path, repair_torn_tail
from d1rl.evaluation.results import RESULTS_SCHEMA_VERSION, aggregate, format_table, write_json_atomic
from d1rl.evaluation.runner import Completion, EvalItem, run_batches
from d1rl.evaluation.sharding import ProcessContext, shard

logger = logging.getLogger(__name__)

CONFIG_FILE = "eval_config.json"
RESULTS_FILE = "results.json"
PLOT_FILE = "accuracy_vs_length.png"

# Model-config fields that change where/how fast a model runs but not what it computes.
_RUNTIME_ONLY_MODEL_KEYS = ("device", "gradient_checkpointing")


@dataclass
class PreparedTask:
    """A task and the rows it is evaluated on (index i of ``rows`` is the item index in records)."""

    name: str
    task: Any
    rows: list[dict[str, Any]]


# ---------------------------------------------------------------------------------------------------------------
# configuration helpers


def task_config_for(job: EvalJobConfig, name: str) -> Any:
    """``task_defaults`` with ``name`` set, merged with ``task_overrides[name]`` and validated by the schema."""
    from omegaconf import OmegaConf

    from d1rl.tasks.config import TaskConfig

    base = dataclasses.replace(job.task_defaults, name=name)
    override = job.task_overrides.get(name) or {}
    if not isinstance(override, Mapping):
        raise ValueError(f"eval: task_overrides.{name} must be a mapping of TaskConfig fields, got {override!r}")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(base), dict(override))
    except Exception as err:  # omegaconf names the offending key
        raise ValueError(f"eval: task_overrides.{name}: {err}") from err
    obj = OmegaConf.to_object(merged)
    assert isinstance(obj, TaskConfig)
    if obj.name != name:
        raise ValueError(f"eval: task_overrides.{name}.name must not rename the task (got {obj.name!r})")
    return obj


def prepare_tasks(job: EvalJobConfig) -> list[PreparedTask]:
    """Load the evaluated rows of every task in ``job.tasks`` (subset and ``limit`` applied, in d1's order)."""
    from d1rl.tasks import DataUnavailableError, get_task, task_names

    known = set(task_names())
    unknown = sorted((set(job.tasks) | set(job.task_overrides)) - known)
    if unknown:
        raise ValueError(f"eval: unknown task(s) {unknown}; known tasks: {sorted(known)}")
    out = []
    for name in job.tasks:
        task = get_task(name, task_config_for(job, name))
        try:
            ds = task.load_eval_split(job.split)
        except DataUnavailableError as err:
            # The task speaks of task.<key>; in an eval job those keys live under task_defaults / task_overrides.
            raise DataUnavailableError(
                f"{err}\n(d1rl eval: set these keys as task_defaults.<key> for every task, or "
                f"+task_overrides.{name}.<key> for this one, e.g. task_defaults.data_dir=/path/to/data)"
            ) from err
        if job.limit is not None and job.limit < len(ds):
            ds = ds.select(range(job.limit))
        rows = [dict(r) for r in ds]
        if not rows:
            raise ValueError(f"eval: task {name} has no rows in split {job.split!r}")
        out.append(PreparedTask(name, task, rows))
    return out


def sampler_for_length(sampler: Any, gen_length: int) -> Any:
    """The sampler config at ``gen_length`` (re-validated: block_length must divide it; steps null = L // 2)."""
    try:
        return dataclasses.replace(sampler, gen_length=int(gen_length))
    except ValueError as err:
        raise ValueError(f"eval: gen_length {gen_length}: {err}") from err


def run_signature(job: EvalJobConfig, model_cfg: Any, tasks: Sequence[PreparedTask]) -> dict[str, Any]:
    """Everything that determines a record's content; a resumed run must match it exactly.

    Not included, on purpose: batch_size (results do not depend on it), limit and gen_lengths (they only select
    which keys exist), output paths, device and the number of processes.
    """
    model = dataclasses.asdict(model_cfg)
    for key in _RUNTIME_ONLY_MODEL_KEYS:
        model.pop(key, None)
    sampler = dataclasses.asdict(job.sampler)
    sampler.pop("gen_length", None)
    return json.loads(json.dumps({
        "model": model,
        "sampler": sampler,
        "seed": job.seed,
        "graders": sorted(job.graders),
        "split": job.split,
        "tasks": {t.name: dataclasses.asdict(t.task.cfg) for t in tasks},
        "record_token_ids": job.record_token_ids,
    }, default=str))


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, Mapping):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: obj}


def signature_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Dotted keys whose values differ, as ``key: old -> new``."""
    a, b = _flatten(old), _flatten(new)
    return [f"{k}: {a.get(k, '<absent>')!r} -> {b.get(k, '<absent>')!r}" for k in sorted(set(a) | set(b)) if a.get(k, "<absent>") != b.get(k, "<absent>")]


# ---------------------------------------------------------------------------------------------------------------
# records


def effective_tokens(ids: Sequence[int], stop_ids: set[int]) -> int:
    """Generated tokens that carry text: everything except ``<|endoftext|>`` (EOS = pad) fill.

    d1 counts ``tiktoken cl100k_base`` tokens of the text with ``<|endoftext|>`` removed (``<|eot_id|>`` kept);
    we count the model's own tokens with the same exclusion, which needs no extra tokenizer and is the number of
    positions the model actually spent on content.
    """
    return sum(1 for t in ids if t not in stop_ids)


def make_record(
    c: Completion,
    prepared: PreparedTask,
    tokenizer: Any,
    graders: Sequence[str],
    stop_ids: set[int],
    rank: int,
    steps: int,
    record_token_ids: bool,
) -> dict[str, Any]:
    """The JSON record of one finished item (decoded text, both verdicts, cost)."""
    row = c.item.row if c.item.row is not None else prepared.rows[c.item.index]
    # d1 decodes with skip_special_tokens=False: its parsers look for <|eot_id|> / <|endoftext|> (Sudoku patterns).
    text = tokenizer.decode(c.completion_ids, skip_special_tokens=False)
    grades: dict[str, Any] = {}
    for g in graders:
        try:
            grades[g] = prepared.task.grade(text, row, g).to_dict()
        except Exception as err:  # noqa: BLE001 - one bad item must not lose hours of generation
            logger.warning("grader %s failed on %s/%d/%d: %s", g, c.item.task, c.gen_length, c.item.index, err)
            grades[g] = {"correct": False, "extracted": None, "score": 0.0, "details": {"error": f"{type(err).__name__}: {err}"}}
    rec: dict[str, Any] = {
        "task": c.item.task,
        "gen_length": c.gen_length,
        "index": c.item.index,
        "question": row.get("question"),
        "prompt": c.item.prompt_text,
        "completion": text,
        "ground_truth": row.get("answer"),
        "grades": grades,
        "effective_tokens": effective_tokens(c.completion_ids, stop_ids),
        "prompt_tokens": len(c.item.prompt_ids),
        "steps": steps,
        "nfe": c.nfe,
        "seconds": round(c.seconds, 6),
        "batch_size": c.batch_size,
        "rank": rank,
    }
    if record_token_ids:
        rec["completion_ids"] = list(c.completion_ids)
    return rec


def build_items(prepared: PreparedTask, indices: Sequence[int], tokenizer: Any) -> list[EvalItem]:
    """Tokenised eval prompts (chat template + ``eval_prefill``) of the given rows."""
    from d1rl.tasks import build_prompt_text

    items = []
    for i in indices:
        row = prepared.rows[i]
        text = build_prompt_text(tokenizer, prepared.task.eval_prompt(row), prepared.task.eval_prefill)
        # The chat template already starts with BOS: no special tokens added here (d1 does the same).
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        items.append(EvalItem(prepared.name, i, tuple(int(t) for t in ids), row=row, prompt_text=text))
    return items


# ---------------------------------------------------------------------------------------------------------------
# the job


def _check_or_reset(out_dir: Path, job: EvalJobConfig, signature: Mapping[str, Any], ctx: ProcessContext) -> None:
    """Resume: refuse a directory written with other settings. Fresh start: remove earlier outputs (main only)."""
    cfg_path = out_dir / CONFIG_FILE
    if job.resume and cfg_path.is_file():
        old = json.loads(cfg_path.read_text()).get("signature", {})
        diff = signature_differences(old, signature)
        if diff:
            raise ValueError(
                f"eval: {out_dir} holds records made with other settings ({'; '.join(diff[:8])}"
                f"{'; ...' if len(diff) > 8 else ''}). Use another output_dir, or resume=false to start over."
            )
    elif job.resume and record_files(out_dir):
        raise ValueError(f"eval: {out_dir} has record files but no {CONFIG_FILE}; cannot tell how they were made. "
                         "Use another output_dir, or resume=false to start over.")
    ctx.barrier()
    if ctx.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        if not job.resume:
            for p in [*record_files(out_dir), out_dir / RESULTS_FILE, out_dir / PLOT_FILE]:
                if p.exists():
                    p.unlink()
        write_json_atomic(cfg_path, {"signature": signature, "job": dataclasses.asdict(job)})
    ctx.barrier()


def _free_memory() -> None:
    """Return the memory of a model the caller has dropped (several checkpoints are evaluated in a row)."""
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # pragma: no cover
        pass


def evaluate_model(
    job: EvalJobConfig,
    ctx: ProcessContext,
    *,
    model_cfg: Any = None,
    output_dir: str | Path | None = None,
    model_and_tokenizer: tuple[Any, Any] | None = None,
    load_fn: Callable[[], tuple[Any, Any]] | None = None,
    extra_info: Mapping[str, Any] | None = None,
    generate_fn: Callable[..., Any] | None = None,
) -> dict[str, Any] | None:
    """Evaluate one model as described in the module docstring; returns the results dict on the main process.

    ``model_cfg`` defaults to ``job.model``; ``model_and_tokenizer`` skips loading (tests, in-training
    evaluation); ``load_fn`` replaces :func:`d1rl.models.load_model_and_tokenizer` (called only if this rank has
    work left); ``extra_info`` is copied into results.json and the resume signature (e.g. the checkpoint).
    """
    from tqdm.auto import tqdm

    model_cfg = model_cfg if model_cfg is not None else job.model
    out_dir = Path(output_dir if output_dir is not None else job.output_dir)
    started = time.time()
    samplers = {int(L): sampler_for_length(job.sampler, int(L)) for L in job.gen_lengths}
    tasks = prepare_tasks(job)
    expected = {ItemKey(t.name, L, i) for t in tasks for L in samplers for i in range(len(t.rows))}
    signature = run_signature(job, model_cfg, tasks)
    if extra_info:
        signature["extra"] = json.loads(json.dumps(dict(extra_info), default=str))
    _check_or_reset(out_dir, job, signature, ctx)

    repair_torn_tail(record_path(out_dir, ctx.rank))
    ctx.barrier()
    done = set(read_records(out_dir)) & expected if job.resume else set()
    ctx.barrier()

    # This rank's remaining work, per (task, length): the shard's item indices, and whether any is missing.
    work = []
    remaining = 0
    for t in tasks:
        mine = shard(range(len(t.rows)), ctx.rank, ctx.world_size)
        for L in samplers:
            left = sum(1 for i in mine if ItemKey(t.name, L, i) not in done)
            if left:
                work.append((t, L, mine))
                remaining += left

    if remaining:
        if model_and_tokenizer is not None:
            model, tokenizer = model_and_tokenizer
        elif load_fn is not None:
            model, tokenizer = load_fn()
        else:
            from d1rl.models import load_model_and_tokenizer

            model, tokenizer = load_model_and_tokenizer(model_cfg)
        from d1rl.models import ModelAdapter

        adapter = ModelAdapter.from_pretrained(model, tokenizer)
        stop_ids = {adapter.eos_id, adapter.pad_id}
        device = next(iter(model.parameters())).device if hasattr(model, "parameters") else ctx.device
        items_cache: dict[str, list[EvalItem]] = {}
        bar = tqdm(total=remaining, desc="eval", unit="item", disable=not ctx.is_main, dynamic_ncols=True)
        try:
            with RecordWriter(record_path(out_dir, ctx.rank)) as writer:
                for t, L, mine in work:
                    if t.name not in items_cache:
                        items_cache[t.name] = build_items(t, mine, tokenizer)
                    scfg = samplers[L]
                    kwargs = scfg.to_kwargs()
                    kwargs.pop("gen_length")
                    kwargs["mask_id"] = adapter.mask_id if kwargs.get("mask_id") is None else kwargs["mask_id"]
                    if kwargs.get("eos_id") is None:
                        kwargs["eos_id"] = adapter.eos_id
                    if kwargs.get("eot_id") is None:
                        kwargs["eot_id"] = adapter.eot_id
                    bar.set_postfix_str(f"{t.name} L={L}")
                    batch: list[dict[str, Any]] = []
                    for c in run_batches(
                        model, items_cache[t.name], gen_length=L, batch_size=job.batch_size, pad_id=adapter.pad_id,
                        sampler_kwargs=kwargs, seed=job.seed, device=device, done=done, generate_fn=generate_fn,
                    ):
                        writer.write(make_record(c, t, tokenizer, job.graders, stop_ids, ctx.rank,
                                                 scfg.resolved_steps(), job.record_token_ids))
                        bar.update(1)
                    writer.sync()
        finally:
            bar.close()
        if model_and_tokenizer is None:
            model = tokenizer = None
            items_cache.clear()
            _free_memory()
    ctx.barrier()

    if not ctx.is_main:
        return None
    records = {k: v for k, v in read_records(out_dir).items() if k in expected}
    missing = sorted(expected - set(records))
    if missing:
        raise RuntimeError(
            f"eval: {len(missing)} item(s) have no record in {out_dir} after the run, e.g. {missing[:5]}; with "
            "processes on several machines, output_dir must be on a filesystem they all share"
        )
    rows = aggregate(records, job.graders)
    for r in rows:
        r["steps"] = samplers[int(r["gen_length"])].resolved_steps()
        r["block_length"] = samplers[int(r["gen_length"])].block_length
    results = {
        "schema_version": RESULTS_SCHEMA_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "results": rows,
        "graders": list(job.graders),
        "tasks": {t.name: {"n": len(t.rows), "config": dataclasses.asdict(t.task.cfg)} for t in tasks},
        "gen_lengths": sorted(samplers),
        "model": dataclasses.asdict(model_cfg),
        "sampler": dataclasses.asdict(job.sampler),
        "seed": job.seed,
        "batch_size": job.batch_size,
        "limit": job.limit,
        "split": job.split,
        "code_version": code_version(),
        "device": device_info(ctx.device, ctx.world_size),
        "wall_seconds_this_invocation": round(time.time() - started, 3),
        **dict(extra_info or {}),
    }
    write_json_atomic(out_dir / RESULTS_FILE, results)
    if job.plot:
        title = str(model_cfg.name_or_path) + (f" (step {extra_info['step']})" if extra_info and "step" in extra_info else "")
        plot_accuracy_vs_length(rows, job.graders, out_dir / PLOT_FILE, title=title)
    print(f"\n{format_table(rows, job.graders)}\n\nresults: {out_dir / RESULTS_FILE}", flush=True)
    return results
