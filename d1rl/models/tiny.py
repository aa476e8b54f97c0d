"""The embedded tiny LLaDA: a ~1M-parameter model and a small tokenizer built offline, deterministically.

It lets every command, test and the quickstart recipe run on a laptop CPU without any download. The architecture is
the real LLaDA one (same classes, same parameter names, grouped-query attention switched on so that path is always
exercised); only the sizes are small. The tokenizer mimics LLaDA-8B-Instruct where the rest of d1rl cares:

* the special tokens ``<|startoftext|>`` (BOS), ``<|endoftext|>`` (EOS = PAD), ``<|start_header_id|>``,
  ``<|end_header_id|>``, ``<|eot_id|>`` and the diffusion mask ``<|mdm_mask|>``, placed after the ordinary
  vocabulary as in LLaDA; no BOS is added by ``encode`` (LLaDA: add_bos_token = false), the chat template adds it;
* a chat template with LLaDA's behaviour: BOS before the first message, each message rendered as
  ``<|start_header_id|>role<|end_header_id|>\\n\\n`` + stripped content + ``<|eot_id|>``, and the assistant header
  ``<|start_header_id|>assistant<|end_header_id|>\\n\\n`` ALWAYS appended (LLaDA's template ignores
  ``add_generation_prompt``; see shared/docs/d1-reference.md);
* every digit is its own token (so arithmetic rewards see digits, as with LLaDA's tokenizer);
* ``<reasoning>``, ``</reasoning>``, ``<answer>``, ``</answer>`` are single, NON-special tokens (they survive
  ``skip_special_tokens=True`` decoding, which d1's reward functions rely on).

The vocabulary is a byte-level BPE trained by the ``tokenizers`` library on the built-in corpus below (plain English,
arithmetic and the d1 prompt formats), so any text can be encoded (no unknown token).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

#: Bump when anything that changes the built files changes (corpus, tokenizer recipe, sizes, init): the cache dir
#: name ``tiny-llada-<version>`` then changes and stale caches are never reused.
TINY_VERSION = "v1"

SPECIAL_TOKENS = {
    "bos": "<|startoftext|>",
    "eos": "<|endoftext|>",
    "start_header": "<|start_header_id|>",
    "end_header": "<|end_header_id|>",
    "eot": "<|eot_id|>",
    "mask": "<|mdm_mask|>",
}
FORMAT_TOKENS = ["<reasoning>", "</reasoning>", "<answer>", "</answer>"]

# LLaDA's chat behaviour, written as a Jinja template (see module docstring). ``trim`` = Python's str.strip().
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if loop.first -%}{{ bos_token }}{%- endif -%}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + (message['content'] | trim) + '<|eot_id|>' }}"
    "{%- endfor -%}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
)

#: Model hyper-parameters of the tiny model (LLaDAConfig fields). Chosen to train in seconds on 2 CPU cores while
#: keeping every LLaDA code path live: GQA (2 kv heads for 4 query heads), RoPE, RMSNorm, gated SiLU MLP, untied head.
TINY_MODEL_DEFAULTS: dict[str, Any] = {
    "d_model": 128,
    "n_heads": 4,
    "n_kv_heads": 2,
    "n_layers": 4,
    "mlp_hidden_size": 384,
    "mlp_ratio": 3,
    "activation_type": "silu",
    "block_type": "llama",
    "layer_norm_type": "rms",
    "layer_norm_with_affine": True,
    "bias_for_layer_norm": False,
    "include_bias": False,
    "include_qkv_bias": False,
    "rms_norm_eps": 1e-5,
    "rope": True,
    "rope_theta": 10000.0,  # LLaDA-8B uses 500000 for 4k context; 10000 suits the tiny model's short sequences
    "rope_full_precision": True,
    "attention_dropout": 0.0,
    "residual_dropout": 0.0,
    "embedding_dropout": 0.0,
    "max_sequence_length": 1024,
    "weight_tying": False,
    "scale_logits": False,
    "init_fn": "normal",
    "init_std": 0.02,
}
#: Options of build_tiny that are not config fields.
TINY_BUILD_DEFAULTS: dict[str, Any] = {"seed": 0, "tokenizer_vocab_size": 1024}

# Built-in training corpus for the BPE merges: our own text covering everyday words, the vocabulary of math word
# problems and the d1 prompt formats (GSM8K/MATH reasoning format, Countdown, Sudoku). Only the merges depend on it.
_CORPUS = """
Respond in the following format:
<reasoning>
...
</reasoning>
<answer>
...
</answer>
You are a math expert. You will be given a question to solve. Solve it step by step. Wrap the final answer in a \\boxed{}.
Think step by step and then put the final answer inside the answer tags.
Using only the numbers given, create an arithmetic expression that equals the target number. You can use basic
arithmetic operations (+, -, *, /) and each number can only be used once. Show your work in the reasoning tags and
return the final equation in the answer tags, for example <answer> (1 + 2) / 3 </answer>.
Please solve the following 4x4 Sudoku puzzle. The puzzle is given as a 16-character string reading left-to-right,
top-to-bottom, where 0 represents an empty cell. Each row, each column and each 2x2 box must contain the digits 1 to 4
exactly once. Write the solved grid as a 16-digit string.
Question: Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many
clips did Natalia sell altogether in April and May?
Answer: In May she sold 48 / 2 = 24 clips. Altogether she sold 48 + 24 = 72 clips. The answer is 72.
A farmer has 15 cows and buys 7 more. Then he sells 4 of them. How many cows does the farmer have now?
The farmer has 15 + 7 - 4 = 18 cows.
Tom reads 12 pages every day for 5 days. How many pages does he read in total? He reads 12 * 5 = 60 pages.
A store had 120 apples. It sold a third of them on Monday and 25 on Tuesday. How many apples are left?
A third of 120 is 40. After Monday there are 80 apples, after Tuesday 55 apples remain.
What is the sum of the first ten positive integers? The sum is 10 * 11 / 2 = 55.
Compute the value of x if 3x + 5 = 20. Subtract five from both sides, then divide by three: x = 5.
If a rectangle has length 8 and width 3, its area is 24 and its perimeter is 22.
The price of a book is 30 dollars. With a discount of 20 percent the new price is 24 dollars.
Sarah has twice as many marbles as John. Together they have 36 marbles. How many does each child have?
John has 12 marbles and Sarah has 24 marbles.
Let f(x) = x^2 - 4x + 4. Find the minimum value of f. Since f(x) = (x - 2)^2, the minimum value is 0 at x = 2.
The probability of rolling an even number with a fair die is 3/6 = 1/2.
Find the greatest common divisor of 12 and 18. The answer is 6. The least common multiple is 36.
Simplify the fraction 42/56. Divide the numerator and the denominator by 14 to get 3/4.
A train travels at 60 miles per hour for 2 hours and then at 45 miles per hour for 3 hours. What distance does it
cover? It covers 120 + 135 = 255 miles.
The number of students in the class is 28. Half of them are girls. There are 14 girls and 14 boys.
Each box holds 6 eggs. How many boxes are needed for 50 eggs? We need 9 boxes because 8 boxes hold only 48 eggs.
Target: 24. Numbers: 3, 8, 2, 5. One solution is 3 * 8 = 24, so the equation is (5 - 2 - 3) + 3 * 8.
Target: 10. Numbers: 1, 2, 3, 4. The equation 1 + 2 + 3 + 4 = 10 uses each number once.
The user asks a question and the assistant solves it. The assistant first thinks about the reasoning process and then
provides the user with the answer. The final answer is a number, an expression or a grid.
Let me check the result again: the total cost is the price per item times the number of items, plus the tax.
First, second, third, fourth, fifth; one, two, three, four, five, six, seven, eight, nine, ten, eleven, twelve,
twenty, thirty, forty, fifty, hundred, thousand, million, half, quarter, double, triple, percent, average, ratio.
add, subtract, multiply, divide, plus, minus, times, equals, product, difference, quotient, remainder, square, root,
cube, power, prime, factor, even, odd, integer, fraction, decimal, number, digit, value, equation, expression,
solve, solution, result, total, sum, each, every, more, less, than, many, much, how, what, which, who, when, where,
why, because, so, therefore, then, if, else, and, or, not, the, a, an, of, in, on, at, to, for, with, from, by, is,
are, was, were, be, has, have, had, will, would, can, could, should, does, did, do, this, that, these, those, it,
they, we, you, he, she, his, her, their, our, your, my, me, him, them, us, there, here, day, days, week, weeks, month,
year, years, hour, hours, minute, minutes, money, dollars, cents, cost, costs, price, buy, buys, bought, sell, sells,
sold, pay, pays, paid, earn, earns, spend, spends, spent, save, saves, left, remaining, start, starts, end, ends,
apple, apples, orange, bananas, cookies, candies, pencils, books, cars, dogs, cats, friends, people, students,
teacher, school, class, team, game, games, points, score, water, cups, liters, meters, kilometers, miles, feet,
inches, pounds, kilograms, grams, length, width, height, area, volume, perimeter, circle, triangle, angle, degrees,
speed, time, distance, rate, work, rows, columns, grid, cell, cells, puzzle, board, target, numbers, operations,
answer, question, reasoning, step, steps, final, format, following, given, find, compute, calculate, determine,
show, explain, check, verify, correct, wrong, true, false, yes, no, hello, thanks, please, good, great, small,
large, big, new, old, first, last, next, before, after, between, about, around, only, also, still, again, into,
over, under, up, down, out, off, all, some, any, none, both, half, whole, part, parts, same, different, other.
"""


def _corpus_lines() -> list[str]:
    return [line for line in _CORPUS.strip().splitlines() if line.strip()]


def build_tokenizer(vocab_size: int = 1024):
    """Train the byte-level BPE on the built-in corpus and wrap it as a transformers fast tokenizer.

    Deterministic: the corpus is fixed and the BPE trainer breaks count ties by token order, not by hashing
    (checked by a test that builds twice and compares the files).
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    # Split every digit off first, so BPE can never merge digits (with each other or with anything else).
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    n_added = len(SPECIAL_TOKENS) + len(FORMAT_TOKENS)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - n_added,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    tok.train_from_iterator(_corpus_lines(), trainer=trainer)
    # Format tags first (ordinary, non-special tokens), then LLaDA's special tokens at the end of the vocabulary.
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in FORMAT_TOKENS])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS.values()])

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=SPECIAL_TOKENS["bos"],
        eos_token=SPECIAL_TOKENS["eos"],
        pad_token=SPECIAL_TOKENS["eos"],  # LLaDA / d1: pad = eos
        mask_token=SPECIAL_TOKENS["mask"],
        additional_special_tokens=[SPECIAL_TOKENS[k] for k in ("start_header", "end_header", "eot")],
        model_max_length=TINY_MODEL_DEFAULTS["max_sequence_length"],
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def _init_tiny_weights(model: torch.nn.Module, seed: int, std: float) -> None:
    """Seeded init in sorted-name order: norms = 1, every matrix ~ N(0, std^2). Independent of global RNG state."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sorted(model.named_parameters()):
            if name.endswith("norm.weight") or name.endswith("ln_f.weight"):
                param.fill_(1.0)
            elif name.endswith(".bias"):
                param.zero_()
            else:
                param.copy_(torch.randn(param.shape, generator=gen, dtype=torch.float32) * std)


def build_tiny(output_dir: str | os.PathLike, **overrides: Any) -> Path:
    """Write the tiny LLaDA (config + safetensors weights) and its tokenizer to ``output_dir``; return the path.

    ``overrides`` may change any LLaDAConfig field of the tiny model (e.g. ``n_layers=2``) and the build options
    ``seed`` (weight init, default 0) and ``tokenizer_vocab_size`` (BPE target size incl. special tokens, default
    1024). The token ids (vocab_size, mask/eos/pad/bos) always come from the tokenizer.
    """
    from d1rl.models.configuration_llada import LLADA_DEFAULTS, LLaDAConfig
    from d1rl.models.modeling_llada import LLaDAModelLM

    unknown = sorted(set(overrides) - set(LLADA_DEFAULTS) - set(TINY_BUILD_DEFAULTS))
    if unknown:
        raise ValueError(
            f"build_tiny: unknown option(s) {unknown}; allowed: LLaDAConfig fields or {sorted(TINY_BUILD_DEFAULTS)}"
        )
    build = {**TINY_BUILD_DEFAULTS, **{k: v for k, v in overrides.items() if k in TINY_BUILD_DEFAULTS}}
    fields = {**TINY_MODEL_DEFAULTS, **{k: v for k, v in overrides.items() if k not in TINY_BUILD_DEFAULTS}}

    tokenizer = build_tokenizer(int(build["tokenizer_vocab_size"]))
    ids = {name: tokenizer.convert_tokens_to_ids(tok) for name, tok in SPECIAL_TOKENS.items()}
    fields.update(
        vocab_size=len(tokenizer),
        embedding_size=len(tokenizer),
        mask_token_id=ids["mask"],
        eos_token_id=ids["eos"],
        pad_token_id=ids["eos"],
        bos_token_id=ids["bos"],
    )
    config = LLaDAConfig(**fields)
    model = LLaDAModelLM(config)
    _init_tiny_weights(model, int(build["seed"]), float(config.init_std))

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    recipe = {
        "tiny_version": TINY_VERSION,
        "build_options": build,
        "config_overrides": {k: v for k, v in overrides.items() if k not in TINY_BUILD_DEFAULTS},
        "corpus_sha256": hashlib.sha256(_CORPUS.encode()).hexdigest(),
        "num_parameters": sum(p.numel() for p in model.parameters()),
    }
    (out / "d1rl_tiny.json").write_text(json.dumps(recipe, indent=2, sort_keys=True) + "\n")
    return out


def cache_root() -> Path:
    """``$D1RL_CACHE`` or ``~/.cache/d1rl``."""
    return Path(os.environ.get("D1RL_CACHE") or Path.home() / ".cache" / "d1rl").expanduser()


def tiny_path(root: str | os.PathLike | None = None) -> Path:
    """Directory of the default tiny model, built on first use.

    Built into a temporary sibling directory and renamed into place, so an interrupted build never leaves a
    half-written model behind and concurrent processes (e.g. ``accelerate launch`` ranks) do not corrupt each other:
    the first rename wins and the others discard their copy.
    """
    base = Path(root) if root is not None else cache_root()
    final = base / f"tiny-llada-{TINY_VERSION}"
    if (final / "d1rl_tiny.json").exists():
        return final
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-tiny-llada-{TINY_VERSION}-", dir=base))
    try:
        build_tiny(tmp)
        tmp.chmod(0o755)  # mkdtemp creates 0700; the cache may be shared
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / "d1rl_tiny.json").exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final
