"""The fine-tuning metrics (GLUE's: accuracy, F1, Matthews correlation, Pearson and Spearman correlation) as ONE local
`evaluate` module script, so that they load offline; `evaluate.load(<this folder>, config_name="accuracy")` picks one.
Each has the interface and output keys of the Hub module of the same name (`evaluate-metric/accuracy`, ...)."""

from typing import Callable, NamedTuple

import datasets
import evaluate
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

_CITATION = (
    "Pedregosa et al., Scikit-learn: Machine Learning in Python, JMLR 12, 2011. Virtanen et al., SciPy 1.0: "
    "Fundamental Algorithms for Scientific Computing in Python, Nature Methods 2020."
)


def _accuracy(predictions, references, normalize=True, sample_weight=None):
    return {"accuracy": float(accuracy_score(references, predictions, normalize=normalize, sample_weight=sample_weight))}


def _f1(predictions, references, labels=None, pos_label=1, average="binary", sample_weight=None):
    score = f1_score(references, predictions, labels=labels, pos_label=pos_label, average=average,
                     sample_weight=sample_weight)  # fmt: skip
    return {"f1": score.tolist() if average is None else float(score)}


def _matthews_correlation(predictions, references, sample_weight=None):
    return {"matthews_correlation": float(matthews_corrcoef(references, predictions, sample_weight=sample_weight))}


def _correlation(name: str, function: Callable, pvalue_key: str):
    def compute(predictions, references, return_pvalue=False):
        statistic, pvalue = function(references, predictions)
        return {name: float(statistic), **({pvalue_key: float(pvalue)} if return_pvalue else {})}

    return compute


class _Score(NamedTuple):
    compute: Callable[..., dict]
    value_type: str  # of predictions and references
    description: str
    kwargs_description: str


LABELS = """
Args:
    predictions (list of int): predicted labels.
    references (list of int): ground-truth labels.
"""
SCORES = """
Args:
    predictions (list of float): predicted scores.
    references (list of float): reference scores.
    return_pvalue (bool): also return the two-sided p-value (default False).
"""
SCORE_TABLE = {
    "accuracy": _Score(
        _accuracy, "int32", "Accuracy: the proportion of predictions equal to their reference.",
        LABELS + "    normalize (bool): the fraction (default) or the number of correct predictions.\n"
        "    sample_weight (list of float): optional per-example weights.\nReturns: {'accuracy': float}",
    ),
    "f1": _Score(
        _f1, "int32", "F1: the harmonic mean of precision and recall, binary or averaged over classes.",
        LABELS + "    labels (list of int): the classes to average over (default: all that occur).\n"
        "    pos_label (int): the positive class when average='binary' (default 1).\n"
        "    average (str): 'binary' (default), 'micro', 'macro', 'weighted', 'samples' or None (one per class).\n"
        "    sample_weight (list of float): optional per-example weights.\nReturns: {'f1': float or list of floats}",
    ),
    "matthews_correlation": _Score(
        _matthews_correlation, "int32",
        "Matthews correlation coefficient: a balanced measure of classification quality in [-1, 1] (GLUE's CoLA).",
        LABELS + "    sample_weight (list of float): optional per-example weights.\n"
        "Returns: {'matthews_correlation': float}",
    ),
    "pearsonr": _Score(
        _correlation("pearsonr", pearsonr, "p-value"), "float",
        "Pearson correlation coefficient between predicted and reference scores (e.g. GLUE STS-B).",
        SCORES + "Returns: {'pearsonr': float} (and 'p-value': float if return_pvalue)",
    ),
    "spearmanr": _Score(
        _correlation("spearmanr", spearmanr, "spearmanr_pvalue"), "float",
        "Spearman rank correlation coefficient between predicted and reference scores (e.g. GLUE STS-B).",
        SCORES + "Returns: {'spearmanr': float} (and 'spearmanr_pvalue': float if return_pvalue)",
    ),
}  # fmt: skip


class Scores(evaluate.Metric):
    def _info(self):
        if self.config_name not in SCORE_TABLE:
            raise KeyError(f"Unknown metric {self.config_name!r}; available: {', '.join(sorted(SCORE_TABLE))}")
        score = SCORE_TABLE[self.config_name]
        value = datasets.Value(score.value_type)
        return evaluate.MetricInfo(
            description=score.description,
            citation=_CITATION,
            inputs_description=score.kwargs_description,
            features=datasets.Features({"predictions": value, "references": value}),
        )

    def _compute(self, predictions, references, **kwargs):
        return SCORE_TABLE[self.config_name].compute(predictions, references, **kwargs)
