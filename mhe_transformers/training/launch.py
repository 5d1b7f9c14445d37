"""How a training script was launched, checked before anything is read: several processes that would not train
together, a sharding request that would not shard, a local path that does not exist; and the effective batch the
launch gives, stated once at start-up.

The pipelines are `Trainer` scripts: `accelerate launch` and `torchrun` start them as several processes, which
Trainer (through accelerate) joins into one data-parallel run. These checks catch the launches that silently yield
something else:

- `accelerate launch --cpu --num_processes 2` starts ONE process (accelerate's multi-CPU mode goes through
  `mpirun`, and without `--mpirun_hostfile` its plain launcher runs the script once);
- processes started together on a machine without GPUs that Transformers does not join (no `--use_cpu true`): each
  would train alone, on all the data, racing the others to write output_dir;
- FSDP asked for where accelerate does not shard: on CPUs it trains with plain DDP instead (FSDP2) or refuses
  (FSDP1 with `sync_module_states`), so the sharding a user planned memory for is not there.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

# What the working launches look like, quoted in the errors below.
CPU_LAUNCH_COMMANDS = (
    "`torchrun --nproc_per_node N scripts/<pipeline>.py ... --use_cpu true` or "
    "`accelerate launch --multi_gpu --num_processes N scripts/<pipeline>.py ... --use_cpu true`"
)
# Variables an MPI launcher (mpirun, which accelerate's multi-CPU mode uses) sets in every process it starts.
MPI_WORLD_SIZE_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE", "WORLD_SIZE")


def check_launch(training_args) -> None:
    """Refuse a launch that asked for several processes but yields processes that would not train together."""
    if _accelerate_started_one_of_several():
        raise ValueError(
            "accelerate launch was asked for several processes but started this script once: without GPUs, "
            "`accelerate launch --cpu` starts several only through mpirun (--mpirun_hostfile). Training would run "
            f"in ONE process, with 1/N of the batch you asked for. Use {CPU_LAUNCH_COMMANDS} (gloo backend)."
        )
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > 1 and training_args.world_size != launched:
        raise ValueError(
            f"{launched} processes were launched but they would train independently (world size "
            f"{training_args.world_size}). Without GPUs, add --use_cpu true: {CPU_LAUNCH_COMMANDS}."
        )


def _accelerate_started_one_of_several() -> bool:
    """accelerate's plain launcher (`accelerate launch --cpu`, or a config without a multi-process launcher) sets
    ACCELERATE_USE_CPU in the one process it starts, and MASTER_ADDR only when it was asked for more than one
    process or machine; a process that some launcher really started as one of several has a world size."""
    return (
        "ACCELERATE_USE_CPU" in os.environ
        and "MASTER_ADDR" in os.environ
        and not any(name in os.environ for name in MPI_WORLD_SIZE_VARIABLES)
    )


def fsdp_requested(training_args) -> bool:
    """FSDP asked for by `accelerate launch --use_fsdp` (or its config file) or by Trainer's `--fsdp`."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true" or bool(training_args.fsdp)


def check_sharding(trainer) -> None:
    """Refuse to train unsharded when FSDP was asked for: accelerate trains with plain DDP instead where it cannot
    shard (on CPUs), and every process would hold the whole model, optimizer state included."""
    if fsdp_requested(trainer.args) and not trainer.is_fsdp_enabled:
        raise ValueError(
            f"FSDP was asked for, but accelerate set up {trainer.accelerator.distributed_type} on "
            f"{trainer.args.device.type}: accelerate and Trainer shard only on GPUs (and other accelerators). "
            f"Without GPUs, train data-parallel instead: {CPU_LAUNCH_COMMANDS}."
        )


def effective_batch_size(training_args) -> int:
    """Sequences per optimizer step: per-device batch x processes x gradient accumulation steps."""
    args = training_args
    return args.per_device_train_batch_size * args.world_size * args.gradient_accumulation_steps


def log_effective_batch(training_args) -> None:
    """State the effective batch once (process 0). The recipes' batch sizes and the README's figures are for one
    process: N processes multiply the batch by N (and divide the steps an epoch takes by N)."""
    if not training_args.do_train or training_args.process_index != 0:
        return
    processes = training_args.world_size
    # A warning when the launch changes it, so that it shows at the default log level; else for the record.
    logger.log(
        logging.WARNING if processes > 1 else logging.INFO,
        "Effective batch: %d sequences per optimizer step = %d per device x %d process%s x %d gradient "
        "accumulation step%s.",
        effective_batch_size(training_args),
        training_args.per_device_train_batch_size,
        processes,
        "es" if processes > 1 else "",
        training_args.gradient_accumulation_steps,
        "s" if training_args.gradient_accumulation_steps > 1 else "",
    )


# ---------------------------------------------------------------------------------------------------------------
# Local paths given where a Hub id is also accepted
# ---------------------------------------------------------------------------------------------------------------


def check_local_path(value: str | None, option: str, cache_dir: str | None = None) -> None:
    """A model or tokenizer that is not a local folder must be a Hub id that can be found: else it was meant as a
    local folder that nothing wrote (e.g. `--model_name_or_path outputs/pretrain-mha` before pretraining), and is
    reported as such instead of as a Hub id that cannot be reached.

    Missing, and reported as a missing folder: a value only a path can be (absolute, ./ or ../, ~, a backslash, or
    more than one '/'); a `folder/name` whose `folder` exists here; a name neither in the Hub cache nor findable on
    the Hub (offline, unreachable, or no such repository). A Hub id in the cache, or on the Hub, passes."""
    if not value or os.path.exists(os.path.expanduser(value)):
        return
    if value.startswith(("/", "./", "../", "~", ".\\")) or value.count("/") > 1 or "\\" in value:
        raise FileNotFoundError(f"{option} {value}: no such file or folder.")
    first = value.split("/")[0]
    if "/" in value and os.path.isdir(first):
        raise FileNotFoundError(
            f"{option} {value}: no such folder ({first}/ holds {_listing(Path(first))}); it is not read as a Hub id "
            f"because {first}/ is a local folder. Run the step that writes it first, or give the folder it wrote."
        )
    if _in_hub_cache(value, cache_dir):
        return
    reason = _hub_lookup_failure(value)
    if reason is not None:
        raise FileNotFoundError(f"{option} {value}: no such local folder, and {reason}.")


def _listing(folder: Path, limit: int = 8) -> str:
    names = sorted(path.name for path in folder.iterdir() if not path.name.startswith("."))
    if not names:
        return "nothing"
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _in_hub_cache(repo_id: str, cache_dir: str | None) -> bool:
    from huggingface_hub import try_to_load_from_cache

    for filename in ("config.json", "tokenizer_config.json"):
        try:
            if isinstance(try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir), str):
                return True
        except ValueError:  # not a valid repo id: only a local folder could have been meant
            return False
    return False


def _hub_lookup_failure(repo_id: str) -> str | None:
    """Why `repo_id` cannot be loaded from the Hub, or None when the Hub has it (or might: it refused to say)."""
    from huggingface_hub import constants, repo_exists
    from huggingface_hub.errors import HFValidationError

    if constants.HF_HUB_OFFLINE:
        return "not in the Hub cache (the Hub is offline: HF_HUB_OFFLINE=1)"
    try:
        if repo_exists(repo_id):
            return None
    except HFValidationError:
        return f"{repo_id!r} is not a valid Hub id"
    except Exception as error:  # no network, DNS, proxy, timeout: the Hub cannot be asked
        return f"the Hub could not be reached to look for a model of that name ({type(error).__name__}: {error})"
    return "the Hub has no model of that name (or it is private and no token is set)"


__all__ = [
    "check_launch",
    "check_local_path",
    "check_sharding",
    "effective_batch_size",
    "fsdp_requested",
    "log_effective_batch",
]
