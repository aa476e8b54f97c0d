"""A deliberately plain re-statement of the official sampling algorithm, for cross-checking the batched sampler.

Written from the algorithm description (fixtures README §3.2, d1-reference §1), not from d1rl.sampling: full
sequence logits every step, Python loops over rows and positions, an explicit sort instead of top-k, and the
random draws made in the official order and shapes (Gumbel noise over (B, T, V), then random-remasking draws over
(B, T)). Options of ours (attention mask, EOS handling) follow their documented meaning:
``confidence_eos_eot_inf`` = EOS/EOT candidates are taken only after every other candidate.
"""

from __future__ import annotations

import torch


def naive_generate(model, prompt, attention_mask=None, *, gen_length, block_length, steps, temperature=0.0,
                   remasking="low_confidence", cfg_scale=0.0, mask_id, generator=None,
                   noise_dtype=torch.float64, confidence_dtype=torch.float64, logits_eos_inf=False,
                   confidence_eos_eot_inf=False, eos_id=None, eot_id=None):
    batch, plen = prompt.shape
    total = plen + gen_length
    x = torch.full((batch, total), mask_id, dtype=torch.int64)
    x[:, :plen] = prompt
    mask = None
    if attention_mask is not None:
        mask = torch.cat([attention_mask, torch.ones(batch, gen_length, dtype=attention_mask.dtype)], dim=1)
    was_prompt = x != mask_id
    num_blocks = gen_length // block_length
    per_block = max(1, steps // num_blocks)
    step_of = torch.full((batch, gen_length), -1, dtype=torch.int64)
    forwards = 0
    with torch.no_grad():
        for b in range(num_blocks):
            lo, hi = plen + b * block_length, plen + (b + 1) * block_length
            masked_at_start = [int((x[r, lo:hi] == mask_id).sum()) for r in range(batch)]
            for i in range(per_block):
                if cfg_scale > 0:
                    un = x.clone()
                    un[was_prompt] = mask_id
                    both_mask = None if mask is None else torch.cat([mask, mask])
                    out = model(torch.cat([x, un]), attention_mask=both_mask).logits
                    cond, unc = out[:batch], out[batch:]
                    logits = unc + (cfg_scale + 1) * (cond - unc)
                else:
                    logits = model(x, attention_mask=mask).logits.clone()
                forwards += 1
                if logits_eos_inf:
                    logits[:, :, eos_id] = float("-inf")
                if temperature > 0:
                    u = torch.rand(logits.shape, generator=generator, dtype=noise_dtype)
                    x0 = (logits.to(noise_dtype).exp() / (-torch.log(u)) ** temperature).argmax(-1)
                else:
                    x0 = logits.argmax(-1)
                if remasking == "low_confidence":
                    conf = torch.softmax(logits.to(confidence_dtype), -1).gather(-1, x0[..., None])[..., 0]
                else:
                    conf = torch.rand((batch, total), generator=generator).to(confidence_dtype)
                for r in range(batch):
                    m = masked_at_start[r]
                    k = m // per_block + (1 if i < m % per_block else 0)
                    candidates = [j for j in range(lo, hi) if int(x[r, j]) == mask_id]

                    def order(j, r=r):
                        late = confidence_eos_eot_inf and int(x0[r, j]) in (eos_id, eot_id)
                        return (late, -float(conf[r, j]))

                    for j in sorted(candidates, key=order)[:k]:
                        x[r, j] = x0[r, j]
                        step_of[r, j - plen] = b * per_block + i
    return x, step_of, forwards
