"""Aggregation (both graders, Sudoku cell + puzzle accuracy), table, atomic results file, plots, checkpoint discovery."""

from __future__ import annotations

import json
import os

import pytest

from d1rl.evaluation.checkpoints import find_checkpoints
from d1rl.evaluation.plot import plot_accuracy_vs_length, plot_accuracy_vs_step
from d1rl.evaluation.results import aggregate, format_table, primary_value, write_json_atomic


def _g(correct, score=None, **details):
    return {"correct": correct, "extracted": None, "score": float(correct) if score is None else score, "details": details}


def _records():
    recs = []
    # gsm8k @16: d1 gets 1/4 right, robust 3/4
    for i, (d1, rb) in enumerate([(True, True), (False, True), (False, True), (False, False)]):
        recs.append({"task": "gsm8k", "gen_length": 16, "index": i, "effective_tokens": 10 + i, "nfe": 8,
                     "grades": {"d1": _g(d1), "robust": _g(rb)}})
    # gsm8k @32: 2/4 for both
    for i in range(4):
        recs.append({"task": "gsm8k", "gen_length": 32, "index": i, "effective_tokens": 20, "nfe": 16,
                     "grades": {"d1": _g(i < 2), "robust": _g(i % 2 == 0)}})
    # sudoku @16: cells 8/8, 2/8, 0/8 -> cell acc 10/24, puzzle acc 1/3
    for i, c in enumerate([8, 2, 0]):
        g = _g(c == 8, score=c / 8, correct_cells=c, empty_cells=8)
        recs.append({"task": "sudoku", "gen_length": 16, "index": i, "effective_tokens": 5, "nfe": 8,
                     "grades": {"d1": g, "robust": g}})
    return recs


def test_aggregate_numbers():
    rows = aggregate(_records(), ["d1", "robust"])
    assert [(r["task"], r["gen_length"], r["n"]) for r in rows] == [("gsm8k", 16, 4), ("gsm8k", 32, 4), ("sudoku", 16, 3)]
    g16 = rows[0]
    assert g16["metrics"]["d1"]["accuracy"] == 0.25 and g16["metrics"]["robust"]["accuracy"] == 0.75
    assert g16["avg_effective_tokens"] == pytest.approx(11.5)
    assert g16["avg_nfe"] == 8
    sd = rows[2]["metrics"]["d1"]
    assert sd["cell_accuracy"] == pytest.approx(10 / 24)
    assert sd["puzzle_accuracy"] == pytest.approx(1 / 3)
    assert sd["mean_score"] == pytest.approx(10 / 24)
    assert primary_value(rows[2], "d1") == pytest.approx(10 / 24)
    assert primary_value(rows[0], "robust") == 0.75
    assert "cell_accuracy" not in g16["metrics"]["d1"]


def test_missing_grader_is_a_clear_error():
    recs = _records()
    del recs[0]["grades"]["robust"]
    with pytest.raises(ValueError, match="index=0 has no grade from grader 'robust'"):
        aggregate(recs, ["d1", "robust"])


def test_table_has_lengths_as_columns_and_percentages():
    table = format_table(aggregate(_records(), ["d1", "robust"]), ["d1", "robust"])
    lines = table.splitlines()
    assert lines[0].split() == ["task", "metric", "16", "32"]
    row = next(line for line in lines if line.startswith("gsm8k") and "robust accuracy" in line)
    assert row.split()[-2:] == ["75.0", "50.0"]
    cell = next(line for line in lines if "d1 cell accuracy" in line)
    assert cell.split()[-2:] == ["41.7", "-"]
    puzzle = next(line for line in lines if "d1 puzzle accuracy" in line)
    assert puzzle.split()[-2:] == ["33.3", "-"]


def test_write_json_atomic_replaces_and_leaves_no_temp(tmp_path, monkeypatch):
    p = tmp_path / "results.json"
    write_json_atomic(p, {"a": 1})
    write_json_atomic(p, {"a": float("inf"), "b": (1, 2)})
    assert json.loads(p.read_text()) == {"a": "inf", "b": [1, 2]}
    assert os.listdir(tmp_path) == ["results.json"]

    def crash_before_rename(src, dst):
        raise KeyboardInterrupt  # e.g. Ctrl-C after the new content is written, before it replaces the old

    monkeypatch.setattr("d1rl.atomic_io.os.replace", crash_before_rename)
    with pytest.raises(KeyboardInterrupt):
        write_json_atomic(p, {"a": 2})
    assert json.loads(p.read_text()) == {"a": "inf", "b": [1, 2]}  # previous version intact
    assert os.listdir(tmp_path) == ["results.json"]


def _is_png(path):
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000


def test_plots_are_written(tmp_path):
    rows = aggregate(_records(), ["d1", "robust"])
    p = plot_accuracy_vs_length(rows, ["d1", "robust"], tmp_path / "acc_vs_len.png", title="t")
    assert _is_png(p)
    pts = [{"step": 200, "results": rows}, {"step": 100, "results": rows}]
    q = plot_accuracy_vs_step(pts, ["d1"], tmp_path / "acc_vs_step.png")
    assert _is_png(q)
    assert sorted(os.listdir(tmp_path)) == ["acc_vs_len.png", "acc_vs_step.png"]


def _ckpt(root, name, kind):
    d = root / name
    d.mkdir(parents=True)
    (d / ("adapter_config.json" if kind == "adapter" else "config.json")).write_text("{}")
    return d


def test_find_checkpoints_run_dir_glob_and_single(tmp_path):
    run = tmp_path / "run"
    _ckpt(run / "checkpoints", "checkpoint-200", "adapter")
    _ckpt(run / "checkpoints", "checkpoint-50", "model")
    _ckpt(run / "checkpoints" / "checkpoint-100", "model", "model")  # model in a sub-directory
    (run / "checkpoints" / "checkpoint-300.tmp").mkdir()  # being written: ignored
    found = find_checkpoints(run)
    assert [c.step for c in found] == [50, 100, 200]
    assert [c.kind for c in found] == ["model", "model", "adapter"]
    assert found[1].model_path == run / "checkpoints" / "checkpoint-100" / "model"
    assert [c.step for c in find_checkpoints(str(run / "checkpoints" / "checkpoint-*0"))] == [50, 100, 200]
    assert [c.step for c in find_checkpoints(run / "checkpoints" / "checkpoint-200")] == [200]


def test_find_checkpoints_errors(tmp_path):
    (tmp_path / "checkpoint-7").mkdir()
    with pytest.raises(FileNotFoundError, match="checkpoint-7: no adapter_config.json or config.json"):
        find_checkpoints(tmp_path)
    (tmp_path / "checkpoint-7" / "engine_state.json").write_text("{}")
    (tmp_path / "checkpoint-7" / "model.safetensors").write_bytes(b"")
    assert [c.kind for c in find_checkpoints(tmp_path)] == ["engine"]
    with pytest.raises(FileNotFoundError, match="no checkpoint-<step>"):
        find_checkpoints(tmp_path / "nothing-*")
    with pytest.raises(FileNotFoundError, match="not a directory"):
        find_checkpoints(tmp_path / "missing")
