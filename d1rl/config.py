"""Hydra plumbing shared by every command: where configs and recipes live, and how a command runs.

Conventions (every config group follows them):

* Each config group (``model``, ``task``, ``sampler``, ``trainer``, ``algorithm``, ``logger`` ...) has a
  dataclass schema that lives next to the code it configures and documents every field.
* Each command has a job schema (a dataclass whose fields are the groups) stored in Hydra's ConfigStore, and a
  primary YAML in ``configs/`` whose defaults list starts with that schema. Group presets are plain YAML files in
  ``configs/<group>/``; because they merge into a structured node, an unknown key or a wrong type fails at
  start-up with Hydra's message naming the key and the dataclass.
* Recipes (``recipes/``) are complete primary configs; ``d1rl <cmd> --recipe d1/gsm8k_base`` is shorthand for
  ``--config-name d1/gsm8k_base`` (the recipes folder is always on the search path). Inside a recipe, groups are
  named absolutely (``- override /model: llada_8b_instruct``).
"""

from __future__ import annotations

import sys
from dataclasses import is_dataclass
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO_ROOT / "configs"
RECIPES_DIR = REPO_ROOT / "recipes"

T = TypeVar("T")


def _translate_argv(argv: Sequence[str]) -> list[str]:
    """Expand ``--recipe NAME`` / ``--recipe=NAME`` into Hydra's ``--config-name`` and add the recipes dir."""
    out: list[str] = []
    it = iter(argv)
    for word in it:
        if word == "--recipe":
            name = next(it, None)
            if name is None:
                raise SystemExit("d1rl: --recipe needs a name, e.g. --recipe d1/gsm8k_base")
            out += ["--config-name", name.removesuffix(".yaml")]
        elif word.startswith("--recipe="):
            out += ["--config-name", word.split("=", 1)[1].removesuffix(".yaml")]
        else:
            out.append(word)
    if not any(w == "--config-dir" or w.startswith("--config-dir=") or w == "-cd" for w in out):
        out += ["--config-dir", str(RECIPES_DIR)]
    return out


def register_schema(name: str, node: Any, group: str | None = None) -> None:
    """Store a dataclass schema in Hydra's ConfigStore (idempotent)."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name=name, node=node, group=group)


def run_hydra(
    argv: Sequence[str],
    *,
    prog: str,
    config_name: str,
    task_fn: Callable[[Any], Any],
) -> int:
    """Run ``task_fn(cfg)`` under Hydra with ``configs/<config_name>.yaml`` as the default primary config.

    ``prog`` is shown in Hydra's help and error messages (e.g. ``"d1rl train"``). The caller registers its
    schemas first. Returns 0 on success; Hydra prints and exits on config errors.
    """
    import hydra

    saved = sys.argv
    sys.argv = [prog, *_translate_argv(argv)]
    result: dict[str, Any] = {}

    def _wrapped(cfg: Any) -> None:
        result["value"] = task_fn(cfg)

    try:
        hydra.main(config_path=str(CONFIG_DIR), config_name=config_name, version_base="1.3")(_wrapped)()
    finally:
        sys.argv = saved
    value = result.get("value")
    return int(value) if isinstance(value, int) else 0


def to_object(cfg: Any, schema: type[T] | None = None) -> T:
    """Turn a (structured) DictConfig into its dataclass instance, resolving interpolations."""
    from omegaconf import OmegaConf

    obj = OmegaConf.to_object(cfg)
    if schema is not None and not (is_dataclass(obj) and isinstance(obj, schema)):
        raise TypeError(f"config is a {type(obj).__name__}, expected {schema.__name__}")
    return obj  # type: ignore[return-value]
