"""``d1rl sft`` (Hydra; primary config configs/sft.yaml) and ``d1rl merge`` (argparse).

Under ``accelerate launch`` every rank runs Hydra; ranks other than 0 do not write Hydra's ``.hydra/`` folder or
log file, so the one run folder (``output_dir``, deterministic) is written by rank 0 only. Also runnable as
``python -m d1rl.training.commands sft ...`` (what the distributed tests and the Slurm launcher use).
"""

from __future__ import annotations

import os
import sys
from typing import Sequence


def _rank() -> int:
    for var in ("RANK", "LOCAL_RANK"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


def sft_main(argv: Sequence[str]) -> int:
    """Masked-diffusion SFT. Example: ``d1rl sft --recipe d1/sft_s1k`` or ``d1rl sft trainer.max_steps=50``."""
    from d1rl.config import register_schema, run_hydra, to_object
    from d1rl.training.sft.config import SFTJobConfig

    register_schema("sft_schema", SFTJobConfig)

    def task_fn(cfg) -> int:
        from d1rl.training.sft.trainer import run_sft

        job = to_object(cfg, SFTJobConfig)
        run_sft(job)
        return 0

    args = list(argv)
    if _rank() > 0 and not any(a.startswith(("--cfg", "-c", "--help", "-h", "--info")) for a in args):
        args += ["hydra.output_subdir=null", "hydra/job_logging=stdout"]
    return run_hydra(args, prog="d1rl sft", config_name="sft", task_fn=task_fn)


def merge_main(argv: Sequence[str]) -> int:
    """Fold a LoRA adapter into its base model and write a full checkpoint (see :mod:`d1rl.training.merge`)."""
    from d1rl.training.merge import merge_cli

    return merge_cli(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m d1rl.training.commands {sft,merge} ...``."""
    args = list(sys.argv[1:] if argv is None else argv)
    commands = {"sft": sft_main, "merge": merge_main}
    if not args or args[0] not in commands:
        print(f"usage: python -m d1rl.training.commands {{{','.join(commands)}}} [args...]", file=sys.stderr)
        return 2
    return int(commands[args[0]](args[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
