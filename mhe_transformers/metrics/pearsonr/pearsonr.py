"""Pearson correlation, shipped locally so it loads offline (same interface as the Hub's `evaluate-metric/pearsonr`)."""

import datasets
import evaluate
from scipy.stats import pearsonr

_DESCRIPTION = "Pearson correlation coefficient between predicted and reference scores (e.g. GLUE STS-B)."
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of float): predicted scores.
    references (list of float): reference scores.
    return_pvalue (bool): also return the two-sided p-value (default False).
Returns:
    {"pearsonr": float} (and "p-value": float if return_pvalue)
"""
_CITATION = "Virtanen et al., SciPy 1.0: Fundamental Algorithms for Scientific Computing in Python, Nature Methods 2020."


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Pearsonr(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("float"), "references": datasets.Value("float")}),
        )

    def _compute(self, predictions, references, return_pvalue=False):
        statistic, pvalue = pearsonr(references, predictions)
        result = {"pearsonr": float(statistic)}
        if return_pvalue:
            result["p-value"] = float(pvalue)
        return result
