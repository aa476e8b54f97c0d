"""``d1rl eval`` killed with SIGKILL in the middle of a run, then resumed: no item lost or duplicated, and the
results equal those of an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from conftest import comparable_results, load_items

from d1rl.evaluation.commands import eval_main

N_ITEMS = 2 * 2 * 3  # 2 tasks x 2 lengths x limit 3, one item per batch


def _args(eval_args, out):
    # the reference run's settings, but one item per batch (results do not depend on the batch size), so the
    # run is still busy when it is killed after its third record
    return eval_args(out, "batch_size=1")


def test_kill_9_then_resume_equals_uninterrupted(reference_run, eval_args, tmp_path):
    out = tmp_path / "killed"
    code = "import sys; from d1rl.evaluation.commands import eval_main; sys.exit(eval_main(sys.argv[1:]))"
    proc = subprocess.Popen([sys.executable, "-c", code, *_args(eval_args, out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    records = out / "records-rank000.jsonl"
    deadline = time.time() + 240
    try:
        while time.time() < deadline and proc.poll() is None:
            if records.exists() and records.read_bytes().count(b"\n") >= 3:
                break
            time.sleep(0.01)
        assert proc.poll() is None, "the evaluation ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    written = records.read_bytes().count(b"\n")
    assert 3 <= written < N_ITEMS and not (out / "results.json").exists()

    assert eval_main(_args(eval_args, out)) == 0  # resume (the default)
    assert len(records.read_text().splitlines()) == N_ITEMS  # nothing written twice
    assert load_items(out) == load_items(reference_run)  # nothing lost, same completions and verdicts
    assert comparable_results(out) == comparable_results(reference_run)
