"""`d1rl train` as a process: kill -9 mid-run + resume, and two CPU processes under accelerate (slow)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from grpo_helpers import HERE, read_metrics

REPO = HERE.parent.parent


def overrides(out: Path, **extra: str) -> list[str]:
    args = {
        "output_dir": str(out),
        "hydra.run.dir": str(out),
        "model.device": "cpu",
        "task.synthetic.num_train": "200",
        "task.synthetic.num_test": "10",
        "task.extra_rewards": "['grpo_test_rewards:digit_reward']",
        "sampler.gen_length": "16",
        "sampler.block_length": "16",
        "sampler.steps": "8",
        "algorithm.num_generations": "4",
        "algorithm.num_iterations": "2",
        "trainer.per_device_train_batch_size": "4",
        "trainer.gradient_accumulation_steps": "2",
        "trainer.learning_rate": "3e-3",
        "trainer.max_steps": "8",
        "trainer.save_steps": "3",
        "trainer.eval_steps": "4",
        "validation.holdout_size": "8",
        "validation.batch_size": "8",
        "logger.progress_bar": "false",
        **extra,
    }
    return [f"{k}={v}" for k, v in args.items()]


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(HERE), str(REPO), e.get("PYTHONPATH", "")])
    e.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", WANDB_MODE="offline", OMP_NUM_THREADS="1")
    return e


def train_cmd(out: Path, **extra: str) -> list[str]:
    return [sys.executable, "-m", "d1rl.training.grpo_commands", *overrides(out, **extra)]


def comparable(metrics: list[dict]) -> list[dict]:
    return [{k: v for k, v in m.items() if not k.startswith("time")} for m in metrics]


@pytest.mark.slow
def test_kill_9_mid_rollout_batch_then_resume_is_identical(tmp_path):
    full, cut = tmp_path / "full", tmp_path / "cut"
    subprocess.run(train_cmd(full), check=True, env=env(), cwd=REPO, capture_output=True, timeout=900)

    proc = subprocess.Popen(train_cmd(cut), env=env(), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = cut / "checkpoints" / "checkpoint-000003"  # step 3 of μ = 2: mid rollout batch, the buffer is saved
    deadline = time.time() + 900
    while not (ckpt / "engine_state.json").exists():
        assert proc.poll() is None, "the run ended before its step-3 checkpoint"
        assert time.time() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not (cut / "final").exists()

    subprocess.run(train_cmd(cut), check=True, env=env(), cwd=REPO, capture_output=True, timeout=900)
    assert comparable(read_metrics(cut)) == comparable(read_metrics(full))
    assert (cut / "completions.jsonl").read_text() == (full / "completions.jsonl").read_text()


@pytest.mark.slow
@pytest.mark.distributed
def test_two_cpu_processes_end_to_end(tmp_path):
    out = tmp_path / "ddp"
    launch = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "-m", "d1rl.training.grpo_commands", *overrides(out, **{"trainer.max_steps": "4"}),
    ]
    e = env()
    e["ACCELERATE_USE_CPU"] = "true"
    res = subprocess.run(launch, env=e, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    metrics = read_metrics(out)
    rollouts = [m for m in metrics if "reward" in m]
    assert [m["step"] for m in rollouts] == [1, 3]
    # 2 ranks x 2 prompts: the epoch advances by 4 prompts per rollout over the 192-row pool (200 - 8 held out)
    assert rollouts[0]["epoch"] == pytest.approx(4 / 192)
    val = [m for m in metrics if "val/accuracy" in m]
    assert val and val[-1]["val/num_items"] == 8.0  # the 8 hold-out rows were split over both ranks
    ckpt = out / "checkpoints" / "checkpoint-000003"
    assert (ckpt / "trainer_state_rank0.pt").exists() and (ckpt / "trainer_state_rank1.pt").exists()
    assert (out / "final" / "model.safetensors").exists()
