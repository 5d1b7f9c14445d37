"""Extractive question answering with `MHEForQuestionAnswering`: from start/end logits to an answer in the context.

Transformers 5 has no question-answering pipeline any more; this is its span decoding (as in the run_qa example's
post-processing): the context is tokenized after the question in windows of `max_length` tokens overlapping by
`doc_stride`; in every window, the `n_best` highest start and end logits over context tokens are paired, spans that
end before they start or are longer than `max_answer_length` tokens are dropped, and the span with the highest
`start_logit + end_logit` over all windows wins. Its characters are cut from the context with the tokenizer's
offsets, so the answer is always a substring of the context.

    from mhe_transformers.question_answering import answer_question
    answer_question(model, tokenizer, "What runs?", "The small dog runs across the field.")
    # {'answer': 'The small dog', 'start': 0, 'end': 13, 'score': 7.3}
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def best_span(
    start_logits: np.ndarray | torch.Tensor,
    end_logits: np.ndarray | torch.Tensor,
    offsets: Sequence[Sequence[tuple[int, int] | None]],
    context: str,
    n_best: int = 20,
    max_answer_length: int = 30,
) -> dict | None:
    """The best answer span of one example over its windows (features).

    Args:
        start_logits, end_logits: (num_windows, seq_len), the model's outputs for the example's windows.
        offsets: per window and token, the (start, end) characters of the token in `context`, or None for tokens
            that are not context (question, special tokens, padding): those can be neither start nor end.
        context: the context text the offsets point into.

    Returns {"answer", "start", "end", "score"} (characters `context[start:end]`), or None when no valid span exists.
    """
    start_logits, end_logits = np.asarray(start_logits, dtype=np.float64), np.asarray(end_logits, dtype=np.float64)
    if start_logits.ndim == 1:
        start_logits, end_logits, offsets = start_logits[None], end_logits[None], [offsets]
    best = None
    for window_start, window_end, window_offsets in zip(start_logits, end_logits, offsets):
        candidates = [i for i, offset in enumerate(window_offsets) if offset is not None and i < len(window_start)]
        if not candidates:
            continue
        top_starts = sorted(candidates, key=lambda i: -window_start[i])[:n_best]
        top_ends = sorted(candidates, key=lambda i: -window_end[i])[:n_best]
        for start in top_starts:
            for end in top_ends:
                if end < start or end - start + 1 > max_answer_length:
                    continue
                score = float(window_start[start] + window_end[end])
                if best is None or score > best["score"]:
                    first, last = window_offsets[start][0], window_offsets[end][1]
                    best = {"answer": context[first:last], "start": first, "end": last, "score": score}
    return best


def answer_question(
    model,
    tokenizer,
    question: str,
    context: str,
    max_length: int = 384,
    doc_stride: int = 128,
    n_best: int = 20,
    max_answer_length: int = 30,
) -> dict | None:
    """Answer `question` from `context` with a question-answering model (any Transformers QA head).

    The tokenizer must be a fast one (offsets) that puts the question first; contexts longer than `max_length`
    tokens are read in windows overlapping by `doc_stride` tokens. Returns what `best_span` returns.
    """
    if tokenizer.padding_side != "right":
        raise ValueError("answer_question expects a tokenizer that pads on the right (question first, then context).")
    encoding = tokenizer(
        question,
        context,
        truncation="only_second",
        max_length=max_length,
        stride=doc_stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        padding="longest",
        return_tensors="pt",
    )
    offsets = [
        [tuple(offset) if sequence_id == 1 else None for offset, sequence_id in zip(window, encoding.sequence_ids(i))]
        for i, window in enumerate(encoding["offset_mapping"].tolist())
    ]
    inputs = {name: encoding[name] for name in ("input_ids", "attention_mask", "token_type_ids") if name in encoding}
    device = next(model.parameters()).device
    with torch.no_grad():
        outputs = model(**{name: tensor.to(device) for name, tensor in inputs.items()})
    return best_span(
        outputs.start_logits.float().cpu(), outputs.end_logits.float().cpu(), offsets, context, n_best, max_answer_length
    )


__all__ = ["answer_question", "best_span"]
