"""d1rl.atomic_io: the one atomic writer behind results, records, metrics and plots."""

from __future__ import annotations

import json

import pytest

from d1rl.atomic_io import atomic_write, atomic_write_text, write_json_atomic, write_jsonl_atomic


def test_writes_replace_whole_files_and_leave_no_temporaries(tmp_path):
    target = tmp_path / "deep" / "results.json"
    write_json_atomic(target, {"accuracy": 0.512, "name": "é"}, indent=2, ensure_ascii=False)
    assert json.loads(target.read_text(encoding="utf-8")) == {"accuracy": 0.512, "name": "é"}
    write_jsonl_atomic(tmp_path / "r.jsonl", [{"a": 1}, {"b": 2}])
    assert (tmp_path / "r.jsonl").read_text().splitlines() == ['{"a": 1}', '{"b": 2}']
    atomic_write_text(target, "new\n")
    assert target.read_text() == "new\n"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["deep", "r.jsonl", "results.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "plot.png"
    target.write_bytes(b"old")
    seen = []

    def half_write(tmp):
        seen.append(tmp.name)
        tmp.write_bytes(b"ha")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, half_write)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["plot.png"]
    assert seen[0].endswith(".png")  # the temporary keeps the suffix, so savefig picks the format
    with pytest.raises(ValueError):  # NaN refused where asked, and nothing written
        write_json_atomic(tmp_path / "x.json", {"v": float("nan")}, allow_nan=False)
    assert not (tmp_path / "x.json").exists()
