"""Exact resume: a pretraining or fine-tuning run killed with SIGKILL at any of five points, then resumed with
`--resume_from_checkpoint true`, ends with the weights AND the reported train_loss (and logged losses) of the run
that was never interrupted. A resume while the killed-to-be run still holds its folder is refused, naming it."""

import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from conftest import QUICK_TRAINING_ARGS, REPO_ROOT, TINY_MODEL_ARGS
from safetensors.torch import load_file

from mhe_transformers.training import finetune as finetuning
from mhe_transformers.training import pretrain as pretraining
from mhe_transformers.utils.run_folder import OutputDirError

PIPELINES = {"pretrain": pretraining, "finetune": finetuning}
# Where the run is killed: in a training step after the first checkpoint; right after a checkpoint is complete;
# while the last checkpoint is half-written (weights, no optimizer or state); while the final folder is written
# beside output_dir; between the two renames that swap it in.
POINTS = ["mid-step", "after-checkpoint", "mid-checkpoint", "mid-final-save", "mid-swap"]


def resumable_argv(pipeline, output_dir, tiny_corpus, tiny_tokenizer_dir, tiny_pretrained_dir, tiny_classification_dir):
    # Dropout stays on (and masking is random): resuming must restore the RNG states, not only the weights. Losses
    # are logged every 2 steps and checkpoints saved every 3: at a checkpoint, part of the loss is not logged yet.
    common = [*QUICK_TRAINING_ARGS, "--output_dir", str(output_dir), "--max_seq_length", "32", "--do_train", "true",
              "--max_steps", "6", "--save_steps", "3", "--logging_steps", "2", "--per_device_train_batch_size", "8"]
    if pipeline == "pretrain":
        return [*TINY_MODEL_ARGS, *common, "--tokenizer_name", str(tiny_tokenizer_dir), "--train_files",
                str(tiny_corpus)]  # fmt: skip
    return [*common, "--model_name_or_path", str(tiny_pretrained_dir), "--train_file",
            str(tiny_classification_dir / "train.jsonl"), "--label_list_file",
            str(tiny_classification_dir / "labels.json")]  # fmt: skip


@pytest.fixture(scope="module")
def argv_for(tiny_corpus, tiny_tokenizer_dir, tiny_pretrained_dir, tiny_classification_dir):
    def make(pipeline, output_dir):
        return resumable_argv(pipeline, output_dir, tiny_corpus, tiny_tokenizer_dir, tiny_pretrained_dir,
                              tiny_classification_dir)  # fmt: skip

    return make


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, argv_for):
    folders = {}
    for pipeline, module in PIPELINES.items():
        folders[pipeline] = tmp_path_factory.mktemp(f"uninterrupted-{pipeline}") / "run"
        module.main(argv_for(pipeline, folders[pipeline]))
    return folders


# Run in a subprocess: the pipeline, which stops at the given point and says so, then waits to be killed (SIGKILL:
# no clean-up of any kind runs).
PAUSING_RUN = """
import json, os, sys, time
from transformers import Trainer, TrainerCallback
from mhe_transformers.training import finetune, loop, pretrain

pipeline, point, argv = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])

def pause(where):
    print("PAUSED", where, flush=True)
    time.sleep(600)

class Pause(TrainerCallback):
    def on_step_begin(self, args, state, control, **kwargs):
        if point == "mid-step" and state.global_step == 4:
            pause("in step 5")

    def on_save(self, args, state, control, **kwargs):
        if point == "after-checkpoint" and state.global_step == 3:
            pause("after checkpoint-3")

save_optimizer = Trainer._save_optimizer_and_scheduler
def pause_in_checkpoint(self, output_dir):  # checkpoint-6's weights are written, its optimizer and state are not
    if point == "mid-checkpoint" and output_dir.endswith("checkpoint-6"):
        pause(output_dir)
    return save_optimizer(self, output_dir)
Trainer._save_optimizer_and_scheduler = pause_in_checkpoint

write_model_card = loop.write_model_card
def pause_in_final_folder(*args, **kwargs):  # the final folder is half-written beside output_dir
    if point == "mid-final-save":
        pause("writing the final folder")
    return write_model_card(*args, **kwargs)
loop.write_model_card = pause_in_final_folder

replace = os.replace
def pause_in_swap(source, target):  # output_dir has moved aside; the new final folder has not taken its place
    replace(source, target)
    if point == "mid-swap" and ".old-" in str(target):
        pause("swapping the final folder in")
os.replace = pause_in_swap

module = {"pretrain": pretrain, "finetune": finetune}[pipeline]
module.run(*loop.parse_args(module.ARGUMENT_CLASSES, argv), callbacks=[Pause()])
print("FINISHED", flush=True)
"""


def start_and_pause(pipeline: str, point: str, argv: list[str]) -> subprocess.Popen:
    """Start PAUSING_RUN and wait until it reaches `point`."""
    process = subprocess.Popen(
        [sys.executable, "-c", PAUSING_RUN, pipeline, point, json.dumps(argv)],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )  # fmt: skip
    for line in process.stdout:
        if line.startswith(("PAUSED", "FINISHED")):
            break
    if not line.startswith("PAUSED"):
        os.kill(process.pid, signal.SIGKILL)
        pytest.fail(f"{pipeline} {point}: the run never reached the point to kill it at")
    return process


def kill(process: subprocess.Popen) -> None:
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL


def assert_same_weights(folder, expected_folder):
    expected, resumed = load_file(expected_folder / "model.safetensors"), load_file(folder / "model.safetensors")
    assert expected.keys() == resumed.keys()
    for name in expected:
        torch.testing.assert_close(resumed[name], expected[name], rtol=1e-5, atol=1e-6, msg=name)


def logged_losses(folder) -> dict[int, float]:
    history = json.loads((folder / "trainer_state.json").read_text())["log_history"]
    return {entry["step"]: entry["loss"] for entry in history if "loss" in entry}


@pytest.mark.parametrize("point", POINTS)
@pytest.mark.parametrize("pipeline", list(PIPELINES))
def test_killed_anywhere_then_resumed_equals_the_uninterrupted_run(pipeline, point, uninterrupted, argv_for, tmp_path):
    output_dir = tmp_path / "run"
    argv = argv_for(pipeline, output_dir)
    process = start_and_pause(pipeline, point, argv)
    try:
        # While the run holds its folder (training, or in the middle of its final save), a resume is refused, naming
        # it.
        with pytest.raises(OutputDirError, match=f"in use by another run \\(pid {process.pid} on "):
            PIPELINES[pipeline].main(argv + ["--resume_from_checkpoint", "true"])
    finally:
        kill(process)
    left = sorted(path.name for path in tmp_path.iterdir())
    if point == "mid-checkpoint":  # a half-written checkpoint-6, which resuming must skip
        assert (output_dir / "checkpoint-6" / "model.safetensors").is_file()
        assert not (output_dir / "checkpoint-6" / "trainer_state.json").exists()
    if point == "mid-final-save":
        assert any(name.startswith(".run.tmp-") for name in left), left
    if point == "mid-swap":  # output_dir itself is gone: its checkpoints are in the hidden .old folder
        assert "run" not in left and any(name.startswith(".run.old-") for name in left), left

    metrics = PIPELINES[pipeline].main(argv + ["--resume_from_checkpoint", "true"])
    expected = uninterrupted[pipeline]
    assert_same_weights(output_dir, expected)
    expected_results = json.loads((expected / "all_results.json").read_text())
    assert metrics["train_loss"] == expected_results["train_loss"]  # exactly: the same sums, in the same order
    assert json.loads((output_dir / "all_results.json").read_text())["train_loss"] == expected_results["train_loss"]
    assert logged_losses(output_dir) == pytest.approx(logged_losses(expected), rel=1e-6)
    assert sorted(logged_losses(output_dir)) == [2, 4, 6]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["run"]  # no temporary folder or lock left behind
    assert sorted(path.name for path in output_dir.glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-6"]
    assert json.loads((output_dir / "trainer_state.json").read_text())["global_step"] == 6
