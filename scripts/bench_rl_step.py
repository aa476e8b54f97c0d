#!/usr/bin/env python
"""Benchmark the RL step's log-prob estimator: peak memory (lean vs d1's full logits) and where the step time goes.

Three parts (issue 9, estimator side); printed tables, nothing is asserted here (the tests check numerics):

(a) ``--memory`` (default on): peak memory of ONE estimator forward + backward (loss = Σ w·logp) at LLaDA's
    vocabulary (126,464) on a small random-weight LLaDA body, at a few (batch, prompt, completion) shapes, for

        d1_full    full (B, L, V) logits -> full log_softmax over V (float32) -> gather  (what d1 computes)
        sel_full   full (B, L, V) logits -> chunked selective log-softmax of the completion slice  (head=full)
        keep       logits_to_keep: head on the C completion positions, (B, C, V) logits -> selective (head=keep)
        fused      head input captured, chunked fused head -> log-softmax, no (B, C, V) tensor   (head=fused)

    How memory is measured, and why this is right:
    * CUDA: ``torch.cuda.max_memory_allocated() - memory_allocated()`` around the timed call, after
      ``reset_peak_memory_stats()``: the caching allocator's exact high-water mark of live tensor bytes.
    * CPU: there is no allocator high-water mark in torch for CPU tensors (tracemalloc only sees Python objects,
      not torch's C++ allocations). Each configuration runs in a FRESH subprocess with
      ``MALLOC_MMAP_THRESHOLD_=65536``: a fixed threshold makes glibc serve every allocation >= 64 KiB with its own
      mmap and unmap it on free, so the resident set follows live tensor memory (no freed-but-cached heap).
      After a warm-up call (lazy initialisation, thread pools) and with parameter gradients reset to None, the
      peak-RSS counter is reset by writing "5" to /proc/self/clear_refs; the number reported is VmHWM (peak RSS)
      after the measured call minus VmRSS before it. Checked on this machine: a 400 MB tensor freed before a
      200 MB one reads as 381.8 MiB (= 400 MB). Parameter gradients (embedding + head, V x d each) are allocated
      inside the measured call and are included — identical for all four rows.
(b) ``--step`` (default on): one instrumented diffu-GRPO run of the quickstart RL recipe (4 prompts x 8
    generations, gen 32, μ 2, β 0) with and without ``algorithm.share_prompt_mask``: seconds per rollout batch in
    rollout (sampling + rewards), log-prob forwards (old + current), backward, optimizer; model calls and
    sequences through the model inside the estimator per rollout batch.
(c) ``--llada8b-shapes`` (CUDA only): (a) on a random-weight bf16 model with LLaDA-8B's shapes (d_model 4096,
    32 layers, 32 heads, mlp 12288, vocab 126,464) at d1's micro-batch (6 x 200 + 256), gradients flowing through
    every block to the first block's q_proj only (a LoRA-like run: head frozen, activations of all blocks kept),
    plus forward+backward time per implementation.

Examples::

    python scripts/bench_rl_step.py                          # (a) + (b) on CPU, ~10 min on one thread
    python scripts/bench_rl_step.py --no-step --shapes 2x64x128
    python scripts/bench_rl_step.py --no-memory --sft /tmp/qs/full_s42/sft/final --rollouts 4
    python scripts/bench_rl_step.py --llada8b-shapes --no-step          # on a GPU

Quote numbers from one run: other work may share the CPU cores.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

LLADA_VOCAB = 126_464
IMPLS = ("d1_full", "sel_full", "keep", "fused")
DEFAULT_SHAPES = ("2x64x128", "4x128x256", "8x200x256")


# ---------------------------------------------------------------------------------------------------- models
def special_ids(vocab: int) -> dict[str, int]:
    """LLaDA-8B's mask/eos/pad/bos ids at the real vocabulary, else the last ids of a smaller one."""
    if vocab == LLADA_VOCAB:
        return {"mask_token_id": 126336, "eos_token_id": 126081, "pad_token_id": 126081, "bos_token_id": 126080}
    return {"mask_token_id": vocab - 1, "eos_token_id": vocab - 2, "pad_token_id": vocab - 2, "bos_token_id": vocab - 3}


def small_llada(vocab: int, d_model: int, n_layers: int, seed: int = 0):
    """A random-weight LLaDA body with the real vocabulary (untied head, float32): the head and the logits are
    what differ between the implementations, the body only has to be a real LLaDA forward."""
    from d1rl.models import LLaDAConfig, LLaDAModelLM

    config = LLaDAConfig(
        d_model=d_model, n_heads=4, n_kv_heads=4, n_layers=n_layers, mlp_hidden_size=int(2.5 * d_model),
        block_type="llama", activation_type="silu", layer_norm_type="rms", rms_norm_eps=1e-5, rope=True,
        rope_theta=500000.0, include_bias=False, include_qkv_bias=False, bias_for_layer_norm=False,
        weight_tying=False, scale_logits=False, attention_dropout=0.0, residual_dropout=0.0, embedding_dropout=0.0,
        vocab_size=vocab, embedding_size=vocab, max_sequence_length=4096, **special_ids(vocab),
    )
    torch.manual_seed(seed)
    return LLaDAModelLM(config)


def llada8b_shaped(device: torch.device, seed: int = 0):
    """Random weights in LLaDA-8B's shapes (d1-reference: d_model 4096, 32 layers, 32 heads, mlp 12288, vocab
    126,464, rope theta 500000, no biases, untied head), built directly in bf16 on ``device``. Only the first
    block's q_proj is trainable: gradients flow back through every block (all activations kept, as with LoRA on
    every block) while weight gradients stay negligible and the head is frozen (as in d1's LoRA runs)."""
    from d1rl.models import LLaDAConfig, LLaDAModelLM

    config = LLaDAConfig(
        d_model=4096, n_heads=32, n_kv_heads=32, n_layers=32, mlp_hidden_size=12288, block_type="llama",
        activation_type="silu", layer_norm_type="rms", rms_norm_eps=1e-5, rope=True, rope_theta=500000.0,
        include_bias=False, include_qkv_bias=False, bias_for_layer_norm=False, weight_tying=False,
        scale_logits=False, attention_dropout=0.0, residual_dropout=0.0, embedding_dropout=0.0,
        vocab_size=LLADA_VOCAB, embedding_size=LLADA_VOCAB, max_sequence_length=4096, mask_token_id=126336,
        eos_token_id=126081, pad_token_id=126081, bos_token_id=126080,
    )
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            model = LLaDAModelLM(config)
    finally:
        torch.set_default_dtype(previous)
    model.requires_grad_(False)
    model.model.transformer["blocks"][0].q_proj.weight.requires_grad_(True)
    return model


# ---------------------------------------------------------------------------------------------------- estimators
def d1_full_log_probs(model, noised: torch.Tensor, ids: torch.Tensor, prompt_length: int) -> torch.Tensor:
    """d1's computation (d1-reference §2.3): full logits, full-vocabulary log-softmax in float32, gather."""
    logits = model(noised).logits
    comp = logits[:, prompt_length:].float()
    return torch.log_softmax(comp, dim=-1).gather(-1, ids[:, prompt_length:, None]).squeeze(-1)


def estimator_fn(impl: str, mask_id: int) -> Callable[..., torch.Tensor]:
    """(model, noised, ids, prompt_length) -> (B, C) log-probs for one of :data:`IMPLS`."""
    if impl == "d1_full":
        return d1_full_log_probs
    from d1rl.diffusion import get_estimator

    head = {"sel_full": "full", "keep": "keep", "fused": "fused"}[impl]
    est = get_estimator("one_step", mask_id=mask_id, head=head)
    return lambda model, noised, ids, p: est.log_probs(model, ids, p, noised_ids=noised)


def make_inputs(batch: int, prompt: int, completion: int, vocab: int, mask_id: int, device, seed: int = 0):
    """Random prompt + completion ids, the d1 noising (p_mask_prompt 0.15), and loss weights."""
    from d1rl.diffusion import get_estimator

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, min(vocab, 126_000), (batch, prompt + completion), generator=g)
    est = get_estimator("one_step", mask_id=mask_id)
    noised = est.noise(ids, prompt, torch.Generator().manual_seed(seed + 1))
    w = torch.randn(batch, completion, generator=g)
    return ids.to(device), noised.to(device), w.to(device)


def fwd_bwd(model, fn, noised, ids, prompt: int, w) -> None:
    model.zero_grad(set_to_none=True)
    lp = fn(model, noised, ids, prompt)
    (lp.float() * w).sum().backward()


# ---------------------------------------------------------------------------------------------------- (a) memory
def _proc_status() -> dict[str, float]:
    """VmRSS / VmHWM of this process in MiB."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) / 1024.0
    return out


def memory_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Measure one configuration in this (fresh) process; see the module docstring for the method."""
    torch.set_num_threads(int(spec["threads"]))
    device = torch.device(spec["device"])
    model = small_llada(spec["vocab"], spec["d_model"], spec["n_layers"]).to(device)
    model.train()
    mask_id = model.config.mask_token_id
    ids, noised, w = make_inputs(spec["batch"], spec["prompt"], spec["completion"], spec["vocab"], mask_id, device)
    fn = estimator_fn(spec["impl"], mask_id)
    fwd_bwd(model, fn, noised, ids, spec["prompt"], w)  # warm-up
    model.zero_grad(set_to_none=True)
    gc.collect()
    t0 = time.perf_counter()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fwd_bwd(model, fn, noised, ids, spec["prompt"], w)
        torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak-RSS counter (VmHWM) to the current RSS
        base = _proc_status()["VmRSS"]
        fwd_bwd(model, fn, noised, ids, spec["prompt"], w)
        peak = _proc_status()["VmHWM"] - base
    return {**spec, "peak_mib": peak, "seconds": time.perf_counter() - t0}


def run_memory_config(spec: dict[str, Any]) -> dict[str, Any]:
    """CPU: one fresh subprocess per configuration (MALLOC_MMAP_THRESHOLD_ fixed); CUDA: in-process is exact."""
    if spec["device"] == "cuda":
        return memory_worker(spec)
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", OMP_NUM_THREADS=str(spec["threads"]))
    proc = subprocess.run([sys.executable, __file__, "--memory-worker", json.dumps(spec)], env=env,
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"memory worker failed for {spec}:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def logits_mib(batch: int, positions: int, vocab: int, bytes_per: int = 4) -> float:
    return batch * positions * vocab * bytes_per / 2**20


def memory_table(shapes: list[tuple[int, int, int]], args: argparse.Namespace, device: str) -> list[dict]:
    print(f"\n(a) estimator peak memory, forward + backward, vocab {args.vocab:,}, random LLaDA body d_model "
          f"{args.d_model}, {args.n_layers} layers, float32, {device}")
    print(f"    (B, C, V) float32 logits = B*C*V*4 bytes; head weight {args.vocab * args.d_model * 4 / 2**20:.0f} MiB "
          "(its gradient and the embedding's are inside every peak)")
    header = f"{'B x P + C':>14} | " + " | ".join(f"{i:>9}" for i in IMPLS) + " | keep/d1 | fused/d1 | (B,C,V) MiB"
    print(header)
    print("-" * len(header))
    rows = []
    for batch, prompt, completion in shapes:
        res = {}
        for impl in IMPLS:
            spec = {"impl": impl, "batch": batch, "prompt": prompt, "completion": completion, "vocab": args.vocab,
                    "d_model": args.d_model, "n_layers": args.n_layers, "device": device, "threads": args.threads}
            res[impl] = run_memory_config(spec)
            rows.append(res[impl])
        peaks = {k: v["peak_mib"] for k, v in res.items()}
        print(f"{f'{batch} x {prompt} + {completion}':>14} | " + " | ".join(f"{peaks[i]:9.0f}" for i in IMPLS)
              + f" | {peaks['keep'] / peaks['d1_full']:7.2f} | {peaks['fused'] / peaks['d1_full']:8.2f} | "
              f"{logits_mib(batch, completion, args.vocab):11.0f}", flush=True)
    print("    peak MiB per implementation; seconds per measured call: "
          + ", ".join(f"{r['impl']}@{r['batch']}x{r['prompt']}+{r['completion']}={r['seconds']:.1f}" for r in rows))
    return rows


# ---------------------------------------------------------------------------------------------------- (b) RL step
def compose_job(argv: list[str]):
    """The TrainJobConfig `d1rl train ARGV` would run (Hydra composition, validated schema)."""
    from d1rl.config import register_schema, run_hydra, to_object
    from d1rl.training.grpo_config import TrainJobConfig

    register_schema("train_schema", TrainJobConfig)
    seen = []
    rc = run_hydra(argv + ["hydra.output_subdir=null"], prog="d1rl train", config_name="train",
                   task_fn=lambda cfg: seen.append(to_object(cfg, TrainJobConfig)) or 0)
    if rc != 0 or not seen:
        raise RuntimeError(f"could not compose the job from {argv}")
    return seen[0]


def instrumented_step_run(model_path: str, share: bool, rollouts: int, out_dir: Path) -> dict[str, float]:
    """Run ``rollouts`` rollout batches of the quickstart RL recipe and split the time per rollout batch."""
    from d1rl.training.grpo import GRPOTrainer

    job = compose_job([
        "--recipe", "quickstart/train", f"model.name_or_path={model_path}", f"output_dir={out_dir}",
        f"hydra.run.dir={out_dir}", f"algorithm.share_prompt_mask={str(share).lower()}",
        f"trainer.max_steps={2 * rollouts}", "trainer.save_steps=0", "trainer.eval_steps=0",
        "validation.holdout_size=0", "logger.progress_bar=false", "trainer.resume=never",
    ])
    trainer = GRPOTrainer(job)
    t = {"logprob_s": 0.0, "backward_s": 0.0, "optimizer_s": 0.0, "calls": 0, "rows": 0}
    inside = [False]

    def count(module, args, kwargs):
        if inside[0]:
            t["calls"] += 1
            t["rows"] += (args[0] if args else kwargs["input_ids"]).shape[0]

    handle = trainer.engine.unwrap(trainer.model).register_forward_pre_hook(count, with_kwargs=True)

    def timed(name: str, fn: Callable[..., Any], flag: bool = False) -> Callable[..., Any]:
        def wrapper(*a, **k):
            if flag:
                inside[0] = True
            start = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                t[name] += time.perf_counter() - start
                inside[0] = False
        return wrapper

    trainer.estimator.log_probs = timed("logprob_s", trainer.estimator.log_probs, flag=True)
    trainer.engine.backward = timed("backward_s", trainer.engine.backward)
    trainer.engine.optimizer_step = timed("optimizer_s", trainer.engine.optimizer_step)
    start = time.perf_counter()
    trainer.train()
    total = time.perf_counter() - start
    handle.remove()
    metrics = [json.loads(x) for x in (out_dir / "metrics.jsonl").read_text().splitlines() if x]
    rollout_s = sum(m.get("time/generate_s", 0.0) + m.get("time/reward_s", 0.0) for m in metrics)
    per = {k: v / rollouts for k, v in t.items()}
    per.update(rollout_s=rollout_s / rollouts, total_s=total / rollouts,
               reward=[round(m["reward"], 3) for m in metrics if "reward" in m])
    return per


def step_table(args: argparse.Namespace) -> list[dict]:
    model_path = args.sft if args.sft and Path(args.sft).exists() else "tiny"
    torch.set_num_threads(args.threads)
    print(f"\n(b) diffu-GRPO step on the quickstart RL recipe (4 prompts x 8 generations, gen 32, μ 2, β 0), model "
          f"{model_path}, {args.rollouts} rollout batches, {args.threads} thread(s); seconds per rollout batch")
    header = (f"{'prompt mask':>16} | {'rollout':>7} | {'log-prob':>8} | {'backward':>8} | {'optim':>6} | "
              f"{'total':>6} | model calls | sequences fwd")
    print(header)
    print("-" * len(header))
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_rl_step_") as tmp:
        for share in (False, True):
            r = instrumented_step_run(model_path, share, args.rollouts, Path(tmp) / f"share_{share}")
            name = "shared/prompt" if share else "per completion"
            print(f"{name:>16} | {r['rollout_s']:7.2f} | {r['logprob_s']:8.3f} | {r['backward_s']:8.3f} | "
                  f"{r['optimizer_s']:6.3f} | {r['total_s']:6.2f} | {r['calls']:11.0f} | {r['rows']:13.0f}",
                  flush=True)
            rows.append({"share_prompt_mask": share, **r})
    print("    log-prob = estimator forwards (θ_old after the rollout + current, both inner iterations); backward = "
          "engine.backward; sequences fwd = rows through the model inside the estimator per rollout batch")
    return rows


# ---------------------------------------------------------------------------------------------------- (c) 8B shapes
def llada8b_table(args: argparse.Namespace) -> list[dict]:
    if not torch.cuda.is_available():
        print("\n(c) --llada8b-shapes needs CUDA; skipped")
        return []
    device = torch.device("cuda")
    model = llada8b_shaped(device)
    mask_id = model.config.mask_token_id
    print(f"\n(c) LLaDA-8B shapes, random bf16 weights, {torch.cuda.get_device_name()}: estimator forward+backward "
          "(gradients through all 32 blocks to block 0 q_proj; head frozen)")
    header = f"{'B x P + C':>14} | {'impl':>8} | {'peak GiB':>8} | {'ms':>8}"
    print(header)
    print("-" * len(header))
    rows = []
    for spec in args.llada8b_shape_list:
        batch, prompt, completion = spec
        ids, noised, w = make_inputs(batch, prompt, completion, LLADA_VOCAB, mask_id, device)
        for impl in IMPLS:
            fn = estimator_fn(impl, mask_id)
            try:
                fwd_bwd(model, fn, noised, ids, prompt, w)  # warm-up
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
                start = time.perf_counter()
                fwd_bwd(model, fn, noised, ids, prompt, w)
                torch.cuda.synchronize()
                ms = (time.perf_counter() - start) * 1e3
                peak = (torch.cuda.max_memory_allocated() - base) / 2**30
            except torch.cuda.OutOfMemoryError:
                peak, ms = float("nan"), float("nan")
            model.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
            print(f"{f'{batch} x {prompt} + {completion}':>14} | {impl:>8} | {peak:8.2f} | {ms:8.1f}", flush=True)
            rows.append({"impl": impl, "batch": batch, "prompt": prompt, "completion": completion,
                         "peak_gib": peak, "ms": ms})
    return rows


# ---------------------------------------------------------------------------------------------------- main
def parse_shape(text: str) -> tuple[int, int, int]:
    try:
        b, p, c = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"shape {text!r} must be BxPxC, e.g. 4x128x256") from None
    return b, p, c


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--memory-worker", help=argparse.SUPPRESS)
    parser.add_argument("--no-memory", action="store_true", help="skip (a)")
    parser.add_argument("--no-step", action="store_true", help="skip (b)")
    parser.add_argument("--llada8b-shapes", action="store_true", help="run (c) (CUDA only)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--shapes", nargs="+", type=parse_shape, default=[parse_shape(s) for s in DEFAULT_SHAPES],
                        help="(a) batch x prompt x completion shapes (default: %(default)s)")
    parser.add_argument("--vocab", type=int, default=LLADA_VOCAB)
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--n-layers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sft", default="/tmp/qs/full_s42/sft/final",
                        help="(b) model to start RL from (default: the quickstart SFT model if present, else tiny)")
    parser.add_argument("--rollouts", type=int, default=3, help="(b) rollout batches per configuration")
    parser.add_argument("--llada8b-shape-list", nargs="+", type=parse_shape, default=[(6, 200, 256), (12, 200, 256)])
    parser.add_argument("--json", help="also write all rows to this JSON file")
    args = parser.parse_args(argv)
    if args.memory_worker:
        print(json.dumps(memory_worker(json.loads(args.memory_worker))))
        return 0
    results: dict[str, Any] = {}
    if not args.no_memory:
        results["memory"] = memory_table(args.shapes, args, args.device)
    if not args.no_step:
        results["step"] = step_table(args)
    if args.llada8b_shapes:
        results["llada8b"] = llada8b_table(args)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
