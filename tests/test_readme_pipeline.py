"""The README's "Training pipelines" block runs as written, each command reading what the one before wrote: WordNet
data -> tokenizer -> masked-LM pretraining -> causal pretraining -> fine-tuning -> 2-process pretraining.

Run from a scratch folder that sees the repository's configs/ and scripts/, offline, on a small synthetic WordNet
database (tests/test_wordnet.py's, through $WNSEARCHDIR, which the data step reads), with flags appended to each
command that shrink the model, the data and the steps. Nothing else of the commands is changed: their folders and
defaults are the README's.
"""

import json
import math
import os
import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT
from test_wordnet import write_fake_wordnet

BIN = Path(sys.executable).parent
QUIET = ["--report_to", "none", "--disable_tqdm", "true", "--log_level", "warning", "--dataloader_pin_memory", "false"]
PRETRAINING = [
    *QUIET, "--config_overrides", "hidden_size=32,intermediate_size=64,num_hidden_layers=1", "--max_seq_length", "16",
    "--max_steps", "2", "--save_steps", "2", "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "8",
    "--max_eval_samples", "8",
]  # fmt: skip
# Appended to the README's commands, by script: tiny sizes and a few steps.
TINY = {
    "prepare_wordnet.py": [],
    "train_tokenizer.py": ["--vocab_size", "300"],
    "pretrain_mlm.py": PRETRAINING,
    "pretrain_clm.py": PRETRAINING,
    "finetune.py": [
        *QUIET, "--max_seq_length", "16", "--max_train_samples", "32", "--max_eval_samples", "16",
        "--max_predict_samples", "16", "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "16",
        "--warmup_steps", "0",
    ],
}  # fmt: skip


def readme_pipeline() -> list[list[str]]:
    """The commands of the first bash block under "## Training pipelines", comments dropped."""
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Training pipelines\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [shlex.split(line, comments=True) for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def runnable(command: list[str]) -> list[str]:
    """The README command with this environment's interpreter and launchers, and the tiny flags appended."""
    program, *args = command
    script = next(Path(arg).name for arg in args if arg.startswith("scripts/"))
    if program == "python":
        head = [sys.executable]
    elif program == "torchrun":
        with socket.socket() as sock:  # another test session may hold torch's default port
            sock.bind(("127.0.0.1", 0))
            head = [str(BIN / "torchrun"), "--master_port", str(sock.getsockname()[1])]
    else:
        raise AssertionError(f"the pipeline block starts a command with {program!r}")
    return [*head, *args, *TINY[script]]


def test_readme_pipeline_block_is_the_one_tested():
    scripts = [next(Path(arg).name for arg in command if arg.startswith("scripts/")) for command in readme_pipeline()]
    assert scripts == [
        "prepare_wordnet.py", "train_tokenizer.py", "pretrain_mlm.py", "pretrain_clm.py", "finetune.py",
        "pretrain_mlm.py",
    ]  # fmt: skip


@pytest.mark.slow
def test_readme_pipeline_commands_chain(tmp_path):
    workdir = tmp_path / "clone"
    workdir.mkdir()
    for name in ("configs", "scripts"):
        (workdir / name).symlink_to(REPO_ROOT / name)
    env = {
        **os.environ, "PYTHONPATH": str(REPO_ROOT), "WNSEARCHDIR": str(write_fake_wordnet(tmp_path / "wordnet")),
        "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
    }  # fmt: skip
    for command in readme_pipeline():
        process = subprocess.run(runnable(command), cwd=workdir, env=env, capture_output=True, text=True, timeout=600)
        assert process.returncode == 0, f"{shlex.join(command)}\n{process.stderr[-3000:]}"

    outputs = workdir / "outputs"
    # Each folder is named for what it holds: the MHA run's for MHA, the fine-tuning's for the model it started from.
    assert json.loads((outputs / "pretrain-mha" / "config.json").read_text())["attention_type"] == "mha"
    assert json.loads((outputs / "pretrain-clm-mhe_mul" / "config.json").read_text())["is_decoder"] is True
    recorded = json.loads((outputs / "supersense-pretrain-mha" / "training_args.json").read_text())
    assert recorded["ModelArguments"]["model_name_or_path"] == "outputs/pretrain-mha"
    assert "test_accuracy" in json.loads((outputs / "supersense-pretrain-mha" / "all_results.json").read_text())
    # Two processes of 8 blocks a step: an epoch takes half the steps it takes in one process.
    two_processes = json.loads((outputs / "pretrain-mhe_mul-2proc" / "all_results.json").read_text())
    assert two_processes["epoch"] == pytest.approx(2 / math.ceil(two_processes["train_samples"] / (2 * 8)))
    assert sorted(path.name for path in outputs.iterdir()) == [
        "pretrain-clm-mhe_mul", "pretrain-mha", "pretrain-mhe_mul-2proc", "supersense-pretrain-mha", "tokenizer",
    ]  # fmt: skip
