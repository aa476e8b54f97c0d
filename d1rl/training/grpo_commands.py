"""``d1rl train``: diffu-GRPO under Hydra (primary config ``configs/train.yaml``; d1 recipes ``recipes/d1/*``).

Examples::

    d1rl train                                     # the embedded default: tiny model, synthetic task, CPU
    d1rl train --recipe d1/gsm8k_base --cfg job    # print d1's GSM8K recipe
    accelerate launch --num_processes 8 -m d1rl.training.grpo_commands --recipe d1/gsm8k_base

Under ``accelerate launch`` every rank runs Hydra; ranks other than 0 do not write Hydra's ``.hydra/`` folder or
log file, so the one run folder (``output_dir``, deterministic) is written by rank 0 only.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Sequence

_HYDRA_INFO_FLAGS = ("--cfg", "-c", "--help", "-h", "--info", "--resolve")

#: Value of a setting a recipe cannot know (e.g. the SFT recipes' model.name_or_path). A plain "???" would not
#: work there: merging OmegaConf's "???" over the base recipe's value keeps the old value.
PLACEHOLDER_PREFIX = "MISSING-"
_HINTS = {
    "model.name_or_path": "the merged SFT checkpoint directory this recipe starts from (d1rl sft --recipe "
    "d1/sft_s1k, then d1rl merge), e.g. model.name_or_path=runs/d1/sft_s1k/merged",
}


def _rank() -> int:
    for var in ("RANK", "LOCAL_RANK"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


def check_required(cfg: Any) -> None:
    """Stop with one clear line per setting that must be given: OmegaConf ``???`` values and ``MISSING-...``
    placeholders (the SFT-initialised d1 recipes leave ``model.name_or_path`` as one: d1 starts those runs from a
    MERGED SFT model, d1-reference §2.1, which the user has to produce first)."""
    from omegaconf import OmegaConf

    keys = set(OmegaConf.missing_keys(cfg))
    flat = _flatten(OmegaConf.to_container(cfg, resolve=False, throw_on_missing=False))
    keys |= {k for k, v in flat.items() if isinstance(v, str) and v.startswith(PLACEHOLDER_PREFIX)}
    if not keys:
        return
    lines = [f"  {key}=...  ({_HINTS.get(key, 'required by this recipe')})" for key in sorted(keys)]
    raise SystemExit("d1rl train: these settings must be given on the command line:\n" + "\n".join(lines))


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: node}


def train_main(argv: Sequence[str]) -> int:
    """diffu-GRPO. Example: ``d1rl train --recipe d1/gsm8k_base`` or ``d1rl train trainer.max_steps=20``."""
    from d1rl.config import register_schema, run_hydra, to_object
    from d1rl.training.grpo_config import TrainJobConfig

    register_schema("train_schema", TrainJobConfig)

    def task_fn(cfg: Any) -> int:
        from d1rl.training.grpo import run_grpo

        check_required(cfg)
        run_grpo(to_object(cfg, TrainJobConfig))
        return 0

    args = list(argv)
    if _rank() > 0 and not any(a.startswith(_HYDRA_INFO_FLAGS) for a in args):
        args += ["hydra.output_subdir=null", "hydra/job_logging=stdout"]
    return run_hydra(args, prog="d1rl train", config_name="train", task_fn=task_fn)


if __name__ == "__main__":
    sys.exit(train_main(sys.argv[1:]))
