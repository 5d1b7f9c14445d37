"""Span decoding for MHEForQuestionAnswering (Transformers 5 has no question-answering pipeline)."""

import numpy as np
import torch
from transformers import AutoModelForQuestionAnswering, AutoTokenizer

from mhe_transformers.question_answering import answer_question, best_span

CONTEXT = "the quick dog runs near the river"
#          0   4     10  14   19   24  28
OFFSETS = [None, None, None, (0, 3), (4, 9), (10, 13), (14, 18), (19, 23), (24, 27), (28, 33), None]  # q q q | ctx | sep


def logits(peaks, length=len(OFFSETS)):
    values = np.zeros(length)
    for index, value in peaks.items():
        values[index] = value
    return values


def test_best_span_takes_the_highest_scoring_valid_span():
    best = best_span(logits({4: 5.0, 1: 9.0}), logits({5: 4.0, 2: 9.0}), OFFSETS, CONTEXT)
    # Question tokens (1, 2) score higher but are not context; "quick dog" = tokens 4..5.
    assert best == {"answer": "quick dog", "start": 4, "end": 13, "score": 9.0}
    assert CONTEXT[best["start"] : best["end"]] == best["answer"]


def test_best_span_drops_reversed_and_too_long_spans():
    # The best end comes before the best start: the best valid pair is chosen instead.
    best = best_span(logits({6: 5.0, 3: 1.0}), logits({4: 6.0, 8: 2.5}), OFFSETS, CONTEXT)
    assert best["answer"] == "runs near the" and best["score"] == 7.5
    # Limited to 2 tokens, "the quick" (3..4) beats "runs near the" (6..8).
    best = best_span(logits({6: 5.0, 3: 1.0}), logits({4: 6.0, 8: 2.5}), OFFSETS, CONTEXT, max_answer_length=2)
    assert best["answer"] == "the quick" and best["score"] == 7.0
    assert best_span(logits({}), logits({}), [None] * len(OFFSETS), CONTEXT) is None


def test_best_span_compares_windows():
    windows = [OFFSETS, OFFSETS]
    start = np.stack([logits({3: 1.0}), logits({9: 3.0})])
    end = np.stack([logits({3: 1.0}), logits({9: 3.0})])
    assert best_span(start, end, windows, CONTEXT)["answer"] == "river"


def test_answer_question_maps_the_model_span_back_to_the_context(tiny_pretrained_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_pretrained_dir)
    model = AutoModelForQuestionAnswering.from_pretrained(tiny_pretrained_dir).eval()
    filler = " ".join(["a small cat seen near the river"] * 6)
    context = f"{filler} then a quick horse runs across the field. {filler}"
    target_ids = tokenizer("horse", add_special_tokens=False)["input_ids"]

    def point_at_horse(module, args, kwargs, output):
        # Stand in for a trained model: high logits on the wordpieces of "horse" (which the question also contains,
        # where they must be ignored).
        input_ids = kwargs["input_ids"]
        is_target = torch.isin(input_ids, torch.tensor(target_ids))
        output.start_logits = torch.where(is_target, 10.0, 0.0)
        output.end_logits = torch.where(is_target, 10.0, 0.0)
        return output

    model.register_forward_hook(point_at_horse, with_kwargs=True)
    # max_length 32 with stride 8: the context is read in several windows.
    answer = answer_question(model, tokenizer, "which horse runs?", context, max_length=32, doc_stride=8)
    assert answer["answer"] == "horse"
    assert context[answer["start"] : answer["end"]] == "horse" and answer["start"] == context.index("horse")
