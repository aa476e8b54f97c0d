"""``TaskConfig``: the schema of the ``task=`` config group (presets in ``configs/task/``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

SOURCES = ("auto", "hub", "local", "synthetic")
GRADER_MODES = ("robust", "d1")
ARITHMETIC_OPERATIONS = ("+", "-", "*")


@dataclass
class SyntheticConfig:
    """Options of the seeded generators (used when a split's source is ``synthetic``).

    Splits are disjoint by construction: every generated item is assigned to train or test by a hash of its text
    (1 in ``test_fraction_inverse`` goes to test), so test items never appear in training data.

    Attributes:
        num_train: rows generated for the ``train`` split (ours; d1's Sudoku CSV has ~1M puzzles, Countdown ~490k).
        num_test: rows generated for any other split (ours; d1 evaluates 256 Countdown / Sudoku puzzles).
        test_fraction_inverse: 1/fraction of the item space reserved for test splits (ours: 10).
        digits_min: smallest operand length in digits of the arithmetic task (ours: 2).
        digits_max: largest operand length in digits of the arithmetic task (ours: 2).
        operations: arithmetic operations to draw from, subset of "+", "-", "*" (ours: ["+"]; "*" multiplies by one digit).
        correct_reward: arithmetic correctness reward (ours: 2.0, the value d1 gives GSM8K correctness).
        format_reward: arithmetic format reward (ours: 0.5, the value of d1's format rewards).
        digit_reward: arithmetic partial-credit reward, paid in proportion to the answer digits that are right
            (ours: 0.0 = off, so the task's rewards mirror d1's correctness + format; the quickstart turns it on).
        countdown_min_numbers: fewest numbers in a generated Countdown puzzle (d1 trains on 3-number puzzles).
        countdown_max_numbers: most numbers in a generated Countdown puzzle (3; Countdown-Tasks-3to4 also has 4).
        countdown_max_number: largest number drawn (Countdown-Tasks-3to4: 1..99 for the inputs; ours 100).
        countdown_min_target: smallest target (d1's test set: 1).
        countdown_max_target: largest target (d1's test set: 100).
        sudoku_blanks: empty cells per generated 4x4 puzzle, 4..12 (d1's test CSV: exactly 8).
    """

    num_train: int = 20000
    num_test: int = 500
    test_fraction_inverse: int = 10
    digits_min: int = 2
    digits_max: int = 2
    operations: List[str] = field(default_factory=lambda: ["+"])
    correct_reward: float = 2.0
    format_reward: float = 0.5
    digit_reward: float = 0.0
    countdown_min_numbers: int = 3
    countdown_max_numbers: int = 3
    countdown_max_number: int = 100
    countdown_min_target: int = 1
    countdown_max_target: int = 100
    sudoku_blanks: int = 8

    def __post_init__(self) -> None:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ValueError(f"task.synthetic.{msg}")

        need(self.num_train >= 0 and self.num_test >= 0, "num_train/num_test must be >= 0")
        need(self.digit_reward >= 0, f"digit_reward must be >= 0, got {self.digit_reward}")
        need(self.test_fraction_inverse >= 2, f"test_fraction_inverse must be >= 2, got {self.test_fraction_inverse}")
        need(1 <= self.digits_min <= self.digits_max <= 18, f"digits_min/digits_max must satisfy 1 <= min <= max <= 18, got {self.digits_min}/{self.digits_max}")
        bad = [op for op in self.operations if op not in ARITHMETIC_OPERATIONS]
        need(bool(self.operations) and not bad, f"operations must be a non-empty subset of {list(ARITHMETIC_OPERATIONS)}, got {list(self.operations)}")
        need(2 <= self.countdown_min_numbers <= self.countdown_max_numbers <= 6, "countdown_min_numbers/countdown_max_numbers must satisfy 2 <= min <= max <= 6")
        need(self.countdown_max_number >= 2, "countdown_max_number must be >= 2")
        need(self.countdown_min_target <= self.countdown_max_target, "countdown_min_target must be <= countdown_max_target")
        need(4 <= self.sudoku_blanks <= 12, f"sudoku_blanks must be in 4..12 (a 4x4 puzzle with a unique solution has at most 12 blanks), got {self.sudoku_blanks}")


@dataclass
class TaskConfig:
    """Which task, where its data comes from, and how it is rewarded and graded (the ``task=`` group).

    Data sources (per split): an explicit ``train_file``/``test_file`` always wins; otherwise ``train_source`` /
    ``test_source`` (or ``source`` for both) decides: ``hub`` = the hub id d1 uses, ``local`` = ``data_dir`` in the
    layout of ``shared/data/README.md`` (``gsm8k/{train,test}.jsonl``, ``math500/test.jsonl``, ``math/train.jsonl``,
    ``countdown/{train,test}.jsonl``, ``sudoku/{train,test}.csv``), ``synthetic`` = the seeded generator,
    ``auto`` = ``local`` when ``data_dir`` is set, else ``hub``.

    Attributes:
        name: task name: gsm8k | math | countdown | sudoku | synthetic.
        source: data source for all splits: auto | hub | local | synthetic (ours: auto).
        train_source: source of the train split, overriding ``source`` (None = use ``source``).
        test_source: source of every non-train split, overriding ``source`` (None = use ``source``).
        data_dir: root of local data files (None = not set; e.g. ``/work/shared/data``).
        train_file: explicit train file (.jsonl/.json/.csv/.parquet); wins over every source setting.
        test_file: explicit test file; wins over every source setting.
        hub_id: override of the hub dataset id (None = d1's: openai/gsm8k, ankner/math-500 (train) and
            HuggingFaceH4/MATH-500 (test), Jiayi-Pan/Countdown-Tasks-3to4).
        countdown_num_numbers: keep only Countdown hub/local train rows with this many numbers (d1 data_utils.py: 3;
            0 = keep all).
        train_shuffle_seed: shuffle the train split with ``Dataset.shuffle(seed=...)`` (d1 diffu_grpo_train.py: 42;
            None = keep file order).
        train_holdout: rows dropped from the END of the shuffled train split (None = task default: d1 drops 500 for
            countdown and sudoku, 0 otherwise; applies to hub/local data, not to synthetic data).
        eval_subset: evaluate this many test rows chosen with ``np.random.seed(eval_subset_seed);
            np.random.choice(N, eval_subset, replace=False)`` (None = task default: d1 eval.py uses 256 for countdown
            and sudoku, all rows otherwise; -1 = all rows in file order).
        eval_subset_seed: seed of that choice (d1 eval.py init_seed: 42).
        d1_compat_rewards: reproduce d1's reward bugs (format regexes without DOTALL, MATH ``"\\b"`` backspace
            literal) and d1's ``eval``-based Countdown reward dialect (ours: False = corrected; d1 recipes: True).
        grader: default grading mode for evaluation: robust | d1 (ours: robust; d1 recipes report both).
        extra_rewards: additional TRL-style reward functions, each "module:function" or "module:function=weight"
            (e.g. "trl.rewards:think_format_reward=0.5"); appended after the task's own (default weight 1.0).
        seed: seed of the synthetic generators (ours: 42).
        synthetic: generator options, see :class:`SyntheticConfig`.
    """

    name: str = "gsm8k"
    source: str = "auto"
    train_source: Optional[str] = None
    test_source: Optional[str] = None
    data_dir: Optional[str] = None
    train_file: Optional[str] = None
    test_file: Optional[str] = None
    hub_id: Optional[str] = None
    countdown_num_numbers: int = 3
    train_shuffle_seed: Optional[int] = 42
    train_holdout: Optional[int] = None
    eval_subset: Optional[int] = None
    eval_subset_seed: int = 42
    d1_compat_rewards: bool = False
    grader: str = "robust"
    extra_rewards: List[str] = field(default_factory=list)
    seed: int = 42
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)

    def __post_init__(self) -> None:
        for key in ("source", "train_source", "test_source"):
            value = getattr(self, key)
            if value is not None and value not in SOURCES:
                raise ValueError(f"task.{key} must be one of {list(SOURCES)}, got {value!r}")
        if self.grader not in GRADER_MODES:
            raise ValueError(f"task.grader must be one of {list(GRADER_MODES)}, got {self.grader!r}")
        if self.train_holdout is not None and self.train_holdout < 0:
            raise ValueError(f"task.train_holdout must be >= 0, got {self.train_holdout}")
        if self.eval_subset is not None and self.eval_subset < -1:
            raise ValueError(f"task.eval_subset must be -1 (all), None (task default) or >= 0, got {self.eval_subset}")
        if isinstance(self.synthetic, dict):  # built from a plain dict (tests, scripts)
            self.synthetic = SyntheticConfig(**self.synthetic)

    def source_for(self, split: str) -> str:
        """The resolved source of ``split`` (``auto`` turned into ``local`` or ``hub``)."""
        chosen = self.train_source if split == "train" else self.test_source
        value = chosen or self.source
        if value == "auto":
            return "local" if self.data_dir else "hub"
        return value
