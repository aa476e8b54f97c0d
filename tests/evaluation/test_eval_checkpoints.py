"""``d1rl eval ckpts=<run dir>``: every checkpoint of a run (full HF model, PEFT adapter, d1rl engine checkpoint)
is evaluated; results per step + accuracy-vs-step plot."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from conftest import load_items

from d1rl.evaluation.commands import eval_main


def _lora_model(seed: int):
    from d1rl.models import load_model_and_tokenizer
    from d1rl.models.lora import LoraSettings, apply_lora

    model, _ = load_model_and_tokenizer("tiny")
    model = apply_lora(model, LoraSettings(enabled=True, r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj", "up_proj"]))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:  # LoRA B starts at zero (a no-op adapter): make it change the model
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return model


def test_accuracy_vs_step_over_all_checkpoint_kinds(reference_run, eval_args, tmp_path):
    from d1rl.models.tiny import tiny_path
    from d1rl.training.engine import _trainable_state_dict  # the engine's own writer: same layout as training
    from safetensors.torch import save_file

    ckpts = tmp_path / "run" / "checkpoints"
    shutil.copytree(tiny_path(), ckpts / "checkpoint-000010")  # full model = the base tiny model
    lora = _lora_model(0)
    lora.save_pretrained(str(ckpts / "checkpoint-000020"))  # PEFT adapter
    eng = ckpts / "checkpoint-000030"  # the same adapter weights as an engine checkpoint
    eng.mkdir()
    save_file(_trainable_state_dict(lora), str(eng / "model.safetensors"))
    run_model = {"name_or_path": "tiny", "lora": {"enabled": True, "r": 4, "alpha": 8, "dropout": 0.0,
                                                  "target_modules": ["q_proj", "v_proj", "up_proj"]}}
    (eng / "engine_state.json").write_text(json.dumps({"format": 1, "global_step": 30, "run_config": {"model": run_model}}))
    (ckpts / ".tmp-checkpoint-000040").mkdir()  # a save in progress: ignored

    out = tmp_path / "curve"
    assert eval_main(eval_args(out, f"ckpts={tmp_path / 'run'}", "tasks=[synthetic]", "gen_lengths=[16]")) == 0

    curve = json.loads((out / "results_by_step.json").read_text())
    assert [p["step"] for p in curve["points"]] == [10, 20, 30]
    assert (out / "accuracy_vs_step.png").read_bytes()[:4] == b"\x89PNG"
    per_step = {s: load_items(out / f"checkpoint-0000{s}") for s in (10, 20, 30)}
    # the full-model checkpoint is the base model: same completions as the reference evaluation
    ref = {k: v for k, v in load_items(reference_run).items() if k[:2] == ("synthetic", 16)}
    assert per_step[10] == ref
    # adapter and engine layouts of the same weights give the same completions, and the adapter does something
    assert per_step[20] == per_step[30]
    assert any(per_step[20][k]["completion_ids"] != ref[k]["completion_ids"] for k in ref)
    res30 = json.loads((out / "checkpoint-000030" / "results.json").read_text())
    assert res30["step"] == 30 and res30["checkpoint_kind"] == "engine"
    assert res30["model"]["lora"]["r"] == 4


@pytest.mark.slow
def test_real_sft_run_engine_checkpoint_equals_its_final_adapter(eval_args, tmp_path):
    """A real ``d1rl sft`` LoRA run: its last engine checkpoint, evaluated through ckpts=, gives the same
    completions as the adapter the run writes at the end (loaded with model.lora.adapter_path)."""
    from d1rl.training.commands import sft_main

    run = tmp_path / "sft"
    assert sft_main([f"output_dir={run}", "trainer.max_steps=4", "trainer.save_steps=2", "trainer.eval_steps=0",
                     "model.lora.enabled=true", "model.lora.r=8", "hydra.job_logging.root.level=WARNING"]) == 0
    common = ["tasks=[synthetic]", "gen_lengths=[16]", "limit=4"]
    assert eval_main(eval_args(tmp_path / "curve", f"ckpts={run}", *common)) == 0
    assert eval_main(eval_args(tmp_path / "final", f"model.lora.adapter_path={run / 'final'}", *common)) == 0
    curve = json.loads((tmp_path / "curve" / "results_by_step.json").read_text())
    assert [p["step"] for p in curve["points"]] == [2, 4]
    last = load_items(tmp_path / "curve" / "checkpoint-000004")
    assert last == load_items(tmp_path / "final")
    assert last != load_items(tmp_path / "curve" / "checkpoint-000002")
