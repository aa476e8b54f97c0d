"""Lean completion log-probs: fused head kernel, logits_to_keep, fallbacks — all equal to the full-logits path."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode

from d1rl.diffusion import fused_linear_log_softmax, get_estimator, plan_head, selective_log_softmax
from d1rl.diffusion import model_head

MASK_ID = 2000
P = 16


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread for these tests: the 2-core machine is shared, and 2 threads under load made the
    small trainer runs 20x slower (0.4 s vs 10 s measured); restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _naive(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """log_softmax + gather over the full vocabulary: d1's computation."""
    lsm = torch.log_softmax(logits.double() if logits.dtype != torch.float64 else logits, -1)
    return lsm.gather(-1, ids)


def _run(model, head: str, ids: torch.Tensor, weights: torch.Tensor, shift: int = 0, mask_id: int = MASK_ID):
    """(log-probs, {param name: grad}) of Σ weights·logp through the one-step estimator in ``head`` mode."""
    est = get_estimator("one_step", mask_id=mask_id, head=head, logits_shift=shift)
    model.zero_grad(set_to_none=True)
    lp = est.log_probs(model, ids, P, generator=torch.Generator().manual_seed(42))
    (lp * weights).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return lp.detach(), grads


@pytest.fixture()
def lp_inputs(reference):
    _, T = reference
    ids = T["logprob/input_ids"]
    w = torch.randn(ids.shape[0], ids.shape[1] - P, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    return ids, w, T["logprob/per_token_logps_float64"][0]


def test_fused_and_keep_equal_full_logits_values_and_gradients_float64(tiny_llada, lp_inputs):
    ids, w, expected = lp_inputs
    assert plan_head(tiny_llada, "auto").mode == "fused"  # LLaDA with a plain nn.Linear head
    full_lp, full_g = _run(tiny_llada, "full", ids, w)
    assert torch.allclose(full_lp, expected, atol=1e-4, rtol=0)  # the d1 fixture (pure float64 vs official casts)
    assert len(full_g) == 21  # every parameter of the fixture model receives a gradient
    for head in ("fused", "keep", "auto"):
        lp, g = _run(tiny_llada, head, ids, w)
        assert (lp - full_lp).abs().max().item() <= 1e-10, head
        assert set(g) == set(full_g)
        worst = max((g[n] - full_g[n]).abs().max().item() for n in g)
        assert worst <= 1e-10, (head, worst)


def test_fused_never_builds_completion_logits(tiny_llada, lp_inputs):
    """Every tensor created in forward + backward is recorded: the fused path's largest has at most chunk x V
    elements, the keep path builds (B, C, V) logits and their gradient, the full path (B, L, V)."""
    ids, w, _ = lp_inputs
    b, length = ids.shape
    c, v = length - P, tiny_llada.config.vocab_size

    class Largest(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.numel = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(t, torch.Tensor):
                    self.numel = max(self.numel, t.numel())
            return out

    largest = {}
    for head, chunk in (("fused", 16), ("keep", None), ("full", None)):
        est = get_estimator("one_step", mask_id=MASK_ID, head=head, chunk_rows=chunk)
        tiny_llada.zero_grad(set_to_none=True)
        with Largest() as mode:
            (est.log_probs(tiny_llada, ids, P, generator=torch.Generator().manual_seed(42)) * w).sum().backward()
        largest[head] = mode.numel
    assert largest["fused"] < b * c * v
    assert largest["fused"] == v * tiny_llada.config.d_model  # the head weight gradient; logits chunks 16 x V are smaller
    assert largest["keep"] == b * c * v
    assert largest["full"] == b * length * v


def test_fused_kernel_matches_naive_with_bias_scale_and_k_ids():
    g = torch.Generator().manual_seed(0)
    n, d, v, k = 7, 5, 23, 3
    h = torch.randn(2, n, d, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(v, d, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(v, generator=g, dtype=torch.float64, requires_grad=True)
    ids = torch.randint(0, v, (2, n, k), generator=g)
    gw = torch.randn(2, n, k, generator=g, dtype=torch.float64)
    ref = _naive((h @ w.T + b) * 0.37, ids)
    ref_grads = torch.autograd.grad((ref * gw).sum(), (h, w, b))
    for chunk in (None, 1, 3, 100):
        out = fused_linear_log_softmax(h, w, ids, bias=b, scale=0.37, chunk_rows=chunk)
        assert out.shape == (2, n, k)
        assert (out - ref).abs().max().item() < 1e-13
        grads = torch.autograd.grad((out * gw).sum(), (h, w, b))
        for got, want in zip(grads, ref_grads):
            assert (got - want).abs().max().item() < 1e-12
    one = fused_linear_log_softmax(h, w, ids[..., 0], chunk_rows=4)  # one id per position: (2, n)
    assert one.shape == (2, n) and torch.allclose(one, _naive(h @ w.T, ids[..., :1]).squeeze(-1), atol=1e-13)
    small_h = h[:, :3, :3].detach().clone().requires_grad_(True)
    small_w = w[:4, :3].detach().clone().requires_grad_(True)
    small_ids = ids[:, :3, :2] % 4
    assert torch.autograd.gradcheck(lambda x, y: fused_linear_log_softmax(x, y, small_ids, scale=0.5, chunk_rows=2),
                                    (small_h, small_w))
    with pytest.raises(ValueError, match=r"\[0, 23\)"):
        fused_linear_log_softmax(h, w, ids + v)
    with pytest.raises(ValueError, match="does not fit"):
        fused_linear_log_softmax(h, w[:, :4], ids)


def test_selective_log_softmax_k_ids_share_one_distribution():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(3, 6, 31, generator=g, dtype=torch.float64, requires_grad=True)
    ids = torch.randint(0, 31, (3, 6, 4), generator=g)
    gw = torch.randn(3, 6, 4, generator=g, dtype=torch.float64)
    out = selective_log_softmax(logits, ids, chunk_rows=5)
    ref = _naive(logits, ids)
    assert out.shape == (3, 6, 4) and (out - ref).abs().max().item() < 1e-13
    (got,) = torch.autograd.grad((out * gw).sum(), logits)
    (want,) = torch.autograd.grad((ref * gw).sum(), logits)
    assert (got - want).abs().max().item() < 1e-13
    # K ids per position = the same as stacking K single-id calls
    single = torch.stack([selective_log_softmax(logits, ids[..., j]) for j in range(4)], -1)
    assert torch.equal(out, single)


def test_fused_bf16_matches_keep_path_and_uses_autocast_dtype(fixtures_dir, lp_inputs):
    import transformers

    ids, w, _ = lp_inputs
    model = transformers.AutoModel.from_pretrained(str(fixtures_dir / "llada-tiny")).float().eval()
    est = {h: get_estimator("one_step", mask_id=MASK_ID, head=h) for h in ("fused", "keep")}
    with torch.no_grad():
        plain = est["fused"].log_probs(model, ids, P, generator=torch.Generator().manual_seed(42))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            lp = {h: e.log_probs(model, ids, P, generator=torch.Generator().manual_seed(42)) for h, e in est.items()}
    assert plain.dtype == torch.float32 and lp["fused"].dtype == torch.float32
    # both run the head matmul in bf16 under autocast (equal up to matmul blocking), visibly not fp32 (0.10)
    assert (lp["fused"] - lp["keep"]).abs().max().item() < 1e-3  # measured 0.0
    assert (lp["fused"] - plain).abs().max().item() > 1e-3


class _KeepToy(nn.Module):
    """Bidirectional toy LM with transformers' ``logits_to_keep`` (int = last k positions); records calls."""

    def __init__(self, vocab: int = 37, dim: int = 8, honour_keep: bool = True) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(11)
        self.emb = nn.Parameter(torch.randn(vocab, dim, generator=g, dtype=torch.float64))
        self.out = nn.Parameter(torch.randn(dim, vocab, generator=g, dtype=torch.float64))
        self.honour_keep = honour_keep
        self.calls: list[tuple[int, object]] = []

    def forward(self, input_ids, attention_mask=None, logits_to_keep=None):
        self.calls.append((input_ids.shape[0], logits_to_keep))
        h = torch.tanh(self.emb[input_ids] + self.emb[input_ids].mean(1, keepdim=True))
        if self.honour_keep and logits_to_keep:
            h = h[:, -logits_to_keep:]
        return h @ self.out


class _NoKeepToy(_KeepToy):
    def forward(self, input_ids, attention_mask=None):  # type: ignore[override]
        return super().forward(input_ids, attention_mask)


def test_keep_mode_with_logits_shift_reads_the_previous_position():
    model = _KeepToy()
    ids = torch.randint(0, 30, (3, 12), generator=torch.Generator().manual_seed(4))
    w = torch.randn(3, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert plan_head(model, "auto").mode == "keep"  # not LLaDA: no fused head
    est = get_estimator("one_step", mask_id=36, logits_shift=1)
    lp = est.log_probs(model, ids, 4, generator=torch.Generator().manual_seed(2))
    assert model.calls[-1] == (3, 9)  # C + shift = 8 + 1 positions kept
    noised = est.noise(ids, 4, torch.Generator().manual_seed(2))
    full = model(noised, logits_to_keep=None)
    expected = _naive(full[:, 3:11], ids[:, 4:, None]).squeeze(-1)
    assert (lp - expected).abs().max().item() < 1e-13
    (g_lp,) = torch.autograd.grad((lp * w).sum(), model.out)
    (g_ref,) = torch.autograd.grad((expected * w).sum(), model.out)
    assert (g_lp - g_ref).abs().max().item() < 1e-12


def test_fallbacks_unknown_models_and_explicit_errors(caplog):
    ids = torch.randint(0, 30, (2, 12), generator=torch.Generator().manual_seed(4))
    gen = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    no_keep = _NoKeepToy()
    model_head._WARNED.clear()
    with caplog.at_level(logging.WARNING, logger="d1rl.diffusion.model_head"):
        est = get_estimator("one_step", mask_id=36)
        a = est.log_probs(no_keep, ids, 5, generator=gen())
        est.log_probs(no_keep, ids, 5, generator=gen())
    warnings = [r for r in caplog.records if "takes no logits_to_keep" in r.getMessage()]
    assert len(warnings) == 1  # once per model class, not per call
    ref = _naive(no_keep(est.noise(ids, 5, gen()))[:, 5:], ids[:, 5:, None]).squeeze(-1)
    assert (a - ref).abs().max().item() < 1e-13
    with pytest.raises(ValueError, match="algorithm.logprob_head.*logits_to_keep"):
        get_estimator("one_step", mask_id=36, head="keep").log_probs(no_keep, ids, 5, generator=gen())
    with pytest.raises(ValueError, match="'fused'.*not a LLaDA model"):
        get_estimator("one_step", mask_id=36, head="fused").log_probs(_KeepToy(), ids, 5, generator=gen())
    with pytest.raises(ValueError, match="head='sparse'"):
        get_estimator("one_step", mask_id=36, head="sparse")
    # a model that takes logits_to_keep but ignores it still gives the right numbers (and says so once)
    ignoring = _KeepToy(honour_keep=False)
    b = get_estimator("one_step", mask_id=36, head="keep").log_probs(ignoring, ids, 5, generator=gen())
    ref_b = _naive(ignoring(est.noise(ids, 5, gen()))[:, 5:], ids[:, 5:, None]).squeeze(-1)
    assert (b - ref_b).abs().max().item() < 1e-13


def test_peft_wrapped_llada_fused_when_head_plain_keep_when_head_adapted(fixtures_dir, lp_inputs):
    import transformers
    from peft import LoraConfig, get_peft_model

    ids, w, _ = lp_inputs
    base = transformers.AutoModel.from_pretrained(str(fixtures_dir / "llada-tiny")).double().eval()
    full_lp, _ = _run(base, "full", ids, w)
    plain = get_peft_model(base, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]))
    assert plan_head(plain, "auto").mode == "fused"
    calls = []
    handle = plain.get_base_model().model.register_forward_pre_hook(
        lambda mod, args, kwargs: calls.append(kwargs.get("logits_to_keep")), with_kwargs=True)
    lp, g = _run(plain, "auto", ids, w)
    handle.remove()
    assert calls == [24]  # PEFT passed logits_to_keep through to the LLaDA body
    assert (lp - full_lp).abs().max().item() < 1e-10
    assert g and all("lora_" in n for n in g)  # only the adapter is trainable
    base2 = transformers.AutoModel.from_pretrained(str(fixtures_dir / "llada-tiny")).double().eval()
    adapted = get_peft_model(base2, LoraConfig(r=2, lora_alpha=4, target_modules=["ff_out"]))  # head too
    plan = plan_head(adapted, "auto")
    assert plan.mode == "keep"
    with pytest.raises(ValueError, match="not nn.Linear"):
        plan_head(adapted, "fused")
    lp2, g2 = _run(adapted, "auto", ids, w)
    lp2_full, g2_full = _run(adapted, "full", ids, w)
    assert (lp2 - lp2_full).abs().max().item() < 1e-10
    assert max((g2[n] - g2_full[n]).abs().max().item() for n in g2) < 1e-10
