"""``d1rl merge``: fold a LoRA adapter into its base model and write a normal, full checkpoint.

d1 leaves this to the user (ISSUE #13), yet its SFT-initialised RL runs need the MERGED SFT model (ISSUE #8). The
output is an ordinary Hugging Face folder (safetensors + config + tokenizer) that any ``model.name_or_path`` accepts.
Written to a temporary folder and renamed, so a crash never leaves a half-written model under the output name.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Sequence

DTYPES = ("auto", "float32", "bfloat16", "float16", "float64")


def merge_adapter(
    base: str, adapter: str, output: str | Path, *, dtype: str = "auto", device: str = "cpu", overwrite: bool = False
) -> Path:
    """Load ``base`` (a path, hub id, or "tiny") in ``dtype``, apply the PEFT adapter at ``adapter``, merge the LoRA
    weights into the base weights, and save the full model + tokenizer to ``output``. Returns ``output``."""
    from peft import PeftModel

    from d1rl.models import ModelConfig, load_model_and_tokenizer, load_tokenizer
    from d1rl.training.checkpoint import TMP_PREFIX, publish

    adapter_dir = Path(adapter)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise FileNotFoundError(f"--adapter {adapter}: not a PEFT adapter folder (no adapter_config.json)")
    output = Path(output)
    if output.exists() and not overwrite:
        raise FileExistsError(f"--output {output} already exists (pass --overwrite to replace it)")
    if dtype not in DTYPES:
        raise ValueError(f"--dtype {dtype!r} is not one of {list(DTYPES)}")
    model, tokenizer = load_model_and_tokenizer(ModelConfig(name_or_path=base, dtype=dtype, device=device))
    merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    if (adapter_dir / "tokenizer_config.json").is_file():  # the trainer saves the tokenizer beside the adapter
        tokenizer = load_tokenizer(str(adapter_dir))
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f"{TMP_PREFIX}{output.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_pretrained(str(tmp), safe_serialization=True)
    tokenizer.save_pretrained(str(tmp))
    publish(tmp, output)
    return output


def merge_cli(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="d1rl merge", description="Fold a LoRA adapter into its base model (full safetensors checkpoint)."
    )
    parser.add_argument("--base", required=True, help="base model: local folder, hub id, or 'tiny'")
    parser.add_argument("--adapter", required=True, help="PEFT adapter folder (e.g. <sft output_dir>/final)")
    parser.add_argument("--output", required=True, help="folder to write the merged model to")
    parser.add_argument("--dtype", default="auto", choices=DTYPES, help="dtype of the merged weights (auto = base's)")
    parser.add_argument("--device", default="cpu", help="where to merge (cpu, cuda, ...)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output folder")
    args = parser.parse_args(list(argv))
    try:
        out = merge_adapter(
            args.base, args.adapter, args.output, dtype=args.dtype, device=args.device, overwrite=args.overwrite
        )
    except (FileNotFoundError, FileExistsError, ValueError) as err:
        parser.exit(2, f"d1rl merge: error: {err}\n")
    print(f"merged model written to {out}")
    return 0
