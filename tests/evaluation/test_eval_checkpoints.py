"""``d1rl eval ckpts=<run dir>``: every checkpoint of a run (full HF model, PEFT adapter, d1rl engine checkpoint)
is evaluated; results per step + accuracy-vs-step plot."""

from __future__ import annotations

import json
import shutil

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
