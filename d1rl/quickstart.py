"""``d1rl quickstart``: the embedded default end to end on a laptop CPU, offline.

The pipeline (each stage is an ordinary d1rl command run in this process with a recipe from
``recipes/quickstart/``, so every step can also be run, changed and re-run by hand)::

    build     the tiny LLaDA-architecture model + tokenizer (cached in $D1RL_CACHE or ~/.cache/d1rl)
    eval_base d1rl eval  --recipe quickstart/eval  model.name_or_path=tiny limit=100       (before SFT)
    sft       d1rl sft   --recipe quickstart/sft                                           (masked-diffusion SFT)
    eval_sft  d1rl eval  --recipe quickstart/eval  model.name_or_path=<out>/sft/final
    rl        d1rl train --recipe quickstart/train model.name_or_path=<out>/sft/final    (diffu-GRPO)
    eval_rl   d1rl eval  --recipe quickstart/eval  model.name_or_path=<out>/rl/final

Resumable: a stage whose output is complete (``results.json`` of an evaluation, ``final/`` of a training run) is
skipped, and an interrupted training stage resumes from its last checkpoint (the engine's ``trainer.resume=auto``).
The settings of a run are pinned in ``<out>/quickstart_plan.json``; re-running the same folder with other settings
is refused rather than mixing two experiments in one table.

At the end it prints the accuracy table (before SFT / after SFT / after RL on the same held-out problems, the first
100 of them before SFT, with the same greedy decoding), the RL reward curve summary, wall time per stage, and where
the plots are; everything is also written atomically to ``<out>/quickstart_results.json``.

``--quick`` is the shorter setting the test suite runs: the same recipes with far fewer steps and items; its
numbers only show that the pipeline works, not that RL helps.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from d1rl.atomic_io import atomic_write

PLAN_FILE = "quickstart_plan.json"
RESULTS_FILE = "quickstart_results.json"
STAGES = ("build", "eval_base", "sft", "eval_sft", "rl", "eval_rl")
EVAL_STAGES = {"eval_base": "before SFT", "eval_sft": "after SFT", "eval_rl": "after RL"}
TASK = "synthetic"

# --quick: the shorter setting of the test suite (same recipes; ours). Enough steps for every code path to run
# (SFT checkpoint + held-out loss, two RL rollouts with both inner iterations, three evaluations), nothing more.
QUICK_SFT_STEPS = 30
QUICK_SFT_ROWS = 512
QUICK_RL_STEPS = 4
QUICK_EVAL_ITEMS = 16
QUICK_VALIDATION_ITEMS = 8
#: Held-out problems for the evaluation before SFT: the untrained model solves none, so the first 100 of the
#: evaluation set say as much as all 500 and save ~25 s of the 10-minute budget (ours).
BASE_EVAL_ITEMS = 100


class QuickstartError(RuntimeError):
    """A stage failed or the output folder belongs to a run with other settings."""


@dataclass
class Plan:
    """The settings of one quickstart run (stored in ``quickstart_plan.json``; a re-run must match them).

    Attributes:
        seed: trainer seed of SFT and RL (``trainer.seed``); the task data and the evaluation set do not change.
        quick: the shorter test setting.
        sft_steps: SFT optimizer steps (None = the recipe's).
        rl_steps: diffu-GRPO optimizer steps (None = the recipe's).
        eval_items: held-out problems per evaluation (None = the recipe's ``limit``).
        rl: run the RL stage (``--no-rl`` stops after SFT).
        extra: additional overrides per command, {"sft"|"train"|"eval": [key=value, ...]}.
    """

    seed: int = 42
    quick: bool = False
    sft_steps: int | None = None
    rl_steps: int | None = None
    eval_items: int | None = None
    rl: bool = True
    extra: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.quick:
            self.sft_steps = self.sft_steps if self.sft_steps is not None else QUICK_SFT_STEPS
            self.rl_steps = self.rl_steps if self.rl_steps is not None else QUICK_RL_STEPS
            self.eval_items = self.eval_items if self.eval_items is not None else QUICK_EVAL_ITEMS
        for key in ("sft_steps", "rl_steps", "eval_items"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ValueError(f"--{key.replace('_', '-')} must be >= 1, got {value}")


# ------------------------------------------------------------------------------------------------------ stage args


def stage_overrides(plan: Plan, out: Path) -> dict[str, tuple[str, list[str]]]:
    """(command, argv) of every command stage: ``--recipe quickstart/<command>`` + this run's overrides."""
    ev = ["--recipe", "quickstart/eval"]
    base_items = BASE_EVAL_ITEMS if plan.eval_items is None else min(plan.eval_items, BASE_EVAL_ITEMS)
    ev_base = ev + [f"limit={base_items}"] + plan.extra.get("eval", [])
    if plan.eval_items is not None:
        ev.append(f"limit={plan.eval_items}")
    ev += plan.extra.get("eval", [])
    sft = ["--recipe", "quickstart/sft", f"output_dir={out / 'sft'}", f"trainer.seed={plan.seed}"]
    if plan.sft_steps is not None:
        sft.append(f"trainer.max_steps={plan.sft_steps}")
    if plan.quick:
        # fewer rows to tokenise; a checkpoint and a held-out evaluation still happen once
        sft += [f"data.max_rows={QUICK_SFT_ROWS}", "data.max_eval_rows=16", f"trainer.save_steps={QUICK_SFT_STEPS // 2}",
                f"trainer.eval_steps={QUICK_SFT_STEPS // 2}"]
    sft += plan.extra.get("sft", [])
    rl = ["--recipe", "quickstart/train", f"output_dir={out / 'rl'}", f"model.name_or_path={out / 'sft' / 'final'}",
          f"trainer.seed={plan.seed}"]
    if plan.rl_steps is not None:
        rl.append(f"trainer.max_steps={plan.rl_steps}")
    if plan.quick:
        rl += [f"validation.holdout_size={QUICK_VALIDATION_ITEMS}", f"trainer.eval_steps={QUICK_RL_STEPS // 2}",
               f"trainer.save_steps={QUICK_RL_STEPS // 2}"]
    rl += plan.extra.get("train", [])
    return {
        "eval_base": ("eval", ev_base + [f"output_dir={out / 'eval_base'}", "model.name_or_path=tiny"]),
        "sft": ("sft", sft),
        "eval_sft": ("eval", ev + [f"output_dir={out / 'eval_sft'}", f"model.name_or_path={out / 'sft' / 'final'}"]),
        "rl": ("train", rl),
        "eval_rl": ("eval", ev + [f"output_dir={out / 'eval_rl'}", f"model.name_or_path={out / 'rl' / 'final'}"]),
    }


def _command(name: str) -> Callable[[Sequence[str]], int]:
    if name == "eval":
        from d1rl.evaluation.commands import eval_main

        return eval_main
    if name == "sft":
        from d1rl.training.commands import sft_main

        return sft_main
    if name == "train":
        from d1rl.training.grpo_commands import train_main

        return train_main
    raise ValueError(name)


def stage_done(stage: str, out: Path) -> bool:
    """Whether ``stage``'s output is complete (written atomically by its command, so presence means done)."""
    if stage == "build":
        return False  # cheap: the cache check is the build
    if stage in EVAL_STAGES:
        return (out / stage / "results.json").is_file()
    return (out / stage / "final" / "config.json").is_file()


# ------------------------------------------------------------------------------------------------------ summaries


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Records of a JSONL file; a torn last line (a killed writer) is ignored."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def eval_summary(stage_dir: Path) -> dict[str, Any] | None:
    """Accuracy (robust grader), items, generation length and format rate of one quickstart evaluation."""
    results_path = stage_dir / "results.json"
    if not results_path.is_file():
        return None
    results = json.loads(results_path.read_text(encoding="utf-8"))
    rows = [r for r in results["results"] if r["task"] == TASK]
    if not rows:
        raise QuickstartError(f"{results_path}: no {TASK} results")
    row = min(rows, key=lambda r: int(r["gen_length"]))
    grader = "robust" if "robust" in row["metrics"] else sorted(row["metrics"])[0]
    metrics = row["metrics"][grader]
    summary = {
        "accuracy": float(metrics["accuracy"]),
        "correct": int(metrics["correct"]),
        "n": int(row["n"]),
        "gen_length": int(row["gen_length"]),
        "grader": grader,
        "results": str(results_path),
        "plot": str(stage_dir / "accuracy_vs_length.png") if (stage_dir / "accuracy_vs_length.png").is_file() else None,
    }
    summary["format_rate"] = _format_rate(stage_dir, int(row["gen_length"]))
    return summary


def _format_rate(stage_dir: Path, gen_length: int) -> float | None:
    """Share of completions with the task's format (``<reasoning>…</reasoning><answer>integer</answer>``)."""
    from d1rl.evaluation.records import read_records
    from d1rl.tasks.synthetic import arithmetic_format_reward

    texts = [r.get("completion", "") for k, r in read_records(stage_dir).items() if k.task == TASK and k.gen_length == gen_length]
    if not texts:
        return None
    return sum(1 for v in arithmetic_format_reward(completions=texts) if v > 0) / len(texts)


def reward_summary(metrics_path: Path, window: int = 10) -> dict[str, Any] | None:
    """Mean rollout reward of the first and last ``window`` rollout steps of a diffu-GRPO run (metrics.jsonl)."""
    rollouts: dict[int, float] = {}
    correct: dict[int, float] = {}
    for rec in read_jsonl(metrics_path):
        if "reward" in rec and isinstance(rec["reward"], (int, float)) and math.isfinite(rec["reward"]):
            step = int(rec.get("rollout_step", rec.get("step", len(rollouts))))
            rollouts[step] = float(rec["reward"])
            value = rec.get("rewards/arithmetic_correctness_reward")
            if isinstance(value, (int, float)) and math.isfinite(value):
                correct[step] = float(value)
    if not rollouts:
        return None
    steps = sorted(rollouts)
    w = min(window, max(1, len(steps) // 2))
    first, last = steps[:w], steps[-w:]
    out: dict[str, Any] = {
        "rollout_steps": len(steps),
        "window": w,
        "first_mean_reward": sum(rollouts[s] for s in first) / w,
        "last_mean_reward": sum(rollouts[s] for s in last) / w,
    }
    if correct:
        cs = sorted(correct)
        out["first_mean_correctness_reward"] = sum(correct[s] for s in cs[:w]) / len(cs[:w])
        out["last_mean_correctness_reward"] = sum(correct[s] for s in cs[-w:]) / len(cs[-w:])
    return out


# ------------------------------------------------------------------------------------------------------ plots


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, bbox_inches="tight"))


def _smooth(values: list[float], k: int) -> list[float]:
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= k:
            acc -= values[i - k]
        out.append(acc / min(i + 1, k))
    return out


def plot_sft_loss(metrics_path: Path, path: Path) -> Path | None:
    """Training loss (moving average) and held-out loss against the SFT step."""
    recs = read_jsonl(metrics_path)
    train = [(r["step"], r["loss"]) for r in recs if "loss" in r and math.isfinite(r["loss"])]
    held = [(r["step"], r["eval/loss"]) for r in recs if "eval/loss" in r]
    if not train and not held:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    if train:
        xs, ys = zip(*train)
        ax.plot(xs, _smooth(list(ys), max(1, len(ys) // 40)), label="train loss (moving avg)")
    if held:
        xs, ys = zip(*held)
        ax.plot(xs, ys, "o-", label="held-out loss")
    ax.set_xlabel("SFT step")
    ax.set_ylabel("masked-diffusion loss")
    ax.set_yscale("log")
    ax.set_title("quickstart: SFT")
    ax.legend()
    ax.grid(alpha=0.3)
    try:
        return _save(fig, path)
    finally:
        plt.close(fig)


def plot_rl_reward(metrics_path: Path, path: Path) -> Path | None:
    """Mean rollout reward (and its correctness part) against the rollout step; held-out accuracy if logged."""
    recs = read_jsonl(metrics_path)
    rollouts = [r for r in recs if isinstance(r.get("reward"), (int, float)) and math.isfinite(r["reward"])]
    val = [(r["step"], r["val/accuracy"]) for r in recs if "val/accuracy" in r]
    if not rollouts:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    xs = [int(r.get("rollout_step", i)) for i, r in enumerate(rollouts)]
    ys = [float(r["reward"]) for r in rollouts]
    k = max(1, len(ys) // 10)
    ax.plot(xs, ys, alpha=0.3, color="C0")
    ax.plot(xs, _smooth(ys, k), color="C0", label=f"mean reward (moving avg {k})")
    cs = [r.get("rewards/arithmetic_correctness_reward") for r in rollouts]
    if all(isinstance(c, (int, float)) for c in cs):
        ax.plot(xs, _smooth([float(c) for c in cs], k), color="C1", label="correctness part")
    ax.set_xlabel("rollout step")
    ax.set_ylabel("reward")
    ax.grid(alpha=0.3)
    if val:
        per_rollout = max(1, round(max(r["step"] for r in rollouts) / max(1, max(xs) + 1))) if xs else 1
        ax2 = ax.twinx()
        ax2.plot([s / per_rollout for s, _ in val], [100 * a for _, a in val], "s--", color="C2",
                 label="held-out accuracy % (greedy)")
        ax2.set_ylabel("accuracy %")
        ax2.legend(loc="lower right")
    ax.legend(loc="upper left")
    ax.set_title("quickstart: diffu-GRPO")
    try:
        return _save(fig, path)
    finally:
        plt.close(fig)


def plot_accuracy(evals: dict[str, dict[str, Any] | None], path: Path) -> Path | None:
    """Bar chart: accuracy before SFT, after SFT, after RL."""
    items = [(EVAL_STAGES[s], 100 * e["accuracy"]) for s, e in evals.items() if e is not None]
    if not items:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.4))
    labels, values = zip(*items)
    bars = ax.bar(labels, values, color=["C7", "C0", "C1"][: len(values)])
    for b, v in zip(bars, values):
        ax.text(b.get_x() + b.get_width() / 2, v + 1, f"{v:.1f}", ha="center")
    n = next(e["n"] for e in evals.values() if e is not None)
    ax.set_ylabel(f"accuracy % ({n} held-out problems)")
    ax.set_ylim(0, max(100.0, max(values) + 8))
    ax.set_title("quickstart: greedy accuracy")
    try:
        return _save(fig, path)
    finally:
        plt.close(fig)


# ------------------------------------------------------------------------------------------------------ report


def format_report(results: dict[str, Any]) -> str:
    """The table printed at the end (also reproducible from quickstart_results.json)."""
    lines = []
    evals = results["evaluations"]
    some = next((e for e in evals.values() if e), None)
    head = "d1rl quickstart: tiny LLaDA on synthetic arithmetic"
    if some:
        head += f" ({some['n']} held-out problems, greedy, {some['gen_length']} tokens, grader {some['grader']})"
    lines += [head, ""]
    lines.append(f"{'stage':<14}{'accuracy':>10}{'correct':>10}{'format ok':>11}")
    lines.append("-" * 45)
    for stage, label in EVAL_STAGES.items():
        e = evals.get(stage)
        if e is None:
            lines.append(f"{label:<14}{'-':>10}{'-':>10}{'-':>11}")
            continue
        fmt = f"{100 * e['format_rate']:.1f}%" if e.get("format_rate") is not None else "-"
        lines.append(f"{label:<14}{100 * e['accuracy']:>9.1f}%{e['correct']:>6}/{e['n']:<3}{fmt:>11}")
    sft, rl = evals.get("eval_sft"), evals.get("eval_rl")
    if sft and rl:
        delta = 100 * (rl["accuracy"] - sft["accuracy"])
        lines.append(f"RL vs SFT: {delta:+.1f} points")
    reward = results.get("reward_curve")
    if reward:
        lines.append(
            f"RL reward (max 2.5), mean over the first / last {reward['window']} of {reward['rollout_steps']} rollout "
            f"steps: {reward['first_mean_reward']:.3f} -> {reward['last_mean_reward']:.3f}"
        )
    lines.append("")
    times = results["wall_seconds"]
    parts = [f"{s} {times[s]:.0f}s" + (" (earlier run)" if s in results.get("skipped", []) else "")
             for s in STAGES if s in times]
    lines.append("wall time: " + ", ".join(parts) + f"; total {sum(times.values()):.0f}s")
    load = results.get("load_average")
    if load:
        lines.append(f"load average (1 min) at start / end: {load['start'][0]:.2f} / {load['end'][0]:.2f} on "
                     f"{results.get('cpu_count')} CPUs, {results.get('torch_threads')} torch threads")
    lines.append("plots:")
    for p in results["plots"]:
        lines.append(f"  {p}")
    lines.append(f"results: {results['results_file']}")
    return "\n".join(lines)


def _load() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover - not on every platform
        return None


def _write_json_atomic(path: Path, obj: Any) -> None:
    from d1rl.evaluation.results import write_json_atomic

    write_json_atomic(path, obj)


def check_plan(out: Path, plan: Plan) -> None:
    """Pin the settings of ``out`` on first use; refuse a re-run with other settings."""
    path = out / PLAN_FILE
    mine = asdict(plan)
    if path.is_file():
        theirs = json.loads(path.read_text(encoding="utf-8"))
        diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        if diff:
            detail = ", ".join(f"{k}: {theirs.get(k)!r} there, {mine.get(k)!r} now" for k in diff)
            raise QuickstartError(
                f"{out} holds a quickstart run with other settings ({detail}); use another --output-dir "
                "or delete that folder"
            )
        return
    out.mkdir(parents=True, exist_ok=True)
    _write_json_atomic(path, mine)


# ------------------------------------------------------------------------------------------------------ main


def run_quickstart(out: Path, plan: Plan, *, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or resume) every stage and return the results dict (also written to ``<out>/quickstart_results.json``)."""
    import torch

    out = out.resolve()
    check_plan(out, plan)
    previous = {}
    if (out / RESULTS_FILE).is_file():
        try:
            previous = json.loads((out / RESULTS_FILE).read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            previous = {}
    args = stage_overrides(plan, out)
    stages = [s for s in STAGES if plan.rl or s not in ("rl", "eval_rl")]
    wall: dict[str, float] = {}
    skipped: list[str] = []
    load_start = _load()
    for i, stage in enumerate(stages, 1):
        if stage_done(stage, out):
            wall[stage] = float(previous.get("wall_seconds", {}).get(stage, 0.0))
            skipped.append(stage)
            log(f"\n== [{i}/{len(stages)}] {stage}: already done in {out / stage}, skipped")
            continue
        t0 = time.perf_counter()
        if stage == "build":
            from d1rl.models import tiny_path

            log(f"\n== [{i}/{len(stages)}] build: tiny LLaDA + tokenizer")
            log(f"   {tiny_path()}")
        else:
            command, argv = args[stage]
            log(f"\n== [{i}/{len(stages)}] {stage}: d1rl {command} {' '.join(argv)}")
            try:
                code = _command(command)(argv)
            except SystemExit as err:  # Hydra reports config errors by exiting
                code = err.code if isinstance(err.code, int) else 1
            if code:
                raise QuickstartError(f"stage {stage} (d1rl {command}) failed with exit code {code}")
            if not stage_done(stage, out):
                raise QuickstartError(f"stage {stage} finished but {out / stage} is not complete")
        wall[stage] = time.perf_counter() - t0
        log(f"   {stage} took {wall[stage]:.1f}s (load average {_load()})")

    evals = {s: eval_summary(out / s) for s in EVAL_STAGES if s in stages}
    plots_dir = out / "plots"
    plots = [
        plot_accuracy(evals, plots_dir / "accuracy.png"),
        plot_sft_loss(out / "sft" / "metrics.jsonl", plots_dir / "sft_loss.png"),
        plot_rl_reward(out / "rl" / "metrics.jsonl", plots_dir / "rl_reward.png") if plan.rl else None,
        *[Path(e["plot"]) for e in evals.values() if e and e.get("plot")],
    ]
    results = {
        "plan": asdict(plan),
        "output_dir": str(out),
        "evaluations": evals,
        "accuracy": {EVAL_STAGES[s]: (e["accuracy"] if e else None) for s, e in evals.items()},
        "rl_minus_sft": (evals["eval_rl"]["accuracy"] - evals["eval_sft"]["accuracy"])
        if evals.get("eval_rl") and evals.get("eval_sft") else None,
        "reward_curve": reward_summary(out / "rl" / "metrics.jsonl") if plan.rl else None,
        "wall_seconds": {k: round(v, 2) for k, v in wall.items()},
        "skipped": skipped,
        "load_average": {"start": load_start, "end": _load()} if load_start else None,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "plots": [str(p) for p in plots if p is not None],
        "commands": {s: f"d1rl {c} {' '.join(a)}" for s, (c, a) in args.items() if s in stages},
        "results_file": str(out / RESULTS_FILE),
    }
    try:
        from d1rl.evaluation.provenance import code_version

        results["code_version"] = code_version()
    except Exception:  # pragma: no cover - provenance is best effort
        pass
    _write_json_atomic(out / RESULTS_FILE, results)
    return results


#: Most threads ``--threads auto`` picks: the tiny model's matrices are too small to gain from more.
MAX_AUTO_THREADS = 4


def available_cpus() -> int:
    """The cores this process may run on (its affinity mask where the OS has one, else every core)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def busy_cores(interval: float = 0.5) -> float | None:
    """How many cores other processes keep busy now: the non-idle share of /proc/stat over ``interval`` seconds.

    Why not the load average: it lags by about a minute, so right after another job ends it still reads busy (and
    it counts processes waiting on disk). None where /proc/stat does not exist (not Linux).
    """

    def snapshot() -> tuple[int, int] | None:
        try:
            with open("/proc/stat") as f:
                fields = [int(x) for x in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields), idle

    first = snapshot()
    if first is None:
        return None
    time.sleep(interval)
    second = snapshot()
    if second is None or second[0] == first[0]:
        return None
    total, idle = second[0] - first[0], second[1] - first[1]
    return available_cpus() * (1.0 - idle / total)


def choose_threads(spec: str | int, cpus: int | None = None, busy: float | None = None) -> tuple[int, str]:
    """The torch thread count for ``--threads`` (a number or ``auto``) and a short reason to print.

    Why not torch's default (every core): on a 2-core machine with any other busy process, two OpenMP threads
    spin-wait on each other and the quickstart ran 8-13x slower than with one (measured). Idle, two threads are
    1.7x faster than one (SFT 0.060 against 0.103 s/step). So ``auto`` takes the cores that other processes leave
    idle (:func:`busy_cores`, else the 1-minute load average): 2 on an idle 2-core machine, 1 while another job
    keeps a core busy; never more than :data:`MAX_AUTO_THREADS`.
    """
    if str(spec) != "auto":
        try:
            n = int(spec)
        except ValueError:
            raise ValueError(f"--threads must be a number or 'auto', got {spec!r}") from None
        if n < 1:
            raise ValueError(f"--threads must be >= 1, got {n}")
        return n, "--threads"
    if cpus is None:
        cpus = available_cpus()
    source = "busy now"
    if busy is None:
        busy = busy_cores()
    if busy is None:
        busy, source = (os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0), "1-min load average"
    n = max(1, min(MAX_AUTO_THREADS, cpus - int(round(busy))))
    return n, f"auto: {cpus} CPUs, {busy:.2f} of them {source}"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="d1rl quickstart",
        description="Tiny LLaDA on synthetic arithmetic, CPU, offline: evaluate, SFT, evaluate, diffu-GRPO, evaluate; "
        "print the accuracy table. Re-running the same --output-dir skips finished stages.",
    )
    p.add_argument("--output-dir", default="runs/quickstart", help="run folder (default: runs/quickstart)")
    p.add_argument("--quick", action="store_true", help="the short test setting (pipeline check, not a result)")
    p.add_argument("--seed", type=int, default=42, help="trainer seed of SFT and RL (default 42)")
    p.add_argument("--sft-steps", type=int, default=None, help="override the SFT recipe's trainer.max_steps")
    p.add_argument("--rl-steps", type=int, default=None, help="override the RL recipe's trainer.max_steps")
    p.add_argument("--eval-items", type=int, default=None, help="override the eval recipe's limit (held-out items)")
    p.add_argument("--no-rl", action="store_true", help="stop after SFT and its evaluation")
    p.add_argument("--threads", default="auto",
                   help="torch CPU threads: a number, or 'auto' (default): the cores other processes leave idle right "
                   "now, at least 1 and at most 4")
    for cmd in ("sft", "train", "eval"):
        p.add_argument(f"--{cmd}-override", action="append", default=[], metavar="KEY=VALUE",
                       help=f"extra Hydra override for every `d1rl {cmd}` stage (repeatable)")
    return p


def quickstart_main(argv: Sequence[str]) -> int:
    """``d1rl quickstart [--output-dir DIR] [--quick] [--seed N] ...``; returns the exit code."""
    args = build_parser().parse_args(list(argv))
    extra = {k: v for k, v in (("sft", args.sft_override), ("train", args.train_override), ("eval", args.eval_override)) if v}
    try:
        plan = Plan(seed=args.seed, quick=args.quick, sft_steps=args.sft_steps, rl_steps=args.rl_steps,
                    eval_items=args.eval_items, rl=not args.no_rl, extra=extra)
    except ValueError as err:
        print(f"d1rl quickstart: {err}", file=sys.stderr)
        return 2
    try:
        threads, why = choose_threads(args.threads)
    except ValueError as err:
        print(f"d1rl quickstart: {err}", file=sys.stderr)
        return 2
    import torch

    torch.set_num_threads(threads)
    print(f"d1rl quickstart: {threads} torch thread(s) ({why})", flush=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local; never wait for a network
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    try:
        results = run_quickstart(Path(args.output_dir), plan)
    except QuickstartError as err:
        print(f"\nd1rl quickstart: {err}", file=sys.stderr)
        return 1
    print("\n" + format_report(results), flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(quickstart_main(sys.argv[1:]))
