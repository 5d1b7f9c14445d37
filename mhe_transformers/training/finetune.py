"""Fine-tuning for text classification and regression (GLUE, or local csv/json files), after transformers'
examples/pytorch/text-classification/run_glue.py.

    python scripts/finetune.py --config configs/finetune/rte.yaml --model_name_or_path outputs/pretrain-mhe_mul
    python scripts/finetune.py --config configs/finetune/wordnet-supersense.yaml [--field value ...]

A GLUE `--task_name` fixes the text columns, the label names and the metric; its data comes from the Hub
(`nyu-mll/glue`) or, offline, from local files shaped like it (`--train_file` ...). Local files of any other task
name their columns (`--text_column`, `--text_pair_column`, `--label_column`) and may list the label names in a JSON
file (`--label_list_file`); string labels are looked up in that list, integer labels are indices into it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    DataCollatorWithPadding,
    EarlyStoppingCallback,
    Trainer,
    TrainerCallback,
)

from ..data import text
from ..metrics import load_metric
from ..models.mhe.heads import head_class_for
from ..models.mhe.modeling_mhe import MHEForSequenceClassification
from ..utils import cli
from . import arguments, loop
from .arguments import MHETrainingArguments
from .optimizer import MHETrainer

logger = logging.getLogger(__name__)

GLUE_DATASET = "nyu-mll/glue"


@dataclass(frozen=True)
class GlueTask:
    text_column: str
    text_pair_column: str | None
    label_names: tuple[str, ...] | None  # None: regression
    metrics: tuple[str, ...]  # module names of mhe_transformers.metrics
    validation_splits: tuple[str, ...] = ("validation",)  # the first is the one training evaluates on
    test_split: str = "test"


# Columns, label names (as in the Hub dataset's ClassLabel features) and metrics of the GLUE benchmark.
GLUE_TASKS = {
    "cola": GlueTask("sentence", None, ("unacceptable", "acceptable"), ("matthews_correlation",)),
    "sst2": GlueTask("sentence", None, ("negative", "positive"), ("accuracy",)),
    "mrpc": GlueTask("sentence1", "sentence2", ("not_equivalent", "equivalent"), ("accuracy", "f1")),
    "qqp": GlueTask("question1", "question2", ("not_duplicate", "duplicate"), ("accuracy", "f1")),
    "stsb": GlueTask("sentence1", "sentence2", None, ("pearsonr", "spearmanr")),
    "mnli": GlueTask(
        "premise",
        "hypothesis",
        ("entailment", "neutral", "contradiction"),
        ("accuracy",),
        validation_splits=("validation_matched", "validation_mismatched"),
        test_split="test_matched",
    ),
    "qnli": GlueTask("question", "sentence", ("entailment", "not_entailment"), ("accuracy",)),
    "rte": GlueTask("sentence1", "sentence2", ("entailment", "not_entailment"), ("accuracy",)),
    "wnli": GlueTask("sentence1", "sentence2", ("not_entailment", "entailment"), ("accuracy",)),
}


@dataclass
class ModelArguments(arguments.ModelArguments):
    ignore_mismatched_sizes: bool = field(
        default=False, metadata={"help": "Re-initialise a classifier trained with another number of labels."}
    )


@dataclass
class DataArguments:
    task_name: str | None = field(default=None, metadata={"help": f"A GLUE task: {', '.join(GLUE_TASKS)}."})
    dataset_name: str | None = field(
        default=None, metadata={"help": f"Hub dataset (default for a GLUE task: {GLUE_DATASET})."}
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "Hub dataset configuration name."})
    train_file: str | None = field(default=None, metadata={"help": "Local training file (.csv, .json, .jsonl)."})
    validation_file: str | None = field(default=None, metadata={"help": "Local validation file."})
    test_file: str | None = field(default=None, metadata={"help": "Local test file (labels optional)."})
    text_column: str | None = field(default=None, metadata={"help": "Text column (default: the task's, else 'text')."})
    text_pair_column: str | None = field(default=None, metadata={"help": "Second text column of sentence-pair tasks."})
    label_column: str | None = field(default=None, metadata={"help": "Label column (default: 'label')."})
    label_list_file: str | None = field(
        default=None, metadata={"help": "JSON list of the label names, e.g. data/wordnet/supersense/labels.json."}
    )
    max_seq_length: int = field(default=128, metadata={"help": "Longer inputs are truncated."})
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Train on a random subset of this many examples (the same for every run)."}
    )
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Evaluate on a random subset of this many examples (the same for every run)."}
    )
    max_predict_samples: int | None = field(
        default=None, metadata={"help": "Predict a random subset of this many test examples (the same for every run)."}
    )
    early_stopping_patience: int | None = field(
        default=None,
        metadata={"help": "Stop after this many evaluations without improvement (needs load_best_model_at_end)."},
    )
    predictions_format: str = field(
        default="tsv", metadata={"help": "Format of the --do_predict output: tsv or jsonl."}
    )

    def __post_init__(self):
        if self.task_name is not None:
            self.task_name = self.task_name.lower()
            if self.task_name not in GLUE_TASKS:
                raise ValueError(f"Unknown task_name {self.task_name!r}; known GLUE tasks: {', '.join(GLUE_TASKS)}.")
        if self.predictions_format not in ("tsv", "jsonl"):
            raise ValueError(f"predictions_format must be 'tsv' or 'jsonl', got {self.predictions_format!r}.")
        if self.max_seq_length < 2:
            raise ValueError(f"max_seq_length must be at least 2, got {self.max_seq_length}.")


@dataclass
class TaskSetup:
    """Where the data comes from and how to read it, resolved from the arguments alone (no data needed)."""

    dataset_name: str | None
    dataset_config_name: str | None
    data_files: dict[str, str]
    text_column: str
    text_pair_column: str | None
    label_column: str
    label_names: tuple[str, ...] | None  # None: read them from the data
    metrics: tuple[str, ...] | None  # None: accuracy, or pearsonr/spearmanr for regression
    splits: dict[str, list[str]]  # role ("train", "validation", "test") -> split names


def resolve_task(data_args: DataArguments) -> TaskSetup:
    task = GLUE_TASKS.get(data_args.task_name) if data_args.task_name else None
    data_files = {
        split: file
        for split, file in (
            ("train", data_args.train_file),
            ("validation", data_args.validation_file),
            ("test", data_args.test_file),
        )
        if file
    }
    dataset_name = data_args.dataset_name
    if task is not None and not data_files and dataset_name is None:
        dataset_name = GLUE_DATASET
    if dataset_name is None and not data_files:
        raise ValueError(
            "No data: pass --task_name (GLUE), --dataset_name, or --train_file/--validation_file/--test_file."
        )
    from_hub_glue = task is not None and not data_files
    if data_args.label_list_file:
        label_names = read_label_list(data_args.label_list_file)
    else:
        label_names = task.label_names if task else None
    splits = {
        "train": ["train"],
        "validation": list(task.validation_splits) if from_hub_glue else ["validation"],
        "test": [task.test_split] if from_hub_glue else ["test"],
    }
    return TaskSetup(
        dataset_name=dataset_name,
        dataset_config_name=data_args.dataset_config_name
        or (data_args.task_name if dataset_name == GLUE_DATASET else None),
        data_files=data_files,
        text_column=data_args.text_column or (task.text_column if task else "text"),
        text_pair_column=data_args.text_pair_column or (task.text_pair_column if task else None),
        label_column=data_args.label_column or "label",
        label_names=label_names,
        metrics=task.metrics if task else None,
        splits=splits,
    )


def read_label_list(path: str) -> tuple[str, ...]:
    if not Path(path).is_file():
        raise FileNotFoundError(f"Label list file not found: {path}")
    labels = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(labels, list) or not labels or not all(isinstance(label, str) for label in labels):
        raise ValueError(f"{path} must hold a non-empty JSON list of label names (strings).")
    if len(set(labels)) != len(labels):
        raise ValueError(f"{path} lists some label names twice.")
    for label in labels:
        text.check_label_name(label, path)
    return tuple(labels)


def infer_label_names(train_dataset, label_column: str) -> tuple[str, ...] | None:
    """Label names from the data: a ClassLabel feature's names; None (regression) for float labels; "0" to "<max>"
    for integer labels (they are indices); else the sorted distinct string labels."""
    import datasets

    feature = train_dataset.features[label_column]
    if isinstance(feature, datasets.ClassLabel):
        return tuple(feature.names)
    check_label_values(train_dataset, label_column, "train")
    dtype = getattr(feature, "dtype", None)
    if dtype in ("float16", "float32", "float64"):
        return None
    values = train_dataset.unique(label_column)
    if dtype in ("int8", "int16", "int32", "int64"):
        return tuple(str(i) for i in range(max(values) + 1))
    return tuple(sorted(str(value) for value in values))


def check_label_values(dataset, label_column: str, split: str) -> None:
    """Raise naming the first row whose label is missing (null), a boolean, or of another kind than the first
    row's (names and numbers mixed): labels are names or integer indices (or numbers, for regression)."""
    first_kind = None
    for row, value in enumerate(dataset[label_column]):
        kind = str if isinstance(value, str) else (int, float) if isinstance(value, (int, float)) else None
        if value is None or isinstance(value, bool) or kind is None or (first_kind and kind != first_kind):
            raise ValueError(
                f"Row {row + 1} of the {split} split has the label {value!r} in column {label_column!r}; labels "
                "must be all label names, all integer indices into the label list, or numbers for regression."
            )
        first_kind = kind


def check_texts(dataset, columns: Sequence[str | None], split: str) -> None:
    """Raise naming the first row whose text is missing (an empty CSV cell, a JSON null) or not a string."""
    for column in filter(None, columns):
        for row, value in enumerate(dataset[column]):
            if not isinstance(value, str):
                raise ValueError(f"Row {row + 1} of the {split} split has no text in column {column!r} ({value!r}).")


def check_labels(dataset, label_column: str, label_names: tuple[str, ...] | None, split: str) -> bool:
    """Raise naming any label outside `label_names` (strings are names, integers indices). Returns False when the
    split is unlabelled (GLUE's test splits mark hidden labels with -1)."""
    check_label_values(dataset, label_column, split)
    values = dataset.unique(label_column)
    if values == [-1]:
        return False
    if label_names is None:
        bad = [value for value in values if not isinstance(value, (int, float)) or isinstance(value, bool)]
        if bad:
            raise ValueError(
                f"Regression labels must be numbers; the {split} split has {bad[0]!r} in column {label_column!r}."
            )
        text.check_finite(dataset, label_column, split)
        return True
    for value in values:
        if isinstance(value, str):
            text.check_label_name(value, f"the {split} split")
        known = (
            value in label_names if isinstance(value, str) else isinstance(value, int) and 0 <= value < len(label_names)
        )
        if not known:
            raise ValueError(
                f"Label {value!r} in column {label_column!r} of the {split} split is not in the label list "
                f"({len(label_names)} labels: {', '.join(label_names[:10])}{', ...' if len(label_names) > 10 else ''})."
            )
    return True


ARGUMENT_CLASSES = (ModelArguments, DataArguments, MHETrainingArguments)


def main(argv: Sequence[str] | None = None) -> dict:
    """Fine-tune from `[--config FILE.yaml] [--field value ...]`; returns the final metrics (all_results.json)."""
    return run(*cli.parse_args(ARGUMENT_CLASSES, argv, description=__doc__, validate=check_arguments))


def check_arguments(model_args: ModelArguments, data_args: DataArguments, training_args: MHETrainingArguments):
    """The checks of the command line that need no data (usage errors), so that a bad command fails in seconds."""
    model_args.check_trained_model()
    arguments.check_something_to_do(training_args, predict=True)
    if data_args.early_stopping_patience is not None and not training_args.load_best_model_at_end:
        raise ValueError(
            "--early_stopping_patience needs --load_best_model_at_end true (with eval_strategy = save_strategy)."
        )


@loop.holds_output_dir
def run(
    model_args: ModelArguments,
    data_args: DataArguments,
    training_args: MHETrainingArguments,
    callbacks: list[TrainerCallback] | None = None,
) -> dict:
    """Check the arguments, load and check the splits, load the model with a head for the labels, train, evaluate,
    predict and save the final checkpoint; returns the final metrics."""
    check_arguments(model_args, data_args, training_args)
    setup = resolve_task(data_args)
    resume_checkpoint = loop.set_up_run(training_args)
    raw_datasets = text.load_raw_datasets(
        setup.dataset_name, setup.dataset_config_name, setup.data_files, cache_dir=model_args.cache_dir
    )
    splits = select_splits(raw_datasets, setup, training_args)
    label_names = resolve_label_names(setup, splits, model_args, training_args)
    model_label_names = resolve_model_label_order(label_names, model_args)
    labelled = check_splits(splits, setup, label_names)
    tokenizer = loop.load_tokenizer(model_args)
    model = load_classifier(model_args, tokenizer, data_args.max_seq_length, model_label_names)
    encoded, test_rows = encode_splits(
        splits, labelled, setup, label_names, tokenizer, data_args, training_args, model_label_names
    )
    train_name, validation_name, *other_validation = setup.splits["train"] + setup.splits["validation"]
    trainer = MHETrainer(
        model=model,
        args=training_args,
        train_dataset=encoded.get(train_name),
        eval_dataset=encoded.get(validation_name),
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=make_compute_metrics(setup.metrics, label_names),
        callbacks=with_early_stopping(callbacks, data_args.early_stopping_patience),
    )
    # After the Trainer is built: its arguments, callbacks and integrations (--report_to) are checked by now.
    loop.claim_output_dir(
        training_args,
        resume_checkpoint,
        inputs=[model_args.model_name_or_path, model_args.tokenizer_name, data_args.label_list_file,
                *setup.data_files.values()],
    )  # fmt: skip
    metrics = loop.train_and_evaluate(
        trainer,
        resume_checkpoint,
        len(encoded[train_name]) if train_name in encoded else None,
        lambda: evaluate(trainer, encoded, validation_name, other_validation),
    )
    extra_files = {}
    if training_args.do_predict:
        test_name = setup.splits["test"][0]
        test_metrics, extra_files = predict(
            trainer, encoded[test_name], labelled[test_name], test_rows, model_label_names, data_args
        )
        metrics.update(test_metrics)
    return loop.save_final_checkpoint(
        trainer,
        metrics,
        (model_args, data_args, training_args),
        task="text-classification",
        datasets=loop.datasets_used(setup.dataset_name, list(setup.data_files.values())),
        base_model=model_args.model_name_or_path,
        extra_files=extra_files,
    )


def with_early_stopping(callbacks: list[TrainerCallback] | None, patience: int | None) -> list[TrainerCallback]:
    """The callbacks, plus early stopping after `patience` evaluations without improvement (when given)."""
    callbacks = list(callbacks or [])
    if patience is not None:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=patience))
    return callbacks


def evaluate(trainer: Trainer, encoded: dict, validation_name: str, other_validation: list[str]) -> dict:
    """Trainer's evaluation on the validation split, and on each further one (MNLI's mismatched) with its suffix."""
    metrics = {**trainer.evaluate(), "eval_samples": len(encoded[validation_name])}
    for name in other_validation:
        suffix = name.removeprefix("validation_")
        metrics.update(trainer.evaluate(encoded[name], metric_key_prefix=f"eval_{suffix}"))
    return metrics


def predict(
    trainer: Trainer, test_dataset, labelled: bool, test_rows: list[int], label_names, data_args: DataArguments
) -> tuple[dict[str, dict], dict[str, str]]:
    """Predict the test split: its metrics (`{"test": {...}}`, when it has labels) and the predictions file."""
    output = trainer.predict(test_dataset, metric_key_prefix="test")
    metrics = {}
    if labelled:
        metrics["test"] = {**output.metrics, "test_samples": len(test_dataset)}
        trainer.log_metrics("test", metrics["test"])
    name, predictions_text = format_predictions(output.predictions, test_rows, label_names, data_args.predictions_format)
    return metrics, {name: predictions_text}


def select_splits(raw_datasets, setup: TaskSetup, training_args: MHETrainingArguments) -> dict[str, tuple]:
    """The splits this run reads: split name -> (role: "train", "validation" or "test", dataset)."""
    wanted = {
        "train": training_args.do_train,
        "validation": training_args.do_eval or (training_args.do_train and training_args.eval_strategy != "no"),
        "test": training_args.do_predict,
    }
    splits = {}
    for role, needed in wanted.items():
        if not needed:
            continue
        for name in setup.splits[role]:
            if name not in raw_datasets:
                option = {"train": "--train_file", "validation": "--validation_file", "test": "--test_file"}[role]
                raise ValueError(
                    f"No {role} data: the dataset has splits {list(raw_datasets)}, not {name!r}; pass {option}."
                )
            splits[name] = (role, raw_datasets[name])
    return splits


def resolve_label_names(
    setup: TaskSetup, splits: dict[str, tuple], model_args: ModelArguments, training_args: MHETrainingArguments
) -> tuple[str, ...] | None:
    """Label names (None: regression): --label_list_file, else the GLUE task's, else the training data's, else
    (evaluating or predicting only) the model's own, in its own order."""
    if setup.label_names is not None or setup.metrics is not None:
        return setup.label_names
    if training_args.do_train:
        text.check_columns(splits["train"][1], {"--label_column": setup.label_column}, "train")
        return infer_label_names(splits["train"][1], setup.label_column)
    config = AutoConfig.from_pretrained(model_args.model_name_or_path, **model_args.loading_kwargs)
    regression = config.problem_type == "regression" or config.num_labels == 1
    if regression:
        return None
    for i in range(config.num_labels):
        text.check_label_name(config.id2label[i], f"the configuration of {model_args.model_name_or_path}")
    return tuple(config.id2label[i] for i in range(config.num_labels))


def resolve_model_label_order(
    label_names: tuple[str, ...] | None, model_args: ModelArguments
) -> tuple[str, ...] | None:
    """The label order of the model to fine-tune or evaluate (its ids): `label_names` for a new classifier; the
    checkpoint's own (`config.id2label`) when it is a classifier with named labels, the data's labels being mapped
    to it by name (as run_glue does with `label2id`), so that its predictions keep meaning the same labels.

    Raises, naming both orders, when such a classifier was trained on other labels than `label_names` (its head would
    be reused for labels it never learned), unless a head of another size is to be re-initialised
    (`--ignore_mismatched_sizes`)."""
    if label_names is None:
        return None
    config = AutoConfig.from_pretrained(model_args.model_name_or_path, **model_args.loading_kwargs)
    checkpoint_labels = tuple(config.id2label[i] for i in range(config.num_labels))
    named = checkpoint_labels != tuple(f"LABEL_{i}" for i in range(config.num_labels))
    classifier = any(head_class_for(arch) is MHEForSequenceClassification for arch in config.architectures or [])
    if not (named and classifier):
        return label_names
    if set(checkpoint_labels) == set(label_names):
        if checkpoint_labels != label_names:
            logger.info("Labels mapped by name to %s's order: %s", model_args.model_name_or_path, checkpoint_labels)
        return checkpoint_labels
    if model_args.ignore_mismatched_sizes and len(checkpoint_labels) != len(label_names):
        return label_names  # a new head of another size: the checkpoint's labels no longer apply
    raise ValueError(
        f"{model_args.model_name_or_path} is a classifier trained on the labels {list(checkpoint_labels)} (in this "
        f"order), but this run's labels are {list(label_names)}. Use the checkpoint's label names, or fine-tune the "
        "pretrained (masked-LM) checkpoint for a new label set."
    )


def check_splits(splits: dict[str, tuple], setup: TaskSetup, label_names: tuple[str, ...] | None) -> dict[str, bool]:
    """Check every split's columns and labels; return split name -> whether it is labelled."""
    labelled = {}
    for name, (role, dataset) in splits.items():
        columns = {"--text_column": setup.text_column, "--text_pair_column": setup.text_pair_column}
        if role != "test" or setup.label_column in dataset.column_names:
            columns["--label_column"] = setup.label_column
        where = f"{name} ({setup.data_files[role]})" if role in setup.data_files else name
        text.check_columns(dataset, columns, where)
        text.check_not_empty(dataset, f"{where} split")
        check_texts(dataset, [setup.text_column, setup.text_pair_column], where)
        labelled[name] = "--label_column" in columns and check_labels(dataset, setup.label_column, label_names, where)
        if role == "validation" and not labelled[name]:
            raise ValueError(f"The {where} split has no labels (all -1): there is nothing to evaluate on.")
    return labelled


def load_classifier(model_args: ModelArguments, tokenizer, max_seq_length: int, label_names: tuple[str, ...] | None):
    """The pretrained model with a classification head for `label_names` (one output for regression)."""
    label_kwargs = (
        {"num_labels": 1}
        if label_names is None
        else {
            "num_labels": len(label_names),
            "id2label": dict(enumerate(label_names)),
            "label2id": {label: i for i, label in enumerate(label_names)},
        }
    )
    model = loop.load_model(
        AutoModelForSequenceClassification,
        model_args,
        tokenizer,
        max_seq_length,
        ignore_mismatched_sizes=model_args.ignore_mismatched_sizes,
        **label_kwargs,
    )
    text.check_tokenizer_matches(tokenizer, model_args.tokenizer_name, model_args.model_name_or_path, model.config)
    return model


def encode_splits(
    splits: dict[str, tuple],
    labelled: dict[str, bool],
    setup: TaskSetup,
    label_names: tuple[str, ...] | None,
    tokenizer,
    data_args: DataArguments,
    training_args: MHETrainingArguments,
    model_label_names: tuple[str, ...] | None = None,
) -> tuple[dict, list[int] | None]:
    """Subsample and tokenize every split, labels as ids (floats for regression). String labels are names, integer
    labels index `label_names`; ids follow `model_label_names` (default: `label_names`). Returns the encoded splits
    and the test file's row numbers that were kept (for the predictions file)."""
    is_regression = label_names is None
    label2id = {label: i for i, label in enumerate(model_label_names or label_names or ())}

    def preprocess(batch):
        pairs = (batch[setup.text_column],) + ((batch[setup.text_pair_column],) if setup.text_pair_column else ())
        encoded = tokenizer(*pairs, truncation=True, max_length=data_args.max_seq_length)
        if setup.label_column in batch:
            labels = batch[setup.label_column]
            encoded["labels"] = [
                float(v) if is_regression else label2id[v if isinstance(v, str) else label_names[v]] for v in labels
            ]
        return encoded

    limits = {
        "train": data_args.max_train_samples,
        "validation": data_args.max_eval_samples,
        "test": data_args.max_predict_samples,
    }
    encoded, test_rows = {}, None
    for name, (role, dataset) in splits.items():
        if role == "test":  # the test file's row numbers, for the predictions file
            test_rows = text.subsample_indices(len(dataset), limits[role])
        dataset = text.subsample(dataset, limits[role])
        if not labelled[name] and setup.label_column in dataset.column_names:
            dataset = dataset.remove_columns(setup.label_column)  # hidden test labels (-1)
        with training_args.main_process_first(desc=f"tokenizing {name}"):
            encoded[name] = dataset.map(preprocess, batched=True, remove_columns=dataset.column_names)
    return encoded, test_rows


def make_compute_metrics(metric_names: tuple[str, ...] | None, label_names: tuple[str, ...] | None):
    """Trainer's compute_metrics: the task's metrics (default: accuracy, or Pearson/Spearman for regression), and
    their mean as `combined_score` when there are several (as run_glue)."""
    is_regression = label_names is None
    metric_names = metric_names or (("pearsonr", "spearmanr") if is_regression else ("accuracy",))
    metrics_modules = [load_metric(name) for name in metric_names]

    def compute_metrics(eval_prediction):
        logits = (
            eval_prediction.predictions[0]
            if isinstance(eval_prediction.predictions, tuple)
            else eval_prediction.predictions
        )
        predictions = np.squeeze(logits, axis=-1) if is_regression else np.argmax(logits, axis=-1)
        result = {}
        for metric in metrics_modules:
            result.update(metric.compute(predictions=predictions, references=eval_prediction.label_ids))
        if len(result) > 1:
            result["combined_score"] = float(np.mean(list(result.values())))
        return result

    return compute_metrics


def format_predictions(
    logits, rows: list[int], label_names: tuple[str, ...] | None, file_format: str
) -> tuple[str, str]:
    """Predictions as GLUE's submission TSV (`index<TAB>prediction`) or JSON lines, by row of the test file, with
    label names."""
    if isinstance(logits, tuple):
        logits = logits[0]
    if label_names is None:
        predictions = [float(value) for value in np.squeeze(logits, axis=-1)]
    else:
        predictions = [label_names[i] for i in np.argmax(logits, axis=-1)]
    if file_format == "jsonl":
        lines = [
            json.dumps({"index": row, "prediction": prediction})
            for row, prediction in zip(rows, predictions, strict=True)
        ]
        return "predictions.jsonl", "".join(line + "\n" for line in lines)
    lines = [f"{row}\t{prediction}" for row, prediction in zip(rows, predictions, strict=True)]
    return "predictions.tsv", "index\tprediction\n" + "".join(line + "\n" for line in lines)


__all__ = ["GLUE_TASKS", "GlueTask", "ModelArguments", "DataArguments", "TaskSetup", "resolve_task", "main", "run"]
