"""Two CPU processes (gloo DDP through `accelerate launch`) with the same global batch as one process give the
same parameters: the data schedule, the row-keyed noise and the per-sample loss do not depend on the world size."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from d1rl.training.commands import sft_main
from d1rl.training.metrics import read_metrics

REPO = Path(__file__).resolve().parents[2]
COMMON = [
    "logger.progress_bar=false",
    "task.synthetic.num_train=256",
    "data.max_eval_rows=7",  # odd: the ranks get 4 and 3 rows (rank 1 pads one weight-0 row)
    "trainer.eval_steps=2",
    "trainer.per_device_eval_batch_size=2",
    "loss.normalization=per_sample",  # d1's normalisation is per micro-batch, i.e. per rank (see SFTLossConfig)
    "trainer.max_steps=2",
    "trainer.save_steps=2",
    "trainer.warmup_steps=0",
    "trainer.learning_rate=1e-3",
    "trainer.lr_scheduler=constant",
    # float64: summation-order noise (DDP averages two half-batch gradients) stays ~1e-16, so any real difference
    # (data split, loss scaling, noise streams) shows up far above the 1e-6 bound instead of hiding in fp32 noise
    "model.dtype=float64",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ~45 s on the 2-core dev machine under load (launcher + 2 ranks each import torch/transformers): slow.
@pytest.mark.slow
@pytest.mark.distributed
def test_two_processes_match_one_process(tmp_path):
    one = tmp_path / "one"
    assert sft_main([f"output_dir={one}", "trainer.per_device_train_batch_size=8", *COMMON]) == 0

    two = tmp_path / "two"
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or "accelerate"
    env = dict(os.environ, ACCELERATE_USE_CPU="true", OMP_NUM_THREADS="1")
    cmd = [
        accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
        "-m", "d1rl.training.commands", "sft", f"output_dir={two}", "trainer.per_device_train_batch_size=4", *COMMON,
    ]
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    state = json.loads((two / "checkpoints" / "checkpoint-000002" / "engine_state.json").read_text())
    assert state["num_processes"] == 2  # really two ranks
    assert (two / "checkpoints" / "checkpoint-000002" / "rng_state_rank1.pt").is_file()
    a = load_file(str(one / "final" / "model.safetensors"))
    b = load_file(str(two / "final" / "model.safetensors"))
    base = load_file(str(one / "checkpoints" / "checkpoint-000002" / "model.safetensors"))
    assert a.keys() == b.keys()
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    print(f"max |params(1 process) - params(2 processes)| = {diff:.3e}")
    assert diff <= 1e-6, diff
    # and the steps did move the weights by much more than that
    from d1rl.models import tiny_path

    init = load_file(str(tiny_path() / "model.safetensors"))
    moved = max((a[k] - init[k]).abs().max().item() for k in a if k in init)
    assert moved > 1e-4 and torch.equal(base[next(iter(base))], a[next(iter(base))])
    ma, mb = read_metrics(one / "metrics.jsonl"), read_metrics(two / "metrics.jsonl")
    assert [r["step"] for r in ma] == [r["step"] for r in mb] == [0, 1, 2]
    # (the train unscaled_loss is a per-micro-batch ratio, like d1 logs it, so it is not compared)
    for key in ("loss", "grad_norm", "eval/loss", "eval/unscaled_loss", "eval/rows"):
        va = [r[key] for r in ma if key in r]
        vb = [r[key] for r in mb if key in r]
        assert va and va == pytest.approx(vb, rel=1e-9), key
    assert [r["eval/rows"] for r in mb if "eval/rows" in r] == [7.0, 7.0]
