"""``d1rl eval``: Hydra entry point (primary config ``configs/eval.yaml``, schema :class:`EvalJobConfig`).

Examples::

    d1rl eval model=llada_8b_instruct task_defaults.data_dir=/data            # d1's protocol, 4 tasks x 3 lengths
    d1rl eval tasks=[sudoku] gen_lengths=[128] limit=16 batch_size=4           # a quick look
    d1rl eval ckpts=runs/train/gsm8k output_dir=runs/eval/gsm8k_curve          # accuracy vs training step
    accelerate launch --num_processes 8 -m d1rl.cli eval ...                     # sharded over 8 GPUs

With ``ckpts``, each checkpoint is evaluated into ``<output_dir>/checkpoint-<step>/`` (resumable like a single
evaluation) and ``results_by_step.json`` + ``accuracy_vs_step.png`` collect the curve.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any, Sequence

from d1rl.evaluation.checkpoints import Checkpoint, engine_run_model_config, find_checkpoints, load_engine_weights
from d1rl.evaluation.config import EvalJobConfig
from d1rl.evaluation.evaluate import evaluate_model
from d1rl.evaluation.plot import plot_accuracy_vs_step
from d1rl.evaluation.provenance import code_version
from d1rl.evaluation.results import primary_value, write_json_atomic
from d1rl.evaluation.sharding import ProcessContext

STEP_RESULTS_FILE = "results_by_step.json"
STEP_PLOT_FILE = "accuracy_vs_step.png"
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


def model_config_for_checkpoint(base: Any, ckpt: Checkpoint) -> Any:
    """The ``model`` config that loads ``ckpt``.

    * adapter: ``base`` + the adapter (``model.lora.adapter_path``);
    * HF model: the checkpoint directory replaces ``base.name_or_path`` (LoRA off);
    * engine checkpoint: the training run's model location and LoRA structure (from ``engine_state.json``; the
      saved tensors are loaded by :func:`load_checkpoint`) with ``base``'s dtype / device / quantization, so an
      adapter trained on a 4-bit base is evaluated on a bf16 base as d1 does (d1-reference §8 item 14).

    The tokenizer comes from the checkpoint when it has one, else from the base (or the run's) model config.
    """
    tokenizer = base.tokenizer_name_or_path or base.name_or_path
    if ckpt.kind == "adapter":
        lora = dataclasses.replace(base.lora, adapter_path=str(ckpt.model_path))
        return dataclasses.replace(base, lora=lora, tokenizer_name_or_path=tokenizer)
    if ckpt.kind == "engine":
        run = engine_run_model_config(ckpt)
        if run is None:  # a run config without a model section: trust the user's model= settings
            return base
        from omegaconf import OmegaConf

        from d1rl.models import ModelConfig

        try:
            run_cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ModelConfig), run))
        except Exception as err:
            raise ValueError(f"{ckpt.path}: the run's model config cannot be read: {err}") from err
        return dataclasses.replace(
            base, name_or_path=run_cfg.name_or_path, lora=run_cfg.lora,
            tokenizer_name_or_path=run_cfg.tokenizer_name_or_path or run_cfg.name_or_path,
        )
    if any((ckpt.model_path / f).is_file() for f in _TOKENIZER_FILES):
        tokenizer = str(ckpt.model_path)
    lora = dataclasses.replace(base.lora, enabled=False, adapter_path=None)
    return dataclasses.replace(base, name_or_path=str(ckpt.model_path), lora=lora, tokenizer_name_or_path=tokenizer)


def load_checkpoint(model_cfg: Any, ckpt: Checkpoint) -> tuple[Any, Any]:
    """Model + tokenizer of ``ckpt`` (``model_cfg`` from :func:`model_config_for_checkpoint`)."""
    from d1rl.models import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(model_cfg)
    if ckpt.kind == "engine":
        load_engine_weights(model, ckpt)
    return model, tokenizer


def _step_table(points: Sequence[dict[str, Any]], graders: Sequence[str]) -> str:
    """Primary metric (%) per task x length x grader (rows) and step (columns)."""
    steps = [p["step"] for p in points]
    keys = sorted({(r["task"], r["gen_length"], g) for p in points for r in p["results"] for g in graders})
    table = {(p["step"], r["task"], r["gen_length"], g): 100 * primary_value(r, g)
             for p in points for r in p["results"] for g in graders}
    labels = [f"{t} L={L} {g}" for t, L, g in keys]
    w0 = max([len("task / length / grader"), *map(len, labels)])
    head = "task / length / grader".ljust(w0) + "".join(f"{s:>10}" for s in steps)
    lines = [head, "-" * len(head)]
    for label, (t, L, g) in zip(labels, keys):
        vals = [table.get((s, t, L, g)) for s in steps]
        lines.append(label.ljust(w0) + "".join(f"{v:>10.1f}" if v is not None else f"{'-':>10}" for v in vals))
    return "\n".join(lines)


def evaluate_checkpoints(job: EvalJobConfig, ctx: ProcessContext) -> list[dict[str, Any]] | None:
    """Evaluate every checkpoint named by ``job.ckpts``; write the per-step summary and plot on the main process."""
    assert job.ckpts is not None
    ckpts = find_checkpoints(job.ckpts)
    out = Path(job.output_dir)
    points: list[dict[str, Any]] = []
    for ck in ckpts:
        if ctx.is_main:
            print(f"\n== checkpoint {ck.step}: {ck.path} ({ck.kind})", flush=True)
        mcfg = model_config_for_checkpoint(job.model, ck)
        res = evaluate_model(
            job, ctx, model_cfg=mcfg, output_dir=out / ck.path.name,
            load_fn=lambda mcfg=mcfg, ck=ck: load_checkpoint(mcfg, ck),
            extra_info={"step": ck.step, "checkpoint": str(ck.path.resolve()), "checkpoint_kind": ck.kind},
        )
        if res is not None:
            points.append({"step": ck.step, "checkpoint": str(ck.path), "results": res["results"]})
    if not ctx.is_main:
        return None
    write_json_atomic(out / STEP_RESULTS_FILE, {
        "ckpts": job.ckpts, "graders": list(job.graders), "points": points,
        "sampler": dataclasses.asdict(job.sampler), "seed": job.seed, "code_version": code_version(),
    })
    if job.plot:
        plot_accuracy_vs_step(points, job.graders, out / STEP_PLOT_FILE, title=str(job.ckpts))
    print(f"\n{_step_table(points, job.graders)}\n\ncurve: {out / STEP_RESULTS_FILE}", flush=True)
    return points


def run_eval_job(job: EvalJobConfig, ctx: ProcessContext | None = None) -> Any:
    """Run a composed eval job (single model or checkpoints); returns the main process's results."""
    ctx = ctx or ProcessContext.from_accelerate()
    if job.ckpts:
        return evaluate_checkpoints(job, ctx)
    return evaluate_model(job, ctx)


def _task_fn(cfg: Any) -> int:
    from d1rl.config import to_object

    job = to_object(cfg, EvalJobConfig)
    run_eval_job(job)
    return 0


def eval_main(argv: Sequence[str]) -> int:
    """``d1rl eval [overrides...]`` (Hydra; see configs/eval.yaml)."""
    from d1rl.config import register_schema, run_hydra

    register_schema("eval_schema", EvalJobConfig)
    return run_hydra(argv, prog="d1rl eval", config_name="eval", task_fn=_task_fn)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(eval_main(sys.argv[1:]))
