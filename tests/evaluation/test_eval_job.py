"""The evaluation job through its Python API with two ranks simulated by threads (a fast stand-in for the
multi-process launch of test_eval_distributed.py): each rank writes only its shard, the main process aggregates
all files after the barrier, and resume works across world sizes."""

from __future__ import annotations

import json
import threading

import pytest
from conftest import comparable_results, load_items

from d1rl.evaluation.config import EvalJobConfig
from d1rl.evaluation.evaluate import evaluate_model
from d1rl.evaluation.sharding import ProcessContext


def _tiny():
    from d1rl.models import load_model_and_tokenizer

    return load_model_and_tokenizer("tiny")


def _job(out, data_dir):
    from d1rl.models.loading import model_preset
    from d1rl.sampling import SamplerConfig
    from d1rl.tasks import TaskConfig

    return EvalJobConfig(model=model_preset("tiny"), sampler=SamplerConfig(block_length=8), tasks=["synthetic", "sudoku"],
                         gen_lengths=[8, 16], limit=3, batch_size=2, output_dir=str(out),
                         task_defaults=TaskConfig(data_dir=str(data_dir)))


def test_simulated_two_ranks_equal_reference(reference_run, data_dir, tmp_path):
    job = _job(tmp_path, data_dir)
    barrier = threading.Barrier(2, timeout=600)
    results: dict[int, object] = {}
    errors: list[BaseException] = []

    def rank(r: int, model_and_tokenizer) -> None:
        try:
            ctx = ProcessContext(rank=r, world_size=2, barrier=barrier.wait)
            results[r] = evaluate_model(job, ctx, model_and_tokenizer=model_and_tokenizer)
        except BaseException as err:  # noqa: BLE001 - re-raised in the test thread
            errors.append(err)
            barrier.abort()

    threads = [threading.Thread(target=rank, args=(r, _tiny())) for r in (0, 1)]  # one model copy per rank
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    assert results[1] is None and results[0]["device"]["num_processes"] == 2
    rank1 = [json.loads(x) for x in (tmp_path / "records-rank001.jsonl").read_text().splitlines()]
    assert sorted(r["index"] for r in rank1) == [1] * 4  # rank 1 owns index 1 of each (task, length)
    assert load_items(tmp_path) == load_items(reference_run)
    assert comparable_results(tmp_path) == comparable_results(reference_run)

    # resume with one process: everything is done, whoever wrote it; nothing is generated again
    def no_generation(*args, **kwargs):
        raise AssertionError("resume regenerated a finished item")

    res = evaluate_model(job, ProcessContext(), model_and_tokenizer=_tiny(), generate_fn=no_generation)
    assert res["device"]["num_processes"] == 1
    assert comparable_results(tmp_path) == comparable_results(reference_run)


def test_unknown_task_and_bad_override_are_named(data_dir, tmp_path):
    job = _job(tmp_path, data_dir)
    job.tasks = ["gsm9k"]
    with pytest.raises(ValueError, match=r"unknown task\(s\) \['gsm9k'\]"):
        evaluate_model(job, ProcessContext())
    job = _job(tmp_path, data_dir)
    job.task_overrides = {"sudoku": {"test_flie": "x.csv"}}
    with pytest.raises(ValueError, match="task_overrides.sudoku.*test_flie"):
        evaluate_model(job, ProcessContext())
