"""Streaming pretraining (--streaming): a first-class path for corpora that do not fit on disk, resume included."""

import json

import pytest
import torch
from conftest import QUICK_TRAINING_ARGS, REPO_ROOT, TINY_MODEL_ARGS
from safetensors.torch import load_file
from test_pretraining import CrashAfterStep, SimulatedCrash

from mhe_transformers.training import loop
from mhe_transformers.training import pretrain as pretraining
from mhe_transformers.utils.cli import UsageError


@pytest.fixture(scope="module")
def stream_files(tmp_path_factory, tiny_corpus):
    """The tiny corpus as train.jsonl + validation.txt (two formats a stream must read)."""
    folder = tmp_path_factory.mktemp("stream")
    lines = tiny_corpus.read_text().splitlines()
    (folder / "train.jsonl").write_text("".join(json.dumps({"text": line}) + "\n" for line in lines[:320]))
    (folder / "validation.txt").write_text("\n".join(lines[320:]) + "\n")
    return folder / "train.jsonl", folder / "validation.txt"


def streaming_argv(stream_files, tiny_tokenizer_dir, output_dir, *extra):
    # --output_bias_init zeros: the recipe's unigram initialisation counts a training split on disk, not a stream.
    train, validation = stream_files
    return [
        "--config", str(REPO_ROOT / "configs/pretrain/wordnet-tiny.yaml"), *TINY_MODEL_ARGS, *QUICK_TRAINING_ARGS,
        "--tokenizer_name", str(tiny_tokenizer_dir), "--train_files", str(train), "--validation_files", str(validation),
        "--streaming", "true", "--shuffle_buffer_size", "64", "--output_bias_init", "zeros",
        "--output_dir", str(output_dir), "--max_seq_length", "32",
        "--max_steps", "6", "--save_steps", "3", "--logging_steps", "1", "--per_device_train_batch_size", "4",
        "--per_device_eval_batch_size", "8", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def streamed_dir(tmp_path_factory, stream_files, tiny_tokenizer_dir):
    output_dir = tmp_path_factory.mktemp("streamed") / "run"
    metrics = pretraining.main(streaming_argv(stream_files, tiny_tokenizer_dir, output_dir))
    (output_dir.parent / "metrics.json").write_text(json.dumps(metrics))
    return output_dir


def test_streaming_pretraining_trains_evaluates_and_saves_the_final_model(streamed_dir):
    metrics = json.loads((streamed_dir.parent / "metrics.json").read_text())
    # A stream has no length: no train_samples/eval_samples (logging them crashed), but training and evaluation ran.
    assert "train_samples" not in metrics and "eval_samples" not in metrics
    assert metrics["train_loss"] > 0 and 0 <= metrics["eval_accuracy"] <= 1 and metrics["perplexity"] > 1
    assert (streamed_dir / "model.safetensors").is_file() and (streamed_dir / "README.md").is_file()
    state = json.loads((streamed_dir / "trainer_state.json").read_text())
    assert state["global_step"] == 6
    recorded = json.loads((streamed_dir / "training_args.json").read_text())
    assert recorded["DataArguments"]["streaming"] is True


def test_streaming_resume_reaches_the_uninterrupted_result(streamed_dir, stream_files, tiny_tokenizer_dir, tmp_path):
    output_dir = tmp_path / "run"
    args = loop.parse_args(
        pretraining.ARGUMENT_CLASSES, streaming_argv(stream_files, tiny_tokenizer_dir, output_dir)
    )
    with pytest.raises(SimulatedCrash):
        pretraining.run(*args, callbacks=[CrashAfterStep(5)])
    assert sorted(p.name for p in output_dir.iterdir() if not p.name.startswith(".")) == ["checkpoint-3"]
    pretraining.main(streaming_argv(stream_files, tiny_tokenizer_dir, output_dir, "--resume_from_checkpoint", "true"))

    expected, resumed = load_file(streamed_dir / "model.safetensors"), load_file(output_dir / "model.safetensors")
    assert expected.keys() == resumed.keys()
    for name in expected:
        torch.testing.assert_close(resumed[name], expected[name], rtol=1e-5, atol=1e-6, msg=name)


def test_streaming_needs_max_steps_and_a_validation_split(stream_files, tiny_tokenizer_dir, tmp_path):
    argv = streaming_argv(stream_files, tiny_tokenizer_dir, tmp_path / "a", "--max_steps", "-1")
    with pytest.raises(UsageError, match="--streaming has no length .* set --max_steps"):
        pretraining.main(argv)
    argv = streaming_argv(stream_files, tiny_tokenizer_dir, tmp_path / "b")
    argv = [a for a in argv if a not in ("--validation_files", str(stream_files[1]))]
    with pytest.raises(ValueError, match="With --streaming, evaluation needs a validation split"):
        pretraining.main(argv)
