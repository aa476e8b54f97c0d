"""Every recipe under recipes/ composes with the command it extends (`d1rl <cmd> --recipe NAME --cfg job`)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from d1rl import cli
from d1rl.config import RECIPES_DIR

PRIMARY_TO_COMMAND = {
    f"/{prefix}{suffix}": command
    for command, prefix in {"train": "train", "sft": "sft", "eval": "eval", "generate": "generate"}.items()
    for suffix in ("", "_schema")
}


def _command_of(recipe: Path) -> str | None:
    """Follow the first entry of the defaults lists until a primary config (/train, /sft, ...) is reached."""
    seen = set()
    while recipe not in seen:
        seen.add(recipe)
        defaults = (yaml.safe_load(recipe.read_text()) or {}).get("defaults", [])
        for entry in defaults:
            if isinstance(entry, str) and entry.startswith("/"):
                if entry in PRIMARY_TO_COMMAND:
                    return PRIMARY_TO_COMMAND[entry]
                recipe = RECIPES_DIR / f"{entry[1:]}.yaml"
                if not recipe.exists():
                    return None
                break
        else:
            return None
    return None


RECIPES = sorted(p for p in RECIPES_DIR.rglob("*.yaml"))
RUNNABLE = [p for p in RECIPES if _command_of(p)]


def test_recipes_exist_for_every_d1_setting():
    names = {str(p.relative_to(RECIPES_DIR).with_suffix("")) for p in RUNNABLE}
    expected = {f"d1/{t}_{init}" for t in ("gsm8k", "math", "countdown", "sudoku") for init in ("base", "sft")}
    expected |= {"d1/sft_s1k", "d1/eval"}
    assert expected <= names, sorted(expected - names)


@pytest.mark.parametrize("recipe", RUNNABLE, ids=lambda p: str(p.relative_to(RECIPES_DIR)))
def test_recipe_composes(recipe: Path, capsys):
    name = str(recipe.relative_to(RECIPES_DIR).with_suffix(""))
    assert cli.main([_command_of(recipe), "--recipe", name, "--cfg", "job"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert isinstance(printed, dict) and "model" in printed and printed["output_dir"]
