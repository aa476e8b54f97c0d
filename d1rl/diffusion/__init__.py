"""The math of masked diffusion, no training loop.

* :mod:`~d1rl.diffusion.sft` — forward noising and the 1/t-weighted masked SFT loss;
* :mod:`~d1rl.diffusion.estimators` — per-token log-prob estimators (registry; d1's ``one_step``) and
  :func:`mask_generator` for reproducible masks keyed by (seed, step, inner iteration, rank);
* :mod:`~d1rl.diffusion.advantages` — group-relative advantages;
* :mod:`~d1rl.diffusion.objective` — the clipped policy loss with k3 KL and its aggregation modes.
"""

from d1rl.diffusion.advantages import AdvantageScale, combine_rewards, group_advantages
from d1rl.diffusion.estimators import (
    LogProbEstimator,
    OneStepEstimator,
    available_estimators,
    get_estimator,
    mask_generator,
    register_estimator,
    selective_log_softmax,
)
from d1rl.diffusion.objective import LossAggregation, completion_mask_from_ids, k3_kl, policy_loss
from d1rl.diffusion.sft import (
    SFTNormalization,
    apply_t_eps,
    linspace_t,
    masked_cross_entropy,
    noise_for_sft,
    reduce_sft_loss,
    sample_t,
    sft_labels,
    sft_loss,
)

__all__ = [
    "AdvantageScale",
    "combine_rewards",
    "group_advantages",
    "LogProbEstimator",
    "OneStepEstimator",
    "available_estimators",
    "get_estimator",
    "mask_generator",
    "register_estimator",
    "selective_log_softmax",
    "LossAggregation",
    "completion_mask_from_ids",
    "k3_kl",
    "policy_loss",
    "SFTNormalization",
    "apply_t_eps",
    "linspace_t",
    "masked_cross_entropy",
    "noise_for_sft",
    "reduce_sft_loss",
    "sample_t",
    "sft_labels",
    "sft_loss",
]
