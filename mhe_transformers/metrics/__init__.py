"""Evaluate metric modules shipped with the package, so metrics load without the Hub.

`evaluate.load("accuracy")` downloads the module script from the Hub and fails offline. `scores/scores.py` is one
local evaluate module script holding every metric the fine-tuning pipelines use (same interface and output keys as the
Hub module of each name); `evaluate.load` accepts its local path and copies it into the local modules cache instead of
downloading anything, and `config_name` picks the metric.
"""

from __future__ import annotations

from pathlib import Path

SCORES_MODULE = Path(__file__).resolve().parent / "scores"


def available_metrics() -> list[str]:
    """Names of the metrics shipped here."""
    from .scores.scores import SCORE_TABLE  # imported here: it imports evaluate, scikit-learn and SciPy

    return sorted(SCORE_TABLE)


def load_metric(name: str, **kwargs):
    """`evaluate.load` of the local metric `name` (e.g. "accuracy"); kwargs go to evaluate.load."""
    if name not in available_metrics():
        raise ValueError(f"Unknown metric {name!r}; available: {', '.join(available_metrics())}")
    import evaluate  # imported here: it is slow to import and only needed when a metric is used

    return evaluate.load(str(SCORES_MODULE), config_name=name, **kwargs)
