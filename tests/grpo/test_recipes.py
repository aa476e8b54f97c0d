"""Every d1 diffu-GRPO recipe composes through the `d1rl train` Hydra path and matches d1-reference.md §2.7."""

from __future__ import annotations

import pytest
import yaml

from d1rl.config import register_schema, run_hydra, to_object
from d1rl.training.grpo_commands import check_required, train_main
from d1rl.training.grpo_config import TrainJobConfig
from d1rl.training.grpo_schedule import BatchGeometry

TASKS = {"gsm8k": (12, 7700), "math": (12, 6600), "countdown": (8, 5000), "sudoku": (8, 3800)}  # μ, ISSUE #25 steps
RECIPES = [f"d1/{t}_{k}" for t in TASKS for k in ("base", "sft")]


def compose(argv: list[str]) -> tuple[TrainJobConfig, object]:
    """Compose like `d1rl train ARGV` does, but capture the validated job instead of training."""
    register_schema("train_schema", TrainJobConfig)
    seen = []

    def capture(cfg):
        seen.append((to_object(cfg, TrainJobConfig), cfg))
        return 0

    assert run_hydra(argv + ["hydra.output_subdir=null"], prog="d1rl train", config_name="train", task_fn=capture) == 0
    return seen[0]


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_matches_d1_table(recipe, tmp_path):
    job, raw = compose(["--recipe", recipe, f"hydra.run.dir={tmp_path}"])
    task, kind = recipe.split("/")[1].split("_")
    mu, steps = TASKS[task]
    m, a, s, t = job.model, job.algorithm, job.sampler, job.trainer
    # model: LLaDA-8B-Instruct (base) or the merged SFT placeholder, bf16, 4-bit NF4 double-quant, LoRA r128/α64
    if kind == "base":
        assert m.name_or_path == "GSAI-ML/LLaDA-8B-Instruct"
        check_required(raw)  # nothing left to fill in
    else:
        assert m.name_or_path.startswith("MISSING-")
        with pytest.raises(SystemExit, match="model.name_or_path=.*merged SFT checkpoint"):
            check_required(raw)
    assert (m.dtype, m.gradient_checkpointing) == ("bfloat16", False)
    q = m.quantization
    assert (q.load_in_4bit, q.nf4, q.double_quant, q.compute_dtype) == (True, True, True, "bfloat16")
    lora = m.lora
    assert (lora.enabled, lora.r, lora.alpha, lora.dropout) == (True, 128, 64, 0.05)
    assert lora.target_modules == ["q_proj", "k_proj", "v_proj", "up_proj"]  # what d1's list matches in LLaDA
    # task and rewards
    assert job.task.name == task and job.task.d1_compat_rewards is True
    # algorithm (train.yaml / sbatch)
    assert (a.num_generations, a.num_iterations) == (6, mu)
    assert (a.beta, a.epsilon, a.epsilon_high, a.p_mask_prompt) == (0.04, 0.5, None, 0.15)
    assert (a.random_masking, a.advantage_scale, a.loss_aggregation) == (True, "none", "token_mean")
    assert (a.max_prompt_length, a.generation_batch_size, a.estimator) == (200, 6, "one_step")
    assert a.d1_compat_truncation is False and a.use_attention_mask is True  # documented DIFFERS
    # rollout sampler: completion 256, block 32, 128 steps, T 0.9 (sudoku too: d1's 0.3 line was never applied)
    assert (s.gen_length, s.block_length, s.steps, s.temperature) == (256, 32, 128, 0.9)
    assert (s.remasking, s.cfg_scale) == ("low_confidence", 0.0)
    # optimiser / schedule / batch / checkpoints
    assert (t.learning_rate, t.lr_scheduler, t.warmup_ratio) == (3e-6, "constant_with_warmup", 1e-4)
    assert (t.adam_beta1, t.adam_beta2, t.weight_decay, t.max_grad_norm) == (0.9, 0.99, 0.1, 0.2)
    assert (t.per_device_train_batch_size, t.gradient_accumulation_steps) == (6, 2)
    assert (t.mixed_precision, t.seed, t.save_steps, t.save_total_limit) == ("bf16", 42, 100, 500)
    assert t.max_steps == steps and t.num_train_epochs == 10
    assert job.logger.logging_steps == 1
    # validation on train-split hold-out rows, never the test split
    assert job.validation.holdout_size > 0 and t.eval_steps == 100
    assert job.output_dir == f"runs/d1/{task}_{kind}"
    # 8 GPUs: 16 prompts x 6 generations = 96 completions per optimizer step (§2.7)
    geo = BatchGeometry(a.num_generations, t.per_device_train_batch_size, t.gradient_accumulation_steps, world_size=8)
    assert (geo.prompts_per_step, geo.prompts_per_step * a.num_generations) == (16, 96)


def test_sft_recipe_accepts_the_checkpoint_override(tmp_path):
    job, raw = compose(["--recipe", "d1/gsm8k_sft", "model.name_or_path=/ckpt/merged", f"hydra.run.dir={tmp_path}"])
    assert job.model.name_or_path == "/ckpt/merged"
    check_required(raw)


def test_cfg_job_prints_the_recipe(capsys):
    assert train_main(["--recipe", "d1/countdown_base", "--cfg", "job"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["algorithm"]["num_iterations"] == 8
    assert printed["task"]["name"] == "countdown"


def test_default_train_config_is_the_tiny_cpu_job(tmp_path):
    job, _ = compose([f"hydra.run.dir={tmp_path}"])
    assert job.model.name_or_path == "tiny" and job.task.name == "synthetic"
    assert job.trainer.mixed_precision == "no" and job.model.lora.enabled is False
    BatchGeometry(job.algorithm.num_generations, job.trainer.per_device_train_batch_size,
                  job.trainer.gradient_accumulation_steps)  # whole groups per process


def test_unknown_algorithm_key_is_rejected(capsys, tmp_path):
    with pytest.raises(SystemExit):
        compose(["algorithm.num_iteration=3", f"hydra.run.dir={tmp_path}"])
    assert "Key 'num_iteration' not in 'GRPOConfig'" in capsys.readouterr().err


def test_bad_algorithm_value_names_the_key(capsys, tmp_path):
    with pytest.raises(SystemExit):
        compose(["algorithm.prompt_overflow=cut", f"hydra.run.dir={tmp_path}"])
    assert "algorithm.prompt_overflow='cut' is not one of" in capsys.readouterr().err
