"""d1rl: masked SFT and diffu-GRPO for masked diffusion language models (LLaDA and friends).

Importing the package registers the native LLaDA classes with the transformers Auto classes, so
``transformers.AutoModel.from_pretrained(path)`` loads an official LLaDA checkpoint without remote code.
"""

from __future__ import annotations

__version__ = "0.1.0"

from d1rl import models as _models  # noqa: F401  (registers LLaDA with transformers' Auto classes)
