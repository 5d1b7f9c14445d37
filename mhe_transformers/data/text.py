"""Data loading shared by pretraining, fine-tuning, tokenizer training and conversion: Hub datasets and local
files through one `datasets.load_dataset` call, column and emptiness checks, seeded subsets, and the checks of values
that would otherwise be read wrongly later (non-finite numbers, label names with control characters, a tokenizer
that is not the model's)."""

from __future__ import annotations

import math
import os
import unicodedata
from pathlib import Path

import numpy as np

# datasets' packaged builders for local files, by file extension.
LOCAL_BUILDERS = {".txt": "text", ".text": "text", ".csv": "csv", ".json": "json", ".jsonl": "json"}


def load_raw_datasets(
    dataset_name: str | None,
    dataset_config_name: str | None = None,
    data_files: dict[str, str | list[str] | None] | None = None,
    cache_dir: str | None = None,
    streaming: bool = False,
):
    """A Hub dataset by name, or local files by split: the same `datasets.load_dataset` call, with the packaged
    "text"/"csv"/"json" builder picked from the file extension for local files."""
    import datasets  # imported here: slow to import, and argument parsing does not need it

    data_files = {
        split: [files] if isinstance(files, str) else list(files)
        for split, files in (data_files or {}).items()
        if files
    }
    if bool(dataset_name) == bool(data_files):
        raise ValueError("Pass either a dataset name (--dataset_name / --task_name) or local data files, not both.")
    if dataset_name:
        try:
            return datasets.load_dataset(dataset_name, dataset_config_name, cache_dir=cache_dir, streaming=streaming)
        except ConnectionError as error:  # datasets' own message names neither the config nor what to do
            message = hub_dataset_unavailable(dataset_name, dataset_config_name, cache_dir, error)
            raise ConnectionError(message) from error

    all_files = [file for files in data_files.values() for file in files]
    missing = [file for file in all_files if not Path(file).is_file()]
    if missing:
        raise FileNotFoundError(f"Data file(s) not found: {', '.join(missing)}")
    empty = [file for file in all_files if os.path.getsize(file) == 0]
    if empty:  # datasets would fail with an unhelpful DatasetGenerationError
        raise ValueError(f"Data file(s) are empty: {', '.join(empty)}")
    unknown = [file for file in all_files if Path(file).suffix.lower() not in LOCAL_BUILDERS]
    if unknown:
        raise ValueError(
            f"Unsupported data file type(s): {', '.join(unknown)}; use {', '.join(sorted(LOCAL_BUILDERS))}."
        )
    for split, files in data_files.items():
        if len({LOCAL_BUILDERS[Path(file).suffix.lower()] for file in files}) > 1:
            raise ValueError(f"The {split} files mix file types: {', '.join(files)}.")
    for file in all_files:
        check_utf8(file)
    # One load per split: splits may differ in columns (a test file without labels) and even in file type.
    loaded = {}
    for split, files in data_files.items():
        try:
            loaded[split] = datasets.load_dataset(
                LOCAL_BUILDERS[Path(files[0]).suffix.lower()],
                data_files={split: files},
                split=split,
                cache_dir=cache_dir,
                streaming=streaming,
            )
        except datasets.exceptions.DatasetGenerationError as error:  # its own message names neither file nor cause
            cause = error.__cause__ or error
            raise ValueError(f"Cannot read the {split} file(s) {', '.join(files)}: {cause}") from error
        except ValueError as error:  # e.g. 'Instruction "train" corresponds to no data!' for a header-only CSV
            if "corresponds to no data" not in str(error):
                raise
            raise ValueError(f"The {split} file(s) {', '.join(files)} hold no rows.") from error
    return datasets.IterableDatasetDict(loaded) if streaming else datasets.DatasetDict(loaded)


def hub_dataset_unavailable(name: str, config_name: str | None, cache_dir: str | None, error: Exception) -> str:
    """One line saying which Hub dataset (and configuration) could not be loaded, and why: not cached, and the Hub
    offline or unreachable."""
    import datasets

    what = f"{name!r}" + (f" (configuration {config_name!r})" if config_name else "")
    hub = (
        "the Hub is offline (HF_HUB_OFFLINE=1 or HF_DATASETS_OFFLINE=1)"
        if datasets.config.HF_HUB_OFFLINE
        else f"the Hub could not be reached ({error})"
    )
    cache = cache_dir or datasets.config.HF_DATASETS_CACHE
    return (
        f"Cannot load the Hub dataset {what}: it is not in the datasets cache ({cache}) and {hub}. Load it once "
        "with network access, or give local data files in its place."
    )


def check_utf8(file: str | os.PathLike) -> None:
    """Raise naming the file and line of the first bytes that are not UTF-8 (datasets would only say that its
    dataset could not be generated)."""
    with open(file, "rb") as f:
        for line_number, line in enumerate(f, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as error:
                raise ValueError(f"{file}, line {line_number}, is not UTF-8 text ({error.reason}).") from None


def check_columns(dataset, required: dict[str, str | None], split: str) -> None:
    """Raise naming the argument and the column when a column is missing, and listing the available ones."""
    available = dataset.column_names
    if available is None:  # streaming datasets of unknown features: nothing to check before reading
        return
    for argument, column in required.items():
        if column is not None and column not in available:
            raise ValueError(
                f"Column {column!r} ({argument}) not found in the {split} split; available columns: {available}."
            )


def subsample_indices(length: int, max_samples: int | None) -> list[int]:
    """The rows `subsample` keeps, in their original order."""
    if max_samples is None or max_samples >= length:
        return list(range(length))
    # A fixed seed, not --seed: runs that differ only in their seed must see the same examples.
    return sorted(np.random.default_rng(0).choice(length, size=max_samples, replace=False).tolist())


def subsample(dataset, max_samples: int | None):
    """At most `max_samples` examples: a random subset, the same for every run (data files are often sorted, e.g.
    WordNet's by class, so the first N would be unrepresentative). Streams keep their first N."""
    if max_samples is None:
        return dataset
    if not hasattr(dataset, "__len__"):
        return dataset.take(max_samples)
    return dataset.select(subsample_indices(len(dataset), max_samples)) if max_samples < len(dataset) else dataset


def check_not_empty(dataset, what: str) -> None:
    """Raise when `dataset` (described by `what`, e.g. "train split") has no rows; streams are not checked."""
    if hasattr(dataset, "__len__") and len(dataset) == 0:
        raise ValueError(f"The {what} is empty: nothing to train or evaluate on.")


def load_texts(
    data_files: str | list[str] | None = None,
    dataset_name: str | None = None,
    dataset_config_name: str | None = None,
    split: str = "train",
    text_column: str = "text",
    cache_dir: str | None = None,
) -> list[str]:
    """The non-blank texts of local files (.txt: one text per line; .csv/.json/.jsonl: `text_column`) or of one
    split of a `datasets.load_dataset` name: `load_raw_datasets` and its checks, as a list."""
    dataset = load_raw_datasets(dataset_name, dataset_config_name, {split: data_files}, cache_dir=cache_dir)
    if split not in dataset:
        raise ValueError(f"{dataset_name} has no split {split!r}; it has {list(dataset)}.")
    dataset = dataset[split]
    check_columns(dataset, {"text_column": text_column}, split)
    return [text for text in dataset[text_column] if text and text.strip()]


# ---------------------------------------------------------------------------------------------------------------------
# Values that would be read wrongly later


def control_character(text: str) -> str | None:
    """The first control character (tab, newline, ...) or line/paragraph separator in `text`, if any."""
    return next((ch for ch in text if unicodedata.category(ch) in ("Cc", "Zl", "Zp")), None)


def check_label_name(name: str, where: str) -> None:
    """Raise naming `name` and `where` it comes from when it holds a control character: label names are written
    one per field of predictions.tsv (and shown in model cards), where a tab or newline would split them."""
    character = control_character(name)
    if character is not None:
        raise ValueError(
            f"Label name {name!r} in {where} holds a control character ({character!r}), which would break "
            "predictions.tsv and the model card; rename the label."
        )


def check_finite(dataset, column: str, split: str) -> None:
    """Raise naming the first row whose number in `column` is NaN or infinite (a regression label, say): training
    on it gives non-finite weights and a meaningless loss instead of an error."""
    for row, value in enumerate(dataset[column]):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(
                f"Row {row + 1} of the {split} split has the label {value!r} in column {column!r}; regression "
                "labels must be finite numbers."
            )


# Files a tokenizer saved with save_pretrained leaves in a checkpoint folder.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt")


def check_tokenizer_matches(tokenizer, tokenizer_name: str | None, model_name_or_path: str, config) -> None:
    """Raise, naming both, when a tokenizer given apart from its model (`--tokenizer_name`) is not the model's:
    another vocabulary than the one saved with the checkpoint (its token -> id table), or, for a checkpoint saved
    without a tokenizer, other special-token ids than the model's configuration. An unrelated tokenizer would
    otherwise feed the model ids that mean other tokens, and train without complaint."""
    if not tokenizer_name or os.path.abspath(tokenizer_name) == os.path.abspath(model_name_or_path):
        return
    problems = []
    folder = Path(model_name_or_path)
    if folder.is_dir() and any((folder / name).is_file() for name in TOKENIZER_FILES):
        from transformers import AutoTokenizer

        saved = AutoTokenizer.from_pretrained(folder)
        if saved.get_vocab() != tokenizer.get_vocab():
            problems.append(
                f"its vocabulary ({len(tokenizer)} tokens) is not the one saved with the checkpoint "
                f"({len(saved)} tokens)"
            )
    for name in ("pad_token_id", "bos_token_id", "eos_token_id", "sep_token_id", "cls_token_id"):
        expected, actual = getattr(config, name, None), getattr(tokenizer, name, None)
        if expected is not None and actual is not None and expected != actual:
            problems.append(f"its {name} is {actual}, the model's {expected}")
    if problems:
        raise ValueError(
            f"The tokenizer {tokenizer_name} does not match the model {model_name_or_path}: {'; '.join(problems)}. "
            "Leave --tokenizer_name out to use the checkpoint's own tokenizer."
        )
