"""Data-parallel training as users launch it: `torchrun` and `accelerate launch` with 2 CPU processes (gloo), for
masked-LM pretraining, causal-LM pretraining and fine-tuning; FSDP2's final save; launches that would silently
give one process. Tiny models and a few steps: each launch is mostly interpreter and library start-up.

Every run checks that the final checkpoint is written once (by process 0), that it loads, and that evaluating it
again in ONE process reproduces the metrics the 2-process run reported. Both evaluations must average the same
losses over the same masks: with several processes Trainer weights each process's loss by its share of the
evaluated tokens (the mean over all tokens), in one process it averages per-batch means, and the masked-LM
collator masks a batch by its contents. So the re-evaluation reads the whole evaluation set as one batch, and the
pretraining runs evaluate one batch of 4 blocks (process 1 evaluates a copy, which Trainer leaves out).
"""

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import QUICK_TRAINING_ARGS, REPO_ROOT, TINY_MODEL_ARGS
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM, AutoModelForSequenceClassification

from mhe_transformers.hub.push import verify_checkpoint
from mhe_transformers.training import finetune as finetuning
from mhe_transformers.training import pretrain as pretraining
from mhe_transformers.utils.run_folder import OUTPUT_MARKER

BIN = Path(sys.executable).parent
EFFECTIVE_BATCH_LINE = "Effective batch: 8 sequences per optimizer step = 4 per device x 2 processes x 1 gradient"
SAVED_LINE = "Saved the final checkpoint to"
# Every process logs at info level, so that a second process saving the checkpoint or stating the batch would show.
VERBOSE = ["--log_level", "info", "--log_level_replica", "info"]


def free_port() -> int:
    # Other test sessions on the machine may use torch's default port (29500).
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launcher(name: str) -> list[str]:
    if name == "torchrun":
        return [str(BIN / "torchrun"), "--nproc_per_node", "2", "--master_port", str(free_port())]
    return [
        str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
    ]  # fmt: skip


def run(command: list[str], env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def assert_written_once(process: subprocess.CompletedProcess, output_dir: Path, checkpoints: list[str]) -> dict:
    """The run succeeded, process 0 alone stated the effective batch and saved the final checkpoint, and the
    folder holds the final model with Trainer's checkpoints and nothing left beside it. Returns all_results.json."""
    assert process.returncode == 0, process.stderr[-4000:]
    log = process.stdout + process.stderr
    assert log.count(EFFECTIVE_BATCH_LINE) == 1, log[-4000:]
    assert log.count(SAVED_LINE) == 1, log[-4000:]
    assert sorted(path.name for path in output_dir.glob("checkpoint-*")) == checkpoints
    assert [path.name for path in output_dir.parent.iterdir()] == [output_dir.name]  # no temporary folder
    results = json.loads((output_dir / "all_results.json").read_text())
    assert json.loads((output_dir / "trainer_state.json").read_text())["global_step"] == 3
    return results


def assert_same_metrics(reported: dict, evaluated: dict, names: list[str]) -> None:
    for name in names:
        assert evaluated[name] == pytest.approx(reported[name], rel=1e-5, abs=1e-6), name


def pretraining_args(corpus: Path, tokenizer: Path) -> list[str]:
    """4 evaluation blocks of 32 tokens, evaluated as one batch."""
    return [
        *QUICK_TRAINING_ARGS, "--tokenizer_name", str(tokenizer), "--train_files", str(corpus),
        "--max_seq_length", "32", "--validation_split_percentage", "10", "--max_eval_samples", "4",
        "--per_device_eval_batch_size", "4",
    ]  # fmt: skip


def reevaluate_pretraining(model_dir: Path, corpus: Path, output_dir: Path, objective: str) -> dict:
    """The saved checkpoint, evaluated in this process on the same held-out blocks."""
    return pretraining.main([
        *pretraining_args(corpus, model_dir), "--model_name_or_path", str(model_dir), "--objective", objective,
        "--do_train", "false", "--do_eval", "true", "--output_dir", str(output_dir),
    ])  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize(
    "launch, objective, auto_class",
    [("torchrun", "mlm", AutoModelForMaskedLM), ("accelerate", "clm", AutoModelForCausalLM)],
    ids=["torchrun-mlm", "accelerate-clm"],
)
def test_pretraining_on_two_processes(launch, objective, auto_class, tmp_path, tiny_corpus, tiny_tokenizer_dir):
    output_dir = tmp_path / "run" / "pretrained"
    script = f"scripts/pretrain_{objective}.py"
    process = run([
        *launcher(launch), script, *TINY_MODEL_ARGS, *pretraining_args(tiny_corpus, tiny_tokenizer_dir), *VERBOSE,
        "--output_dir", str(output_dir), "--do_train", "true", "--do_eval", "true", "--max_steps", "3",
        "--save_steps", "3", "--per_device_train_batch_size", "4",
    ])  # fmt: skip
    results = assert_written_once(process, output_dir, ["checkpoint-3"])
    # Two processes of 4 blocks each: an epoch takes half the steps it takes in one process.
    assert results["epoch"] == pytest.approx(3 / math.ceil(results["train_samples"] / (2 * 4)))
    assert results["eval_samples"] == 4
    assert type(auto_class.from_pretrained(output_dir)).__name__ in ("MHEForMaskedLM", "MHEForCausalLM")

    evaluated = reevaluate_pretraining(output_dir, tiny_corpus, tmp_path / "evaluated", objective)
    metrics = ["eval_loss", "eval_accuracy", "perplexity"]
    assert_same_metrics(results, evaluated, metrics + (["eval_mask_token_accuracy"] if objective == "mlm" else []))


@pytest.mark.slow
def test_finetuning_on_two_processes(tmp_path, tiny_classification_dir, tiny_pretrained_dir):
    data = tiny_classification_dir
    output_dir = tmp_path / "run" / "finetuned"
    common = [
        *QUICK_TRAINING_ARGS, "--validation_file", str(data / "validation.jsonl"),
        "--label_list_file", str(data / "labels.json"), "--max_seq_length", "32",
    ]  # fmt: skip
    process = run([
        *launcher("accelerate"), "scripts/finetune.py", *common, *VERBOSE, "--model_name_or_path",
        str(tiny_pretrained_dir), "--train_file", str(data / "train.jsonl"), "--output_dir", str(output_dir),
        "--do_train", "true", "--do_eval", "true", "--max_steps", "3", "--save_steps", "3",
        "--per_device_train_batch_size", "4", "--learning_rate", "5e-3",
        "--per_device_eval_batch_size", "4",  # 24 validation rows: 3 batches on each process
    ])  # fmt: skip
    results = assert_written_once(process, output_dir, ["checkpoint-3"])
    assert results["epoch"] == pytest.approx(3 / math.ceil(results["train_samples"] / (2 * 4)))
    AutoModelForSequenceClassification.from_pretrained(output_dir)

    evaluated = finetuning.main([
        *common, "--model_name_or_path", str(output_dir), "--do_eval", "true", "--output_dir", str(tmp_path / "eval"),
        "--per_device_eval_batch_size", "24",
    ])  # fmt: skip
    assert_same_metrics(results, evaluated, ["eval_loss", "eval_accuracy"])


# --- FSDP2 ---------------------------------------------------------------------------------------------------------

# accelerate shards only on accelerators: on CPUs its state says MULTI_CPU and Trainer trains with DDP (and the
# pipelines refuse, see test_fsdp_asked_for_on_cpus_is_refused). This driver makes accelerate take the FSDP path
# it takes on GPUs, so that Trainer's FSDP2 code runs for real on CPUs: torch's fully_shard over gloo, sharded
# checkpoints, and the final save, which must gather the full weights with every process taking part.
FSDP_ON_CPU_DRIVER = """
import sys
import accelerate.state
from accelerate.utils import DistributedType

accelerator_state_init = accelerate.state.AcceleratorState.__init__

def init(self, *args, **kwargs):
    accelerator_state_init(self, *args, **kwargs)
    if kwargs.get("fsdp_plugin") is not None and self.distributed_type == DistributedType.MULTI_CPU:
        self.distributed_type = DistributedType.FSDP
        self.fsdp_plugin = kwargs["fsdp_plugin"]
        accelerate.state.PartialState._shared_state["distributed_type"] = DistributedType.FSDP

accelerate.state.AcceleratorState.__init__ = init

from mhe_transformers.training import pretrain

pretrain.main(sys.argv[1:])
"""
FSDP2_ENV = {  # what `accelerate launch --use_fsdp --fsdp_version 2 --fsdp_auto_wrap_policy ...` sets
    "ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2", "FSDP_AUTO_WRAP_POLICY": "TRANSFORMER_BASED_WRAP",
    "FSDP_TRANSFORMER_CLS_TO_WRAP": "MHELayer", "FSDP_STATE_DICT_TYPE": "SHARDED_STATE_DICT",
}  # fmt: skip


@pytest.mark.slow
def test_fsdp2_final_save_gathers_every_shard(tmp_path, tiny_corpus, tiny_tokenizer_dir):
    driver = tmp_path / "fsdp_on_cpu.py"
    driver.write_text(FSDP_ON_CPU_DRIVER)
    output_dir = tmp_path / "run" / "fsdp2"
    process = run(
        [
            *launcher("torchrun"), str(driver), *TINY_MODEL_ARGS, *pretraining_args(tiny_corpus, tiny_tokenizer_dir),
            *VERBOSE, "--output_dir", str(output_dir), "--do_train", "true", "--do_eval", "true", "--max_steps",
            "3", "--save_steps", "3", "--per_device_train_batch_size", "4",
            "--ddp_timeout", "120",  # a gather that only process 0 joins fails in 2 minutes instead of hanging
        ],
        env={**FSDP2_ENV, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])},
    )  # fmt: skip
    results = assert_written_once(process, output_dir, ["checkpoint-3"])
    # The run was sharded: Trainer wrote its checkpoint as FSDP shards (distributed checkpoint), not one file.
    assert (output_dir / "checkpoint-3" / "pytorch_model_fsdp_0").is_dir()

    # The final weights are complete, full-size tensors: every parameter of the model, the tied decoder once.
    weights = load_file(output_dir / "model.safetensors")
    model = AutoModelForMaskedLM.from_config(AutoConfig.from_pretrained(output_dir))
    expected = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    expected.pop("lm_head.decoder.weight")  # tied to the input embeddings
    assert {name: tuple(tensor.shape) for name, tensor in weights.items()} == expected
    # A checkpoint like any other: its own code files and auto_map (not FSDP's), a card; loads without the package.
    config = json.loads((output_dir / "config.json").read_text())
    assert config["auto_map"]["AutoModelForMaskedLM"] == "modeling_mhe.MHEForMaskedLM"
    assert not list(output_dir.glob("_fsdp*.py"))
    verify_checkpoint(output_dir)

    evaluated = reevaluate_pretraining(output_dir, tiny_corpus, tmp_path / "evaluated", "mlm")
    assert_same_metrics(results, evaluated, ["eval_loss", "eval_accuracy", "eval_mask_token_accuracy"])


# --- launches that would not give what was asked for -----------------------------------------------------------------


def tiny_pretraining_argv(tmp_path, corpus, tokenizer) -> list[str]:
    return [
        "scripts/pretrain_mlm.py", *TINY_MODEL_ARGS, *QUICK_TRAINING_ARGS, "--tokenizer_name", str(tokenizer),
        "--train_files", str(corpus), "--output_dir", str(tmp_path / "out"), "--max_seq_length", "32",
        "--do_train", "true", "--max_steps", "1",
    ]  # fmt: skip


@pytest.mark.slow
def test_accelerate_cpu_flag_starting_one_process_is_refused(tmp_path, tiny_corpus, tiny_tokenizer_dir):
    """`accelerate launch --cpu --num_processes 2` runs the script ONCE (its multi-CPU mode needs mpirun): the
    pipeline refuses before reading anything, naming the commands that start two processes."""
    process = run([
        str(BIN / "accelerate"), "launch", "--cpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
        *tiny_pretraining_argv(tmp_path, tiny_corpus, tiny_tokenizer_dir),
    ])  # fmt: skip
    assert process.returncode != 0
    assert "started this script once" in process.stderr, process.stderr[-3000:]
    assert "torchrun --nproc_per_node N" in process.stderr and "--use_cpu true" in process.stderr
    # One process ran, and said so in one line (accelerate then repeats it inside its own traceback).
    assert [line for line in process.stderr.splitlines() if line.startswith("pretrain_mlm.py: error:")] == [
        next(line for line in process.stderr.splitlines() if "started this script once" in line)
    ]
    assert not (tmp_path / "out").exists()


def test_fsdp_asked_for_on_cpus_is_refused(tmp_path, tiny_corpus, tiny_tokenizer_dir):
    """accelerate shards only on GPUs: on CPUs, FSDP2 would silently train unsharded (DDP, or one process here).
    The pipeline refuses before training; the folder it claimed holds nothing but its marker."""
    process = run(
        [sys.executable, *tiny_pretraining_argv(tmp_path, tiny_corpus, tiny_tokenizer_dir)],
        env={"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2"},  # what `accelerate launch --use_fsdp` sets
    )
    assert process.returncode != 0
    assert "FSDP was asked for, but accelerate set up DistributedType.NO on cpu" in process.stderr, process.stderr
    assert "torchrun --nproc_per_node N" in process.stderr
    assert [path.name for path in (tmp_path / "out").iterdir()] == [OUTPUT_MARKER]  # nothing trained or saved
