"""SamplerConfig: the d1 presets, steps = null, validation messages, and kwargs accepted by generate()."""

from __future__ import annotations

import inspect

import pytest
import torch
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from d1rl.config import CONFIG_DIR
from d1rl.sampling import SamplerConfig, generate


def _preset(name: str, **overrides) -> SamplerConfig:
    node = OmegaConf.merge(
        OmegaConf.structured(SamplerConfig), OmegaConf.load(CONFIG_DIR / "sampler" / f"{name}.yaml"), overrides
    )
    return OmegaConf.to_object(node)


def test_d1_eval_preset_forces_half_the_generation_length_as_steps():
    cfg = _preset("d1_eval")
    kw = cfg.to_kwargs()
    assert (kw["block_length"], kw["temperature"], kw["remasking"], kw["cfg_scale"]) == (32, 0.0, "low_confidence", 0.0)
    assert cfg.steps is None and kw["steps"] == kw["gen_length"] // 2 == 128
    for gen_length in (128, 256, 512):  # d1: always 16 steps per block, 2 tokens per step
        assert _preset("d1_eval", gen_length=gen_length).to_kwargs()["steps"] == gen_length // 2


def test_d1_rollout_preset():
    kw = _preset("d1_rollout").to_kwargs()
    assert (kw["gen_length"], kw["block_length"], kw["steps"], kw["temperature"]) == (256, 32, 128, 0.9)
    assert kw["noise_dtype"] is torch.float64 and kw["steps_rule"] == "d1"


def test_dataclass_defaults_are_d1_eval_py_defaults():
    kw = SamplerConfig().to_kwargs()
    assert (kw["gen_length"], kw["block_length"], kw["steps"]) == (128, 32, 64)


def test_every_kwarg_is_a_generate_parameter():
    params = inspect.signature(generate).parameters
    assert set(SamplerConfig().to_kwargs()) <= set(params)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"remasking": "lowest"}, "sampler.remasking"),
        ({"steps_rule": "llada"}, "sampler.steps_rule"),
        ({"noise_dtype": "float8"}, "sampler.noise_dtype"),
        ({"gen_length": 100}, "multiple of block_length"),
        ({"steps": 10, "steps_rule": "strict", "gen_length": 128}, "not a multiple of the number of blocks"),
        ({"temperature": -0.1}, "sampler.temperature"),
        ({"steps": 0}, "sampler.steps"),
    ],
)
def test_bad_values_fail_with_the_key_named(overrides, message):
    with pytest.raises(ValueError, match=message):
        _preset("d1_eval", **overrides)


def test_unknown_key_and_wrong_type_are_rejected_by_the_schema():
    with pytest.raises(ConfigKeyError):
        _preset("d1_eval", temprature=0.5)
    with pytest.raises(ValidationError):
        _preset("d1_eval", block_length="thirty-two")
