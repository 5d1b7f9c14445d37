"""The local evaluate metric modules load without the Hub and agree with scikit-learn / SciPy."""

import pytest
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from mhe_transformers.metrics import available_metrics, load_metric

LABELS = [0, 1, 1, 0, 1, 0, 1, 1]
PREDICTIONS = [0, 1, 0, 0, 1, 1, 1, 1]
MULTI_LABELS = [0, 1, 2, 2, 1, 0, 2, 1]
MULTI_PREDICTIONS = [0, 2, 2, 2, 1, 0, 1, 1]
SCORES = [0.1, 2.5, 3.0, 4.2, 1.1, 0.7]
PREDICTED_SCORES = [0.3, 2.0, 3.5, 3.9, 1.5, 0.2]


def test_available_metrics():
    assert available_metrics() == ["accuracy", "f1", "matthews_correlation", "pearsonr", "spearmanr"]


def test_accuracy():
    result = load_metric("accuracy").compute(predictions=PREDICTIONS, references=LABELS)
    assert result == {"accuracy": pytest.approx(accuracy_score(LABELS, PREDICTIONS))}


def test_f1_binary_and_averaged():
    f1 = load_metric("f1")
    assert f1.compute(predictions=PREDICTIONS, references=LABELS)["f1"] == pytest.approx(f1_score(LABELS, PREDICTIONS))
    for average in ("macro", "micro", "weighted"):
        result = f1.compute(predictions=MULTI_PREDICTIONS, references=MULTI_LABELS, average=average)
        assert result["f1"] == pytest.approx(f1_score(MULTI_LABELS, MULTI_PREDICTIONS, average=average))
    per_class = f1.compute(predictions=MULTI_PREDICTIONS, references=MULTI_LABELS, average=None)["f1"]
    assert per_class == pytest.approx(list(f1_score(MULTI_LABELS, MULTI_PREDICTIONS, average=None)))


def test_matthews_correlation():
    result = load_metric("matthews_correlation").compute(predictions=MULTI_PREDICTIONS, references=MULTI_LABELS)
    assert result["matthews_correlation"] == pytest.approx(matthews_corrcoef(MULTI_LABELS, MULTI_PREDICTIONS))


def test_correlations():
    pearson = load_metric("pearsonr").compute(predictions=PREDICTED_SCORES, references=SCORES, return_pvalue=True)
    expected = pearsonr(SCORES, PREDICTED_SCORES)
    assert pearson == {"pearsonr": pytest.approx(expected[0]), "p-value": pytest.approx(expected[1])}
    spearman = load_metric("spearmanr").compute(predictions=PREDICTED_SCORES, references=SCORES)
    assert spearman == {"spearmanr": pytest.approx(spearmanr(SCORES, PREDICTED_SCORES)[0])}


def test_unknown_metric():
    with pytest.raises(ValueError, match="available: accuracy, f1"):
        load_metric("bleu")
