"""Evaluation: the sampler over a task's evaluated split, graded by the task's d1 and robust graders.

``d1rl eval`` (:func:`d1rl.evaluation.commands.eval_main`) writes one JSONL record per item as soon as it is done
(per-rank files, resumable after a kill), shards items over Accelerate processes as d1 does (rank r: r, r+W, ...),
batches with left padding and an attention mask (results independent of batch size and process count), and
reports ``results.json`` + a table + plots. See ``d1rl/evaluation/README.md`` for the file formats.

Public API:

* :class:`EvalJobConfig` — the job schema (``configs/eval.yaml``);
* :func:`evaluate_model` — one model, tasks x lengths (``model_and_tokenizer=`` for an already loaded model);
* :func:`run_eval_job` — a composed job (single model or ``ckpts``);
* :func:`run_batches`, :class:`EvalItem` — the token-level core (pre-tokenised prompts in, completion ids out);
* :func:`read_records`, :func:`aggregate`, :func:`format_table` — records to numbers;
* :func:`find_checkpoints` — the checkpoints of a run.
"""

from __future__ import annotations

from d1rl.evaluation.checkpoints import Checkpoint, find_checkpoints
from d1rl.evaluation.commands import eval_main, run_eval_job
from d1rl.evaluation.config import EvalJobConfig
from d1rl.evaluation.evaluate import evaluate_model
from d1rl.evaluation.records import ItemKey, RecordWriter, read_records
from d1rl.evaluation.results import aggregate, format_table
from d1rl.evaluation.runner import Completion, EvalItem, run_batches
from d1rl.evaluation.sharding import ProcessContext, shard


__all__ = [
    "Checkpoint",
    "Completion",
    "EvalItem",
    "EvalJobConfig",
    "ItemKey",
    "ProcessContext",
    "RecordWriter",
    "aggregate",
    "eval_main",
    "evaluate_model",
    "find_checkpoints",
    "format_table",
    "read_records",
    "run_batches",
    "run_eval_job",
    "shard",
]
