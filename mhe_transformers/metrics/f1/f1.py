"""F1 score, shipped locally so it loads offline (same interface as the Hub's `evaluate-metric/f1`)."""

import datasets
import evaluate
from sklearn.metrics import f1_score

_DESCRIPTION = "F1: the harmonic mean of precision and recall, binary or averaged over classes."
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted labels.
    references (list of int): ground-truth labels.
    labels (list of int): the classes to include when averaging (default: all that occur).
    pos_label (int): the positive class when average="binary" (default 1).
    average (str): "binary" (default), "micro", "macro", "weighted", "samples" or None (one score per class).
    sample_weight (list of float): optional per-example weights.
Returns:
    {"f1": float, or a list of floats per class when average=None}
"""
_CITATION = "Pedregosa et al., Scikit-learn: Machine Learning in Python, JMLR 12, 2011."


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class F1(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int32"), "references": datasets.Value("int32")}),
        )

    def _compute(self, predictions, references, labels=None, pos_label=1, average="binary", sample_weight=None):
        score = f1_score(
            references, predictions, labels=labels, pos_label=pos_label, average=average, sample_weight=sample_weight
        )
        return {"f1": score.tolist() if average is None else float(score)}
