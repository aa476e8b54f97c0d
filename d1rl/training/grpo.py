"""The diffu-GRPO trainer (d1, arXiv 2504.12216) on the shared engine.

One optimizer step of this trainer, in order (d1-reference §2.4-§2.6)::

    position  = step_position(global_step, μ)                     # (rollout step r, inner iteration k)
    if k == 0:  rollout r                                          # rollout.py + rollout_prompts.py
        prompts of rank (schedule) → chat template, left pad → sampler (eval mode), G per prompt
        → task reward functions (None → NaN) → gathered → nansum → group advantages → local slice
        → old log-probs under the masks of k = 1..μ−1 (θ_old, no grad, eval mode)  → RolloutBuffer
    mask_k    = mask_generator(seed, r, k, rank) over the local buffer (one noised copy for old/ref/current);
                with algorithm.share_prompt_mask one prompt mask per prompt, and each log-prob forward then runs
                one row per prompt, its G completions reading their log-probs from the same logits
    ref       = log-probs with adapters disabled / frozen copy (β > 0 only), no grad
    for each of grad_accum micro-batches:
        logp  = estimator(policy, noised micro-batch)             # with grad, train mode
        loss  = policy_loss(logp, old (k ≥ 1) or logp.detach() (k = 0), ref, A, completion mask, ε, β)
        backward; the last micro-batch steps AdamW (clip, schedule) through the engine

Deliberate differences from d1's code: k comes from the optimizer step, not the micro-batch counter (bug 1); β ≠ 0
with μ = 1 works (bug 2); masks come from explicit keyed generators instead of global re-seeding (bug 8); rollouts
and old log-probs in eval mode (bug 9); attention masks on by default (bug 11); no silent left-truncation of
prompts (bug 12); held-out validation instead of test-set checkpoint picking (bug 20); ``clip_ratio`` counts the
tokens whose gradient the clip cuts (``clip_ratio_d1`` is d1's flag, bug 18).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from d1rl.atomic_io import atomic_write_text
from d1rl.diffusion import completion_mask_from_ids, get_estimator, policy_loss
from d1rl.sampling.padding import left_pad
from d1rl.training.batching import keyed_generator
from d1rl.training.engine import Engine, evaluation_mode
from d1rl.training.grpo_config import TrainJobConfig
from d1rl.training.grpo_logprobs import ReferencePolicy, noised_inputs
from d1rl.training.grpo_schedule import BatchGeometry, PromptSchedule, split_holdout, step_position
from d1rl.training.rollout import reward_name, rewards_to_advantages, sample_completions, score_completions
from d1rl.training.rollout_buffer import RolloutBuffer
from d1rl.training.rollout_prompts import PromptPolicy, encode_prompt, fitting_rows

log = logging.getLogger(__name__)

COMPLETIONS_FILE = "completions.jsonl"

#: probe(phase, rollout_step, inner_iteration, noised_ids, log_probs): called for every log-prob computation with
#: phase "old", "ref" or "current" (tests instrument the trainer with it).
Probe = Callable[[str, int, int, torch.Tensor, torch.Tensor], None]


class GRPOTrainer:
    """Builds everything from a :class:`TrainJobConfig` and runs diffu-GRPO to ``engine.total_steps``."""

    def __init__(self, job: TrainJobConfig, *, engine: Engine | None = None) -> None:
        from d1rl.models import ModelAdapter, load_model_and_tokenizer
        from d1rl.tasks import get_task

        self.job = job
        alg = job.algorithm
        self.alg = alg
        self.engine = engine or Engine(job.trainer, job.logger, job.output_dir, run_config=_plain(job))
        eng = self.engine
        self.seed = job.trainer.seed
        self.rank, self.world = eng.process_index, eng.num_processes
        self.geometry = BatchGeometry(
            num_generations=alg.num_generations,
            micro_batch_size=job.trainer.per_device_train_batch_size,
            grad_accum=job.trainer.gradient_accumulation_steps,
            world_size=self.world,
            whole_groups_per_micro_batch=alg.share_prompt_mask,
        )

        model, self.tokenizer = load_model_and_tokenizer(job.model)
        self.adapter = ModelAdapter.from_pretrained(model, self.tokenizer)
        self.task = get_task(job.task.name, job.task)
        self.reward_functions = self.task.reward_functions()
        if not self.reward_functions:
            raise ValueError(f"task {job.task.name!r} has no reward functions; diffu-GRPO needs at least one")
        self.reward_names = _unique_names([reward_name(fn) for fn, _ in self.reward_functions])
        self.reward_weights = [float(w) for _, w in self.reward_functions]

        # Data: the task's train split, minus the validation hold-out, minus (prompt_overflow=skip) rows too long.
        self.train_ds = self.task.load_split("train")
        self.policy = PromptPolicy(alg.max_prompt_length, alg.prompt_overflow, alg.d1_compat_truncation)
        pool, held = split_holdout(len(self.train_ds), job.validation.holdout_size, self.seed)
        pool = self._check_prompt_lengths(pool)
        self.schedule = PromptSchedule(pool, self.geometry.prompts_per_process, world_size=self.world, rank=self.rank,
                                       seed=self.seed)
        self.validation_rows = held[: job.validation.num_items or None]
        self._validation_prompts = self._encode_validation_prompts() if job.validation.enabled else []

        self.sampler_kwargs = self._sampler_kwargs(job.sampler.to_kwargs())
        self.estimator = get_estimator(
            alg.estimator,
            mask_id=self.adapter.mask_id,
            p_mask_prompt=alg.p_mask_prompt,
            logits_shift=self.adapter.logits_shift,
            head=alg.logprob_head,
        )

        # Reference before prepare: a frozen copy must hold the INITIAL weights (full fine-tuning only).
        self.reference = ReferencePolicy.for_model(model, alg.beta)
        if self.reference is not None and self.reference.mode == "copy":
            self.reference.model = eng.prepare_eval_model(self.reference.model)
        rollouts = math.ceil(job.trainer.num_train_epochs * self.schedule.steps_per_epoch)
        total = job.trainer.max_steps if job.trainer.max_steps > 0 else rollouts * alg.num_iterations
        self.model = eng.prepare(model, total_steps=total)
        plan = self.estimator.plan(self.model)
        per = f"prompt (shared by its {alg.num_generations} completions)" if alg.share_prompt_mask else "completion"
        eng.print(f"log-prob head: {plan.mode} ({plan.reason}); estimator prompt mask drawn per {per}")
        self.buffer: RolloutBuffer | None = None
        self.pending: dict[str, list[float]] = {}
        self.probe: Probe | None = None
        self.completions_path = Path(job.output_dir) / COMPLETIONS_FILE

    # ------------------------------------------------------------------------------------------------ set-up
    def _check_prompt_lengths(self, pool: list[int]) -> list[int]:
        """prompt_overflow=skip: drop over-long rows once, here, so the prompt schedule stays a pure function of
        the step. (With "error" an over-long row stops the run when it is drawn, naming it; d1 truncation and
        "truncate_question" always fit.)"""
        if self.policy.d1_compat_truncation or self.policy.prompt_overflow != "skip":
            return pool
        t0 = time.perf_counter()
        rows = zip(pool, self.train_ds.select(pool))
        kept = fitting_rows(self.tokenizer, self.task.train_prompt, rows, self.policy.max_prompt_length)
        if len(kept) < len(pool):
            self.engine.print(
                f"algorithm.prompt_overflow=skip: {len(pool) - len(kept)} of {len(pool)} training prompts are longer "
                f"than {self.policy.max_prompt_length} tokens and are left out ({time.perf_counter() - t0:.1f} s scan)"
            )
        return kept

    def _sampler_kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        out = dict(kwargs)
        for key, value in (("mask_id", self.adapter.mask_id), ("eos_id", self.adapter.eos_id),
                           ("eot_id", self.adapter.eot_id)):
            if out.get(key) is None:
                out[key] = value
        out["logits_shift"] = self.adapter.logits_shift
        return out

    def _encode_validation_prompts(self) -> list[list[int]]:
        v = self.job.validation
        build = self.task.train_prompt if v.prompt_style == "train" else self.task.eval_prompt
        prefill = "" if v.prompt_style == "train" else self.task.eval_prefill
        # Validation prompts must never be skipped (the denominator would change): over-long ones are an error
        # unless the run truncates.
        policy = PromptPolicy(self.policy.max_prompt_length,
                              "error" if self.policy.prompt_overflow == "skip" else self.policy.prompt_overflow,
                              self.policy.d1_compat_truncation)
        return [
            encode_prompt(self.tokenizer, build, self.train_ds[i], policy, prefill=prefill,
                          row_name=f"validation row {i} of the {self.job.task.name} train split")  # type: ignore[misc]
            for i in self.validation_rows
        ]

    # ------------------------------------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """This rank's trainer state for a checkpoint: the rollout buffer when the next step still trains on it,
        and metrics accumulated since the last log."""
        pos = step_position(self.engine.global_step, self.alg.num_iterations)
        keep = self.buffer is not None and not pos.needs_rollout
        return {
            "buffer": self.buffer.state_dict() if keep else None,  # type: ignore[union-attr]
            "pending": {k: list(v) for k, v in self.pending.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        buf = state.get("buffer")
        self.buffer = RolloutBuffer.from_state_dict(buf, self.engine.device) if buf is not None else None
        self.pending = {k: list(v) for k, v in state.get("pending", {}).items()}

    # ------------------------------------------------------------------------------------------------ rollout
    def _unwrapped(self) -> torch.nn.Module:
        return self.engine.unwrap(self.model)

    def _log_probs(self, phase: str, model: Any, buf: RolloutBuffer, noised: torch.Tensor, rows: slice, k: int) -> torch.Tensor:
        mb = buf.micro_batch(rows)
        kwargs = {"group_size": self.geometry.group_size} if self.geometry.group_size > 1 else {}
        lp = self.estimator.log_probs(model, mb["input_ids"], buf.prompt_length, attention_mask=mb["attention_mask"],
                                      noised_ids=noised[rows], **kwargs)
        if self.probe is not None:
            self.probe(phase, buf.rollout_step, k, noised[rows], lp.detach())
        return lp

    def make_rollout(self, rollout_step: int) -> RolloutBuffer:
        """Sample, score and buffer rollout ``rollout_step`` on this rank (see the module docstring)."""
        alg, eng, dev = self.alg, self.engine, self.engine.device
        t0 = time.perf_counter()
        indices = self.schedule.indices(rollout_step)
        rows = [self.train_ds[i] for i in indices]
        prompt_lists = []
        for idx, row in zip(indices, rows):
            ids = encode_prompt(self.tokenizer, self.task.train_prompt, row, self.policy,
                                row_name=f"task {self.job.task.name} train row {idx}")
            assert ids is not None  # skip-mode rows were filtered out of the schedule at start-up
            prompt_lists.append(ids)
        prompt_ids, prompt_mask = left_pad(prompt_lists, self.adapter.pad_id)
        prompt_ids, prompt_mask = prompt_ids.to(dev), prompt_mask.to(dev)
        generator = keyed_generator(self.seed, "grpo-rollout", rollout_step, self.rank, device=dev)
        sequences = sample_completions(
            self._unwrapped(), prompt_ids, prompt_mask if alg.use_attention_mask else None,
            num_generations=alg.num_generations, chunk_size=alg.generation_batch_size,
            sampler_kwargs=self.sampler_kwargs, generator=generator,
        )
        t_gen = time.perf_counter()
        plen = prompt_ids.shape[1]
        completion_ids = sequences[:, plen:]
        completion_mask = completion_mask_from_ids(completion_ids, self.adapter.eos_id)
        texts = self.tokenizer.batch_decode(completion_ids.tolist(), skip_special_tokens=True)

        g = alg.num_generations
        group_rows = [row for row in rows for _ in range(g)]
        prompts = [self.task.train_prompt(row) for row in group_rows]
        columns = {key: [row[key] for row in group_rows] for key in rows[0] if key != "prompt"}
        rewards_per_func = score_completions(self.reward_functions, prompts, texts, columns).to(dev)
        advantages, totals, metrics = rewards_to_advantages(
            rewards_per_func, self.reward_weights, self.reward_names, num_generations=g,
            scale=alg.advantage_scale, gather=eng.gather, rank=self.rank,
        )
        lengths = eng.gather(completion_mask.sum(dim=1).float())
        metrics["completion_length"] = float(lengths.mean())
        t_score = time.perf_counter()

        attention_mask = None
        if alg.use_attention_mask:
            attention_mask = torch.cat(
                [prompt_mask.repeat_interleave(g, dim=0), torch.ones_like(completion_ids)], dim=1
            )
        buf = RolloutBuffer(
            rollout_step=rollout_step, input_ids=sequences, attention_mask=attention_mask, prompt_length=plen,
            completion_mask=completion_mask, advantages=advantages.float(), rewards=totals.float(),
        )
        self._compute_old_logps(buf)
        t_old = time.perf_counter()
        metrics.update({
            "time/generate_s": t_gen - t0,
            "time/reward_s": t_score - t_gen,
            "time/old_logps_s": t_old - t_score,
            "time/rollout_s": t_old - t0,
            "epoch": self.schedule.epoch_of(rollout_step),
        })
        for key, value in metrics.items():
            self.pending.setdefault(key, []).append(value)
        self._write_completions(rollout_step, prompt_lists, texts, rewards_per_func, advantages)
        return buf

    def _compute_old_logps(self, buf: RolloutBuffer) -> None:
        """θ_old log-probs for the masks of inner iterations 1..μ−1 (k = 0 uses current.detach())."""
        alg = self.alg
        model = self._unwrapped()
        keys = sorted({k if alg.random_masking else 0 for k in range(1, alg.num_iterations)})
        slices = self.geometry.micro_batch_slices()
        mode = evaluation_mode(model) if alg.old_logprob_eval_mode else torch.no_grad()
        with mode:
            for k in keys:
                noised = noised_inputs(self.estimator, buf, seed=self.seed, inner_iteration=k, rank=self.rank,
                                       random_masking=alg.random_masking, group_size=self.geometry.group_size)
                buf.old_logps[k] = torch.cat([self._log_probs("old", model, buf, noised, sl, k).float() for sl in slices])

    def _write_completions(self, rollout_step: int, prompts: list[list[int]], texts: list[str],
                           rewards_per_func: torch.Tensor, advantages: torch.Tensor) -> None:
        """A few completions of this rollout (rank 0) with the prompt exactly as the model saw it (template and any
        truncation included), per-function rewards and advantage."""
        n = self.alg.log_completions
        if n <= 0 or not self.engine.is_main_process:
            return
        g = self.alg.num_generations
        with self.completions_path.open("a", encoding="utf-8") as f:
            for i in range(min(n, len(texts))):
                record = {
                    "step": self.engine.global_step,
                    "rollout_step": rollout_step,
                    "prompt": self.tokenizer.decode(prompts[i // g]),
                    "completion": texts[i],
                    "rewards": {name: _finite(float(v)) for name, v in zip(self.reward_names, rewards_per_func[i].tolist())},
                    "advantage": float(advantages[i]),
                }
                f.write(json.dumps(record, ensure_ascii=False) + "\n")

    # ------------------------------------------------------------------------------------------------ update
    def train_step(self) -> dict[str, float]:
        """One optimizer step (one inner iteration over the buffered batch); returns its local loss metrics."""
        eng, alg = self.engine, self.alg
        pos = step_position(eng.global_step, alg.num_iterations)
        if self.buffer is None or self.buffer.rollout_step != pos.rollout_step:
            if not pos.needs_rollout:
                raise RuntimeError(
                    f"step {pos.optimizer_step} trains on rollout {pos.rollout_step} but no buffer for it was restored"
                )
            self.buffer = self.make_rollout(pos.rollout_step)
        buf, k = self.buffer, pos.inner_iteration
        t0 = time.perf_counter()
        slices = self.geometry.micro_batch_slices()
        noised = noised_inputs(self.estimator, buf, seed=self.seed, inner_iteration=k, rank=self.rank,
                               random_masking=alg.random_masking, group_size=self.geometry.group_size)
        ref_lp = None
        if self.reference is not None:
            with self.reference.active() as ref_model:
                ref_lp = torch.cat([self._log_probs("ref", ref_model, buf, noised, sl, k).float() for sl in slices])
        old_lp = None if k == 0 else buf.old_logps[k if alg.random_masking else 0]
        sums: dict[str, float] = {}
        grad_norm = None
        gen_length = buf.completion_mask.shape[1]
        for sl in slices:
            mb = buf.micro_batch(sl)
            with eng.accumulate():
                logp = self._log_probs("current", self.model, buf, noised, sl, k)
                loss, m = policy_loss(
                    logp,
                    None if old_lp is None else old_lp[sl].to(logp.dtype),
                    None if ref_lp is None else ref_lp[sl].to(logp.dtype),
                    mb["advantages"], mb["completion_mask"],
                    epsilon=alg.epsilon, epsilon_high=alg.epsilon_high, beta=alg.beta,
                    aggregation=alg.loss_aggregation,  # type: ignore[arg-type]
                    max_completion_length=gen_length,
                )
                eng.backward(loss)
            norm = eng.optimizer_step()
            grad_norm = norm if norm is not None else grad_norm
            sums["loss"] = sums.get("loss", 0.0) + float(loss.detach())
            for key, value in m.items():
                sums[key] = sums.get(key, 0.0) + float(value)
        out = {key: value / len(slices) for key, value in sums.items()}
        out["time/loss_s"] = time.perf_counter() - t0
        if grad_norm is not None:
            out["grad_norm"] = grad_norm
        return out

    # ------------------------------------------------------------------------------------------------ validation
    def validate(self) -> dict[str, float]:
        """Greedy (by default) accuracy of the task grader on the held-out train rows, over all ranks."""
        v, eng = self.job.validation, self.engine
        mine = list(range(self.rank, len(self.validation_rows), self.world))
        kwargs = dict(self.sampler_kwargs)
        kwargs["temperature"] = v.temperature
        if v.gen_length is not None:
            kwargs["gen_length"] = v.gen_length
        kwargs["steps"] = v.steps if v.steps is not None else max(1, kwargs["gen_length"] // 2)
        model = self._unwrapped()
        stats = torch.zeros(3, dtype=torch.float64, device=eng.device)  # correct, score, count
        t0 = time.perf_counter()
        for start in range(0, len(mine), v.batch_size):
            chunk = mine[start : start + v.batch_size]
            ids, mask = left_pad([self._validation_prompts[j] for j in chunk], self.adapter.pad_id)
            ids, mask = ids.to(eng.device), mask.to(eng.device)
            out = sample_completions(
                model, ids, mask if self.alg.use_attention_mask else None, num_generations=1, chunk_size=0,
                sampler_kwargs=kwargs, generator=keyed_generator(self.seed, "grpo-validation", start, self.rank,
                                                                 device=eng.device),
            )
            texts = self.tokenizer.batch_decode(out[:, ids.shape[1]:].tolist(), skip_special_tokens=True)
            for j, text in zip(chunk, texts):
                grade = self.task.grade(text, self.train_ds[self.validation_rows[j]], mode=v.grade_mode)
                stats += torch.tensor([float(grade.correct), float(grade.score), 1.0], dtype=torch.float64,
                                      device=eng.device)
        stats = eng.sum_across_processes(stats)
        count = max(float(stats[2]), 1.0)
        return {
            "val/accuracy": float(stats[0]) / count,
            "val/score": float(stats[1]) / count,
            "val/num_items": float(stats[2]),
            "time/validation_s": time.perf_counter() - t0,
        }

    # ------------------------------------------------------------------------------------------------ loop
    def train(self) -> dict[str, float]:
        """Run to ``engine.total_steps`` (resuming per ``trainer.resume``); returns the last logged metrics."""
        eng = self.engine
        state = eng.resume()
        if state is not None:
            self.load_state_dict(state)
        if eng.is_main_process:
            _trim_jsonl(self.completions_path, eng.global_step)
        eng.start_progress("diffu-grpo")
        last: dict[str, float] = {}
        while not eng.done:
            for key, value in self.train_step().items():
                self.pending.setdefault(key, []).append(value)
            if eng.should_log():
                last = self._flush_metrics()
                eng.log(last)
            if self.job.validation.enabled and eng.maybe_evaluate():
                val = self.validate()
                eng.log(val)
                last.update(val)
            eng.maybe_save(self.state_dict)
        if self.job.trainer.save_steps > 0 and eng.global_step % self.job.trainer.save_steps:
            eng.save_checkpoint(self.state_dict())
        eng.save_final(self.tokenizer)
        eng.end()
        return last

    def _flush_metrics(self) -> dict[str, float]:
        """Average what accumulated since the last log: per-process means of loss metrics, then over processes.
        Rollout metrics are already global (gathered); averaging them over processes leaves them unchanged."""
        eng = self.engine
        local = {k: sum(v) / len(v) for k, v in self.pending.items() if v}
        self.pending = {}
        merged = eng.mean_across_processes(local)
        merged["learning_rate"] = eng.learning_rate
        merged["rollout_step"] = float(step_position(eng.global_step - 1, self.alg.num_iterations).rollout_step)
        return merged


def run_grpo(job: TrainJobConfig) -> dict[str, float]:
    """Train ``job`` to the end; returns the last logged metrics."""
    return GRPOTrainer(job).train()


# ---------------------------------------------------------------------------------------------------- helpers
def _plain(job: TrainJobConfig) -> dict[str, Any]:
    return json.loads(json.dumps(asdict(job), default=str))


def _unique_names(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    return out


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _trim_jsonl(path: Path, step: int) -> None:
    """Drop completion records written at or after optimizer step ``step`` (a resumed run writes them again)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line).get("step", 0) < step:
                kept.append(line)
        except json.JSONDecodeError:  # a torn last line from a kill
            continue
    atomic_write_text(path, "".join(line + "\n" for line in kept))
