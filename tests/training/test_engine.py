"""The engine on a small torch module: schedules, accumulation, clipping, checkpoints and exact resume."""

from __future__ import annotations

import json
import math

import pytest
import torch

from d1rl.training import Engine, LoggerConfig, TrainerConfig
from d1rl.training import checkpoint as ckpt
from d1rl.training.metrics import read_metrics
from d1rl.training.optim import lr_multiplier


def _cfg(**kw) -> TrainerConfig:
    base = dict(mixed_precision="no", learning_rate=1e-2, gradient_accumulation_steps=1, save_steps=0, eval_steps=0)
    base.update(kw)
    return TrainerConfig(**base)


def _log_cfg() -> LoggerConfig:
    return LoggerConfig(logging_steps=1, progress_bar=False)


def _model(dropout: float = 0.0) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Dropout(dropout), torch.nn.Tanh(), torch.nn.Linear(16, 1))


DATA_X = torch.randn(64, 4, generator=torch.Generator().manual_seed(1))
DATA_Y = torch.randn(64, 1, generator=torch.Generator().manual_seed(2))


def _train(engine: Engine, model, micro: int, ga: int, start_row: int = 0) -> list[float]:
    """Each optimizer step consumes micro*ga rows in order; returns the logged losses."""
    losses = []
    row = start_row
    while not engine.done:
        step_losses = []
        for _ in range(ga):
            x, y = DATA_X[row : row + micro], DATA_Y[row : row + micro]
            row = (row + micro) % 64
            with engine.accumulate():
                loss = ((model(x) - y) ** 2).mean()
                engine.backward(loss)
            step_losses.append(loss.item())
            engine.optimizer_step()
        losses.append(sum(step_losses) / ga)
        engine.log({"loss": losses[-1], "lr": engine.learning_rate})
        engine.maybe_save(lambda r=row: {"row": r})
    return losses


def test_lr_schedules_match_hand_values():
    lin = lr_multiplier("linear", total_steps=10, warmup=0)
    assert [lin(s) for s in (0, 1, 9)] == [1.0, 0.9, pytest.approx(0.1)]
    lin_w = lr_multiplier("linear", total_steps=10, warmup=2)
    assert [lin_w(s) for s in (0, 1, 2, 6)] == [0.0, 0.5, 1.0, 0.5]
    cos = lr_multiplier("cosine", total_steps=12, warmup=2, min_ratio=0.1)
    assert cos(2) == 1.0 and cos(7) == pytest.approx(0.1 + 0.9 * 0.5) and cos(12) == pytest.approx(0.1)
    cw = lr_multiplier("constant_with_warmup", total_steps=100, warmup=4)
    assert [cw(s) for s in (0, 2, 4, 99)] == [0.0, 0.5, 1.0, 1.0]


def test_engine_logs_the_rate_each_update_used(tmp_path):
    engine = Engine(_cfg(max_steps=4, lr_scheduler="linear"), _log_cfg(), tmp_path)
    model = engine.prepare(_model(), total_steps=4)
    _train(engine, model, micro=8, ga=1)
    engine.end()
    lrs = [r["lr"] for r in read_metrics(tmp_path / "metrics.jsonl")]
    assert lrs == pytest.approx([1e-2, 7.5e-3, 5e-3, 2.5e-3])


def test_gradient_accumulation_equals_one_big_batch(tmp_path):
    """4 micro-batches of 4 rows (mean losses) == one batch of 16 rows: same parameters after 3 steps."""
    results = []
    for micro, ga in ((16, 1), (4, 4)):
        engine = Engine(_cfg(gradient_accumulation_steps=ga, max_steps=3), _log_cfg(), tmp_path / f"ga{ga}")
        model = engine.prepare(_model(), total_steps=3)
        _train(engine, model, micro=micro, ga=ga)
        engine.end()
        results.append(torch.cat([p.detach().flatten() for p in engine.unwrap().parameters()]))
    assert torch.allclose(results[0], results[1], atol=1e-6, rtol=0)


def test_clipping_returns_preclip_norm_and_clips(tmp_path):
    engine = Engine(_cfg(max_grad_norm=0.01, max_steps=1, weight_decay=0.0), _log_cfg(), tmp_path)
    model = engine.prepare(_model(), total_steps=1)
    ref = _model()
    loss = ((ref(DATA_X[:8]) - DATA_Y[:8]) ** 2).mean()
    loss.backward()
    expected = math.sqrt(sum(float(p.grad.pow(2).sum()) for p in ref.parameters()))
    assert expected > 0.01  # so clipping is active
    with engine.accumulate():
        engine.backward(((model(DATA_X[:8]) - DATA_Y[:8]) ** 2).mean())
    norm = engine.optimizer_step()
    assert norm == pytest.approx(expected, rel=1e-5)
    # the update AdamW made must be the one from the clipped gradient
    opt = torch.optim.AdamW(ref.parameters(), lr=1e-2, weight_decay=0.0)
    torch.nn.utils.clip_grad_norm_(ref.parameters(), 0.01)
    opt.step()
    for p, q in zip(engine.unwrap().parameters(), ref.parameters()):
        assert torch.allclose(p, q, atol=1e-7)
    # no grads left behind
    assert all(p.grad is None for p in engine.unwrap().parameters())


def test_optimizer_step_is_noop_between_accumulation_boundaries(tmp_path):
    engine = Engine(_cfg(gradient_accumulation_steps=3, max_steps=2), _log_cfg(), tmp_path)
    model = engine.prepare(_model(), total_steps=2)
    norms = []
    for _ in range(6):
        with engine.accumulate():
            engine.backward(model(DATA_X[:2]).pow(2).mean())
        norms.append(engine.optimizer_step())
    assert [n is not None for n in norms] == [False, False, True, False, False, True]
    assert engine.global_step == 2 and engine.done


def test_checkpoint_resume_is_exact_with_dropout(tmp_path):
    """Stop after step 4 of 8 (checkpoint), rebuild everything, resume: losses and weights equal the
    uninterrupted run's exactly (dropout makes the torch RNG part of the state)."""
    full = Engine(_cfg(max_steps=8, save_steps=4, gradient_accumulation_steps=2), _log_cfg(), tmp_path / "full")
    model = full.prepare(_model(0.3), total_steps=8)
    assert full.resume() is None
    full_losses = _train(full, model, micro=8, ga=2)
    full.end()
    full_params = torch.cat([p.detach().flatten() for p in full.unwrap().parameters()])

    first = Engine(_cfg(max_steps=8, save_steps=4, gradient_accumulation_steps=2), _log_cfg(), tmp_path / "split")
    model = first.prepare(_model(0.3), total_steps=8)
    first.resume()
    first.total_steps = 4  # "crash" right after the checkpoint of step 4 ...
    _train(first, model, micro=8, ga=2)
    first.log({"loss": 123.0}, step=5)  # ... after a record the crashed run wrote past its checkpoint
    first.end()

    torch.manual_seed(999)  # the resumed process starts from a different RNG state
    second = Engine(_cfg(max_steps=8, save_steps=4, gradient_accumulation_steps=2), _log_cfg(), tmp_path / "split")
    model = second.prepare(_model(0.3), total_steps=8)
    extra = second.resume()
    assert second.global_step == 4 and extra == {"row": 0}
    rest = _train(second, model, micro=8, ga=2, start_row=extra["row"])
    second.end()
    assert rest == full_losses[4:]  # exact float equality
    params = torch.cat([p.detach().flatten() for p in second.unwrap().parameters()])
    assert torch.equal(params, full_params)
    records = read_metrics(tmp_path / "split" / "metrics.jsonl")
    assert [r["step"] for r in records] == list(range(1, 9))
    assert [r["loss"] for r in records] == full_losses
    discarded = (tmp_path / "split" / "metrics.discarded.jsonl").read_text()
    assert json.loads(discarded.splitlines()[0])["loss"] == 123.0


def test_checkpoints_are_rotated_and_partial_ones_ignored(tmp_path):
    engine = Engine(_cfg(max_steps=6, save_steps=1, save_total_limit=2), _log_cfg(), tmp_path)
    model = engine.prepare(_model(), total_steps=6)
    _train(engine, model, micro=8, ga=1)
    engine.end()
    root = tmp_path / "checkpoints"
    assert [s for s, _ in ckpt.list_checkpoints(root)] == [5, 6]
    # a save killed half-way: a staging folder, and a folder without engine_state.json
    (ckpt.tmp_dir_for(root, 7)).mkdir()
    (root / ckpt.checkpoint_name(8)).mkdir()
    assert ckpt.latest_checkpoint(root).name == "checkpoint-000006"
    engine2 = Engine(_cfg(max_steps=6, save_steps=1, save_total_limit=2), _log_cfg(), tmp_path)
    engine2.prepare(_model(), total_steps=6)
    engine2.resume()
    assert engine2.global_step == 6 and engine2.done
    assert not ckpt.tmp_dir_for(root, 7).exists()
    files = sorted(p.name for p in (root / "checkpoint-000006").iterdir())
    assert files == [
        "engine_state.json", "model.safetensors", "optimizer.pt", "rng_state_rank0.pt", "scheduler.pt",
        "trainer_state_rank0.pt",
    ]


def test_resume_never_refuses_to_overwrite_and_bad_path_is_named(tmp_path):
    engine = Engine(_cfg(max_steps=1, save_steps=1), _log_cfg(), tmp_path)
    model = engine.prepare(_model(), total_steps=1)
    _train(engine, model, micro=8, ga=1)
    engine.end()
    e2 = Engine(_cfg(max_steps=1, resume="never"), _log_cfg(), tmp_path)
    e2.prepare(_model(), total_steps=1)
    with pytest.raises(FileExistsError, match="trainer.resume=never"):
        e2.resume()
    e3 = Engine(_cfg(max_steps=1, resume=str(tmp_path / "nope")), _log_cfg(), tmp_path / "other")
    e3.prepare(_model(), total_steps=1)
    with pytest.raises(FileNotFoundError, match="nope"):
        e3.resume()


@pytest.mark.parametrize(
    "kw, key",
    [
        ({"lr_scheduler": "cosine_restarts"}, "trainer.lr_scheduler"),
        ({"mixed_precision": "fp8"}, "trainer.mixed_precision"),
        ({"gradient_accumulation_steps": 0}, "trainer.gradient_accumulation_steps"),
        ({"adam_beta2": 1.5}, "trainer.adam_beta2"),
    ],
)
def test_bad_trainer_values_are_named(tmp_path, kw, key):
    with pytest.raises(ValueError, match=key):
        Engine(_cfg(**kw), _log_cfg(), tmp_path)


def test_frozen_parameters_are_not_optimised_nor_checkpointed(tmp_path):
    model = _model()
    model[0].weight.requires_grad_(False)
    frozen = model[0].weight.detach().clone()
    engine = Engine(_cfg(max_steps=2, save_steps=2), _log_cfg(), tmp_path)
    wrapped = engine.prepare(model, total_steps=2)
    _train(engine, wrapped, micro=8, ga=1)
    engine.end()
    assert torch.equal(engine.unwrap()[0].weight, frozen)
    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / "checkpoints" / "checkpoint-000002" / "model.safetensors"))
    assert sorted(saved) == ["0.bias", "3.bias", "3.weight"]


def test_tensorboard_tracker_receives_the_logged_metrics(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    engine = Engine(_cfg(max_steps=2), LoggerConfig(report_to=["tensorboard"], project="proj", progress_bar=False,
                                                     logging_steps=1), tmp_path, run_config={"a": {"b": [1, 2]}})
    model = engine.prepare(_model(), total_steps=2)
    losses = _train(engine, model, micro=8, ga=1)
    engine.end()
    runs = [p.parent for p in (tmp_path / "proj").rglob("events.out.tfevents.*")]
    assert runs
    scalars = []
    for run in set(runs):
        acc = EventAccumulator(str(run))
        acc.Reload()
        if "loss" in acc.Tags()["scalars"]:
            scalars = [(e.step, e.value) for e in acc.Scalars("loss")]
    assert [s for s, _ in scalars] == [1, 2]
    assert [v for _, v in scalars] == pytest.approx(losses, rel=1e-6)


def test_bf16_mixed_precision_autocasts_the_forward(tmp_path):
    engine = Engine(_cfg(max_steps=1, mixed_precision="bf16"), _log_cfg(), tmp_path)
    model = engine.prepare(_model(), total_steps=1)
    with engine.accumulate():
        out = model(DATA_X[:8])
        # computed under bf16 autocast (Accelerate hands the output back as fp32): values are bf16-representable
        # and differ from the fp32 forward
        assert torch.equal(out, out.bfloat16().float())
        assert not torch.allclose(out, _model()(DATA_X[:8]), atol=1e-5)
        engine.backward(((out - DATA_Y[:8]) ** 2).mean())
    assert engine.optimizer_step() > 0
    assert all(p.dtype == torch.float32 for p in engine.unwrap().parameters())  # master weights stay fp32
