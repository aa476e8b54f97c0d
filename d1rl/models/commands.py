"""``d1rl build-tiny``: write the embedded tiny LLaDA + tokenizer to a directory (or the default cache)."""

from __future__ import annotations

import argparse


def build_tiny_main(argv: list[str]) -> int:
    """Build the tiny model; print where it was written and its parameter count. Returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="d1rl build-tiny",
        description="Build the embedded tiny LLaDA model and tokenizer (offline, deterministic).",
    )
    parser.add_argument(
        "--output-dir",
        default=None,
        help="where to write the model (default: the cache dir used by model=tiny, $D1RL_CACHE or ~/.cache/d1rl)",
    )
    parser.add_argument("--seed", type=int, default=None, help="weight-init seed (default 0; only with --output-dir)")
    args = parser.parse_args(argv)

    import json

    from d1rl.models.tiny import build_tiny, tiny_path

    if args.output_dir is None:
        if args.seed is not None:
            parser.error("--seed changes the model; use it together with --output-dir")
        path = tiny_path()
    else:
        overrides = {} if args.seed is None else {"seed": args.seed}
        path = build_tiny(args.output_dir, **overrides)
    info = json.loads((path / "d1rl_tiny.json").read_text())
    print(f"tiny LLaDA written to {path} ({info['num_parameters']:,} parameters)")
    return 0
