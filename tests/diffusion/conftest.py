"""Fixtures for the diffusion-math tests: the tiny official LLaDA checkpoint loaded through d1rl.models."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_llada(fixtures_dir):
    """The fixture checkpoint as a float64 eval-mode model (pure float64 forward), via transformers' AutoModel.

    Skips only while the native model class does not exist yet; any failure to load an existing class fails.
    """
    import d1rl.models as models

    if not hasattr(models, "LLaDAModelLM"):
        pytest.skip("d1rl.models.LLaDAModelLM not available yet (native LLaDA being written)")
    import transformers

    model = transformers.AutoModel.from_pretrained(str(fixtures_dir / "llada-tiny"))
    return model.double().eval()
