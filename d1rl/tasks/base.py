"""The ``Task`` interface, the ``Grade`` record, the task registry and d1's evaluation subset."""

from __future__ import annotations

import dataclasses
import zlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Mapping

import datasets
import numpy as np

from d1rl.tasks.config import GRADER_MODES, TaskConfig
from d1rl.tasks.data import DataUnavailableError, load_hub, read_rows, rows_to_dataset
from d1rl.tasks.rewards import RewardFn, load_reward_function


@dataclass
class Grade:
    """The verdict of a grader on one completion.

    Attributes:
        correct: whether the item counts as solved (Sudoku: the whole puzzle).
        extracted: the answer the grader read from the completion (None if it found none).
        score: a number in [0, 1] for partial credit (Sudoku: cell accuracy); 1.0/0.0 elsewhere.
        details: grader-specific facts (e.g. ``correct_cells``/``empty_cells`` for Sudoku, the evaluated value for
            Countdown, where the answer was found).
    """

    correct: bool
    extracted: Any
    score: float
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def d1_eval_subset(total: int, size: int = 256, seed: int = 42) -> np.ndarray:
    """Indices d1 evaluates: ``np.random.seed(seed); np.random.choice(total, size, replace=False)``.

    d1's eval.py seeds the global legacy NumPy generator with 42 and then draws the subset (Countdown: 256 of 256,
    i.e. a permutation; Sudoku: 256 of 500). A fresh legacy ``RandomState(seed)`` gives the same draw without
    touching the global generator.
    """
    if size > total:
        raise ValueError(f"eval subset of {size} items requested from a split of {total}")
    return np.random.RandomState(seed).choice(total, size, replace=False)


def stable_hash(text: str) -> int:
    """A process-independent hash (``hash()`` of str is salted per process)."""
    return zlib.crc32(text.encode("utf-8"))


class Task(ABC):
    """Everything that knows one task: data, prompts, rewards, grading.

    Subclasses set ``name``, ``eval_prefill``, implement the abstract methods and the per-source loaders they
    support (``_load_hub``, ``_convert_local``, ``_generate``).
    """

    name: ClassVar[str] = ""
    #: appended after the chat template at evaluation ("<reasoning>" for d1 tasks, d1 eval.py add_reasoning=True)
    eval_prefill: ClassVar[str] = "<reasoning>"
    #: default number of evaluated test rows (None = all), d1 eval.py num_evals
    default_eval_subset: ClassVar[int | None] = None
    #: default number of train rows d1 drops from the end after shuffling (diffu_grpo_train.py)
    default_train_holdout: ClassVar[int] = 0
    #: relative local file per split (layout of shared/data/README.md)
    local_files: ClassVar[dict[str, str]] = {}

    def __init__(self, cfg: TaskConfig | None = None) -> None:
        cfg = cfg if cfg is not None else TaskConfig(name=self.name)
        if cfg.name != self.name:
            raise ValueError(f"task config is for {cfg.name!r} but task {self.name!r} was requested")
        self.cfg = cfg

    # ---- data ---------------------------------------------------------------------------------------------------

    def load_split(self, split: str) -> datasets.Dataset:
        """The split as a Dataset with at least ``question`` and ``answer`` (ground truth as a string).

        ``train`` is shuffled with ``train_shuffle_seed`` and loses ``train_holdout`` rows at the end, as d1 does
        (hub/local data only). Any other split is returned complete and in file order (see :meth:`load_eval_split`).
        """
        explicit = self.cfg.train_file if split == "train" else self.cfg.test_file
        if explicit:
            ds = self._from_file(explicit, split)
            source = "local"
        else:
            source = self.cfg.source_for(split)
            if source == "synthetic":
                return self._generate(split)
            if source == "local":
                ds = self._from_file(self._local_path(split), split)
            else:
                ds = self._load_hub(split)
        ds = self._postprocess(ds, split)
        if split == "train":
            ds = self._shuffle_and_hold_out(ds)
        return ds

    def load_eval_split(self, split: str = "test") -> datasets.Dataset:
        """The rows d1 evaluates, in d1's order: ``load_split(split)`` restricted to :func:`d1_eval_subset` when
        ``eval_subset`` (or the task default) asks for a subset."""
        ds = self.load_split(split)
        size = self.cfg.eval_subset if self.cfg.eval_subset is not None else self.default_eval_subset
        if size is None or size == -1:
            return ds
        if size > len(ds):
            raise ValueError(f"task.eval_subset={size} but the {self.name} {split} split has only {len(ds)} rows")
        return ds.select(d1_eval_subset(len(ds), size, self.cfg.eval_subset_seed).tolist())

    def _shuffle_and_hold_out(self, ds: datasets.Dataset) -> datasets.Dataset:
        if self.cfg.train_shuffle_seed is not None:
            ds = ds.shuffle(seed=self.cfg.train_shuffle_seed)
        holdout = self.cfg.train_holdout if self.cfg.train_holdout is not None else self.default_train_holdout
        if holdout:
            if holdout >= len(ds):
                raise ValueError(f"task.train_holdout={holdout} leaves no {self.name} training rows (split has {len(ds)})")
            ds = ds.select(range(len(ds) - holdout))
        return ds

    def _local_path(self, split: str) -> str:
        if not self.cfg.data_dir:
            raise DataUnavailableError(
                f"task {self.name}: source 'local' needs task.data_dir (or task.{'train' if split == 'train' else 'test'}_file)"
            )
        rel = self.local_files.get(split)
        if rel is None:
            raise DataUnavailableError(
                f"task {self.name}: no local file convention for split {split!r} (known: {sorted(self.local_files)}); "
                f"set task.{'train' if split == 'train' else 'test'}_file"
            )
        path = Path(self.cfg.data_dir) / rel
        if not path.is_file():
            raise DataUnavailableError(
                f"task {self.name}: local {split} file {path} does not exist (task.data_dir={self.cfg.data_dir}); "
                f"set task.{'train' if split == 'train' else 'test'}_file, or use task.source=hub"
                + (" or task.source=synthetic" if self.has_generator() else "")
            )
        return str(path)

    def _from_file(self, path: str, split: str) -> datasets.Dataset:
        rows = read_rows(path)
        return rows_to_dataset(rows, lambda r, i: self._convert_row(r, split), f"task {self.name}: {path}")

    def _load_hub(self, split: str) -> datasets.Dataset:
        raise DataUnavailableError(
            f"task {self.name}: d1 does not load the {split!r} split from the hub; set task.data_dir or "
            f"task.{'train' if split == 'train' else 'test'}_file" + (", or task.source=synthetic" if self.has_generator() else "")
        )

    def _hub(self, default_id: str, config: str | None, split: str, hub_split: str | None = None) -> datasets.Dataset:
        """Load a hub split and convert its rows (errors name the local-data options)."""
        hub_id = self.cfg.hub_id or default_id
        raw = load_hub(hub_id, config, hub_split or split, task=self.name)
        return rows_to_dataset(raw, lambda r, i: self._convert_row(r, split), f"task {self.name}: hub {hub_id}")

    def _postprocess(self, ds: datasets.Dataset, split: str) -> datasets.Dataset:
        """Hook after hub/file loading, before shuffling (e.g. d1's 3-number Countdown filter)."""
        return ds

    def _convert_row(self, row: Mapping[str, Any], split: str) -> dict[str, Any]:
        """Raw file/hub row → our columns (question, answer, ...). Raise KeyError/ValueError for bad rows."""
        raise NotImplementedError

    def has_generator(self) -> bool:
        return type(self)._generate is not Task._generate

    def _generate(self, split: str) -> datasets.Dataset:
        raise DataUnavailableError(f"task {self.name} has no synthetic generator; choose task.source=hub or local")

    def synthetic_split_of(self, key: str) -> str:
        """Which split a generated item belongs to (disjoint train/test by a hash of its text)."""
        return "test" if stable_hash(f"{self.name}|{key}") % self.cfg.synthetic.test_fraction_inverse == 0 else "train"

    def synthetic_size(self, split: str) -> int:
        return self.cfg.synthetic.num_train if split == "train" else self.cfg.synthetic.num_test

    def synthetic_seed(self, split: str) -> int:
        """Seed of the generator stream for ``split`` (train and test streams differ, and both differ per seed)."""
        return stable_hash(f"{self.name}|{split}|{self.cfg.seed}")

    # ---- prompts ------------------------------------------------------------------------------------------------

    @abstractmethod
    def train_prompt(self, row: Mapping[str, Any]) -> list[dict[str, str]]:
        """Chat messages of d1's TRAINING prompt for ``row`` (no prefill)."""

    @abstractmethod
    def eval_prompt(self, row: Mapping[str, Any]) -> list[dict[str, str]]:
        """Chat messages of d1's EVALUATION prompt for ``row``; append :attr:`eval_prefill` after the template."""

    def with_prompts(self, ds: datasets.Dataset, kind: str = "train") -> datasets.Dataset:
        """``ds`` plus a ``prompt`` column of chat messages (TRL's conversational dataset form)."""
        if kind not in ("train", "eval"):
            raise ValueError(f"prompt kind must be 'train' or 'eval', got {kind!r}")
        build = self.train_prompt if kind == "train" else self.eval_prompt
        return ds.map(lambda row: {"prompt": build(row)})

    def sft_completion(self, row: Mapping[str, Any]) -> str | None:
        """A reference completion for supervised fine-tuning, if the task can write one (else None)."""
        return None

    # ---- rewards ------------------------------------------------------------------------------------------------

    @abstractmethod
    def _task_rewards(self) -> list[tuple[RewardFn, float]]:
        """The task's own reward functions (d1's, with d1's weights 1.0), honouring ``d1_compat_rewards``."""

    def reward_functions(self) -> list[tuple[RewardFn, float]]:
        """[(fn, weight)]: the task's rewards, then ``extra_rewards`` from config."""
        return self._task_rewards() + [load_reward_function(s) for s in self.cfg.extra_rewards]

    # ---- grading ------------------------------------------------------------------------------------------------

    def grade(self, completion: str, row: Mapping[str, Any], mode: str | None = None) -> Grade:
        """Grade one completion (the generated text after the prompt and prefill) against ``row``.

        ``mode``: "d1" reproduces d1's parser exactly; "robust" (default via ``task.grader``) is our grader.
        """
        mode = mode or self.cfg.grader
        if mode not in GRADER_MODES:
            raise ValueError(f"grader mode must be one of {list(GRADER_MODES)}, got {mode!r}")
        if not isinstance(completion, str):
            raise TypeError(f"completion must be a string, got {type(completion).__name__}")
        return self._grade_d1(completion, row) if mode == "d1" else self._grade_robust(completion, row)

    @abstractmethod
    def _grade_d1(self, completion: str, row: Mapping[str, Any]) -> Grade: ...

    @abstractmethod
    def _grade_robust(self, completion: str, row: Mapping[str, Any]) -> Grade: ...

    def row_from_d1_record(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """A grading row from one item of a d1 generation file (``question``, ``generations``, ``ground_truth``)."""
        raise NotImplementedError


# ---- registry ---------------------------------------------------------------------------------------------------

_REGISTRY: dict[str, type[Task]] = {}


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: make ``cls`` available to :func:`get_task` under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    _REGISTRY[cls.name] = cls
    return cls


def task_names() -> list[str]:
    """Registered task names."""
    _ensure_builtin_tasks()
    return sorted(_REGISTRY)


def _ensure_builtin_tasks() -> None:
    # Importing the modules registers them.
    from d1rl.tasks import countdown, gsm8k, math, sudoku, synthetic  # noqa: F401


def get_task(name: str, cfg: TaskConfig | Mapping[str, Any] | Any | None = None) -> Task:
    """The task ``name`` configured by ``cfg`` (a TaskConfig, a plain mapping, an OmegaConf node, or None for
    the defaults)."""
    _ensure_builtin_tasks()
    if name not in _REGISTRY:
        raise ValueError(f"unknown task {name!r}; known tasks: {sorted(_REGISTRY)}")
    cfg = _as_task_config(cfg, name)
    return _REGISTRY[name](cfg)


def _as_task_config(cfg: Any, name: str) -> TaskConfig:
    if cfg is None:
        return TaskConfig(name=name)
    if isinstance(cfg, TaskConfig):
        return cfg
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(cfg, DictConfig):
            obj = OmegaConf.to_object(cfg)
            if isinstance(obj, TaskConfig):
                return obj
            cfg = obj
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        pass
    if isinstance(cfg, Mapping):
        data = dict(cfg)
        data.setdefault("name", name)
        known = {f.name for f in dataclasses.fields(TaskConfig)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown task config key(s) {unknown}; known: {sorted(known)}")
        return TaskConfig(**data)
    raise TypeError(f"task config must be a TaskConfig or a mapping, got {type(cfg).__name__}")

