"""Small diffu-GRPO jobs on the embedded tiny model (CPU, seconds), shared by the tests of this folder."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent

DIGIT_REWARD = "grpo_test_rewards:digit_reward"
LENGTH_REWARD = "grpo_test_rewards:length_reward"


def tiny_job(output_dir, *, algorithm=None, trainer=None, sampler=None, model=None, task=None, validation=None):
    """A TrainJobConfig for the tiny model on (a 200-row) synthetic task; keyword dicts override fields."""
    from d1rl.models import LoraSettings, ModelConfig
    from d1rl.sampling.config import SamplerConfig
    from d1rl.tasks.config import SyntheticConfig, TaskConfig
    from d1rl.training.config import LoggerConfig, TrainerConfig
    from d1rl.training.grpo_config import GRPOConfig, TrainJobConfig, ValidationConfig

    model = dict(model or {})
    lora = model.pop("lora", None)
    model_cfg = ModelConfig(**{"name_or_path": "tiny", "device": "cpu", **model})
    if lora is not None:
        model_cfg = replace(model_cfg, lora=LoraSettings(**lora))
    task_kw = {"name": "synthetic", "source": "synthetic", "extra_rewards": [DIGIT_REWARD], **(task or {})}
    task_kw["synthetic"] = SyntheticConfig(num_train=200, num_test=10)
    return TrainJobConfig(
        model=model_cfg,
        task=TaskConfig(**task_kw),
        sampler=SamplerConfig(**{"gen_length": 16, "block_length": 16, "steps": 8, "temperature": 1.0, **(sampler or {})}),
        algorithm=GRPOConfig(**{"num_generations": 4, "num_iterations": 2, "beta": 0.0, "max_prompt_length": 64,
                                "generation_batch_size": 0, **(algorithm or {})}),
        trainer=TrainerConfig(**{"learning_rate": 3e-3, "lr_scheduler": "constant", "weight_decay": 0.0,
                                 "per_device_train_batch_size": 4, "gradient_accumulation_steps": 2,
                                 "max_steps": 4, "mixed_precision": "no", "save_steps": 0, "eval_steps": 0,
                                 "resume": "never", **(trainer or {})}),
        logger=LoggerConfig(logging_steps=1, progress_bar=False),
        validation=ValidationConfig(**(validation or {})),
        output_dir=str(output_dir),
    )


def read_metrics(output_dir) -> list[dict]:
    import json

    return [json.loads(line) for line in (Path(output_dir) / "metrics.jsonl").read_text().splitlines() if line]
