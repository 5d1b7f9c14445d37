"""Evaluate metric modules shipped with the package, so metrics load without the Hub.

`evaluate.load("accuracy")` downloads the module script from the Hub and fails offline. Each
directory here is an evaluate module script (`<name>/<name>.py`, same interface and output
keys as the Hub module of that name); `evaluate.load` accepts its local path and copies it
into the local modules cache instead of downloading anything.
"""

from __future__ import annotations

from pathlib import Path

METRICS_DIR = Path(__file__).resolve().parent


def available_metrics() -> list[str]:
    """Names of the metric modules shipped here."""
    return sorted(path.parent.name for path in METRICS_DIR.glob("*/*.py") if path.stem == path.parent.name)


def load_metric(name: str, **kwargs):
    """`evaluate.load` of the local metric module `name` (e.g. "accuracy"); kwargs go to evaluate.load."""
    if name not in available_metrics():
        raise ValueError(f"Unknown metric {name!r}; available: {', '.join(available_metrics())}")
    import evaluate  # imported here: it is slow to import and only needed when a metric is used

    return evaluate.load(str(METRICS_DIR / name), **kwargs)
