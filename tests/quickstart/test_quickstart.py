"""`d1rl quickstart` end to end: the shorter setting in the default suite, the full one as a slow test.

Both run the real CLI in a subprocess (`python -m d1rl.cli quickstart ...`), as a user would, with the recipes in
recipes/quickstart/. The quick setting checks the pipeline (every stage runs, files and numbers are consistent,
a re-run skips finished stages, a run with other settings is refused); only the full setting is a result.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from d1rl.quickstart import BASE_EVAL_ITEMS, Plan, busy_cores, choose_threads, reward_summary, stage_overrides

REPO = Path(__file__).resolve().parents[2]


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", WANDB_MODE="offline",
               TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "d1rl.cli", "quickstart", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _check_results(out: Path, proc: subprocess.CompletedProcess, n_items: int) -> dict:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((out / "quickstart_results.json").read_text())
    evals = results["evaluations"]
    assert set(evals) == {"eval_base", "eval_sft", "eval_rl"}
    for stage, e in evals.items():
        # the accuracy in the summary is the one in the eval's own results.json, counted from its records
        records = [json.loads(line) for f in sorted((out / stage).glob("records-rank*.jsonl"))
                   for line in f.read_text().splitlines()]
        expected = min(n_items, BASE_EVAL_ITEMS) if stage == "eval_base" else n_items
        assert len(records) == e["n"] == expected
        correct = sum(r["grades"]["robust"]["correct"] for r in records)
        assert e["correct"] == correct and e["accuracy"] == pytest.approx(correct / expected)
        assert 0.0 <= e["format_rate"] <= 1.0
    assert evals["eval_base"]["accuracy"] == 0.0  # an untrained model solves nothing
    # every stage's output exists and is what the next stage read
    assert (out / "sft" / "final" / "model.safetensors").is_file()
    assert (out / "rl" / "final" / "model.safetensors").is_file()
    rl_cfg = (out / "rl" / ".hydra" / "config.yaml").read_text()
    assert str(out / "sft" / "final") in rl_cfg
    for p in results["plots"]:
        assert Path(p).is_file() and Path(p).stat().st_size > 1000, p
    assert {Path(p).name for p in results["plots"]} >= {"accuracy.png", "sft_loss.png", "rl_reward.png",
                                                        "accuracy_vs_length.png"}
    curve = results["reward_curve"]
    assert curve["rollout_steps"] >= 1 and 0.0 <= curve["first_mean_reward"] <= 2.5
    assert set(results["wall_seconds"]) == {"build", "eval_base", "sft", "eval_sft", "rl", "eval_rl"}
    # the printed table carries the three accuracies
    for label in ("before SFT", "after SFT", "after RL"):
        assert label in proc.stdout
    return results


def test_quick_pipeline_end_to_end_and_resume(tmp_path):
    out = tmp_path / "qs"
    proc = _run(["--quick", "--threads", "1", "--output-dir", str(out)], timeout=600)
    first = _check_results(out, proc, n_items=16)
    sft_metrics = [json.loads(line) for line in (out / "sft" / "metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in sft_metrics) == 30
    assert any("eval/loss" in r for r in sft_metrics)
    rl_steps = [r["step"] for r in map(json.loads, (out / "rl" / "metrics.jsonl").read_text().splitlines())]
    assert max(rl_steps) == 4

    # re-running the same folder skips every finished stage and reports the same numbers
    proc2 = _run(["--quick", "--threads", "1", "--output-dir", str(out)], timeout=300)
    assert proc2.returncode == 0, proc2.stderr[-2000:]
    assert proc2.stdout.count("skipped") == 5  # all but the (cheap, cached) build
    second = json.loads((out / "quickstart_results.json").read_text())
    assert second["accuracy"] == first["accuracy"] and second["skipped"] == ["eval_base", "sft", "eval_sft", "rl", "eval_rl"]

    # other settings in the same folder are refused, naming the difference
    proc3 = _run(["--quick", "--threads", "1", "--seed", "7", "--output-dir", str(out)], timeout=120)
    assert proc3.returncode == 1 and "seed: 42 there, 7 now" in proc3.stderr


def test_stage_arguments_chain_the_stages(tmp_path):
    args = stage_overrides(Plan(seed=3, rl_steps=9), tmp_path)
    cmd, rl = args["rl"]
    assert cmd == "train" and rl[:2] == ["--recipe", "quickstart/train"]
    assert f"model.name_or_path={tmp_path / 'sft' / 'final'}" in rl and "trainer.seed=3" in rl
    assert "trainer.max_steps=9" in rl
    assert f"model.name_or_path={tmp_path / 'rl' / 'final'}" in args["eval_rl"][1]
    assert "model.name_or_path=tiny" in args["eval_base"][1]
    assert f"limit={BASE_EVAL_ITEMS}" in args["eval_base"][1] and not any(a.startswith("limit=") for a in args["eval_sft"][1])
    assert "limit=16" in stage_overrides(Plan(eval_items=16), tmp_path)["eval_base"][1]  # never more than the others
    assert all(a[1][:2] == ["--recipe", "quickstart/eval"] for s, a in args.items() if s.startswith("eval"))
    with pytest.raises(ValueError, match="--rl-steps"):
        Plan(rl_steps=0)


def test_reward_summary_first_and_last_rollouts(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = []
    for r in range(24):  # μ = 2: a rollout every other optimizer step; loss-only records in between
        lines.append({"step": 2 * r + 1, "rollout_step": r, "reward": 0.5 + 0.1 * r,
                      "rewards/arithmetic_correctness_reward": 0.1 * r})
        lines.append({"step": 2 * r + 2, "loss": 0.1})
    path.write_text("".join(json.dumps(x) + "\n" for x in lines) + '{"step": 49, "rew')  # torn last line
    s = reward_summary(path)
    assert s["rollout_steps"] == 24 and s["window"] == 10
    assert s["first_mean_reward"] == pytest.approx(0.5 + 0.1 * 4.5)
    assert s["last_mean_reward"] == pytest.approx(0.5 + 0.1 * 18.5)
    assert s["last_mean_correctness_reward"] == pytest.approx(0.1 * 18.5)
    assert reward_summary(tmp_path / "missing.jsonl") is None


def test_auto_threads_take_the_idle_cores():
    assert choose_threads("auto", cpus=2, busy=0.03)[0] == 2  # idle 2-core laptop: both cores
    assert choose_threads("auto", cpus=2, busy=1.1)[0] == 1  # another job keeps one core busy
    assert choose_threads("auto", cpus=2, busy=3.5)[0] == 1  # never fewer than one
    assert choose_threads("auto", cpus=64, busy=0.0)[0] == 4  # the tiny model gains nothing past 4
    assert choose_threads("3")[0] == 3
    measured = busy_cores(0.05)  # on Linux: a share of this machine's cores, now
    assert measured is None or 0.0 <= measured <= os.cpu_count() + 1e-6
    with pytest.raises(ValueError, match="--threads must be a number or 'auto', got 'many'"):
        choose_threads("many")
    with pytest.raises(ValueError, match="--threads must be >= 1, got 0"):
        choose_threads("0")


@pytest.mark.slow
def test_full_quickstart_rl_beats_sft(tmp_path):
    """The README's main command at its real settings: RL must raise held-out accuracy over SFT."""
    out = tmp_path / "qs"
    proc = _run(["--output-dir", str(out)], timeout=1800)
    results = _check_results(out, proc, n_items=500)
    acc = results["accuracy"]
    assert acc["after SFT"] > acc["before SFT"]
    assert acc["after RL"] > acc["after SFT"], acc
    assert math.isfinite(results["reward_curve"]["last_mean_reward"])
