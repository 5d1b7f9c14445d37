"""The model card records the precision a run actually used."""

import json
import os
import subprocess
import sys

from conftest import QUICK_TRAINING_ARGS, REPO_ROOT, TINY_MODEL_ARGS


def test_accelerate_mixed_precision_reaches_training_args_and_card(tmp_path, tiny_corpus, tiny_tokenizer_dir):
    # `accelerate launch --mixed_precision bf16` passes the choice through this variable; --bf16 stays False.
    output_dir = tmp_path / "bf16"
    command = [
        sys.executable, "scripts/pretrain_mlm.py", *TINY_MODEL_ARGS, *QUICK_TRAINING_ARGS,
        "--tokenizer_name", str(tiny_tokenizer_dir), "--train_files", str(tiny_corpus), "--output_dir", str(output_dir),
        "--max_seq_length", "32", "--do_train", "true", "--do_eval", "false", "--max_steps", "2",
        "--save_strategy", "no", "--per_device_train_batch_size", "4",
    ]  # fmt: skip
    env = {**os.environ, "ACCELERATE_MIXED_PRECISION": "bf16"}
    process = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert process.returncode == 0, process.stderr[-3000:]
    recorded = json.loads((output_dir / "training_args.json").read_text())
    assert recorded["MHETrainingArguments"]["bf16"] is False and recorded["mixed_precision"] == "bf16"
    assert "| mixed_precision | bf16 |" in (output_dir / "README.md").read_text()
