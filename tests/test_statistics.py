"""The comparison's statistics (mhe_transformers/experiments/statistics.py): PRR, its bootstrap over seeds and
items, paired differences, Holm's adjustment and the design stage's choice."""

import math

import numpy as np
import pytest

from mhe_transformers.experiments.statistics import (
    best_on_validation,
    compare_arms,
    holm,
    lower_is_better,
    retention,
)


def scores(skill: dict[int, float], n_items: int = 500, tasks=("a", "b"), noise: int = 0) -> dict:
    """{task: {seed: {"value", "items"}}}: per item a fixed pseudo-random 0/1, right about skill[seed] of the time."""
    result = {}
    for t, task in enumerate(tasks):
        result[task] = {}
        for seed, p in skill.items():
            correct = (np.random.default_rng([t, seed, noise]).random(n_items) < p).astype(float)
            result[task][seed] = {"value": correct.mean(), "items": {"correct": correct, "count": np.ones(n_items)}}
    return result


def test_holm_on_a_known_example():
    # m = 4, sorted p 0.01, 0.02, 0.03, 0.04: 4 x 0.01 = 0.04; 3 x 0.02 = 0.06; 2 x 0.03 = 0.06; 1 x 0.04 = 0.04,
    # raised to the running maximum 0.06 (step-down adjusted p-values never decrease).
    adjusted = holm({"a": 0.03, "b": 0.01, "c": 0.04, "d": 0.02})
    assert adjusted == pytest.approx({"b": 0.04, "d": 0.06, "a": 0.06, "c": 0.06})
    assert holm({"x": 0.5, "y": 0.6}) == {"x": 1.0, "y": 1.0}  # capped at 1
    assert holm({}) == {}


def test_the_point_estimate_is_the_ratio_of_mean_scores_and_lies_in_its_interval():
    arm, reference = scores({42: 0.70, 43: 0.72, 44: 0.68}), scores({42: 0.80, 43: 0.79, 44: 0.81}, noise=1)
    result = compare_arms(arm, reference, ["a", "b"])
    arm_mean = np.mean([np.mean([arm[t][s]["value"] for t in "ab"]) for s in (42, 43, 44)])
    ref_mean = np.mean([np.mean([reference[t][s]["value"] for t in "ab"]) for s in (42, 43, 44)])
    assert result["arm_mean"] == pytest.approx(arm_mean) and result["reference_mean"] == pytest.approx(ref_mean)
    prr = result["prr"]
    assert prr["estimate"] == pytest.approx(arm_mean / ref_mean)
    assert prr["low"] < prr["estimate"] < prr["high"] < 1 and prr["p"] < 0.01  # clearly below MHA
    difference = result["difference"]
    assert difference["estimate"] == pytest.approx(arm_mean - ref_mean) and difference["high"] < 0
    assert len(result["per_seed_prr"]) == 3 and result["seeds"] == [42, 43, 44]
    assert compare_arms(arm, reference, ["a", "b"]) == result  # seeded: the same numbers every time


def test_the_interval_shrinks_with_more_seeds_and_more_items():
    def width(seeds, n_items):
        skill = {s: 0.75 + 0.03 * math.sin(s) for s in seeds}
        other = {s: 0.75 + 0.03 * math.cos(s) for s in seeds}
        result = compare_arms(scores(skill, n_items), scores(other, n_items, noise=1), ["a"])
        return result["prr"]["high"] - result["prr"]["low"]

    assert width(range(40, 56), 400) < width(range(40, 44), 400)
    assert width(range(40, 44), 4000) < width(range(40, 44), 100)


def test_equal_arms_give_an_interval_around_one_and_no_significance():
    same = scores({42: 0.7, 43: 0.75, 44: 0.72})
    result = compare_arms(same, same, ["a", "b"])
    assert result["prr"]["estimate"] == 1.0 and result["prr"]["low"] == result["prr"]["high"] == 1.0
    noisy = compare_arms(scores({42: 0.7, 43: 0.75, 44: 0.72}), scores({42: 0.7, 43: 0.75, 44: 0.72}, noise=1), ["a"])
    assert noisy["prr"]["low"] < 1 < noisy["prr"]["high"] and noisy["prr"]["p"] > 0.05


def test_only_paired_seeds_count_and_items_missing_fall_back_to_seed_scores():
    arm, reference = scores({42: 0.7, 43: 0.7, 44: 0.7}), scores({43: 0.8, 44: 0.8, 45: 0.8}, noise=1)
    assert compare_arms(arm, reference, ["a"])["seeds"] == [43, 44]
    assert compare_arms(scores({42: 0.7}), scores({43: 0.8}), ["a"]) is None
    plain = {"a": {s: {"value": v, "items": None} for s, v in {42: 0.70, 43: 0.74, 44: 0.72}.items()}}
    ref = {"a": {s: {"value": v, "items": None} for s, v in {42: 0.80, 43: 0.82, 44: 0.81}.items()}}
    result = compare_arms(plain, ref, ["a"])
    assert result["prr"]["estimate"] == pytest.approx(0.72 / 0.81)
    assert 0.70 / 0.82 - 1e-9 <= result["prr"]["low"] <= result["prr"]["high"] <= 0.74 / 0.80 + 1e-9


def test_a_perplexity_prr_is_the_reference_over_the_arm():
    def lm(loss_per_token: dict[int, float]):
        return {"lm": {s: {"value": math.exp(v), "items": {"loss": np.full(100, 20 * v), "count": np.full(100, 20.0),
                                                              "correct": np.zeros(100)}}
                       for s, v in loss_per_token.items()}}  # fmt: skip

    result = compare_arms(lm({42: 5.0, 43: 5.2}), lm({42: 4.8, 43: 5.0}), ["lm"], metric="perplexity")
    arm = (math.exp(5.0) + math.exp(5.2)) / 2
    reference = (math.exp(4.8) + math.exp(5.0)) / 2
    assert result["prr"]["estimate"] == pytest.approx(reference / arm) and result["prr"]["estimate"] < 1
    assert lower_is_better("perplexity") and lower_is_better("eval_loss") and not lower_is_better("test_accuracy")
    assert retention(125.0, 100.0, "perplexity") == pytest.approx(0.8) and math.isnan(retention(1.0, 0.0, "accuracy"))


def test_the_design_choice_is_the_best_mean_selection_score_on_validation():
    def record(position, task, lm):
        return {"position": position, "metrics": {"t": {"validation": task, "test": None}},
                "pretraining": {"validation": {"accuracy": lm}}}  # fmt: skip

    records = [record("absolute", 0.5, 0.10), record("absolute", 0.6, 0.12), record("shared_bias", 0.6, 0.20),
               record("shared_bias", 0.62, 0.22), record("per_head_bias", 0.9, 0.5)]  # fmt: skip
    best, means = best_on_validation(records, "position", among=["absolute", "shared_bias"])
    assert best == "shared_bias" and means == pytest.approx({"absolute": 0.33, "shared_bias": 0.41})
    assert best_on_validation(records, "position")[0] == "per_head_bias"
    with pytest.raises(ValueError, match="No records"):
        best_on_validation(records, "position", among=["rotary"])
