"""The model adapter: the few facts about a diffusion LM that samplers, estimators and losses need.

Everything model-specific that the rest of d1rl must know is here, read from the checkpoint's config and tokenizer
instead of being hard-coded: the mask token id (``<|mdm_mask|>`` for LLaDA), the EOS/PAD/EOT/BOS ids, and how logits
line up with positions. Keeping it a plain dataclass makes it cheap to pass around and trivial to construct by hand
in tests.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

logger = logging.getLogger(__name__)

MASK_TOKEN = "<|mdm_mask|>"
EOT_TOKEN = "<|eot_id|>"
BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"

# How many positions the logits are shifted relative to the token they predict, per model type. LLaDA is a masked
# LM: logits[:, i] predicts the token at position i (0). Dream-style models, adapted from autoregressive LMs, predict
# position i from logits[:, i-1] (1).
_LOGITS_SHIFT = {"llada": 0, "dream": 1}


def _first_int(value: Any) -> int | None:
    """Token ids in configs may be an int, a list of ints (generation configs) or None."""
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
    return int(value) if value is not None else None


def _vocab_id(tokenizer: Any, token: str) -> int | None:
    """Id of ``token`` if the tokenizer really has it (never the unk fallback)."""
    if tokenizer is None:
        return None
    try:
        vocab = tokenizer.get_vocab()
    except Exception:  # pragma: no cover - exotic tokenizers
        return None
    value = vocab.get(token)
    return int(value) if value is not None else None


@dataclass
class ModelAdapter:
    """Token ids and logit alignment of a diffusion LM.

    Attributes:
        mask_id: id written into masked positions and predicted by the model (``<|mdm_mask|>``; for the published
            LLaDA-8B checkpoints this is 126336, a fact of that tokenizer read from its config, never assumed here).
        eos_id: end-of-text id (``<|endoftext|>`` in LLaDA); d1's completion mask stops after the first one.
        eot_id: end-of-turn id (``<|eot_id|>``) or None if the tokenizer has none; an ordinary token for d1.
        pad_id: padding id (LLaDA pads with EOS; falls back to eos_id).
        bos_id: begin-of-text id (``<|startoftext|>``) or None.
        logits_shift: 0 if ``logits[:, i]`` predicts position i (LLaDA), 1 if it predicts position i + 1.
    """

    mask_id: int
    eos_id: int
    eot_id: int | None
    pad_id: int
    bos_id: int | None
    logits_shift: int = 0

    @classmethod
    def from_pretrained(cls, model: Any, tokenizer: Any = None, *, mask_id: int | None = None) -> "ModelAdapter":
        """Read the ids from ``model.config`` (a model, a PEFT wrapper or a config object) and ``tokenizer``.

        Sources, in order: an explicit ``mask_id`` argument; the config (``mask_token_id``, ``eos_token_id`` ...);
        the tokenizer (its ``mask_token_id``/``eos_token_id`` ... or, for LLaDA-style vocabularies without
        registered roles, the ids of the literal special tokens ``<|mdm_mask|>``, ``<|endoftext|>`` ...).
        If the config and the tokenizer disagree on the mask id, loading stops: a wrong mask id silently
        trains/decodes garbage.
        """
        config = getattr(model, "config", model)
        model_type = getattr(config, "model_type", None)

        def from_tokenizer(attr: str, literal: str) -> int | None:
            if tokenizer is None:
                return None
            value = getattr(tokenizer, attr, None)
            return _first_int(value) if value is not None else _vocab_id(tokenizer, literal)

        cfg_mask = _first_int(getattr(config, "mask_token_id", None))
        tok_mask = from_tokenizer("mask_token_id", MASK_TOKEN)
        if mask_id is None:
            if cfg_mask is not None and tok_mask is not None and cfg_mask != tok_mask:
                raise ValueError(
                    f"mask token id conflict: config.mask_token_id={cfg_mask} but the tokenizer's mask token "
                    f"({MASK_TOKEN!r} / mask_token) is {tok_mask}; pass mask_id= explicitly"
                )
            mask_id = cfg_mask if cfg_mask is not None else tok_mask
        if mask_id is None:
            raise ValueError(
                f"cannot find the diffusion mask token id: config ({type(config).__name__}) has no mask_token_id and "
                f"the tokenizer has neither a mask_token nor a {MASK_TOKEN!r} token; set config.mask_token_id"
            )

        def pick(name: str, cfg_attr: str, tok_attr: str, literal: str) -> int | None:
            cfg_val = _first_int(getattr(config, cfg_attr, None))
            tok_val = from_tokenizer(tok_attr, literal)
            if cfg_val is not None and tok_val is not None and cfg_val != tok_val:
                logger.warning("%s: config says %d, tokenizer says %d; using the config value", name, cfg_val, tok_val)
            return cfg_val if cfg_val is not None else tok_val

        eos_id = pick("eos id", "eos_token_id", "eos_token_id", EOS_TOKEN)
        if eos_id is None:
            raise ValueError("cannot find the EOS token id: neither config.eos_token_id nor the tokenizer defines it")
        pad_id = pick("pad id", "pad_token_id", "pad_token_id", EOS_TOKEN)
        bos_id = pick("bos id", "bos_token_id", "bos_token_id", BOS_TOKEN)
        eot_id = _vocab_id(tokenizer, EOT_TOKEN)

        adapter = cls(
            mask_id=int(mask_id),
            eos_id=eos_id,
            eot_id=eot_id,
            pad_id=pad_id if pad_id is not None else eos_id,
            bos_id=bos_id,
            logits_shift=_LOGITS_SHIFT.get(str(model_type), 0),
        )
        adapter.validate(getattr(config, "embedding_size", None) or getattr(config, "vocab_size", None))
        return adapter

    def validate(self, vocab_rows: int | None) -> None:
        """Check that every id fits in the output vocabulary (rows of the logits)."""
        if vocab_rows is None:
            return
        for name, value in asdict(self).items():
            if name.endswith("_id") and value is not None and not 0 <= value < vocab_rows:
                raise ValueError(f"ModelAdapter.{name}={value} is outside the model vocabulary [0, {vocab_rows})")

    def to_dict(self) -> dict[str, int | None]:
        return asdict(self)
