"""What the pretraining and fine-tuning pipelines share: configs and CLI overrides, data loading, model building,
output folder checks and the atomic final save.

Both pipelines follow transformers' example scripts (run_mlm.py, run_glue.py): dataclasses parsed by
`HfArgumentParser`, `datasets.load_dataset` for Hub names and local files alike, and `Trainer`.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import transformers
from transformers import AutoConfig, TrainerCallback, TrainingArguments, set_seed
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ..hub.push import push_checkpoint, write_model_card
from ..models.mhe.configuration_mhe import default_num_key_value_heads
from ..utils.cli import load_yaml_config, parse_args  # noqa: F401 - the pipelines' parser
from ..utils.run_folder import (
    OutputDirError,
    atomic_directory,
    check_not_an_input,
    check_output_dir,
    clean_stale_temporaries,
    write_marker,
)

logger = logging.getLogger(__name__)

# What Trainer writes into output_dir while training; kept when the final folder replaces output_dir.
TRAINING_ARTEFACTS = (f"{PREFIX_CHECKPOINT_DIR}-*", "runs")


class HubPush:
    """Where the final checkpoint goes on the Hub, and with which token (None: huggingface_hub's own, i.e. HF_TOKEN
    or the `hf auth login` cache). Never written anywhere: pickling drops the token, repr hides it."""

    def __init__(self, repo_id: str | None, private: bool, token: str | None):
        self.repo_id, self.private, self.token = repo_id, private, token

    def __reduce__(self):  # pickled (e.g. inside training_args.bin) without the token
        return HubPush, (self.repo_id, self.private, None)

    def __deepcopy__(self, memo):
        return self

    def __repr__(self) -> str:
        return f"HubPush(repo_id={self.repo_id!r}, private={self.private}, token={'<set>' if self.token else None})"


@dataclasses.dataclass
class MHETrainingArguments(TrainingArguments):
    """transformers' TrainingArguments plus the output-folder guard that Transformers 5 dropped, and with the Hub push
    taken away from Trainer.

    `--push_to_hub` means ONE upload, at the end: the verified final checkpoint (`save_final_checkpoint`). Trainer's
    own pushes (it creates the repo at start-up and uploads every checkpoint and `save_model`, `training_args.bin`
    included, unverified) are switched off, and `--hub_token` moves out of the arguments into `hub_push`, so that no
    pickled or saved copy of them (`training_args.bin`, `training_args.json`) holds it.
    """

    overwrite_output_dir: bool = dataclasses.field(
        default=False,
        metadata={"help": "Delete output_dir (earlier checkpoints and final model) before training from scratch."},
    )

    def __post_init__(self):
        if self.max_steps == 0 or self.max_steps < -1:  # TrainingArguments would train by epochs instead
            raise ValueError(f"max_steps must be positive (or -1: train num_train_epochs), got {self.max_steps}.")
        self.hub_push = (
            HubPush(self.hub_model_id, bool(self.hub_private_repo), self.hub_token) if self.push_to_hub else None
        )
        self.push_to_hub, self.hub_token = False, None
        super().__post_init__()

    def to_dict(self):
        # The record says what the user asked for; the token is redacted as TrainingArguments.to_dict does.
        values = super().to_dict()
        values["push_to_hub"] = self.hub_push is not None
        return values


@dataclasses.dataclass
class HubArguments:
    """The loading options of both pipelines' ModelArguments, passed to every `from_pretrained`."""

    cache_dir: str | None = dataclasses.field(
        default=None, metadata={"help": "Where to cache Hub models and datasets."}
    )
    trust_remote_code: bool = dataclasses.field(
        default=False, metadata={"help": "Allow a Hub checkpoint's own modeling code (not needed for MHE models)."}
    )


def resolve_resume_checkpoint(training_args: TrainingArguments) -> str | bool | None:
    """`--resume_from_checkpoint true` (or `latest`) means the newest complete checkpoint-N in output_dir.

    A kill while Trainer writes checkpoint-N leaves it half-written: such folders are skipped (with a warning) for
    the newest complete one. A kill while the final folder replaced output_dir is repaired first
    (`run_folder.clean_stale_temporaries`), so the checkpoints are found wherever the kill left them.
    """
    value = training_args.resume_from_checkpoint
    if value is None or value.lower() in ("false", "no", "none", ""):
        return None
    if value.lower() in ("true", "yes", "latest"):
        output_dir = Path(training_args.output_dir)
        with training_args.main_process_first(desc="repairing an interrupted final save"):
            if training_args.should_save:
                clean_stale_temporaries(output_dir, keep=TRAINING_ARTEFACTS)
        last = last_complete_checkpoint(output_dir) if output_dir.is_dir() else None
        if last is None:
            raise ValueError(
                f"--resume_from_checkpoint {value}: no complete {PREFIX_CHECKPOINT_DIR}-N folder in {output_dir}."
            )
        return str(last)
    if not os.path.isdir(value):
        raise FileNotFoundError(f"--resume_from_checkpoint: checkpoint folder not found: {value}")
    problem = checkpoint_problem(Path(value))
    if problem:
        raise ValueError(f"--resume_from_checkpoint {value}: the checkpoint is incomplete ({problem}).")
    return value


def checkpoint_problem(folder: Path) -> str | None:
    """Why Trainer's checkpoint `folder` cannot be resumed from, or None. Trainer writes trainer_state.json last, so
    a checkpoint whose trainer_state.json parses and names its step, next to the weights, is complete."""
    state_file = folder / "trainer_state.json"
    try:
        state = json.loads(state_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return "no trainer_state.json"
    except (json.JSONDecodeError, UnicodeDecodeError):
        return "trainer_state.json is truncated"
    step = folder.name.removeprefix(f"{PREFIX_CHECKPOINT_DIR}-")
    if str(state.get("global_step")) != step:
        return f"trainer_state.json says step {state.get('global_step')}"
    if not any((folder / name).is_file() for name in ("model.safetensors", "model.safetensors.index.json")):
        return "no model weights"
    return None


def last_complete_checkpoint(output_dir: Path) -> Path | None:
    """The checkpoint-N of output_dir with the highest N that `checkpoint_problem` accepts; warns about the others."""
    checkpoints = [
        path
        for path in output_dir.glob(f"{PREFIX_CHECKPOINT_DIR}-*")
        if path.is_dir() and path.name.removeprefix(f"{PREFIX_CHECKPOINT_DIR}-").isdigit()
    ]
    for folder in sorted(checkpoints, key=lambda path: int(path.name.split("-")[-1]), reverse=True):
        problem = checkpoint_problem(folder)
        if problem is None:
            return folder
        logger.warning("Skipping %s: it is incomplete (%s), left by a run stopped while saving it.", folder, problem)
    return None


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
    """Refuse, before anything is read, to mix a new run into an output_dir that holds an earlier one (its
    checkpoint-N folders would be taken for this run's), unless resuming, or starting over with --overwrite_output_dir
    an earlier run of these scripts. Deletes nothing: `claim_output_dir` does, once every input has been read."""
    output_dir = Path(training_args.output_dir)
    if resume_checkpoint is not None:
        return
    if output_dir.is_dir() and any(output_dir.iterdir()) and not training_args.overwrite_output_dir:
        raise OutputDirError(
            f"Output directory {output_dir} already holds an earlier run. Pass --resume_from_checkpoint true to "
            "continue it, --overwrite_output_dir true to delete it and start over, or choose another --output_dir."
        )
    check_output_dir(output_dir, training_args.overwrite_output_dir, flag="--overwrite_output_dir true")


def claim_output_dir(
    training_args: MHETrainingArguments, resume_checkpoint: str | None, inputs: Sequence[str | None] = ()
) -> None:
    """Make output_dir this run's, just before training: every input (`inputs`: data files, model, tokenizer,
    label list, ...) has been read and checked, so this is the only place a pipeline deletes an earlier run.

    Refuses an output_dir that is or holds one of `inputs`; removes the temporary folders an interrupted final save
    left beside it; with --overwrite_output_dir (and not resuming) deletes the earlier run, which must be one of
    these scripts' (OUTPUT_MARKER); creates output_dir with the marker, so that a run stopped at any point is
    recognised as this tool's own."""
    output_dir = Path(training_args.output_dir)
    if resume_checkpoint is None:
        check_output_dir(output_dir, training_args.overwrite_output_dir, inputs, flag="--overwrite_output_dir true")
    else:  # resuming continues the run in output_dir, whoever wrote it; it still must not hold an input
        check_not_an_input(output_dir, inputs)
    with training_args.main_process_first(desc="checking output_dir"):
        pass  # a barrier: every process has checked output_dir before the main one changes it
    with training_args.main_process_first(desc="preparing output_dir"):
        if training_args.should_save:
            clean_stale_temporaries(output_dir, keep=TRAINING_ARTEFACTS)
            if resume_checkpoint is None and output_dir.is_dir() and any(output_dir.iterdir()):
                shutil.rmtree(output_dir)  # checked above: ours, asked for, and no input inside
            output_dir.mkdir(parents=True, exist_ok=True)
            write_marker(output_dir)


def set_up_run(training_args: MHETrainingArguments) -> str | None:
    """What every pipeline does before it reads data: refuse a bad launch, find the checkpoint to resume from,
    guard output_dir, set up logging and seed everything. Returns the checkpoint to resume from, if any."""
    check_launch(training_args)
    resume_checkpoint = resolve_resume_checkpoint(training_args)
    prepare_output_dir(training_args, resume_checkpoint)
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=training_args.get_process_log_level()
    )
    transformers.utils.logging.set_verbosity(training_args.get_process_log_level())
    set_seed(training_args.seed)
    return resume_checkpoint


class _RunAlreadyFinished(Exception):
    pass


class _StopIfFinished(TrainerCallback):
    """Stops `Trainer.train` before its first step when the resumed checkpoint is already at max_steps: Trainer
    would otherwise train one step more (its loop checks max_steps only after a step), e.g. after a kill during the
    final save of a run whose last checkpoint is its last step."""

    def on_train_begin(self, args, state, control, **kwargs):
        if state.max_steps > 0 and state.global_step >= state.max_steps:
            raise _RunAlreadyFinished


def train(trainer, resume_checkpoint: str | None, train_samples: int | None) -> dict[str, Any]:
    """Train (resuming if asked) and log the train metrics, with the number of training samples, as run_glue.

    Resuming from a checkpoint at max_steps trains nothing: the checkpoint's weights (or, with
    load_best_model_at_end, the best checkpoint's) become the final model, and the train metrics are the state's.
    A stream (--streaming) has no length: its metrics have no train_samples (Trainer counts the steps)."""
    stop = _StopIfFinished()
    trainer.add_callback(stop)
    try:
        metrics = trainer.train(resume_from_checkpoint=resume_checkpoint).metrics
    except _RunAlreadyFinished:
        # Trainer has loaded the checkpoint's weights and state; nothing else of train() is needed.
        trainer.is_in_train = False
        state = trainer.state
        logger.warning(
            "%s is already at step %d of %d: nothing left to train, writing the final checkpoint only.",
            resume_checkpoint,
            state.global_step,
            state.max_steps,
        )
        if trainer.args.load_best_model_at_end and state.best_model_checkpoint:
            trainer._load_best_model()
        metrics = {"epoch": state.epoch, "total_flos": state.total_flos}
    finally:
        trainer.remove_callback(stop)
    if train_samples is not None:
        metrics["train_samples"] = train_samples
    trainer.log_metrics("train", metrics)
    return metrics


def record_args(*args_instances: Any) -> dict[str, Any]:
    """The parsed arguments, one JSON-serialisable dict per dataclass, by class name (TrainingArguments.to_dict()
    redacts every `*_token`; the raw command line is not recorded, as it may hold one)."""
    record = {}
    for instance in args_instances:
        values = instance.to_dict() if hasattr(instance, "to_dict") else dataclasses.asdict(instance)
        record[type(instance).__name__] = json.loads(json.dumps(values, default=str))
    return record


# ---------------------------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------------------------


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
    """A new model's configuration from a JSON file (configs/model/<size>.json: dimensions only), with `vocab_size`
    and `pad_token_id` taken from the tokenizer, then `attention_type` (default: the file's, else MHEConfig's) and
    `config_overrides`. GQA without `num_key_value_heads` gets `default_num_key_value_heads`."""
    path = Path(model_config)
    if not path.is_file():
        raise FileNotFoundError(f"Model config file not found: {path}")
    values = json.loads(path.read_text(encoding="utf-8"))
    if "model_type" not in values:
        raise ValueError(f'{path} has no model_type (e.g. "mhe").')
    values.update(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
    overrides = parse_config_overrides(config_overrides)
    # A config class keeps unknown keys as plain attributes that nothing reads: a typo would be saved and ignored.
    known = set(AutoConfig.for_model(values["model_type"]).to_dict())
    for source, keys in ((str(path), values), ("--config_overrides", overrides)):
        unknown = sorted(set(keys) - known)
        if unknown:
            hints = [f"{key} (did you mean {', '.join(difflib.get_close_matches(key, known, n=1)) or '?'})"
                     for key in unknown]  # fmt: skip
            raise ValueError(f"Unknown model configuration field(s) in {source}: {'; '.join(hints)}.")
    if attention_type is not None:
        values["attention_type"] = attention_type
    values.update(overrides)
    if values.get("attention_type") == "gqa" and values.get("num_key_value_heads") is None:
        values["num_key_value_heads"] = default_num_key_value_heads(values.get("num_attention_heads", 12))
    return AutoConfig.for_model(**values)


def check_model_fits(model, tokenizer, max_seq_length: int) -> None:
    """Before training, what would otherwise fail at the first step (an index error deep in the embeddings)."""
    max_positions = getattr(model.config, "max_position_embeddings", None)
    if max_positions is not None and max_seq_length > max_positions:
        raise ValueError(
            f"--max_seq_length {max_seq_length} exceeds the model's max_position_embeddings ({max_positions})."
        )
    vocab_size = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > vocab_size:
        raise ValueError(
            f"The tokenizer has {len(tokenizer)} tokens but the model's vocabulary only {vocab_size}: it was trained "
            "with another tokenizer (--tokenizer_name)."
        )


def check_local_path(value: str | None, option: str) -> None:
    """A value that can only be a local path (absolute, ./ or ../, ~, or more than one '/', which no Hub id has)
    must exist: otherwise huggingface_hub would report it as a malformed repo id."""
    if not value or os.path.exists(value):
        return
    if value.startswith(("/", "./", "../", "~", ".\\")) or value.count("/") > 1 or "\\" in value:
        raise FileNotFoundError(f"{option} {value}: no such file or folder.")


def check_model_source(model_config: str | None, model_name_or_path: str | None, **new_model_options) -> None:
    """Exactly one of a new model's config file and a trained model; options such as --attention_type only for the
    former (a trained model keeps its own configuration)."""
    check_local_path(model_name_or_path, "--model_name_or_path")
    if bool(model_config) == bool(model_name_or_path):
        raise ValueError(
            "Pass exactly one of --model_config (a configs/model/<size>.json file: train a new model) and "
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
    task: str,
    datasets: list[str],
    base_model: str | None = None,
    extra_files: dict[str, str] | None = None,
) -> None:
    """Write the final, Hub-ready checkpoint to `output_dir`, atomically. Call it on every process.

    Everything is written to a temporary folder beside `output_dir` first (`run_folder.atomic_directory`): the model
    (config.json with the full `auto_map`, configuration_mhe.py, modeling_mhe.py, model.safetensors), the tokenizer,
    `training_args.json` (`args_to_record`), `<split>_results.json` for each entry of `metrics`
    (`{"train": {...}, "eval": {...}}`), their union in `all_results.json` (as `Trainer.save_metrics` writes them),
    `trainer_state.json`, `extra_files` (name -> text, e.g. predictions) and the model card (`task`: "fill-mask" or
    "text-classification", trained on `datasets`, from `base_model`). Only then does the folder replace
    `output_dir`, and the checkpoint-N folders Trainer wrote there move into it. A run stopped at any point leaves
    its checkpoints where `--resume_from_checkpoint true` finds them, and no half-written final model.
    """
    output_dir = Path(output_dir).resolve()
    trainer.accelerator.wait_for_everyone()
    if trainer.is_world_process_zero():
        # Trainer's checkpoints and logs move into the new folder after the swap (run_folder.atomic_directory).
        with atomic_directory(output_dir, keep=TRAINING_ARTEFACTS) as tmp_dir:
            trainer.save_model(str(tmp_dir))  # model + tokenizer (Trainer's processing_class) + training_args.bin
            if trainer.processing_class is None:
                tokenizer.save_pretrained(tmp_dir)
            trainer.state.save_to_json(str(tmp_dir / "trainer_state.json"))
            # The precision the run actually used: accelerate's state, which `accelerate launch --mixed_precision`
            # sets without touching the --fp16/--bf16 flags recorded in the arguments.
            write_json(
                tmp_dir / "training_args.json",
                {**args_to_record, "mixed_precision": trainer.accelerator.mixed_precision},
            )
            for split, split_metrics in metrics.items():
                write_json(tmp_dir / f"{split}_results.json", split_metrics)
            write_json(tmp_dir / "all_results.json", merge_metrics(metrics))
            for name, text in (extra_files or {}).items():
                (tmp_dir / name).write_text(text, encoding="utf-8")
            write_model_card(
                tmp_dir,
                task=task,
                datasets=datasets,
                base_model=base_model,
                model_name=trainer.args.hub_model_id or output_dir.name,
            )
        logger.info("Saved the final checkpoint to %s", output_dir)
    trainer.accelerator.wait_for_everyone()

    hub_push = getattr(trainer.args, "hub_push", None)
    if hub_push is not None and trainer.is_world_process_zero():
        # Our verified push, not Trainer's: Trainer's would replace the card with a generic one and check nothing.
        push_checkpoint(
            output_dir, hub_push.repo_id or output_dir.name, private=hub_push.private, token=hub_push.token
        )


def merge_metrics(metrics: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """`{"train": {...}, "eval": {...}}` -> one dict, as all_results.json holds them."""
    return {key: value for split_metrics in metrics.values() for key, value in split_metrics.items()}
