"""Statistics of the attention comparison: the Performance Retention Ratio (PRR) of one arm against a reference arm,
its interval by a bootstrap over seeds and items, paired differences, and Holm's adjustment.

PRR = the arm's mean score / the reference's mean score (Xue & Aletras 2023), or the reference's / the arm's for a
lower-is-better metric (a loss, a perplexity), so that PRR < 1 always means worse than the reference. The mean is
over the seeds both arms have (paired by seed: the same seed gives the same data order and the same initialisation
of the parts the two models share); an endpoint over several tasks averages the task scores of a seed first.

The interval is for that same quantity, the ratio of mean scores: each bootstrap replicate draws the seeds with
replacement, and within each drawn seed the held-out items of every task with replacement, the same seeds and items
for both arms (paired), and recomputes the ratio. Items are resampled in `ITEM_GROUPS` fixed random groups (sums per
group): for a score that is a ratio of sums this has the variance of resampling single items, and keeps `make
report` fast. A task without per-item results is resampled over seeds only. The interval is the percentile
interval; the p-value of "PRR = 1" (or "difference = 0") is the two-sided bootstrap p-value. Everything is seeded:
the same records give the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

LOWER_IS_BETTER = ("loss", "perplexity")  # metrics whose smaller values are better, by the last part of the name
ITEM_GROUPS = 200
BOOTSTRAP_REPLICATES = 2000
BOOTSTRAP_SEED = 20231007  # any fixed number: the report must not change between two builds
CONFIDENCE = 0.95


def lower_is_better(metric: str) -> bool:
    """Whether smaller values of `metric` are better: a loss or a perplexity (eval_loss, test_loss, perplexity)."""
    return metric.rsplit("_", 1)[-1] in LOWER_IS_BETTER


def retention(value: float, reference: float, metric: str) -> float:
    """The PRR of `value` against `reference`: value / reference, or reference / value for a lower-is-better
    metric, so that PRR < 1 always means worse than the reference. NaN when the divisor is 0."""
    numerator, denominator = (reference, value) if lower_is_better(metric) else (value, reference)
    return numerator / denominator if denominator else math.nan


def holm(p_values: Mapping[str, float]) -> dict[str, float]:
    """Holm's step-down adjustment: the k-th smallest of m p-values becomes max over j <= k of (m - j + 1) p_(j),
    capped at 1. Controls the family-wise error rate over the endpoints given (and only those)."""
    ordered = sorted(p_values.items(), key=lambda item: (item[1], item[0]))
    adjusted, running = {}, 0.0
    for rank, (name, p) in enumerate(ordered):
        running = max(running, min(1.0, (len(ordered) - rank) * p))
        adjusted[name] = running
    return adjusted


def _score(numerator: np.ndarray, count: np.ndarray, metric: str) -> np.ndarray:
    """A task's score from summed item results: accuracy = correct / predicted, loss = summed loss / predicted,
    perplexity = exp(loss)."""
    mean = numerator / count
    return np.exp(mean) if metric.endswith("perplexity") else mean


def _grouped(items: Mapping[str, np.ndarray] | None, value: float, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """(numerator, count) sums of one task and seed in ITEM_GROUPS fixed random groups; (value, 1) without items."""
    if items is None:
        raw = math.log(value) if metric.endswith("perplexity") else value
        return np.array([raw]), np.array([1.0])
    numerator = items["correct"] if metric.endswith("accuracy") else items["loss"]
    n = len(numerator)
    groups = min(ITEM_GROUPS, n)
    group_of = np.random.default_rng(n).permutation(n) % groups  # the same partition for every arm of n items
    return np.bincount(group_of, numerator, groups), np.bincount(group_of, items["count"], groups)


def _arrays(arm: Mapping, reference: Mapping, tasks: Sequence[str], seeds: Sequence[int], metric: str):
    """Per task: (arm numerator, arm count, reference numerator, reference count), each (seeds, groups); a task
    whose items are missing for either arm, or differ in number, falls back to scores without items."""
    result = []
    for task in tasks:
        rows = []
        for seed in seeds:
            own, ref = arm[task][seed], reference[task][seed]
            paired = own.get("items") is not None and ref.get("items") is not None
            if paired and len(own["items"]["count"]) != len(ref["items"]["count"]):
                paired = False
            rows.append((*_grouped(own["items"] if paired else None, own["value"], metric),
                         *_grouped(ref["items"] if paired else None, ref["value"], metric)))  # fmt: skip
        width = max(len(row[0]) for row in rows)
        if any(len(row[0]) != width for row in rows):  # some seeds without items: no item resampling for this task
            rows = [(*_grouped(None, arm[task][s]["value"], metric), *_grouped(None, reference[task][s]["value"], metric))
                    for s in seeds]  # fmt: skip
        result.append(tuple(np.stack([row[i] for row in rows]) for i in range(4)))
    return result


def _endpoint(arrays, metric: str, seed_index: np.ndarray, group_index: list[np.ndarray] | None):
    """Mean over (drawn) seeds of the task-averaged score, for the arm and the reference. `seed_index`: (B, S);
    `group_index[t]`: (B, S, G_t) or None (no item resampling: the point estimate)."""
    arm_total, ref_total = 0.0, 0.0
    for t, (own_num, own_count, ref_num, ref_count) in enumerate(arrays):
        if group_index is None:
            picks = lambda a: a.sum(axis=1)[seed_index]  # noqa: E731
        else:
            picks = lambda a: np.take_along_axis(a[seed_index], group_index[t], axis=2).sum(axis=2)  # noqa: E731
        arm_total = arm_total + _score(picks(own_num), picks(own_count), metric)
        ref_total = ref_total + _score(picks(ref_num), picks(ref_count), metric)
    return (arm_total / len(arrays)).mean(axis=-1), (ref_total / len(arrays)).mean(axis=-1)


def _interval(draws: np.ndarray, estimate: float, null: float) -> dict[str, float]:
    draws = draws[np.isfinite(draws)]
    tail = (1 - CONFIDENCE) / 2
    low, high = np.quantile(draws, [tail, 1 - tail]) if len(draws) else (math.nan, math.nan)
    below, above = (np.sum(draws <= null) + 1) / (len(draws) + 1), (np.sum(draws >= null) + 1) / (len(draws) + 1)
    return {"estimate": estimate, "low": float(low), "high": float(high), "p": float(min(1.0, 2 * min(below, above)))}


def compare_arms(
    arm: Mapping[str, Mapping[int, dict]],
    reference: Mapping[str, Mapping[int, dict]],
    tasks: Sequence[str],
    metric: str = "accuracy",
    replicates: int = BOOTSTRAP_REPLICATES,
) -> dict[str, Any] | None:
    """PRR and difference of `arm` against `reference` over `tasks` (averaged per seed).

    `arm[task][seed]` = {"value": score, "items": {"correct", "count", "loss"} arrays or None}. Uses the seeds both
    arms have for every task; None when there are none. Returns the means, "prr" and "difference" (each
    {"estimate", "low", "high", "p"}), the per-seed PRRs (paired by seed) and the seeds used."""
    seeds = sorted(set.intersection(*(set(side[task]) for side in (arm, reference) for task in tasks)))
    if not seeds:
        return None
    arrays = _arrays(arm, reference, tasks, seeds, metric)
    identity = np.arange(len(seeds))[None, :]
    arm_mean, ref_mean = (float(x[0]) for x in _endpoint(arrays, metric, identity, None))
    per_seed = [retention(*(float(x[0]) for x in _endpoint(arrays, metric, np.array([[i]]), None)), metric)
                for i in range(len(seeds))]  # fmt: skip
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    seed_index = rng.integers(0, len(seeds), size=(replicates, len(seeds)))
    group_index = [rng.integers(0, a[0].shape[1], size=(replicates, len(seeds), a[0].shape[1])) for a in arrays]
    arm_draws, ref_draws = _endpoint(arrays, metric, seed_index, group_index)
    with np.errstate(divide="ignore", invalid="ignore"):
        prr_draws = ref_draws / arm_draws if lower_is_better(metric) else arm_draws / ref_draws
    return {
        "seeds": seeds,
        "arm_mean": arm_mean,
        "reference_mean": ref_mean,
        "prr": _interval(prr_draws, retention(arm_mean, ref_mean, metric), 1.0),
        "difference": _interval(arm_draws - ref_draws, arm_mean - ref_mean, 0.0),
        "per_seed_prr": per_seed,
    }


def interval_text(interval: Mapping[str, float], digits: int = 3) -> str:
    """"0.951 [0.926, 0.976]"."""
    return f"{interval['estimate']:.{digits}f} [{interval['low']:.{digits}f}, {interval['high']:.{digits}f}]"


def selection_score(record: Mapping[str, Any]) -> float:
    """What the design stage maximises on validation: the mean of the tasks' validation scores and the held-out
    masked-LM validation accuracy (one number per run; test is never used)."""
    values = [task["validation"] for task in record["metrics"].values()]
    values.append(record["pretraining"]["validation"]["accuracy"])
    return float(np.mean(values))


def best_on_validation(records: Sequence[Mapping[str, Any]], option: str, among: Sequence | None = None) -> tuple[Any, dict]:
    """The value of `option` (a record field, e.g. "position" or "learning_rate") with the highest mean
    `selection_score` over its records, and the mean per value (ties: the first value in sorted order)."""
    by_value: dict = {}
    for record in records:
        if among is None or record[option] in among:
            by_value.setdefault(record[option], []).append(selection_score(record))
    if not by_value:
        raise ValueError(f"No records to choose {option} from.")
    means = {value: float(np.mean(scores)) for value, scores in sorted(by_value.items(), key=lambda item: str(item[0]))}
    return max(means, key=lambda value: means[value]), means


__all__ = [
    "best_on_validation", "compare_arms", "holm", "interval_text", "lower_is_better", "retention",
    "selection_score",
]
