"""The math of masked diffusion, no training loop.

* :mod:`~d1rl.diffusion.sft` — forward noising and the 1/t-weighted masked SFT loss;
* :mod:`~d1rl.diffusion.estimators` — per-token log-prob estimators (registry; d1's ``one_step``, optionally with
  one prompt mask shared by a prompt's group) and :func:`mask_generator` for reproducible masks keyed by
  (seed, step, inner iteration, rank);
* :mod:`~d1rl.diffusion.model_head` — completion log-probs from a forward that runs the output head only where
  needed (fused hidden → head → log-softmax for LLaDA, ``logits_to_keep``, or full logits);
* :mod:`~d1rl.diffusion.log_softmax` — the chunked selected-id log-softmax kernels behind it;
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
)
from d1rl.diffusion.log_softmax import fused_linear_log_softmax, selective_log_softmax
from d1rl.diffusion.model_head import HEAD_MODES, HeadPlan, completion_log_probs, plan_head
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
    "fused_linear_log_softmax",
    "HEAD_MODES",
    "HeadPlan",
    "completion_log_probs",
    "plan_head",
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
