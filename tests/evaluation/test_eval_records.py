"""Record files: complete lines, torn-tail repair after a kill, resume keys, corruption reported with file:line."""

from __future__ import annotations

import json
import math

import pytest

from d1rl.evaluation.records import (
    ItemKey,
    RecordWriter,
    iter_file_records,
    jsonable,
    read_records,
    record_path,
    repair_torn_tail,
)


def _rec(task: str, length: int, index: int, **extra):
    return {"task": task, "gen_length": length, "index": index, **extra}


def test_writer_appends_complete_lines_and_reader_keys(tmp_path):
    with RecordWriter(record_path(tmp_path, 0)) as w:
        w.write(_rec("gsm8k", 16, 0, completion="a"))
        w.write_many([_rec("gsm8k", 16, 2, completion="b"), _rec("sudoku", 32, 0, completion="ü")])
    raw = record_path(tmp_path, 0).read_text(encoding="utf-8")
    assert raw.endswith("\n") and raw.count("\n") == 3
    assert json.loads(raw.splitlines()[2])["completion"] == "ü"
    got = read_records(tmp_path)
    assert sorted(got) == [ItemKey("gsm8k", 16, 0), ItemKey("gsm8k", 16, 2), ItemKey("sudoku", 32, 0)]
    assert got[ItemKey("gsm8k", 16, 2)]["completion"] == "b"


def test_torn_last_line_is_dropped_on_read_and_cut_before_append(tmp_path):
    path = record_path(tmp_path, 1)
    with RecordWriter(path) as w:
        w.write(_rec("math", 16, 1))
    good = path.read_bytes()
    torn = json.dumps(_rec("math", 16, 3, completion="x" * 50))[:37].encode()
    path.write_bytes(good + torn)  # what a kill -9 in the middle of write() leaves
    with pytest.warns(UserWarning, match="incomplete last line"):
        got = read_records(tmp_path)
    assert list(got) == [ItemKey("math", 16, 1)]
    assert repair_torn_tail(path) == len(torn)
    assert path.read_bytes() == good
    assert repair_torn_tail(path) == 0
    # A new writer repairs by itself and then appends whole lines.
    path.write_bytes(good + torn)
    with RecordWriter(path) as w:
        w.write(_rec("math", 16, 3))
    assert [ItemKey.of(r) for r in iter_file_records(path)] == [ItemKey("math", 16, 1), ItemKey("math", 16, 3)]


def test_file_with_only_a_torn_line_becomes_empty(tmp_path):
    path = record_path(tmp_path, 0)
    path.write_bytes(b'{"task": "gsm')
    assert repair_torn_tail(path) == 13
    assert path.read_bytes() == b""


def test_corrupted_middle_line_names_file_and_line(tmp_path):
    path = record_path(tmp_path, 0)
    path.write_text(json.dumps(_rec("gsm8k", 16, 0)) + "\n{not json}\n" + json.dumps(_rec("gsm8k", 16, 1)) + "\n")
    with pytest.raises(ValueError, match=r"records-rank000\.jsonl:2: corrupted"):
        read_records(tmp_path)


def test_records_from_several_world_sizes_are_merged_and_duplicates_warned(tmp_path):
    with RecordWriter(record_path(tmp_path, 0)) as w:
        w.write(_rec("t", 8, 0, v=1))
    with RecordWriter(record_path(tmp_path, 3)) as w:
        w.write(_rec("t", 8, 1))
        w.write(_rec("t", 8, 0, v=2))
    with pytest.warns(UserWarning, match="1 duplicate"):
        got = read_records(tmp_path)
    assert sorted(got) == [ItemKey("t", 8, 0), ItemKey("t", 8, 1)]
    assert got[ItemKey("t", 8, 0)]["v"] == 1  # first file (rank 0) wins


def test_record_without_key_field_is_rejected(tmp_path):
    with RecordWriter(record_path(tmp_path, 0)) as w:
        with pytest.raises(ValueError, match="'index'"):
            w.write({"task": "t", "gen_length": 8})
    assert record_path(tmp_path, 0).read_bytes() == b""


def test_jsonable_handles_inf_tuples_and_dataclasses():
    from dataclasses import dataclass

    import torch

    @dataclass
    class G:
        correct: bool
        value: float

    out = jsonable({"g": G(True, math.inf), "t": (1, 2), "x": torch.tensor(3), "n": float("nan")})
    assert out == {"g": {"correct": True, "value": "inf"}, "t": [1, 2], "x": 3, "n": "nan"}
    json.dumps(out, allow_nan=False)
