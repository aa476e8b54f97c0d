#!/usr/bin/env python
"""Benchmark the shared diffusion sampler: generated tokens/s, forward passes (NFE) per token, peak memory.

Models: a tiny LLaDA (the real LLaDA-8B architecture shrunk: d_model 64, 2 layers) with a small vocabulary, and the
same with the real LLaDA vocabulary (126,464), where the per-step logits/softmax work dominates. Decoding follows
d1's evaluation (block 32, steps = gen_length / 2, greedy, low-confidence remasking) unless flags say otherwise.

"in model" is the share of the time spent inside the model's forward; the rest is the sampler's own work
(candidates, confidences, top-k). Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` during the timed call; on CPU the growth of the process's
peak resident set (``resource`` maxrss), measured in a fresh subprocess per configuration so that one
configuration's peak does not hide the next one's.

Examples::

    python scripts/bench_sampler.py                    # vocab 2048 and 126464 x gen 128/256/512, batch 4
    python scripts/bench_sampler.py --quick            # a fast smoke run
    python scripts/bench_sampler.py --vocab-sizes 126464 --gen-lengths 256 --batch-size 8 --device cuda

Quote ratios and medians from one run: other work may share the CPU cores.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch

LLADA_VOCAB = 126_464


def tiny_llada(vocab_size: int, d_model: int, n_layers: int, max_len: int, seed: int = 0):
    """A randomly initialised LLaDA with the 8B model's architecture flags and tiny dimensions."""
    from d1rl.models import LLaDAConfig, LLaDAModelLM

    real = vocab_size >= LLADA_VOCAB
    config = LLaDAConfig(
        d_model=d_model, n_heads=4, n_kv_heads=4, n_layers=n_layers, mlp_hidden_size=int(2.5 * d_model),
        block_type="llama", activation_type="silu", layer_norm_type="rms", rms_norm_eps=1e-5, rope=True,
        rope_theta=500000.0, include_bias=False, include_qkv_bias=False, bias_for_layer_norm=False,
        weight_tying=False, scale_logits=False, attention_dropout=0.0, residual_dropout=0.0, embedding_dropout=0.0,
        vocab_size=vocab_size, embedding_size=vocab_size, max_sequence_length=max_len,
        mask_token_id=126336 if real else vocab_size - 48,
        eos_token_id=126081 if real else vocab_size - 49, pad_token_id=126081 if real else vocab_size - 49,
        bos_token_id=126080 if real else vocab_size - 50,
    )
    torch.manual_seed(seed)
    return LLaDAModelLM(config).eval()


class _TimedModel(torch.nn.Module):
    """Forwards to the model and adds up the time spent inside it (the rest of a step is the sampler's own work)."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner
        self.config = inner.config
        self.seconds = 0.0

    def forward(self, *args, **kwargs):
        start = time.perf_counter()
        out = self.inner(*args, **kwargs)
        if out.logits.is_cuda:
            torch.cuda.synchronize()
        self.seconds += time.perf_counter() - start
        return out


def _maxrss_mb() -> float:
    # Linux reports KiB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def measure(args: argparse.Namespace, vocab: int, gen_length: int) -> dict:
    """Time ``repeats`` sampler calls for one configuration (in this process)."""
    from d1rl.sampling import generate

    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    model = _TimedModel(tiny_llada(vocab, args.d_model, args.n_layers, args.prompt_length + gen_length + 8)
                        .to(device, dtype))
    g = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, min(vocab - 64, 30000), (args.batch_size, args.prompt_length), generator=g).to(device)
    steps = max(1, int(gen_length * args.steps_ratio))
    kwargs = dict(gen_length=gen_length, block_length=args.block_length, steps=steps,
                  temperature=args.temperature, generator=torch.Generator(device=device).manual_seed(0))
    # warm-up on a short run (allocator, kernels)
    generate(model, prompt, gen_length=args.block_length, block_length=args.block_length, steps=2)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    rss_before = _maxrss_mb()
    times, nfe = [], 0
    model.seconds = 0.0
    for _ in range(args.repeats):
        start = time.perf_counter()
        out = generate(model, prompt, **kwargs)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        nfe = out.nfe
    if device.type == "cuda":
        peak_mb = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        peak_mb = _maxrss_mb() - rss_before
    seconds = statistics.median(times)
    return {
        "vocab": vocab,
        "gen_length": gen_length,
        "batch": args.batch_size,
        "steps": nfe,
        "seconds": seconds,
        "tokens_per_s": args.batch_size * gen_length / seconds,
        "nfe_per_token": nfe / gen_length,
        "peak_mb": peak_mb,
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "model_share": model.seconds / sum(times),
    }


def _child_argv(args: argparse.Namespace, vocab: int, gen_length: int) -> list[str]:
    keep = ["--device", args.device, "--dtype", args.dtype, "--batch-size", str(args.batch_size),
            "--prompt-length", str(args.prompt_length), "--block-length", str(args.block_length),
            "--steps-ratio", str(args.steps_ratio), "--temperature", str(args.temperature),
            "--repeats", str(args.repeats), "--d-model", str(args.d_model), "--n-layers", str(args.n_layers),
            "--threads", str(args.threads)]
    return [sys.executable, __file__, *keep, "--single", str(vocab), str(gen_length)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vocab-sizes", type=int, nargs="+", default=[2048, LLADA_VOCAB])
    parser.add_argument("--gen-lengths", type=int, nargs="+", default=[128, 256, 512])
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--prompt-length", type=int, default=64)
    parser.add_argument("--block-length", type=int, default=32)
    parser.add_argument("--steps-ratio", type=float, default=0.5, help="steps = ratio * gen_length (d1 eval: 0.5)")
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--n-layers", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16", "float64"])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--quick", action="store_true", help="gen 64 only, batch 2: a smoke run")
    parser.add_argument("--in-process", action="store_true", help="no subprocess per configuration")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON lines too")
    parser.add_argument("--single", nargs=2, type=int, metavar=("VOCAB", "GEN"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.single:
        print(json.dumps(measure(args, *args.single)))
        return 0
    if args.quick:
        args.gen_lengths, args.batch_size = [64], 2

    rows = []
    for vocab in args.vocab_sizes:
        for gen_length in args.gen_lengths:
            if args.in_process or args.device != "cpu":
                row = measure(args, vocab, gen_length)
            else:
                done = subprocess.run(_child_argv(args, vocab, gen_length), capture_output=True, text=True, check=False)
                if done.returncode != 0:
                    print(done.stderr, file=sys.stderr)
                    return done.returncode
                row = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(f"  vocab {vocab} gen {gen_length}: {row['seconds']:.2f}s", file=sys.stderr, flush=True)

    device = args.device if args.device == "cpu" else torch.cuda.get_device_name()
    print(f"\nsampler benchmark: device {device}, dtype {args.dtype}, batch {args.batch_size}, prompt "
          f"{args.prompt_length}, block {args.block_length}, steps = {args.steps_ratio} x gen, T {args.temperature}, "
          f"threads {args.threads}, d_model {args.d_model}, layers {args.n_layers}")
    header = (f"{'vocab':>7} {'params':>7} {'gen':>5} {'NFE':>5} {'sec':>8} {'tok/s':>9} {'NFE/tok':>8} "
              f"{'peak MB':>9} {'in model':>9}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['vocab']:>7} {r['params_m']:>6.1f}M {r['gen_length']:>5} {r['steps']:>5} {r['seconds']:>8.2f} "
              f"{r['tokens_per_s']:>9.1f} {r['nfe_per_token']:>8.3f} {r['peak_mb']:>9.1f} {r['model_share']:>8.0%}")
        if args.json:
            print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
