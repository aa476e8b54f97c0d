"""The ``d1rl`` command: a thin dispatcher to the sub-commands.

Each sub-command lives beside the code it drives (``d1rl/<area>/commands.py``) and is listed in
``COMMANDS`` as ``"module:function"``. The function receives the remaining command-line words. Hydra-based
commands call :func:`d1rl.config.run_hydra`, so every Hydra feature (overrides, ``--cfg job``,
``--config-name``, multirun) works as documented by Hydra.

The dispatcher imports a command's module only when that command runs, so ``d1rl --help`` stays fast.
"""

from __future__ import annotations

import importlib
import sys
from typing import Callable, Sequence

# name -> ("module:function", one-line help)
COMMANDS: dict[str, tuple[str, str]] = {}


def _register(name: str, target: str, help_text: str) -> None:
    COMMANDS[name] = (target, help_text)


_register("quickstart", "d1rl.quickstart:quickstart_main", "the embedded default: tiny model, SFT, diffu-GRPO, eval (CPU)")
_register("sft", "d1rl.training.commands:sft_main", "masked-diffusion SFT (Hydra)")
_register("train", "d1rl.training.grpo_commands:train_main", "diffu-GRPO reinforcement learning (Hydra)")
_register("eval", "d1rl.evaluation.commands:eval_main", "evaluate a model on tasks (Hydra); `d1rl eval rescore ...` re-grades files")
_register("generate", "d1rl.sampling.commands:generate_main", "prompts -> completions with the diffusion sampler (Hydra)")
_register("merge", "d1rl.training.commands:merge_main", "fold a LoRA adapter into a full checkpoint")
_register("build-tiny", "d1rl.models.commands:build_tiny_main", "build the embedded tiny LLaDA model + tokenizer")

# Sub-commands spelled as two words: `d1rl eval rescore ...`.
SUBCOMMANDS: dict[tuple[str, str], str] = {
    ("eval", "rescore"): "d1rl.tasks.commands:rescore_main",
}


def _usage() -> str:
    lines = ["usage: d1rl <command> [args...]", "", "commands:"]
    width = max((len(n) for n in COMMANDS), default=0)
    for name, (_, help_text) in sorted(COMMANDS.items()):
        lines.append(f"  {name.ljust(width)}  {help_text}")
    lines += ["", "Hydra commands take overrides (key=value), --cfg job, --config-name NAME; see README.md."]
    return "\n".join(lines)


def _resolve(target: str) -> Callable[[Sequence[str]], int | None]:
    module_name, func_name = target.split(":")
    return getattr(importlib.import_module(module_name), func_name)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``d1rl`` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help", "help"}:
        print(_usage())
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"d1rl: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    target = COMMANDS[name][0]
    if rest and (name, rest[0]) in SUBCOMMANDS:
        target, rest = SUBCOMMANDS[(name, rest[0])], rest[1:]
    result = _resolve(target)(rest)
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
