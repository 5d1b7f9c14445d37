"""What the pretraining and fine-tuning pipelines share, in the order a run uses it: set-up (launch check, resume,
output folder, logging, seed), the model and tokenizer, training (resuming exactly), evaluation, and the atomic,
Hub-ready final save. The arguments live in `training.arguments`.

The pipelines follow transformers' example scripts (run_mlm.py, run_glue.py, run_qa.py): dataclasses parsed by
`utils.cli.parse_args`, `datasets.load_dataset` for Hub names and local files alike, and `Trainer`. A pipeline's
`run()` reads top-down: check the arguments, `set_up_run`, load data, `load_tokenizer` and `load_model`,
`claim_output_dir`, `train_and_evaluate`, `save_final_checkpoint`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import functools
import json
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import AutoConfig, AutoTokenizer, TrainerCallback, TrainingArguments, set_seed
from transformers.trainer_callback import ExportableState
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ..hub.push import push_checkpoint, write_model_card
from ..models.mhe.configuration_mhe import default_num_key_value_heads
from ..utils.cli import parse_args  # noqa: F401 - `loop.parse_args`, for callers that parse a pipeline's arguments
from ..utils.run_folder import (
    OutputDirError,
    RunFolder,
    check_own,
    clean_stale_temporaries,
    lock_output_dir,
    write_json,
)
from ..utils.secrets import redact
from .arguments import MHETrainingArguments, ModelArguments
from .launch import check_launch, check_sharding, log_effective_batch

logger = logging.getLogger(__name__)

# The weights of a Trainer checkpoint: one file or an index of shards; under FSDP (accelerate's save_fsdp_model), a
# distributed checkpoint folder (SHARDED_STATE_DICT) or one file (FULL_STATE_DICT).
CHECKPOINT_WEIGHTS = (
    "model.safetensors", "model.safetensors.index.json", "pytorch_model_fsdp_0", "pytorch_model_fsdp.bin",
)  # fmt: skip
# What Trainer writes into output_dir while training; kept when the final folder replaces output_dir.
TRAINING_ARTEFACTS = (f"{PREFIX_CHECKPOINT_DIR}-*", "runs")


def resume_requested(training_args: TrainingArguments) -> bool:
    value = training_args.resume_from_checkpoint
    return not (value is None or value.lower() in ("false", "no", "none", ""))


def resolve_resume_checkpoint(training_args: TrainingArguments, work_dir: Path) -> str | None:
    """`--resume_from_checkpoint true` (or `latest`) means the newest complete checkpoint-N of the run's working
    folder (`run_folder.RunFolder`: output_dir, or the `.next` folder of a run that was replacing an earlier one).

    A kill while Trainer writes checkpoint-N leaves it half-written: such folders are skipped (with a warning) for
    the newest complete one. A kill while the final folder replaced output_dir has been repaired by `set_up_run`
    (`run_folder.clean_stale_temporaries`), so the checkpoints are found wherever the kill left them.
    """
    value = training_args.resume_from_checkpoint
    if not resume_requested(training_args):
        return None
    if value.lower() in ("true", "yes", "latest"):
        output_dir = work_dir
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
    if not any((folder / name).exists() for name in CHECKPOINT_WEIGHTS):
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


def holds_output_dir(run):
    """Decorates a pipeline's `run(model_args, data_args, training_args, ...)`: it holds its output folder's lock
    (`run_folder.lock_output_dir`) from its first check to the end of its final save and push, so a second run into
    the folder (a new one, or a resume while this one saves) is refused with a message naming this one."""

    @functools.wraps(run)
    def holding(model_args, data_args, training_args, *args, **kwargs):
        with lock_output_dir(training_args.output_dir, enabled=training_args.should_save):
            return run(model_args, data_args, training_args, *args, **kwargs)

    return holding


def prepare_output_dir(training_args: MHETrainingArguments) -> RunFolder:
    """Decide, before anything is read, where the run writes (`run_folder.RunFolder`) and refuse what it must not
    touch; deletes nothing (`claim_output_dir` creates the working folder, once every input has been checked).

    Repairs first what a killed final save left (`run_folder.clean_stale_temporaries`: only this tool's own
    temporaries). A new run into an output_dir holding an earlier one is refused (its checkpoint-N folders would be
    taken for this run's) unless --resume_from_checkpoint continues it or --overwrite_output_dir replaces it, which
    needs an earlier run of these scripts (OUTPUT_MARKER) and happens only when the new run has succeeded. A resumed
    run needs a folder of these scripts too: a folder of the user's own is never resumed into."""
    output_dir, resuming = training_args.output_dir, resume_requested(training_args)
    with training_args.main_process_first(desc="repairing an interrupted final save"):
        if training_args.should_save:
            clean_stale_temporaries(output_dir, keep=TRAINING_ARTEFACTS)
    folder = RunFolder.plan(output_dir, resuming)
    if not resuming and folder.replaces_earlier_run and not training_args.overwrite_output_dir:
        check_own(folder.output_dir)  # a folder of the user's own is named as such
        raise OutputDirError(
            f"Output directory {folder.output_dir} already holds an earlier run. Pass --resume_from_checkpoint true "
            "to continue it, --overwrite_output_dir true to replace it (once the new run has succeeded), or choose "
            "another --output_dir."
        )
    folder.check(resuming, training_args.overwrite_output_dir)
    return folder


def claim_output_dir(
    training_args: MHETrainingArguments, resume_checkpoint: str | None, inputs: Sequence[str | None] = ()
) -> None:
    """Make the run's working folder its own, once every input (`inputs`: data files, model, tokenizer, label list,
    ...) has been read and checked and the Trainer (its arguments, callbacks and integrations) built: refuses an
    output_dir that is or holds one of `inputs`; creates the working folder with the marker, so that a run stopped
    at any point is recognised as this tool's own. An earlier run being replaced is deleted only by the final save.
    """
    folder, resuming = training_args.run_folder, resume_requested(training_args)
    folder.check(resuming, training_args.overwrite_output_dir, inputs)
    with training_args.main_process_first(desc="checking output_dir"):
        pass  # a barrier: every process has checked output_dir before the main one changes it
    with training_args.main_process_first(desc="preparing output_dir"):
        if training_args.should_save:
            folder.claim(resuming)


def set_up_run(training_args: MHETrainingArguments) -> str | None:
    """What every pipeline does before it reads data (holding the output folder, `holds_output_dir`): refuse a bad
    launch, decide and guard where the run writes (Trainer writes to `RunFolder.work_dir`; `training_args.run_folder`
    keeps the final output_dir), find the checkpoint to resume from, set up logging and seed everything. Returns the
    checkpoint to resume from, if any."""
    check_launch(training_args)
    folder = prepare_output_dir(training_args)
    resume_checkpoint = resolve_resume_checkpoint(training_args, folder.work_dir)
    training_args.run_folder, training_args.output_dir = folder, str(folder.work_dir)
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=training_args.get_process_log_level()
    )
    transformers.utils.logging.set_verbosity(training_args.get_process_log_level())
    log_effective_batch(training_args)
    set_seed(training_args.seed)
    return resume_checkpoint


class _RunAlreadyFinished(Exception):
    pass


def _train_loss_state(trainer) -> TrainerCallback:
    """A callback that makes a resumed run report the train_loss (and log the losses) of an uninterrupted one.

    Trainer keeps the running sums behind them in memory only (`_total_loss_scalar`, the loss of the steps not yet
    logged, the last logged step) and starts them afresh when it resumes, so a resumed run's train_loss would be the
    mean of the resumed steps alone. This callback is an `ExportableState`: Trainer saves its `state()` with every
    checkpoint (trainer_state.json's `stateful_callbacks`, written last, so a complete checkpoint always has it), and
    `on_train_begin` of a resumed run puts the sums back; `train` then divides by all the steps. A class per
    trainer: Trainer may re-create its callbacks from a checkpoint (`restore_callback_states_from_checkpoint`), and
    the new instance still finds the trainer and the `restored` flag."""

    class TrainLossState(TrainerCallback, ExportableState):
        restored = False  # set on the class: whichever instance restores, `train` reads it here

        def state(self) -> dict:
            unlogged = getattr(trainer, "_tr_loss", None)
            return {
                "args": {},
                "attributes": {
                    "total_loss": getattr(trainer, "_total_loss_scalar", 0.0),
                    "unlogged_loss": float(unlogged.item()) if unlogged is not None else 0.0,
                    "last_logged_step": getattr(trainer, "_globalstep_last_logged", 0),
                },
            }

        def on_train_begin(self, args, state, control, **kwargs):
            saved = state.stateful_callbacks.get(type(self).__name__)
            if state.global_step > 0 and isinstance(saved, dict):  # resumed from a checkpoint that saved the sums
                values = saved["attributes"]
                trainer._total_loss_scalar = values["total_loss"]
                trainer._tr_loss = torch.tensor(values["unlogged_loss"], device=args.device)
                trainer._globalstep_last_logged = values["last_logged_step"]
                type(self).restored = True
            # A checkpoint saved without this callback has no entry, where Trainer's checkpoint save expects one.
            state.stateful_callbacks.setdefault(type(self).__name__, self.state())

    return TrainLossState()


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
    check_sharding(trainer)
    stop, losses = _StopIfFinished(), _train_loss_state(trainer)
    trainer.add_callback(stop)
    trainer.add_callback(losses)
    try:
        metrics = trainer.train(resume_from_checkpoint=resume_checkpoint).metrics
        if losses.restored:  # Trainer divided the whole run's loss by the resumed steps only
            metrics["train_loss"] = trainer._total_loss_scalar / trainer.state.global_step
            trainer.state.log_history[-1]["train_loss"] = metrics["train_loss"]
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
        saved = state.stateful_callbacks.get(type(losses).__name__)
        if isinstance(saved, dict):  # the checkpoint's sums: the train_loss the finished run reported
            values = saved["attributes"]
            metrics["train_loss"] = (values["total_loss"] + values["unlogged_loss"]) / state.global_step
    finally:
        trainer.remove_callback(stop)
        trainer.remove_callback(type(losses))
    if train_samples is not None:
        metrics["train_samples"] = train_samples
    trainer.log_metrics("train", metrics)
    return metrics


def record_args(*args_instances: Any) -> dict[str, Any]:
    """The parsed arguments, one JSON-serialisable dict per dataclass, by class name, secrets redacted
    (`utils.secrets.redact`; the raw command line is not recorded). `output_dir` is where the final checkpoint goes
    (not the working folder of a run that replaces an earlier one)."""
    record = {}
    for instance in args_instances:
        values = instance.to_dict() if hasattr(instance, "to_dict") else dataclasses.asdict(instance)
        if getattr(instance, "run_folder", None) is not None:
            values["output_dir"] = str(instance.run_folder.output_dir)
        record[type(instance).__name__] = redact(json.loads(json.dumps(values, default=str)))
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


def load_tokenizer(model_args: ModelArguments):
    """The run's tokenizer: --tokenizer_name, else the trained model's own."""
    return AutoTokenizer.from_pretrained(
        model_args.tokenizer_name or model_args.model_name_or_path, **model_args.loading_kwargs
    )


def load_model(
    auto_class,
    model_args: ModelArguments,
    tokenizer,
    max_seq_length: int,
    config=None,
    grow_embeddings: bool = False,
    **from_pretrained_kwargs,
):
    """A new `auto_class` model from `config`, else the trained model_args.model_name_or_path (with
    `from_pretrained_kwargs`, e.g. a classifier's labels). `grow_embeddings`: a tokenizer larger than the trained
    model's vocabulary gets new embedding rows (continued pretraining); otherwise that is an error, as are inputs
    longer than the model's positions (`check_model_fits`)."""
    if config is not None:
        model = auto_class.from_config(config, trust_remote_code=model_args.trust_remote_code)
    else:
        model = auto_class.from_pretrained(
            model_args.model_name_or_path, **model_args.loading_kwargs, **from_pretrained_kwargs
        )
    if grow_embeddings and len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))
    check_model_fits(model, tokenizer, max_seq_length)
    return model


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


# ---------------------------------------------------------------------------------------------------------------
# The final checkpoint
# ---------------------------------------------------------------------------------------------------------------


def train_and_evaluate(
    trainer, resume_checkpoint: str | None, train_samples: int | None, evaluate: Callable[[], dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """`train` (with --do_train), then `evaluate()` (with --do_eval), logging both; returns
    `{"train": {...}, "eval": {...}}` for `save_final_checkpoint`."""
    metrics = {}
    if trainer.args.do_train:
        metrics["train"] = train(trainer, resume_checkpoint, train_samples)
    if trainer.args.do_eval:
        metrics["eval"] = evaluate()
        trainer.log_metrics("eval", metrics["eval"])
    return metrics


def datasets_used(dataset_name: str | None, data_files: Sequence[str | None]) -> list[str]:
    """What the model card names as the training data: the Hub dataset, else the local files."""
    return [dataset_name] if dataset_name else [str(file) for file in data_files if file]


def save_final_checkpoint(
    trainer,
    metrics: dict[str, dict[str, Any]],
    recorded_args: Sequence[Any],
    task: str,
    datasets: list[str],
    base_model: str | None = None,
    extra_files: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Write the final, Hub-ready checkpoint to the run's output_dir, atomically, and return the final metrics (what
    all_results.json holds). Call it on every process.

    Everything is written to a temporary folder beside output_dir first (`run_folder.atomic_directory`): the model
    (config.json with the full `auto_map`, configuration_mhe.py, modeling_mhe.py, model.safetensors), the tokenizer
    (Trainer's processing_class), `training_args.json` (`record_args(*recorded_args)`), `<split>_results.json` for
    each entry of `metrics` (`{"train": {...}, "eval": {...}}`), their union in `all_results.json` (as
    `Trainer.save_metrics` writes them), `trainer_state.json`, `extra_files` (name -> text, e.g. predictions) and the
    model card (`task`: a Hub pipeline tag, trained on `datasets`, from `base_model`). Only then does the folder
    replace output_dir, and the checkpoint-N folders Trainer wrote in the run's working folder move into it
    (`run_folder.RunFolder`: an earlier run being replaced goes only now). A run stopped at any point leaves its
    checkpoints where `--resume_from_checkpoint true` finds them, and no half-written final model.
    """
    work_dir = Path(trainer.args.output_dir).resolve()
    folder = getattr(trainer.args, "run_folder", None) or RunFolder(work_dir, work_dir)
    output_dir = folder.output_dir
    if trainer.is_fsdp_enabled:
        # Trainer.save_model writes a sharded model only as one full state dict; with SHARDED_STATE_DICT (accelerate's
        # default for FSDP2 checkpoints) it would write no weights at all.
        trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
    trainer.accelerator.wait_for_everyone()
    if not trainer.is_world_process_zero():
        # Gathering a sharded model (FSDP, DeepSpeed ZeRO-3) takes every process, in Trainer.save_model; only
        # process 0 keeps what it writes (another writes into `scratch` only with --save_on_each_node).
        with tempfile.TemporaryDirectory(prefix="mhe-gather-") as scratch:
            trainer.save_model(scratch)
    else:
        if trainer.state.best_model_checkpoint and folder.replaces_earlier_run:  # where it will be after the swap
            trainer.state.best_model_checkpoint = str(
                output_dir / Path(trainer.state.best_model_checkpoint).relative_to(folder.work_dir)
            )
        # Trainer's checkpoints and logs move into the new folder after the swap (run_folder.atomic_directory).
        with folder.final_directory(keep=TRAINING_ARTEFACTS) as tmp_dir, _saved_as_own_class(trainer.model):
            trainer.save_model(str(tmp_dir))  # model + tokenizer (Trainer's processing_class) + training_args.bin
            trainer.state.save_to_json(str(tmp_dir / "trainer_state.json"))
            # The precision the run actually used: accelerate's state, which `accelerate launch --mixed_precision`
            # sets without touching the --fp16/--bf16 flags recorded in the arguments.
            write_json(
                tmp_dir / "training_args.json",
                {**record_args(*recorded_args), "mixed_precision": trainer.accelerator.mixed_precision},
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
        if folder.replaces_earlier_run:
            _point_checkpoints_at(output_dir, folder.work_dir)
        logger.info("Saved the final checkpoint to %s", output_dir)
    trainer.accelerator.wait_for_everyone()

    hub_push = getattr(trainer.args, "hub_push", None)
    if hub_push is not None and trainer.is_world_process_zero():
        # Our verified push, not Trainer's: Trainer's would replace the card with a generic one and check nothing.
        push_checkpoint(
            output_dir, hub_push.repo_id or output_dir.name, private=hub_push.private, token=hub_push.token
        )
    return merge_metrics(metrics)


def _point_checkpoints_at(output_dir: Path, work_dir: Path) -> None:
    """The checkpoints moved in from the run's working folder (`.<name>.next`) name their best checkpoint there, in
    their own trainer_state.json: name where it is now, so that a resume from one of them finds it."""
    for state_file in output_dir.glob(f"{PREFIX_CHECKPOINT_DIR}-*/trainer_state.json"):
        state = json.loads(state_file.read_text(encoding="utf-8"))
        best = state.get("best_model_checkpoint")
        if best and Path(best).is_relative_to(work_dir):
            state["best_model_checkpoint"] = str(output_dir / Path(best).relative_to(work_dir))
            write_json(state_file, state)


@contextlib.contextmanager
def _saved_as_own_class(model):
    """While Trainer saves `model`, its `save_pretrained` runs under the model's own class.

    FSDP2 (`fully_shard`) turns a model's class into a subclass defined in torch (`FSDP<Name>`); `save_pretrained`
    would record that subclass in config.json's `auto_map` and copy torch's FSDP source files as the model's code
    instead of modeling_mhe.py. Trainer gathers the full weights first, with the sharded class, and passes them to
    `save_pretrained`, which therefore needs nothing of FSDP. Gathered, tied weights (the masked-LM decoder and the
    input embeddings) no longer share memory, so `save_pretrained` would write both: the tied copy is left out, as
    an unsharded save does."""
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # torch < 2.6: FSDP2 is not public, and accelerate does not use it
        FSDPModule = ()
    sharded_class = type(model)
    own_class = next(cls for cls in sharded_class.__mro__ if not issubclass(cls, FSDPModule))
    if own_class is sharded_class:
        yield
        return

    def save_pretrained(*args, state_dict=None, **kwargs):
        if state_dict is not None:
            tied = getattr(model, "all_tied_weights_keys", None) or {}
            state_dict = {name: tensor for name, tensor in state_dict.items() if tied.get(name) not in state_dict}
        model.__class__ = own_class
        try:
            return own_class.save_pretrained(model, *args, state_dict=state_dict, **kwargs)
        finally:
            model.__class__ = sharded_class

    model.save_pretrained = save_pretrained  # an instance attribute: what Trainer._save calls
    try:
        yield
    finally:
        del model.save_pretrained


def merge_metrics(metrics: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """`{"train": {...}, "eval": {...}}` -> one dict, as all_results.json holds them."""
    return {key: value for split_metrics in metrics.values() for key, value in split_metrics.items()}
