"""The training engine on Accelerate, shared by the SFT and diffu-GRPO trainers.

The engine owns everything that is the same for every trainer: the Accelerator (devices, DDP / DeepSpeed / FSDP,
mixed precision), AdamW + LR schedule, gradient accumulation and clipping, trackers + ``metrics.jsonl``, the tqdm
bar, and checkpoints with exact resume. A trainer owns its data, its loss and its own state (data position,
rollout step, generator states) — which it hands to the engine as a plain dict to be checkpointed.

Public API (all a trainer may use; nothing here subclasses transformers' or TRL's trainers)::

    engine = Engine(trainer_cfg, logger_cfg, output_dir, run_config=cfg_dict)   # before loading the model
    model = engine.prepare(model, total_steps=N)      # optimizer + schedule + accelerate.prepare; returns wrapped
    ref = engine.prepare_eval_model(ref_model)        # frozen extra model placed like the trainable one
    extra = engine.resume()                           # None (fresh) or the dict given to save_checkpoint
    engine.start_progress("train")                    # tqdm bar with ETA on the main process
    while not engine.done:                            # global_step < total_steps
        for micro in micro_batches:                   # gradient_accumulation_steps per optimizer step
            with engine.accumulate():                 # skips the DDP all-reduce except on the last micro-batch
                loss = ...                            # mean loss of this micro-batch
                engine.backward(loss)                 # scales by 1/grad_accum
            grad_norm = engine.optimizer_step()       # clip+step+schedule+zero_grad on the sync micro-batch only;
                                                      # returns the pre-clip global grad norm, else None
        if engine.should_log():                       # every logger.logging_steps and at the last step
            engine.log(engine.mean_across_processes({"loss": ...}))  # metrics.jsonl + trackers at global_step
        engine.maybe_save(lambda: {"data": ...})      # every trainer.save_steps, atomic, keeps the last K
        engine.maybe_evaluate() -> bool               # True every trainer.eval_steps (the trainer runs its eval)
    engine.save_final(tokenizer)                      # <output_dir>/final: HF checkpoint or LoRA adapter
    engine.end()

Also: ``engine.global_step`` (optimizer steps done), ``engine.total_steps``, ``engine.sync_gradients`` (this
micro-batch completes an optimizer step), ``engine.learning_rate`` (the rate of the last update),
``engine.device``, ``engine.is_main_process``, ``engine.process_index``, ``engine.num_processes``,
``engine.gather(t)``, ``engine.mean_across_processes({...}) -> {name: float}``, ``engine.sum_across_processes(t)``,
``engine.unwrap(model=None)``, ``engine.wait_for_everyone()``, ``engine.save_checkpoint(extra_state) -> Path``,
``engine.print(...)`` (main process only), ``engine.accelerator`` (escape hatch).

How μ inner iterations of diffu-GRPO map onto it: each inner iteration is one optimizer step made of
``gradient_accumulation_steps`` micro-batches of the buffered rollout batch; the trainer calls ``accumulate`` /
``backward`` / ``optimizer_step`` per micro-batch exactly as above, and derives its inner-iteration index from
``engine.global_step`` (never from a micro-batch counter — d1 bug §8.1).

Exact resume: checkpoints hold the trainable weights, optimizer, scheduler, (fp16 scaler,) every rank's RNG
states and the trainer's dict. Restoring them after the model was rebuilt from its config reproduces the
uninterrupted run bit for bit on the same hardware and world size (tested with SIGKILL in tests/training).
Seeding: ``Engine.__init__`` seeds python/numpy/torch with ``trainer.seed`` on every rank (same seed on every rank,
so model/LoRA initialisation is identical everywhere); trainers draw their own randomness from keyed generators
(:mod:`d1rl.training.batching`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import torch

from d1rl.training import checkpoint as ckpt
from d1rl.training.config import LoggerConfig, TrainerConfig
from d1rl.training.metrics import MetricsFile, flatten_config, to_scalar
from d1rl.training.optim import build_lr_scheduler, build_optimizer

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1


class Engine:
    """One training loop's machinery on Accelerate (see the module docstring for the API and its contract).

    Args:
        trainer: the ``trainer=`` config (validated here).
        logger: the ``logger=`` config (validated here).
        output_dir: run folder; checkpoints go to ``<output_dir>/checkpoints``, metrics to
            ``<output_dir>/<logger.metrics_file>``, the final model to ``<output_dir>/final``.
        run_config: the whole job config as a plain dict; sent to the trackers and fingerprinted in checkpoints
            (a resume with a different config is allowed but warned about).
    """

    def __init__(
        self,
        trainer: TrainerConfig,
        logger: LoggerConfig,
        output_dir: str | Path,
        *,
        run_config: Mapping[str, Any] | None = None,
    ) -> None:
        from accelerate import Accelerator
        from accelerate.utils import (
            DistributedDataParallelKwargs,
            GradientAccumulationPlugin,
            InitProcessGroupKwargs,
            set_seed,
        )

        trainer.validate()
        logger.validate()
        self.cfg = trainer
        self.log_cfg = logger
        self.output_dir = Path(output_dir)
        self.run_config = dict(run_config or {})
        self.accelerator = Accelerator(
            mixed_precision=trainer.mixed_precision,
            # Our trainers iterate their own (resumable) batch schedule, not a prepared DataLoader, so the
            # accumulation boundary is purely "every grad_accum-th micro-batch".
            gradient_accumulation_plugin=GradientAccumulationPlugin(
                num_steps=trainer.gradient_accumulation_steps, sync_with_dataloader=False
            ),
            log_with=list(logger.report_to) or None,
            project_dir=str(self.output_dir),
            # The schedule is defined per optimizer step; stepping it num_processes times (Accelerate's default
            # for prepared schedulers) would make the LR depend on the world size.
            step_scheduler_with_optimizer=False,
            kwargs_handlers=[
                DistributedDataParallelKwargs(find_unused_parameters=trainer.ddp_find_unused_parameters),
                InitProcessGroupKwargs(timeout=timedelta(seconds=trainer.ddp_timeout_s)),
            ],
        )
        set_seed(trainer.seed)
        self.global_step = 0
        self.total_steps: int | None = None
        self.model: torch.nn.Module | None = None
        self.optimizer = None
        self.scheduler = None
        self.learning_rate: float = trainer.learning_rate
        self._progress = None
        self._metrics: MetricsFile | None = None
        self._last_log_time = time.time()
        if self.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            self._metrics = MetricsFile(self.output_dir / logger.metrics_file)
        if logger.report_to:
            init_kwargs: dict[str, Any] = {}
            if "wandb" in logger.report_to:
                init_kwargs["wandb"] = {
                    "name": logger.run_name or self.output_dir.name,
                    "entity": logger.wandb_entity,
                    "tags": list(logger.tags) or None,
                    "dir": str(self.output_dir),
                }
            self.accelerator.init_trackers(logger.project, config=flatten_config(self.run_config), init_kwargs=init_kwargs)

    # ------------------------------------------------------------------------------------------------ topology
    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def is_main_process(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def process_index(self) -> int:
        return self.accelerator.process_index

    @property
    def num_processes(self) -> int:
        return self.accelerator.num_processes

    @property
    def sync_gradients(self) -> bool:
        """True inside the micro-batch that completes an optimizer step."""
        return self.accelerator.sync_gradients

    @property
    def _sharded(self) -> bool:
        from accelerate.utils import DistributedType

        return self.accelerator.distributed_type in (DistributedType.DEEPSPEED, DistributedType.FSDP)

    def wait_for_everyone(self) -> None:
        self.accelerator.wait_for_everyone()

    def print(self, *args: Any) -> None:
        """Print on the main process only (through tqdm so the bar is not broken)."""
        if self.is_main_process:
            if self._progress is not None:
                self._progress.write(" ".join(str(a) for a in args))
            else:
                print(*args, flush=True)

    # ------------------------------------------------------------------------------------------------ setup
    def prepare(self, model: torch.nn.Module, *, total_steps: int) -> torch.nn.Module:
        """Build AdamW over the trainable parameters and the LR schedule for ``total_steps`` optimizer steps, wrap
        everything with Accelerate, and return the wrapped model (use it for forward passes)."""
        if self.model is not None:
            raise RuntimeError("Engine.prepare was already called; an engine trains one model")
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        self.total_steps = int(total_steps)
        self._fill_deepspeed_config()
        optimizer = build_optimizer(model, self.cfg)
        scheduler = build_lr_scheduler(optimizer, self.cfg, self.total_steps)
        self.model, self.optimizer, self.scheduler = self.accelerator.prepare(model, optimizer, scheduler)
        self.model.train()
        return self.model

    def prepare_eval_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """Place a frozen helper model (e.g. a reference policy) like the trained one, without an optimizer."""
        for p in model.parameters():
            p.requires_grad_(False)
        model.eval()
        return self.accelerator.prepare_model(model, evaluation_mode=True)

    # ------------------------------------------------------------------------------------------------ stepping
    def accumulate(self, model: torch.nn.Module | None = None) -> contextlib.AbstractContextManager:
        """Context for one micro-batch: decides whether this micro-batch ends an optimizer step
        (``sync_gradients``) and suppresses the DDP gradient all-reduce otherwise."""
        return self.accelerator.accumulate(model if model is not None else self._require_model())

    def backward(self, loss: torch.Tensor) -> None:
        """Backward of a micro-batch loss, scaled by ``1/gradient_accumulation_steps`` (and by the fp16 scaler)."""
        self.accelerator.backward(loss)

    def optimizer_step(self) -> float | None:
        """On the micro-batch that completes an optimizer step: clip the global gradient norm to
        ``trainer.max_grad_norm``, step AdamW and the schedule, zero the gradients, advance ``global_step`` and
        the progress bar, and return the pre-clip norm. On other micro-batches do nothing and return None."""
        model = self._require_model()
        if not self.sync_gradients:
            return None
        max_norm = self.cfg.max_grad_norm if self.cfg.max_grad_norm > 0 else math.inf
        norm = self.accelerator.clip_grad_norm_(model.parameters(), max_norm)
        self.learning_rate = float(self.optimizer.param_groups[0]["lr"])  # the rate THIS update uses
        self.optimizer.step()
        if not self.accelerator.optimizer_step_was_skipped:  # fp16 overflow: keep the schedule in place
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.global_step += 1
        if self._progress is not None:
            self._progress.update(1)
        return float(to_scalar(norm)) if norm is not None else None

    @property
    def done(self) -> bool:
        """True once ``global_step`` reached ``total_steps``."""
        return self.total_steps is not None and self.global_step >= self.total_steps

    # ------------------------------------------------------------------------------------------------ collectives
    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Concatenate ``tensor`` (first dim) from every process."""
        return self.accelerator.gather(tensor)

    def sum_across_processes(self, tensor: torch.Tensor) -> torch.Tensor:
        """Element-wise sum over processes (e.g. token counts)."""
        return self.accelerator.reduce(tensor.detach().clone(), reduction="sum")

    def mean_across_processes(self, values: Mapping[str, Any]) -> dict[str, float]:
        """Average scalar metrics over processes with one collective; returns Python floats."""
        if not values:
            return {}
        keys = list(values)
        vec = torch.tensor([float(to_scalar(values[k])) for k in keys], dtype=torch.float64, device=self.device)
        if self.num_processes > 1:
            vec = self.accelerator.reduce(vec, reduction="mean")
        return {k: float(v) for k, v in zip(keys, vec.tolist())}

    def unwrap(self, model: torch.nn.Module | None = None) -> torch.nn.Module:
        """The bare model under the DDP/DeepSpeed/compile wrappers (for saving, generation, config access)."""
        return self.accelerator.unwrap_model(model if model is not None else self._require_model())

    # ------------------------------------------------------------------------------------------------ logging
    def start_progress(self, desc: str = "train") -> None:
        """Open the tqdm bar (main process, if enabled) at ``global_step`` of ``total_steps``; shows the ETA."""
        if not (self.is_main_process and self.log_cfg.progress_bar) or self._progress is not None:
            return
        from tqdm.auto import tqdm

        self._progress = tqdm(
            total=self.total_steps, initial=self.global_step, desc=desc, dynamic_ncols=True, smoothing=0.1
        )

    def should_log(self) -> bool:
        """True when ``global_step`` is a multiple of ``logger.logging_steps`` or the last step."""
        return self.global_step % self.log_cfg.logging_steps == 0 or self.done

    def log(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Write metrics (already reduced over processes) to metrics.jsonl and the trackers at ``step``
        (default ``global_step``); shows loss/lr on the bar. Call it on every process (only main writes)."""
        step = self.global_step if step is None else int(step)
        values = {k: to_scalar(v) for k, v in metrics.items()}
        if self.is_main_process:
            assert self._metrics is not None
            self._metrics.write(step, values)
            if self._progress is not None:
                shown = {k: values[k] for k in ("loss", "eval/loss", "reward") if isinstance(values.get(k), float)}
                if shown:
                    self._progress.set_postfix({k: f"{v:.4g}" for k, v in shown.items()}, refresh=False)
        if self.log_cfg.report_to:
            self.accelerator.log({k: v for k, v in values.items() if isinstance(v, (int, float))}, step=step)

    def maybe_evaluate(self) -> bool:
        """True when the trainer should run its evaluation now (every ``trainer.eval_steps`` and at the end)."""
        every = self.cfg.eval_steps
        return self.done or (every > 0 and self.global_step % every == 0)

    # ------------------------------------------------------------------------------------------------ checkpoints
    @property
    def checkpoint_root(self) -> Path:
        return self.output_dir / "checkpoints"

    def maybe_save(self, extra_state: Mapping[str, Any] | Callable[[], Mapping[str, Any]] | None = None) -> Path | None:
        """Save a checkpoint if ``global_step`` is a multiple of ``trainer.save_steps``; ``extra_state`` may be a
        callable so the trainer's state is only built when a save happens."""
        every = self.cfg.save_steps
        if every <= 0 or self.global_step == 0 or self.global_step % every:
            return None
        state = extra_state() if callable(extra_state) else extra_state
        return self.save_checkpoint(state)

    def save_checkpoint(self, extra_state: Mapping[str, Any] | None = None) -> Path:
        """Write ``checkpoints/checkpoint-<step>`` atomically (all processes must call) and keep the newest
        ``trainer.save_total_limit``. ``extra_state``: this rank's trainer state — a dict of tensors, numbers,
        strings, lists and dicts (loaded back with ``torch.load(weights_only=True)``)."""
        from safetensors.torch import save_file

        model = self._require_model()
        step = self.global_step
        root = self.checkpoint_root
        tmp = ckpt.tmp_dir_for(root, step)
        final = root / ckpt.checkpoint_name(step)
        if self.is_main_process:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        self.wait_for_everyone()
        if self._sharded:
            # DeepSpeed / FSDP shard weights and optimizer state over ranks: their own writers handle that.
            self.accelerator.save_state(str(tmp / "accelerate_state"))
        elif self.is_main_process:
            save_file(_trainable_state_dict(self.unwrap(model)), str(tmp / "model.safetensors"))
            torch.save(self.optimizer.state_dict(), tmp / "optimizer.pt")
            torch.save(self.scheduler.state_dict(), tmp / "scheduler.pt")
            if self.accelerator.scaler is not None:
                torch.save(self.accelerator.scaler.state_dict(), tmp / "scaler.pt")
        rank = self.process_index
        torch.save(ckpt.capture_rng_state(), tmp / f"rng_state_rank{rank}.pt")
        torch.save(dict(extra_state or {}), tmp / f"trainer_state_rank{rank}.pt")
        self.wait_for_everyone()
        if self.is_main_process:
            # engine_state.json is written last: a folder without it is never considered complete.
            ckpt.write_json_atomic(
                tmp / ckpt.ENGINE_STATE,
                {
                    "format": CHECKPOINT_FORMAT,
                    "global_step": step,
                    "total_steps": self.total_steps,
                    "num_processes": self.num_processes,
                    "distributed_type": str(self.accelerator.distributed_type),
                    "config_fingerprint": self._config_fingerprint(),
                    "run_config": self.run_config,
                    "time": time.time(),
                },
            )
            ckpt.publish(tmp, final)
            for old in ckpt.rotate(root, self.cfg.save_total_limit):
                log.info("removed old checkpoint %s", old)
        self.wait_for_everyone()
        return final

    def resume(self) -> dict[str, Any] | None:
        """Apply ``trainer.resume``: restore weights, optimizer, schedule, RNG and ``global_step`` from a
        checkpoint and return this rank's trainer state, or return None for a fresh start. Call after
        :meth:`prepare`. Also trims metrics.jsonl to the restored step (see :mod:`d1rl.training.metrics`)."""
        model = self._require_model()
        mode = self.cfg.resume
        root = self.checkpoint_root
        if self.is_main_process:
            for leftover in ckpt.remove_partial(root):
                log.warning("removed an incomplete checkpoint left by an interrupted save: %s", leftover)
        self.wait_for_everyone()
        if mode == "never":
            existing = ckpt.list_checkpoints(root)
            if existing:
                raise FileExistsError(
                    f"trainer.resume=never but {root} already holds checkpoints (newest {existing[-1][1].name}); "
                    "use trainer.resume=auto to continue, or another output_dir"
                )
            path = None
        elif mode == "auto":
            path = ckpt.latest_checkpoint(root)
        else:
            path = Path(mode)
            if not (path / ckpt.ENGINE_STATE).is_file():
                raise FileNotFoundError(f"trainer.resume={mode!r} is not a checkpoint folder (no {ckpt.ENGINE_STATE})")
        if path is None:
            self._trim_metrics(0)
            return None

        state = json.loads((path / ckpt.ENGINE_STATE).read_text())
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{path}: checkpoint format {state.get('format')} is not {CHECKPOINT_FORMAT}")
        if state["num_processes"] != self.num_processes:
            raise ValueError(
                f"{path} was written by {state['num_processes']} processes, this run has {self.num_processes}; "
                "exact resume needs the same world size (per-rank RNG and data shards)"
            )
        if state.get("config_fingerprint") != self._config_fingerprint():
            log.warning("resuming from %s with a config that differs from the one that wrote it", path)
        if self._sharded:
            self.accelerator.load_state(str(path / "accelerate_state"))
        else:
            from safetensors.torch import load_file

            _load_trainable_state_dict(self.unwrap(model), load_file(str(path / "model.safetensors")), path)
            self.optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True, map_location="cpu"))
            self.scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
            if self.accelerator.scaler is not None and (path / "scaler.pt").exists():
                self.accelerator.scaler.load_state_dict(torch.load(path / "scaler.pt", weights_only=True))
        rank = self.process_index
        ckpt.restore_rng_state(torch.load(path / f"rng_state_rank{rank}.pt", weights_only=True))
        self.global_step = int(state["global_step"])
        self.learning_rate = float(self.optimizer.param_groups[0]["lr"])
        if self._progress is not None:
            self._progress.n = self.global_step
            self._progress.refresh()
        self._trim_metrics(self.global_step)
        self.print(f"resumed from {path} at step {self.global_step}")
        return torch.load(path / f"trainer_state_rank{rank}.pt", weights_only=True)

    def save_final(self, tokenizer: Any | None = None, subdir: str = "final") -> Path:
        """Write the trained model as a normal Hugging Face folder (``save_pretrained``, safetensors) — or, for a
        peft model, the LoRA adapter — plus the tokenizer, atomically to ``<output_dir>/<subdir>``."""
        model = self._require_model()
        self.wait_for_everyone()
        state_dict = self.accelerator.get_state_dict(model) if self._sharded else None  # gathers shards
        final = self.output_dir / subdir
        if self.is_main_process:
            import shutil

            tmp = self.output_dir / f"{ckpt.TMP_PREFIX}{subdir}"
            shutil.rmtree(tmp, ignore_errors=True)
            kwargs: dict[str, Any] = {"safe_serialization": True}
            if state_dict is not None:
                kwargs["state_dict"] = state_dict
            self.unwrap(model).save_pretrained(str(tmp), **kwargs)
            if tokenizer is not None:
                tokenizer.save_pretrained(str(tmp))
            ckpt.publish(tmp, final)
        self.wait_for_everyone()
        return final

    def end(self) -> None:
        """Close the bar, the metrics file and the trackers."""
        if self._progress is not None:
            self._progress.close()
            self._progress = None
        if self._metrics is not None:
            self._metrics.close()
        self.accelerator.end_training()

    # ------------------------------------------------------------------------------------------------ internals
    def _fill_deepspeed_config(self) -> None:
        """DeepSpeed reads batch size, accumulation and clipping from its own config; fill its "auto" values from
        the trainer config and refuse contradicting explicit values (Accelerate would silently prefer DeepSpeed's,
        or clip at its default 1.0)."""
        plugin = getattr(self.accelerator.state, "deepspeed_plugin", None)
        if plugin is None:
            return
        ds = plugin.deepspeed_config
        wanted = {
            "train_micro_batch_size_per_gpu": self.cfg.per_device_train_batch_size,
            "gradient_accumulation_steps": self.cfg.gradient_accumulation_steps,
            "gradient_clipping": self.cfg.max_grad_norm if self.cfg.max_grad_norm > 0 else 0.0,
        }
        for key, value in wanted.items():
            current = ds.get(key, "auto")
            if current == "auto":
                ds[key] = value
            elif float(current) != float(value):
                raise ValueError(
                    f"DeepSpeed config has {key}={current} but the trainer config asks for {value}; set it to "
                    "'auto' in the DeepSpeed/accelerate config (scripts/accelerate/*.yaml do) or change the trainer"
                )
        if ds.get("train_batch_size") == "auto":
            del ds["train_batch_size"]

    def _require_model(self) -> torch.nn.Module:
        if self.model is None:
            raise RuntimeError("call Engine.prepare(model, total_steps=...) first")
        return self.model

    def _trim_metrics(self, step: int) -> None:
        if self._metrics is not None:
            moved = self._metrics.truncate_after(step)
            if moved:
                log.warning("moved %d metrics records after step %d to the .discarded.jsonl file", moved, step)

    def _config_fingerprint(self) -> str:
        text = json.dumps(self.run_config, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _trainable_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Trainable parameters + persistent buffers (for LoRA: the adapters; for full fine-tuning: everything).
    Frozen weights are rebuilt from the model config on resume, so they are not written again every save."""
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    params = {n for n, _ in model.named_parameters(remove_duplicate=False)}
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, tensor in model.state_dict().items():
        if name in trainable or name not in params:
            t = tensor.detach().cpu()
            if t.data_ptr() in seen:  # tied weights share storage; safetensors refuses shared tensors
                t = t.clone()
            seen.add(t.data_ptr())
            out[name] = t.contiguous()
    return out


def _load_trainable_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    missing_trainable = sorted(trainable - set(state))
    result = model.load_state_dict(state, strict=False)
    if result.unexpected_keys or missing_trainable:
        raise ValueError(
            f"{path}/model.safetensors does not match the model (changed LoRA/model settings?): "
            f"unexpected {result.unexpected_keys[:5]}, missing trainable {missing_trainable[:5]}"
        )


@contextlib.contextmanager
def evaluation_mode(model: torch.nn.Module) -> Iterator[None]:
    """``model.eval()`` + ``torch.no_grad()`` for the block, then back to the previous mode."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)
