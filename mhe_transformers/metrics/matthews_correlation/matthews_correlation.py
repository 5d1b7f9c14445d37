"""Matthews correlation coefficient, shipped locally so it loads offline (same interface as the Hub's
`evaluate-metric/matthews_correlation`; the GLUE CoLA metric)."""

import datasets
import evaluate
from sklearn.metrics import matthews_corrcoef

_DESCRIPTION = "Matthews correlation coefficient: a balanced measure of classification quality in [-1, 1]."
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted labels.
    references (list of int): ground-truth labels.
    sample_weight (list of float): optional per-example weights.
Returns:
    {"matthews_correlation": float}
"""
_CITATION = "Matthews, B. W., Biochimica et Biophysica Acta 405(2), 1975."


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MatthewsCorrelation(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int32"), "references": datasets.Value("int32")}),
        )

    def _compute(self, predictions, references, sample_weight=None):
        return {"matthews_correlation": float(matthews_corrcoef(references, predictions, sample_weight=sample_weight))}
