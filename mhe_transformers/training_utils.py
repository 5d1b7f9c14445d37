"""What the pretraining and fine-tuning pipelines share: configs and CLI overrides, data loading, model building,
output folder checks and the atomic final save.

Both pipelines follow transformers' example scripts (run_mlm.py, run_glue.py): dataclasses parsed by
`HfArgumentParser`, `datasets.load_dataset` for Hub names and local files alike, and `Trainer`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from transformers import AutoConfig, HfArgumentParser, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint

from .hub import push_checkpoint, write_model_card

logger = logging.getLogger(__name__)

# datasets' packaged builders for local files, by file extension.
LOCAL_BUILDERS = {".txt": "text", ".text": "text", ".csv": "csv", ".json": "json", ".jsonl": "json"}

# What Trainer writes into output_dir while training; kept when the final folder replaces output_dir.
TRAINING_ARTEFACTS = (f"{PREFIX_CHECKPOINT_DIR}-*", "runs")


@dataclasses.dataclass
class MHETrainingArguments(TrainingArguments):
    """transformers' TrainingArguments plus the output-folder guard that Transformers 5 dropped."""

    overwrite_output_dir: bool = dataclasses.field(
        default=False,
        metadata={"help": "Delete output_dir (earlier checkpoints and final model) before training from scratch."},
    )


# ---------------------------------------------------------------------------------------------------------------
# Arguments: a YAML config, then `--key value` overrides of any dataclass field
# ---------------------------------------------------------------------------------------------------------------


def parse_args(dataclass_types: Sequence[type], argv: Sequence[str] | None = None) -> tuple:
    """Parse `[--config FILE.yaml] [--field value ...]` into one instance of each dataclass.

    The YAML file maps field names to values and becomes the parser's defaults, so the command line overrides it
    and both go through the same argparse type conversion and the dataclasses' own validation.
    """
    # No abbreviations: `--learning_rat` must be an error, not a silent `--learning_rate`.
    config_parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    config_parser.add_argument("--config", default=None)
    config_args, remaining = config_parser.parse_known_args(argv)

    parser = HfArgumentParser(dataclass_types, allow_abbrev=False)
    parser.add_argument("--config", default=None, help="YAML file of `field: value` defaults (see configs/README.md)")
    if config_args.config is not None:
        parser.set_defaults(**load_yaml_config(config_args.config, known_fields=_field_names(parser)))
    # --config itself comes back as an extra namespace after the dataclasses; drop it.
    return tuple(parser.parse_args_into_dataclasses(args=remaining)[: len(dataclass_types)])


def load_yaml_config(path: str | os.PathLike, known_fields: set[str] | None = None) -> dict[str, Any]:
    """Read a YAML mapping of argument names to values; unknown names are an error (a typo would be ignored)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Config file not found: {path}")
    values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(values, dict):
        raise ValueError(f"{path} must hold a mapping of argument names to values, got {type(values).__name__}.")
    if known_fields is not None:
        unknown = sorted(set(values) - known_fields)
        if unknown:
            raise ValueError(f"Unknown argument(s) in {path}: {', '.join(unknown)}. Run the script with --help.")
    return values


def _field_names(parser: HfArgumentParser) -> set[str]:
    return {action.dest for action in parser._actions} - {"help", "config"}


def resolve_resume_checkpoint(training_args: TrainingArguments) -> str | bool | None:
    """`--resume_from_checkpoint true` (or `latest`) means the newest checkpoint-N in output_dir, as in Trainer."""
    value = training_args.resume_from_checkpoint
    if value is None or value.lower() in ("false", "no", "none", ""):
        return None
    if value.lower() in ("true", "yes", "latest"):
        last = get_last_checkpoint(training_args.output_dir) if os.path.isdir(training_args.output_dir) else None
        if last is None:
            raise ValueError(
                f"--resume_from_checkpoint {value}: no {PREFIX_CHECKPOINT_DIR}-N folder in {training_args.output_dir}."
            )
        return last
    if not os.path.isdir(value):
        raise FileNotFoundError(f"--resume_from_checkpoint: checkpoint folder not found: {value}")
    return value


def check_launch(training_args: TrainingArguments) -> None:
    """Refuse processes that were launched together but would train apart (each on all the data, racing to write
    output_dir): on a machine without GPUs, Transformers joins them only with --use_cpu."""
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > 1 and training_args.world_size != launched:
        raise ValueError(
            f"{launched} processes were launched but they would train independently (world size "
            f"{training_args.world_size}). Without GPUs, add --use_cpu true, e.g. `accelerate launch --multi_gpu "
            "--num_processes 2 scripts/pretrain_mlm.py ... --use_cpu true`."
        )


def prepare_output_dir(training_args: MHETrainingArguments, resume_checkpoint: str | None) -> None:
    """Refuse to mix a new run into an output_dir that holds an earlier one (its checkpoint-N folders would be
    taken for this run's), unless resuming, or starting over with --overwrite_output_dir."""
    output_dir = Path(training_args.output_dir)
    if not output_dir.is_dir() or not any(output_dir.iterdir()) or resume_checkpoint is not None:
        return
    if not training_args.overwrite_output_dir:
        raise ValueError(
            f"Output directory {output_dir} already holds an earlier run. Pass --resume_from_checkpoint true to "
            "continue it, --overwrite_output_dir true to delete it and start over, or choose another --output_dir."
        )
    with training_args.main_process_first(desc="clearing output_dir"):
        if training_args.should_save and output_dir.exists():
            shutil.rmtree(output_dir)


def record_args(*args_instances: Any) -> dict[str, Any]:
    """The parsed arguments, one JSON-serialisable dict per dataclass, by class name (TrainingArguments.to_dict()
    redacts every `*_token`; the raw command line is not recorded, as it may hold one)."""
    record = {}
    for instance in args_instances:
        values = instance.to_dict() if hasattr(instance, "to_dict") else dataclasses.asdict(instance)
        record[type(instance).__name__] = json.loads(json.dumps(values, default=str))
    return record


# ---------------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------------


def load_raw_datasets(
    dataset_name: str | None,
    dataset_config_name: str | None = None,
    data_files: dict[str, str | list[str] | None] | None = None,
    cache_dir: str | None = None,
    streaming: bool = False,
):
    """A Hub dataset by name, or local files by split: the same `datasets.load_dataset` call, with the packaged
    "text"/"csv"/"json" builder picked from the file extension for local files."""
    import datasets  # imported here: slow to import, and the argument parsing above does not need it

    data_files = {
        split: [files] if isinstance(files, str) else list(files)
        for split, files in (data_files or {}).items()
        if files
    }
    if bool(dataset_name) == bool(data_files):
        raise ValueError("Pass either a dataset name (--dataset_name / --task_name) or local data files, not both.")
    if dataset_name:
        return datasets.load_dataset(dataset_name, dataset_config_name, cache_dir=cache_dir, streaming=streaming)

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
    # One load per split: splits may differ in columns (a test file without labels) and even in file type.
    loaded = {
        split: datasets.load_dataset(
            LOCAL_BUILDERS[Path(files[0]).suffix.lower()],
            data_files={split: files},
            split=split,
            cache_dir=cache_dir,
            streaming=streaming,
        )
        for split, files in data_files.items()
    }
    return datasets.IterableDatasetDict(loaded) if streaming else datasets.DatasetDict(loaded)


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


# ---------------------------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------------------------


def default_num_key_value_heads(num_attention_heads: int) -> int:
    """GQA's key/value heads when none are given: a quarter of the heads (BERT-base: 12 -> 3), but at least two so
    that GQA differs from MQA, rounded down to a divisor of the head count."""
    groups = max(2, num_attention_heads // 4)
    while num_attention_heads % groups:
        groups -= 1
    return groups


def parse_config_overrides(overrides: str | None) -> dict[str, Any]:
    """`"num_hidden_layers=4,attention_type=gqa"` -> `{"num_hidden_layers": 4, "attention_type": "gqa"}`
    (values are read as JSON when they parse, e.g. numbers, true/false, null; else kept as strings)."""
    values = {}
    for item in (overrides or "").split(","):
        if not item.strip():
            continue
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"--config_overrides items must look like key=value, got {item!r}.")
        try:
            values[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            values[key.strip()] = raw.strip()
    return values


def build_config(
    model_config: str | os.PathLike, tokenizer, attention_type: str | None = None, config_overrides: str | None = None
):
    """A new model's configuration from a JSON file (configs/model/*.json), with `vocab_size` and `pad_token_id`
    taken from the tokenizer (the JSON's values are only defaults), then --attention_type and --config_overrides."""
    path = Path(model_config)
    if not path.is_file():
        raise FileNotFoundError(f"Model config file not found: {path}")
    values = json.loads(path.read_text(encoding="utf-8"))
    if "model_type" not in values:
        raise ValueError(f'{path} has no model_type (e.g. "mhe").')
    values.update(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
    overrides = parse_config_overrides(config_overrides)
    if attention_type is not None:
        if attention_type == "gqa" and values.get("attention_type") != "gqa" and "num_key_value_heads" not in overrides:
            values["num_key_value_heads"] = default_num_key_value_heads(values.get("num_attention_heads", 12))
        values["attention_type"] = attention_type
    values.update(overrides)
    return AutoConfig.for_model(**values)


def check_model_source(model_config: str | None, model_name_or_path: str | None, **new_model_options) -> None:
    """Exactly one of a new model's config file and a trained model; options such as --attention_type only for the
    former (a trained model keeps its own configuration)."""
    if bool(model_config) == bool(model_name_or_path):
        raise ValueError(
            "Pass exactly one of --model_config (a configs/model/*.json file: train a new model) and "
            "--model_name_or_path (a checkpoint folder or Hub id: continue training it)"
            + ("; got both." if model_config else "; got neither.")
        )
    given = [f"--{name}" for name, value in new_model_options.items() if value is not None]
    if model_name_or_path and given:
        raise ValueError(
            f"{', '.join(given)} only apply to a new model (--model_config): a trained model keeps its own."
        )


# ---------------------------------------------------------------------------------------------------------------
# The final checkpoint
# ---------------------------------------------------------------------------------------------------------------


def write_json(path: Path, values: Any) -> None:
    path.write_text(json.dumps(values, indent=4, sort_keys=True) + "\n", encoding="utf-8")


def save_final_checkpoint(
    trainer,
    tokenizer,
    output_dir: str | os.PathLike,
    metrics: dict[str, dict[str, Any]],
    args_to_record: dict[str, Any],
    card_info: dict[str, Any],
    extra_files: dict[str, str] | None = None,
) -> None:
    """Write the final, Hub-ready checkpoint to `output_dir`, atomically. Call it on every process.

    Everything is written to a temporary folder beside `output_dir` first: the model (config.json with the full
    `auto_map`, configuration_mhe.py, modeling_mhe.py, model.safetensors), the tokenizer, `training_args.json`
    (`args_to_record`), `<split>_results.json` for each entry of `metrics` (`{"train": {...}, "eval": {...}}`),
    their union in `all_results.json` (as `Trainer.save_metrics` writes them), `trainer_state.json` and
    `extra_files` (name -> text, e.g. predictions). Only then does the folder replace `output_dir`, taking the
    checkpoint-N folders Trainer wrote there along. A run stopped at any point before leaves its checkpoints and no
    half-written final model.

    `card_info` describes the model for its card: `task` ("fill-mask" or "text-classification"), `datasets`,
    `base_model` (what was fine-tuned, or None) and `labels`.
    """
    output_dir = Path(output_dir).resolve()
    trainer.accelerator.wait_for_everyone()
    if trainer.is_world_process_zero():
        output_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp_dir = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.tmp-", dir=output_dir.parent))
        try:
            trainer.save_model(str(tmp_dir))  # model + tokenizer (Trainer's processing_class) + training_args.bin
            if trainer.processing_class is None:
                tokenizer.save_pretrained(tmp_dir)
            trainer.state.save_to_json(str(tmp_dir / "trainer_state.json"))
            write_json(tmp_dir / "training_args.json", args_to_record)
            for split, split_metrics in metrics.items():
                write_json(tmp_dir / f"{split}_results.json", split_metrics)
            write_json(
                tmp_dir / "all_results.json",
                {k: v for split_metrics in metrics.values() for k, v in split_metrics.items()},
            )
            for name, text in (extra_files or {}).items():
                (tmp_dir / name).write_text(text, encoding="utf-8")
            write_model_card(
                tmp_dir,
                task=card_info["task"],
                datasets=card_info.get("datasets"),
                base_model=card_info.get("base_model"),
                model_name=trainer.args.hub_model_id or output_dir.name,
            )
            tmp_dir.chmod(0o755)  # mkdtemp makes it private
        except BaseException:
            shutil.rmtree(tmp_dir, ignore_errors=True)
            raise
        _replace_dir_keeping_artefacts(tmp_dir, output_dir)
        logger.info("Saved the final checkpoint to %s", output_dir)
    trainer.accelerator.wait_for_everyone()

    if trainer.args.push_to_hub and trainer.is_world_process_zero():
        # Our verified push, not Trainer's: Trainer's would replace the card with a generic one and check nothing.
        push_checkpoint(
            output_dir, trainer.args.hub_model_id or output_dir.name, private=bool(trainer.args.hub_private_repo)
        )


def _replace_dir_keeping_artefacts(new_dir: Path, output_dir: Path) -> None:
    """Move Trainer's checkpoints and logs from `output_dir` into `new_dir`, then swap the folders. Renames only
    (same file system), so readers see the old folder or the complete new one."""
    if output_dir.exists():
        for pattern in TRAINING_ARTEFACTS:
            for entry in output_dir.glob(pattern):
                if not (new_dir / entry.name).exists():
                    os.replace(entry, new_dir / entry.name)
        old_dir = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.old-", dir=output_dir.parent))
        os.replace(output_dir, old_dir / output_dir.name)
        os.replace(new_dir, output_dir)
        shutil.rmtree(old_dir, ignore_errors=True)
    else:
        os.replace(new_dir, output_dir)
