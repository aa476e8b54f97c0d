"""Two CPU processes (Accelerate, gloo) give the same per-item results as one, each item evaluated exactly once,
rank r taking items r, r+2, ... (d1's split)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import comparable_results, load_items


@pytest.mark.distributed
def test_two_processes_equal_one(reference_run, eval_args, tmp_path):
    out = tmp_path / "two"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29517",
           "-m", "d1rl.cli", "eval", *eval_args(out)]
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    # both ranks wrote their own file; every item is in exactly one of them, on rank index % 2
    ranks = {}
    for r in (0, 1):
        for line in (out / f"records-rank00{r}.jsonl").read_text().splitlines():
            rec = json.loads(line)
            ranks[(rec["task"], rec["gen_length"], rec["index"])] = rec["rank"]
    assert all(rank == key[2] % 2 for key, rank in ranks.items())
    assert load_items(out) == load_items(reference_run)
    assert comparable_results(out) == comparable_results(reference_run)
    res = json.loads((out / "results.json").read_text())
    assert res["device"]["num_processes"] == 2
    assert "sudoku" in proc.stdout and proc.stdout.count("results:") == 1  # table printed once, by the main process
