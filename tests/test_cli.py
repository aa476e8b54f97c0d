"""The dispatcher and the Hydra plumbing every command relies on."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

import pytest

from d1rl import cli
from d1rl.config import RECIPES_DIR, _translate_argv


def test_help_lists_every_command(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("quickstart", "sft", "train", "eval", "generate", "merge", "build-tiny"):
        assert f"  {name}" in out


def test_unknown_command_is_an_error(capsys):
    assert cli.main(["trian"]) == 2
    assert "unknown command 'trian'" in capsys.readouterr().err


def test_every_registered_target_resolves():
    targets = [t for t, _ in cli.COMMANDS.values()] + list(cli.SUBCOMMANDS.values())
    missing = []
    for target in targets:
        module, func = target.split(":")
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:  # pragma: no cover - reported below
            missing.append(f"{target}: {exc}")
            continue
        if not callable(getattr(mod, func, None)):
            missing.append(f"{target}: no callable {func}")
    assert not missing, missing


def test_recipe_flag_becomes_config_name_and_recipes_dir_is_searched():
    assert _translate_argv(["--recipe", "d1/gsm8k_base.yaml", "a=1"]) == [
        "--config-name", "d1/gsm8k_base", "a=1", "--config-dir", str(RECIPES_DIR)]
    assert _translate_argv(["--recipe=x", "--config-dir", "/tmp"]) == ["--config-name", "x", "--config-dir", "/tmp"]
    with pytest.raises(SystemExit, match="--recipe needs a name"):
        _translate_argv(["--recipe"])


def test_subcommand_dispatch(monkeypatch):
    seen: dict = {}

    def fake_resolve(target):
        return lambda argv: seen.update(target=target, argv=argv) or 0

    monkeypatch.setattr(cli, "_resolve", fake_resolve)
    assert cli.main(["eval", "rescore", "--task", "gsm8k"]) == 0
    assert seen == {"target": "d1rl.tasks.commands:rescore_main", "argv": ["--task", "gsm8k"]}
    assert cli.main(["eval", "tasks=[gsm8k]"]) == 0
    assert seen == {"target": "d1rl.evaluation.commands:eval_main", "argv": ["tasks=[gsm8k]"]}


@dataclass
class _Inner:
    value: int = 1


@dataclass
class _Job:
    inner: _Inner = field(default_factory=_Inner)
    name: str = "x"


def _write_configs(root):
    (root / "configs" / "inner").mkdir(parents=True)
    (root / "recipes" / "r").mkdir(parents=True)
    (root / "configs" / "job.yaml").write_text(
        "defaults:\n  - _test_job_schema\n  - inner: one\n  - _self_\nname: base\n"
        f"hydra:\n  run:\n    dir: {root / 'out'}\n")
    (root / "configs" / "inner" / "one.yaml").write_text("value: 1\n")
    (root / "configs" / "inner" / "two.yaml").write_text("value: 2\n")
    (root / "recipes" / "r" / "rec.yaml").write_text(
        "# @package _global_\ndefaults:\n  - /job\n  - override /inner: two\n  - _self_\nname: recipe\n")


def test_run_hydra_composes_recipes_and_rejects_unknown_keys(tmp_path, monkeypatch, capsys):
    from d1rl import config

    _write_configs(tmp_path)
    monkeypatch.setattr(config, "CONFIG_DIR", tmp_path / "configs")
    monkeypatch.setattr(config, "RECIPES_DIR", tmp_path / "recipes")
    config.register_schema("_test_job_schema", _Job)
    seen: list[_Job] = []

    def task(cfg):
        seen.append(config.to_object(cfg, _Job))
        return 0

    assert config.run_hydra([], prog="t", config_name="job", task_fn=task) == 0
    assert config.run_hydra(["--recipe", "r/rec", "inner.value=5"], prog="t", config_name="job", task_fn=task) == 0
    assert [(j.name, j.inner.value) for j in seen] == [("base", 1), ("recipe", 5)]
    with pytest.raises(SystemExit):
        config.run_hydra(["inner.valeu=3"], prog="t", config_name="job", task_fn=task)
    assert "Key 'valeu' not in '_Inner'" in capsys.readouterr().err
