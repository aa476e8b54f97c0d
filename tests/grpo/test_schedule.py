"""Inner-iteration scheduling, batch geometry and the stateless prompt order."""

from __future__ import annotations

import pytest

from d1rl.training.grpo_schedule import BatchGeometry, PromptSchedule, split_holdout, step_position


def test_inner_iteration_comes_from_the_optimizer_step():
    # μ = 12 with gradient accumulation 2 (d1 gsm8k): every optimizer step of a rollout batch gets its own index,
    # so the 12 passes see 12 distinct inner iterations (d1's micro-batch counter gives only 6 per micro-batch).
    positions = [step_position(s, 12) for s in range(36)]
    assert [p.rollout_step for p in positions] == [s // 12 for s in range(36)]
    for r in range(3):
        ks = [p.inner_iteration for p in positions if p.rollout_step == r]
        assert ks == list(range(12))
    assert [p.optimizer_step for p in positions if p.needs_rollout] == [0, 12, 24]


def test_d1_micro_batch_counter_would_repeat_masks():
    # The bug we do not reproduce, stated as arithmetic: d1 uses (micro_step % μ) after the increment.
    mu, accum = 12, 2
    d1_seen = {slot: set() for slot in range(accum)}
    ours_seen = {slot: set() for slot in range(accum)}
    micro = 0
    for opt_step in range(mu):
        for slot in range(accum):
            micro += 1
            d1_seen[slot].add(micro % mu)
            ours_seen[slot].add(step_position(opt_step, mu).inner_iteration)
    assert all(len(s) == mu // 2 for s in d1_seen.values())
    assert all(len(s) == mu for s in ours_seen.values())


def test_step_position_rejects_bad_input():
    with pytest.raises(ValueError, match="num_iterations"):
        step_position(0, 0)
    with pytest.raises(ValueError, match="optimizer step"):
        step_position(-1, 2)


def test_batch_geometry_d1_values():
    g = BatchGeometry(num_generations=6, micro_batch_size=6, grad_accum=2, world_size=8)
    assert g.completions_per_process == 12
    assert g.prompts_per_process == 2
    assert g.prompts_per_step == 16  # 96 completions per optimizer step, as in d1-reference §2.7
    assert g.micro_batch_slices() == [slice(0, 6), slice(6, 12)]


def test_batch_geometry_rejects_split_groups():
    with pytest.raises(ValueError, match="multiple of algorithm.num_generations"):
        BatchGeometry(num_generations=6, micro_batch_size=4, grad_accum=2)


def test_prompt_schedule_covers_each_epoch_once_and_is_stateless():
    pool = list(range(10, 30))  # 20 usable rows, 2 ranks x 2 prompts: one epoch = 5 rollout steps
    ranks = [PromptSchedule(pool, 2, world_size=2, rank=r, seed=42) for r in range(2)]
    assert ranks[0].steps_per_epoch == 5
    seen = [i for step in range(5) for sched in ranks for i in sched.indices(step)]
    assert sorted(seen) == pool
    # Same answer from a fresh object (resume needs only the step counter) ...
    assert PromptSchedule(pool, 2, world_size=2, rank=1, seed=42).indices(3) == ranks[1].indices(3)
    # ... a different order in the next epoch and for another seed.
    epoch1 = [i for step in range(5, 10) for sched in ranks for i in sched.indices(step)]
    assert sorted(epoch1) == pool and epoch1 != seen
    other = [i for step in range(5) for r in range(2) for i in PromptSchedule(pool, 2, world_size=2, rank=r, seed=7).indices(step)]
    assert other != seen
    assert ranks[0].epoch_of(4) == 1.0


def test_prompt_schedule_drops_the_incomplete_batch_of_an_epoch():
    sched = PromptSchedule(list(range(5)), 3, seed=0)  # 1 full batch per epoch; 2 rows wait for a later epoch
    assert sched.steps_per_epoch == 1
    batches = [sched.indices(s) for s in range(4)]
    assert all(len(set(b)) == 3 and set(b) <= set(range(5)) for b in batches)
    assert len({tuple(b) for b in batches}) > 1
    with pytest.raises(ValueError, match="fewer than one global batch"):
        PromptSchedule(list(range(5)), 3, world_size=2, rank=0, seed=0)


def test_split_holdout():
    pool, held = split_holdout(100, 10, seed=42)
    assert len(held) == 10 and len(pool) == 90
    assert not set(pool) & set(held)
    assert split_holdout(100, 10, seed=42) == (pool, held)
    assert split_holdout(100, 10, seed=1)[1] != held
    with pytest.raises(ValueError, match="holdout_size"):
        split_holdout(10, 10, seed=0)
