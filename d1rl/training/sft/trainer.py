"""The masked-diffusion SFT trainer: a thin loop on :class:`~d1rl.training.engine.Engine`.

Per optimizer step: this rank's ``gradient_accumulation_steps`` micro-batches from the
:class:`~d1rl.training.batching.GlobalBatchSchedule`, each noised (row-keyed streams), run through the model, scored
with :func:`d1rl.diffusion.sft.sft_loss`, backpropagated through the engine. Held-out loss every ``eval_steps``;
checkpoints every ``save_steps`` with the data position and the logging accumulators (so a resume mid logging
interval still logs the same averages); the final model/adapter in ``<output_dir>/final``.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from d1rl.training.batching import DataPosition, GlobalBatchSchedule
from d1rl.training.engine import Engine, evaluation_mode
from d1rl.training.sft.config import SFTJobConfig
from d1rl.training.sft.data import NoisedBatch, SFTBatch, SFTExample, build_sft_datasets, collate, noise_batch

log = logging.getLogger(__name__)

TRAIN_METRICS = ("loss", "unscaled_loss", "num_masked", "num_answer_tokens", "mean_t")


def sft_forward_loss(
    model: torch.nn.Module,
    batch: SFTBatch,
    noised: NoisedBatch,
    *,
    normalization: str,
    logits_shift: int = 0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One forward on the noisy ids and the SFT loss against the clean ids (the trainer's batch path)."""
    from d1rl.diffusion.sft import sft_loss

    logits = model(noised.noisy_ids, attention_mask=batch.attention_mask).logits
    return sft_loss(
        logits,
        batch.input_ids,
        noised.masked,
        noised.t,
        batch.prompt_lengths,
        normalization=normalization,
        answer_lengths=batch.answer_lengths,
        logits_shift=logits_shift,
    )


def sft_eval_sums(
    model: torch.nn.Module,
    batch: SFTBatch,
    noised: NoisedBatch,
    *,
    logits_shift: int = 0,
    row_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sums over the rows of a held-out batch: [Σ row loss, Σ CE, # masked, # rows], where a row's loss is its
    Σ CE/t ÷ its answer length (= d1's loss of a one-row batch), so the mean does not depend on batching.
    ``row_weight`` (B,) of 0/1 drops filler rows (ranks pad their share so all run the same number of forwards)."""
    from d1rl.diffusion.sft import masked_cross_entropy

    logits = model(noised.noisy_ids, attention_mask=batch.attention_mask).logits
    ce_values = masked_cross_entropy(logits, batch.input_ids, noised.masked, logits_shift=logits_shift)
    ce = torch.zeros(batch.input_ids.shape, dtype=torch.float64, device=ce_values.device)
    ce = ce.masked_scatter(noised.masked, ce_values.double())
    answer = batch.answer_lengths if batch.answer_lengths is not None else batch.input_ids.shape[1] - batch.prompt_lengths
    w = torch.ones(len(answer), dtype=torch.float64, device=ce.device) if row_weight is None else row_weight.double()
    row_loss = (ce / noised.t.double()[:, None]).sum(dim=1) / answer.clamp(min=1).double()
    masked = noised.masked.sum(dim=1).double()
    return torch.stack([(w * row_loss).sum(), (w * ce.sum(dim=1)).sum(), (w * masked).sum(), w.sum()])


class SFTTrainer:
    """Builds everything from an :class:`SFTJobConfig` and runs it (``run()`` returns the final folder)."""

    def __init__(self, job: SFTJobConfig) -> None:
        job.trainer.validate()
        job.logger.validate()
        job.data.validate()
        job.loss.validate()
        self.job = job
        self.engine = Engine(job.trainer, job.logger, job.output_dir, run_config=_plain(job))

    def run(self) -> Path:
        from d1rl.models import ModelAdapter, load_model_and_tokenizer

        job, engine = self.job, self.engine
        model, tokenizer = load_model_and_tokenizer(job.model)
        adapter = ModelAdapter.from_pretrained(model, tokenizer)
        data = build_sft_datasets(job.data, tokenizer, eot_id=adapter.eot_id, task_cfg=job.task)
        self.adapter, self.tokenizer, self.data = adapter, tokenizer, data
        cfg = job.trainer
        schedule = GlobalBatchSchedule(
            len(data.train), cfg.per_device_train_batch_size, engine.num_processes, engine.process_index,
            cfg.gradient_accumulation_steps, cfg.seed,
        )
        total = cfg.max_steps if cfg.max_steps > 0 else math.ceil(cfg.num_train_epochs * schedule.steps_per_epoch)
        engine.print(
            f"SFT: {len(data.train)} train rows, {len(data.eval)} eval rows, global batch {schedule.global_batch}, "
            f"{schedule.steps_per_epoch} steps/epoch, {total} steps"
        )
        model = engine.prepare(model, total_steps=total)
        state = engine.resume()
        position = DataPosition.from_dict(state["data"]) if state else DataPosition()
        sums = {k: float(v) for k, v in state["log_sums"].items()} if state else {}
        count = int(state["log_count"]) if state else 0
        if data.eval and state is None:
            engine.log(self.evaluate(model), step=0)  # the starting point of the held-out curve
        engine.start_progress("sft")
        last_time = time.time()
        while not engine.done:
            step_metrics: dict[str, float] = {k: 0.0 for k in TRAIN_METRICS}
            grad_norm = None
            for rows in schedule.micro_batches(position):
                batch = self._batch(data.train, rows).to(engine.device)
                noised = noise_batch(batch, adapter.mask_id, stream=(cfg.seed, "sft-noise", position.epoch), eps=job.loss.t_eps)
                with engine.accumulate():
                    loss, metrics = sft_forward_loss(
                        model, batch, noised, normalization=job.loss.normalization, logits_shift=adapter.logits_shift
                    )
                    engine.backward(loss)
                norm = engine.optimizer_step()
                grad_norm = norm if norm is not None else grad_norm
                step_metrics["loss"] += float(loss.detach()) / cfg.gradient_accumulation_steps
                for key in ("unscaled_loss", "mean_t"):
                    step_metrics[key] += float(metrics[key]) / cfg.gradient_accumulation_steps
                for key in ("num_masked", "num_answer_tokens"):
                    step_metrics[key] += float(metrics[key])
            position = schedule.advance(position)
            step_metrics = engine.mean_across_processes(step_metrics)
            step_metrics["grad_norm"] = float(grad_norm) if grad_norm is not None else float("nan")
            for key, value in step_metrics.items():
                sums[key] = sums.get(key, 0.0) + value
            count += 1
            record: dict[str, Any] = {}
            if engine.should_log():
                now = time.time()
                record.update({k: v / count for k, v in sums.items()})
                record.update(
                    learning_rate=engine.learning_rate,
                    epoch=schedule.epoch_float(position),
                    steps_per_s=count / max(now - last_time, 1e-9),
                )
                sums, count, last_time = {}, 0, now
            if data.eval and engine.maybe_evaluate():
                record.update(self.evaluate(model))
            if record:
                engine.log(record)
            engine.maybe_save(
                lambda: {"data": position.to_dict(), "log_sums": dict(sums), "log_count": count}
            )
        final = engine.save_final(tokenizer)
        engine.print(f"final model written to {final}")
        engine.end()
        return final

    def _batch(self, examples: list[SFTExample], rows: list[int]) -> SFTBatch:
        d, loss = self.job.data, self.job.loss
        return collate(
            [examples[i] for i in rows], rows, pad_id=self.adapter.pad_id, padding=d.padding,
            max_length=d.max_length, pad_is_target=loss.pad_is_target,
        )

    def evaluate(self, model: torch.nn.Module) -> dict[str, float]:
        """Held-out loss over every eval row (rows split over ranks, sums all-reduced). Deterministic: the t of
        each row (d1's linspace, or a fixed random draw) and its mask stream are the same at every evaluation."""
        engine, data, loss_cfg = self.engine, self.data.eval, self.job.loss
        n = len(data)
        mine = list(range(engine.process_index, n, engine.num_processes))
        # Every rank runs the same number of forwards (sharded models need it): pad the share with weight-0 rows.
        share = math.ceil(n / engine.num_processes)
        weights = [1.0] * len(mine) + [0.0] * (share - len(mine))
        mine = mine + [0] * (share - len(mine))
        bs = self.job.trainer.per_device_eval_batch_size
        linspace = torch.linspace(0.0, 1.0, n)
        sums = torch.zeros(4, dtype=torch.float64, device=engine.device)
        with evaluation_mode(model):
            for start in range(0, len(mine), bs):
                rows = mine[start : start + bs]
                batch = self._batch(data, rows).to(engine.device)
                t = linspace[rows] if loss_cfg.eval_t == "linspace" else None
                noised = noise_batch(
                    batch, self.adapter.mask_id, stream=(self.job.trainer.seed, "sft-eval-noise"), t=t, eps=loss_cfg.t_eps
                )
                w = torch.tensor(weights[start : start + bs], dtype=torch.float64, device=engine.device)
                sums += sft_eval_sums(model, batch, noised, logits_shift=self.adapter.logits_shift, row_weight=w)
        total = engine.sum_across_processes(sums) if engine.num_processes > 1 else sums
        row_loss, ce, masked, rows = total.tolist()
        return {
            "eval/loss": row_loss / max(rows, 1.0),
            "eval/unscaled_loss": ce / max(masked, 1.0),
            "eval/num_masked": masked,
            "eval/rows": rows,
        }


def _plain(job: Any) -> dict[str, Any]:
    try:
        return asdict(job)
    except TypeError:
        return {}


def run_sft(job: SFTJobConfig) -> Path:
    """Run one SFT job; returns ``<output_dir>/final``."""
    return SFTTrainer(job).run()


__all__ = ["SFTTrainer", "run_sft", "sft_eval_sums", "sft_forward_loss"]
