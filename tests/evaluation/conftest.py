"""Fixtures for the ``d1rl eval`` tests: a small CLI argument set on the embedded tiny model, and record loading."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

# Fields that legitimately differ between two runs of the same evaluation (timing and placement).
RUN_DEPENDENT = ("seconds", "batch_size", "rank")


def load_items(out_dir: Path) -> dict[tuple[str, int, int], dict]:
    """All records of ``out_dir`` keyed by (task, gen_length, index), run-dependent fields removed; fails on duplicates."""
    items: dict[tuple[str, int, int], dict] = {}
    for path in sorted(Path(out_dir).glob("records-rank*.jsonl")):
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            for k in RUN_DEPENDENT:
                rec.pop(k, None)
            key = (rec["task"], rec["gen_length"], rec["index"])
            assert key not in items, f"duplicate record {key}"
            items[key] = rec
    return items


def comparable_results(out_dir: Path) -> list[dict]:
    """results.json's per-(task, length) rows without timing."""
    rows = json.loads((Path(out_dir) / "results.json").read_text())["results"]
    for r in rows:
        r.pop("seconds_per_item", None)
    return rows


@pytest.fixture(scope="session")
def eval_args(data_dir):
    """CLI overrides for a quick evaluation: tiny model, synthetic + Sudoku (local data), lengths 8/16, block 8."""

    def make(out_dir, *extra: str) -> list[str]:
        return [
            "model=tiny",
            "tasks=[synthetic,sudoku]",
            "gen_lengths=[8,16]",
            "sampler.block_length=8",
            "limit=3",
            "batch_size=2",
            f"task_defaults.data_dir={data_dir}",
            f"output_dir={out_dir}",
            "hydra.job_logging.root.level=WARNING",
            *extra,
        ]

    return make


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory, eval_args):
    """One uninterrupted evaluation (batch size 2) that the other tests compare against."""
    from d1rl.evaluation.commands import eval_main

    out = tmp_path_factory.mktemp("eval_reference")
    assert eval_main(eval_args(out)) == 0
    return out
