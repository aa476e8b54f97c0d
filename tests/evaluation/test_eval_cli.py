"""``d1rl eval`` end to end on the embedded tiny model: outputs, numbers recomputed from records, batch-size
independence, resume (torn line, lost records, changed settings)."""

from __future__ import annotations

import json
import re
import shutil

import pytest
from conftest import comparable_results, load_items

from d1rl.evaluation.commands import eval_main

KEYS = {(t, L, i) for t in ("synthetic", "sudoku") for L in (8, 16) for i in range(3)}


def test_outputs_and_numbers(reference_run, data_dir):
    out = reference_run
    items = load_items(out)
    assert set(items) == KEYS
    res = json.loads((out / "results.json").read_text())
    assert (out / "accuracy_vs_length.png").read_bytes()[:4] == b"\x89PNG"
    # provenance
    assert res["seed"] == 42 and res["model"]["name_or_path"] == "tiny"
    assert res["sampler"]["block_length"] == 8 and res["sampler"]["steps"] is None
    assert res["code_version"]["d1rl"] and re.fullmatch(r"[0-9a-f]{40}", res["code_version"]["git_commit"] or "")
    assert res["device"]["type"] == "cpu" and res["device"]["num_processes"] == 1
    assert res["graders"] == ["d1", "robust"]

    from d1rl.models import ModelAdapter, load_model_and_tokenizer
    from d1rl.tasks import TaskConfig, get_task

    model, tok = load_model_and_tokenizer("tiny")
    eos = ModelAdapter.from_pretrained(model, tok).eos_id
    tasks = {n: get_task(n, TaskConfig(name=n, data_dir=str(data_dir))) for n in ("synthetic", "sudoku")}
    rows = {n: t.load_eval_split("test") for n, t in tasks.items()}
    for (task, L, i), rec in items.items():
        assert rec["steps"] == L // 2 and rec["nfe"] == L // 2  # d1: steps = gen_length / 2
        assert len(rec["completion_ids"]) == L
        assert rec["completion"] == tok.decode(rec["completion_ids"], skip_special_tokens=False)
        assert rec["effective_tokens"] == sum(1 for t in rec["completion_ids"] if t != eos)
        row = rows[task][i]  # d1 order: the 256-subset for sudoku, file order for synthetic
        assert rec["question"] == row["question"] and rec["ground_truth"] == row["answer"]
        assert rec["prompt"].endswith(tasks[task].eval_prefill) and rec["prompt"].startswith("<|startoftext|>")
        assert rec["prompt_tokens"] == len(tok(rec["prompt"], add_special_tokens=False)["input_ids"])
        for g in ("d1", "robust"):
            assert rec["grades"][g] == json.loads(json.dumps(tasks[task].grade(rec["completion"], row, g).to_dict()))
    # Sudoku is evaluated on d1's subset, in d1's order: np.random.seed(42); np.random.choice(500, 256, replace=False)
    import csv

    import numpy as np

    np.random.seed(42)
    chosen = np.random.choice(500, 256, replace=False)[:3]
    with open(data_dir / "sudoku" / "test.csv") as fh:
        puzzles = list(csv.DictReader(fh))
    for i in range(3):
        assert puzzles[chosen[i]]["Puzzle"] in items[("sudoku", 8, i)]["question"]
        assert items[("sudoku", 8, i)]["ground_truth"] == puzzles[chosen[i]]["Solution"]
    # the numbers of results.json, recomputed from the records
    assert [(r["task"], r["gen_length"]) for r in res["results"]] == [
        ("sudoku", 8), ("sudoku", 16), ("synthetic", 8), ("synthetic", 16)]
    for r in res["results"]:
        group = [v for k, v in items.items() if k[:2] == (r["task"], r["gen_length"])]
        assert r["n"] == 3 and r["steps"] == r["gen_length"] // 2
        assert r["avg_effective_tokens"] == pytest.approx(sum(v["effective_tokens"] for v in group) / 3)
        for g in ("d1", "robust"):
            m = r["metrics"][g]
            assert m["accuracy"] == pytest.approx(sum(v["grades"][g]["correct"] for v in group) / 3)
            if r["task"] == "sudoku":
                cells = sum(v["grades"][g]["details"]["correct_cells"] for v in group)
                assert m["empty_cells"] == 24  # every d1 test puzzle has 8 blanks
                assert m["cell_accuracy"] == pytest.approx(cells / 24)
                assert m["puzzle_accuracy"] == m["accuracy"]


def test_same_items_for_another_batch_size(reference_run, eval_args, tmp_path):
    assert eval_main(eval_args(tmp_path, "batch_size=3")) == 0
    assert load_items(tmp_path) == load_items(reference_run)
    assert comparable_results(tmp_path) == comparable_results(reference_run)


def test_resume_after_torn_line_and_lost_records(reference_run, eval_args, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(reference_run, out)
    path = out / "records-rank000.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    # keep 5 complete records, then half of the 6th: what kill -9 during a write leaves behind
    path.write_text("".join(lines[:5]) + lines[5][: len(lines[5]) // 2])
    (out / "results.json").unlink()
    assert eval_main(eval_args(out)) == 0
    assert load_items(out) == load_items(reference_run)  # nothing lost, nothing duplicated
    assert comparable_results(out) == comparable_results(reference_run)
    assert len(path.read_text().splitlines()) == len(KEYS)
    # resuming a finished run generates nothing and rewrites the same results
    before = path.read_bytes()
    assert eval_main(eval_args(out)) == 0
    assert path.read_bytes() == before


def test_resume_refuses_other_settings_and_fresh_start_wipes(reference_run, tmp_path):
    from d1rl.evaluation.commands import run_eval_job
    from d1rl.evaluation.config import EvalJobConfig
    from d1rl.models.loading import model_preset
    from d1rl.sampling import SamplerConfig

    out = tmp_path / "run"
    shutil.copytree(reference_run, out)
    job = EvalJobConfig(model=model_preset("tiny"), sampler=SamplerConfig(block_length=8, temperature=0.5),
                        tasks=["synthetic"], gen_lengths=[16], limit=2, output_dir=str(out))
    with pytest.raises(ValueError, match=r"other settings \(sampler\.temperature: 0\.0 -> 0\.5"):
        run_eval_job(job)
    job.resume = False  # start over: old records of every task are removed
    run_eval_job(job)
    assert set(load_items(out)) == {("synthetic", 16, 0), ("synthetic", 16, 1)}
    res = json.loads((out / "results.json").read_text())
    assert [(r["task"], r["gen_length"], r["n"]) for r in res["results"]] == [("synthetic", 16, 2)]


def test_config_errors_name_the_problem():
    from d1rl.evaluation.config import EvalJobConfig

    with pytest.raises(ValueError, match="graders"):
        EvalJobConfig(graders=["exact"])
    with pytest.raises(ValueError, match="gen_lengths"):
        EvalJobConfig(gen_lengths=[128, 128])
    with pytest.raises(ValueError, match="batch_size"):
        EvalJobConfig(batch_size=0)
