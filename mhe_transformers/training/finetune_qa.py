"""Extractive question answering with `MHEForQuestionAnswering`: span decoding, and fine-tuning on SQuAD-style data.

Transformers 5 has no question-answering pipeline; this is its span decoding (as in the run_qa example's
post-processing): the context is tokenized after the question in windows of `max_length` tokens overlapping by
`doc_stride`; in every window, the `n_best` highest start and end logits over context tokens are paired, spans that
end before they start or are longer than `max_answer_length` tokens are dropped, and the span with the highest
`start_logit + end_logit` over all windows wins. Its characters are cut from the context with the tokenizer's
offsets, so the answer is always a substring of the context.

    from mhe_transformers.training.finetune_qa import answer_question
    answer_question(model, tokenizer, "What runs?", "The small dog runs across the field.")
    # {'answer': 'The small dog', 'start': 0, 'end': 13, 'score': 7.3}

Fine-tuning (`scripts/finetune_qa.py`, `configs/finetune/squad.yaml`) follows run_qa: windows labelled with the
answer's first and last token ([CLS] when a window does not hold the whole answer), evaluation decoded with the same
`best_span` and scored with SQuAD's exact match and F1; predictions are saved as eval_predictions.json.
"""

from __future__ import annotations

import json
import re
import string
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from transformers import AutoModelForQuestionAnswering, Trainer, TrainerCallback, default_data_collator

from ..data import text
from ..utils import cli
from . import arguments, loop
from .arguments import MHETrainingArguments, ModelArguments
from .optimizer import MHETrainer


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


# ---------------------------------------------------------------------------------------------------------------------
# Fine-tuning (SQuAD-style data), after transformers' examples/pytorch/question-answering/run_qa.py


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def squad_scores(predictions: dict[str, str], references: dict[str, list[str]]) -> dict[str, float]:
    """Exact match and token F1 (in %, SQuAD v1.1's definitions): each prediction against its best reference."""

    def f1(prediction: str, reference: str) -> float:
        predicted, expected = normalize_answer(prediction).split(), normalize_answer(reference).split()
        common = sum((Counter(predicted) & Counter(expected)).values())
        if common == 0:
            return 0.0
        precision, recall = common / len(predicted), common / len(expected)
        return 2 * precision * recall / (precision + recall)

    exact = [max(normalize_answer(predictions[i]) == normalize_answer(r) for r in refs) for i, refs in references.items()]
    f1s = [max(f1(predictions[i], r) for r in refs) for i, refs in references.items()]
    return {"exact_match": 100 * float(np.mean(exact)), "f1": 100 * float(np.mean(f1s))}


SQUAD_DATASET = "rajpurkar/squad"


@dataclass
class DataArguments:
    dataset_name: str | None = field(
        default=None, metadata={"help": f"Hub dataset (default, without local files: {SQUAD_DATASET})."}
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "Hub dataset configuration name."})
    train_file: str | None = field(default=None, metadata={"help": "Local SQuAD-style .json(l)/.csv training file."})
    validation_file: str | None = field(default=None, metadata={"help": "Local SQuAD-style validation file."})
    id_column: str = field(default="id", metadata={"help": "Column holding each example's id."})
    question_column: str = field(default="question", metadata={"help": "Column holding the questions."})
    context_column: str = field(default="context", metadata={"help": "Column holding the contexts."})
    answer_column: str = field(
        default="answers", metadata={"help": "Column of {'text': [...], 'answer_start': [...]} (SQuAD's layout)."}
    )
    max_seq_length: int = field(default=384, metadata={"help": "Tokens per window (question + context)."})
    doc_stride: int = field(default=128, metadata={"help": "Tokens shared by consecutive windows of a long context."})
    n_best: int = field(default=20, metadata={"help": "Start/end candidates per window when decoding spans."})
    max_answer_length: int = field(default=30, metadata={"help": "Longest answer, in tokens."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Train on a fixed subset of examples."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Evaluate on a fixed subset of examples."})

    def __post_init__(self):
        if not 0 <= self.doc_stride < self.max_seq_length:
            raise ValueError(f"doc_stride ({self.doc_stride}) must be in [0, max_seq_length={self.max_seq_length}).")

    @property
    def dataset(self) -> str | None:
        """The Hub dataset to read: --dataset_name, else SQuAD unless local files are given."""
        return self.dataset_name or (None if self.train_file or self.validation_file else SQUAD_DATASET)


ARGUMENT_CLASSES = (ModelArguments, DataArguments, MHETrainingArguments)


def main(argv: Sequence[str] | None = None) -> dict:
    """Fine-tune for extractive QA from `[--config FILE.yaml] [--field value ...]`; returns the final metrics."""
    return run(*cli.parse_args(ARGUMENT_CLASSES, argv, description=__doc__, validate=check_arguments))


def check_arguments(model_args: ModelArguments, data_args: DataArguments, training_args: MHETrainingArguments):
    """The checks of the command line that need no data (usage errors), so that a bad command fails in seconds."""
    model_args.check_trained_model()
    arguments.check_something_to_do(training_args)


@loop.holds_output_dir
def run(
    model_args: ModelArguments,
    data_args: DataArguments,
    training_args: MHETrainingArguments,
    callbacks: list[TrainerCallback] | None = None,
) -> dict:
    """Check the arguments, load and check the examples, cut them into windows, train, evaluate (decoding spans)
    and save the final checkpoint; returns the final metrics."""
    check_arguments(model_args, data_args, training_args)
    resume_checkpoint = loop.set_up_run(training_args)
    raw = load_examples(data_args, training_args, model_args.cache_dir)
    tokenizer = loop.load_tokenizer(model_args)
    if not tokenizer.is_fast or tokenizer.padding_side != "right":
        raise ValueError("Question answering needs a fast tokenizer (offsets) that pads on the right.")
    model = loop.load_model(AutoModelForQuestionAnswering, model_args, tokenizer, data_args.max_seq_length)
    text.check_tokenizer_matches(tokenizer, model_args.tokenizer_name, model_args.model_name_or_path, model.config)
    train_features = eval_examples = eval_features = None
    if training_args.do_train:
        train_features = training_windows(raw["train"], tokenizer, data_args, training_args)
    if training_args.do_eval:
        eval_examples, eval_features = evaluation_windows(raw["validation"], tokenizer, data_args, training_args)
    trainer = MHETrainer(
        model=model,
        args=training_args,
        train_dataset=train_features,
        processing_class=tokenizer,
        data_collator=default_data_collator,
        callbacks=callbacks,
    )
    # After the Trainer is built: its arguments, callbacks and integrations (--report_to) are checked by now.
    loop.claim_output_dir(
        training_args,
        resume_checkpoint,
        inputs=[model_args.model_name_or_path, model_args.tokenizer_name, data_args.train_file, data_args.validation_file],
    )
    predictions = {}
    metrics = loop.train_and_evaluate(
        trainer,
        resume_checkpoint,
        len(train_features) if train_features is not None else None,
        lambda: evaluate(trainer, eval_examples, eval_features, data_args, predictions),
    )
    extra_files = {}
    if training_args.do_eval:
        extra_files["eval_predictions.json"] = json.dumps(predictions, indent=2, ensure_ascii=False) + "\n"
    return loop.save_final_checkpoint(
        trainer,
        metrics,
        (model_args, data_args, training_args),
        task="question-answering",
        datasets=loop.datasets_used(data_args.dataset, [data_args.train_file, data_args.validation_file]),
        base_model=model_args.model_name_or_path,
        extra_files=extra_files,
    )


def load_examples(data_args: DataArguments, training_args: MHETrainingArguments, cache_dir: str | None) -> dict:
    """The train and/or validation examples this run needs, their columns checked and each split non-empty."""
    raw = text.load_raw_datasets(
        data_args.dataset,
        data_args.dataset_config_name,
        {"train": data_args.train_file, "validation": data_args.validation_file},
        cache_dir=cache_dir,
    )
    columns = {
        "--id_column": data_args.id_column,
        "--question_column": data_args.question_column,
        "--context_column": data_args.context_column,
        "--answer_column": data_args.answer_column,
    }
    for split in ["train"] * training_args.do_train + ["validation"] * training_args.do_eval:
        if split not in raw:
            raise ValueError(f"No {split} data: the dataset has splits {list(raw)}; pass --{split}_file.")
        text.check_columns(raw[split], columns, split)
        text.check_not_empty(raw[split], f"{split} split")
    return raw


def _windows(examples, tokenizer, data_args: DataArguments):
    """Question + context tokenized in windows of max_seq_length tokens overlapping by doc_stride (run_qa)."""
    return tokenizer(
        [q.lstrip() for q in examples[data_args.question_column]],
        examples[data_args.context_column],
        truncation="only_second",
        max_length=data_args.max_seq_length,
        stride=data_args.doc_stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        padding="max_length",
    )


def training_windows(examples, tokenizer, data_args: DataArguments, training_args: MHETrainingArguments):
    """The (subsampled) training examples as windows labelled with their answer's first and last token."""
    examples = text.subsample(examples, data_args.max_train_samples)
    with training_args.main_process_first(desc="windowing train"):
        return examples.map(
            lambda batch: label_answer_spans(_windows(batch, tokenizer, data_args), batch[data_args.answer_column]),
            batched=True,
            remove_columns=examples.column_names,
        )


def evaluation_windows(examples, tokenizer, data_args: DataArguments, training_args: MHETrainingArguments):
    """The (subsampled) validation examples, and their windows with each one's example id and context offsets
    (None outside the context), to decode spans from."""
    examples = text.subsample(examples, data_args.max_eval_samples)

    def windows_with_offsets(batch):
        encoding = _windows(batch, tokenizer, data_args)
        samples = encoding.pop("overflow_to_sample_mapping")
        encoding["example_id"] = [batch[data_args.id_column][s] for s in samples]
        encoding["offset_mapping"] = [
            [offset if sequence_id == 1 else None for offset, sequence_id in zip(offsets, encoding.sequence_ids(i))]
            for i, offsets in enumerate(encoding["offset_mapping"])
        ]
        return encoding

    with training_args.main_process_first(desc="windowing validation"):
        return examples, examples.map(windows_with_offsets, batched=True, remove_columns=examples.column_names)


def evaluate(trainer: Trainer, examples, features, data_args: DataArguments, predictions: dict[str, str]) -> dict:
    """Predict every window, decode each example's best span over its windows (into `predictions`: id -> answer)
    and score them with SQuAD's exact match and F1."""
    output = trainer.predict(features.remove_columns(["example_id", "offset_mapping"]), metric_key_prefix="eval")
    start_logits, end_logits = output.predictions
    by_example = {}
    for index, example_id in enumerate(features["example_id"]):
        by_example.setdefault(example_id, []).append(index)
    contexts = dict(zip(examples[data_args.id_column], examples[data_args.context_column]))
    for example_id, indices in by_example.items():
        span = best_span(
            start_logits[indices],
            end_logits[indices],
            [features[i]["offset_mapping"] for i in indices],
            contexts[example_id],
            data_args.n_best,
            data_args.max_answer_length,
        )
        predictions[example_id] = span["answer"] if span else ""
    references = dict(zip(examples[data_args.id_column], examples[data_args.answer_column]))
    scores = squad_scores(predictions, {i: answers["text"] for i, answers in references.items()})
    return {
        **{key: value for key, value in output.metrics.items() if not key.endswith("_loss")},
        **{f"eval_{name}": value for name, value in scores.items()},
        "eval_samples": len(examples),
    }


def label_answer_spans(encoding, answers) -> dict:
    """Start/end token positions of each window's answer (run_qa's labelling); windows that do not contain the
    whole answer, and unanswerable questions, point at the first ([CLS]) token."""
    samples = encoding.pop("overflow_to_sample_mapping")
    offsets = encoding.pop("offset_mapping")
    encoding["start_positions"], encoding["end_positions"] = [], []
    for i, window_offsets in enumerate(offsets):
        answer = answers[samples[i]]
        context_tokens = [t for t, sequence_id in enumerate(encoding.sequence_ids(i)) if sequence_id == 1]
        start = end = 0
        if answer["answer_start"] and context_tokens:
            start_char = answer["answer_start"][0]
            end_char = start_char + len(answer["text"][0])
            first, last = context_tokens[0], context_tokens[-1]
            if window_offsets[first][0] <= start_char and window_offsets[last][1] >= end_char:
                start = next(t for t in context_tokens if window_offsets[t][1] > start_char)
                end = next(t for t in reversed(context_tokens) if window_offsets[t][0] < end_char)
        encoding["start_positions"].append(start)
        encoding["end_positions"].append(end)
    return encoding


__all__ = ["DataArguments", "answer_question", "best_span", "label_answer_spans", "main", "run", "squad_scores"]
