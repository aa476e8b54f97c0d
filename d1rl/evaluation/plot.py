"""PNG plots of evaluation results (matplotlib with the non-interactive Agg backend: works on headless nodes).

* accuracy vs generation length (one panel per task, one line per grader) from one ``results.json``;
* accuracy vs checkpoint step (one panel per task, one line per generation length x grader) for ``ckpts=`` runs.

The plotted value is the metric d1 reports for the task (cell accuracy for Sudoku, accuracy otherwise).
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from pathlib import Path
from typing import Any, Mapping, Sequence

from d1rl.atomic_io import atomic_write
from d1rl.evaluation.results import primary_value


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | os.PathLike[str]) -> Path:
    """Save atomically (:mod:`d1rl.atomic_io`): a half-written PNG never replaces a good one."""
    return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, bbox_inches="tight"))


def _grid(n: int) -> tuple[int, int]:
    cols = min(n, 2)
    return math.ceil(n / cols), cols


def _metric_label(rows: Sequence[Mapping[str, Any]], grader: str) -> str:
    m = rows[0]["metrics"][grader]
    return m.get("primary", "accuracy").replace("_", " ")


def plot_accuracy_vs_length(rows: Sequence[Mapping[str, Any]], graders: Sequence[str], path: str | os.PathLike[str], title: str = "") -> Path:
    """Accuracy (%) against generation length, one panel per task."""
    plt = _pyplot()
    by_task: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for r in rows:
        by_task[str(r["task"])].append(r)
    tasks = sorted(by_task)
    nr, nc = _grid(max(1, len(tasks)))
    fig, axes = plt.subplots(nr, nc, figsize=(5 * nc, 3.6 * nr), squeeze=False)
    for ax, task in zip(axes.flat, tasks):
        trs = sorted(by_task[task], key=lambda r: int(r["gen_length"]))
        xs = [int(r["gen_length"]) for r in trs]
        for g in graders:
            ax.plot(xs, [100 * primary_value(r, g) for r in trs], marker="o", label=f"{g} ({_metric_label(trs, g)})")
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [str(x) for x in xs])
        ax.set_title(task)
        ax.set_xlabel("generation length (tokens)")
        ax.set_ylabel("accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(tasks) :]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    try:
        return _save(fig, path)
    finally:
        plt.close(fig)


def plot_accuracy_vs_step(points: Sequence[Mapping[str, Any]], graders: Sequence[str], path: str | os.PathLike[str], title: str = "") -> Path:
    """Accuracy (%) against training step. ``points``: ``{"step": int, "results": [rows of aggregate()]}``."""
    plt = _pyplot()
    series: dict[str, dict[tuple[int, str], list[tuple[int, float]]]] = defaultdict(lambda: defaultdict(list))
    for pt in sorted(points, key=lambda p: int(p["step"])):
        for r in pt["results"]:
            for g in graders:
                series[str(r["task"])][(int(r["gen_length"]), g)].append((int(pt["step"]), 100 * primary_value(r, g)))
    tasks = sorted(series)
    nr, nc = _grid(max(1, len(tasks)))
    fig, axes = plt.subplots(nr, nc, figsize=(5 * nc, 3.6 * nr), squeeze=False)
    for ax, task in zip(axes.flat, tasks):
        for (length, g), xy in sorted(series[task].items()):
            ax.plot([p[0] for p in xy], [p[1] for p in xy], marker="o", label=f"len {length}, {g}")
        ax.set_title(task)
        ax.set_xlabel("training step")
        ax.set_ylabel("accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(tasks) :]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    try:
        return _save(fig, path)
    finally:
        plt.close(fig)
