"""The MLM pretraining pipeline (mhe_transformers.training.pretrain) end to end on a tiny corpus, offline."""

import json
import math
import shutil

import numpy as np
import pytest
import torch
from conftest import QUICK_TRAINING_ARGS, TINY_MODEL_ARGS, tiny_config
from safetensors.torch import load_file
from transformers import AutoModelForMaskedLM, AutoTokenizer, EvalPrediction, TrainerCallback

from mhe_transformers.training import loop
from mhe_transformers.training import pretrain as pretraining
from mhe_transformers.utils.cli import UsageError
from mhe_transformers.utils.run_folder import OUTPUT_MARKER

FINAL_FILES = [
    "config.json", "configuration_mhe.py", "modeling_mhe.py", "model.safetensors", "tokenizer.json",
    "tokenizer_config.json", "training_args.json", "all_results.json", "train_results.json", "eval_results.json",
]  # fmt: skip


def test_pretraining_writes_a_complete_final_checkpoint(tiny_pretrained_dir, tiny_tokenizer_dir):
    folder = tiny_pretrained_dir
    assert [name for name in FINAL_FILES if not (folder / name).is_file()] == []
    config = json.loads((folder / "config.json").read_text())
    assert {"AutoConfig", "AutoModelForMaskedLM", "AutoModelForSequenceClassification"} <= set(config["auto_map"])
    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    # A new model takes its vocabulary size and padding id from the tokenizer, not from the JSON config.
    assert (config["vocab_size"], config["pad_token_id"]) == (len(tokenizer), tokenizer.pad_token_id) != (30522, None)
    assert (config["hidden_size"], config["attention_type"]) == (32, "mhe_mul")  # --config_overrides applied

    results = json.loads((folder / "all_results.json").read_text())
    assert results == json.loads((folder.parent / "returned_metrics.json").read_text())  # what main() returned
    assert results["perplexity"] == pytest.approx(math.exp(results["eval_loss"]))
    assert 0 <= results["eval_accuracy"] <= 1 and results["train_loss"] > 0
    assert "train_loss" not in json.loads((folder / "eval_results.json").read_text())
    assert "eval_loss" not in json.loads((folder / "train_results.json").read_text())

    recorded = (folder / "training_args.json").read_text()
    assert "hf_not_a_real_token_123" not in recorded
    recorded = json.loads(recorded)
    assert recorded["DataArguments"]["max_seq_length"] == 32
    assert recorded["MHETrainingArguments"]["max_steps"] == 4
    assert recorded["ModelArguments"]["model_config"].endswith("tiny.json")
    assert recorded["ModelArguments"]["attention_type"] == "mhe_mul"

    # Trainer's checkpoints stay next to the final model; no temporary folder is left behind.
    assert sorted(path.name for path in folder.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    assert [path.name for path in folder.parent.iterdir() if path.name.startswith(".")] == []
    model = AutoModelForMaskedLM.from_pretrained(folder)
    assert torch.equal(model.lm_head.decoder.weight, model.model.embeddings.word_embeddings.weight)  # still tied


def test_masked_token_accuracy_counts_masked_positions_only():
    predictions = np.array([[5, 6, 7, 8]])
    labels = np.array([[5, -100, 9, -100]])  # position 1 would be wrong, but it is not masked
    assert pretraining.masked_token_accuracy(EvalPrediction(predictions, labels)) == {"accuracy": 0.5}


def test_unigram_baseline_is_the_frequency_model_on_the_masked_positions():
    from datasets import Dataset

    # Vocabulary of 6: ids 0 and 1 are special. Counts of 2..5 in the blocks: 4, 2, 1, 0 (+1 smoothing: 5, 3, 2, 1).
    blocks = Dataset.from_dict({"input_ids": [[0, 2, 2, 3, 1], [0, 2, 2, 3, 4]]})
    log_probs = pretraining.unigram_log_probs(blocks, vocab_size=6, special_ids=[0, 1])
    assert np.isneginf(log_probs[:2]).all()
    assert np.exp(log_probs[2:]) == pytest.approx(np.array([5, 3, 2, 1]) / 11)

    labels = np.array([[-100, 2, -100, 4], [3, -100, -100, -100]])  # masked targets 2, 4, 3
    predictions = np.array([[9, 2, 9, 9], [2, 9, 9, 9]])  # right on 2, wrong on 4 and 3
    metrics = pretraining.masked_lm_metrics(log_probs)(EvalPrediction(predictions, labels))
    assert metrics["accuracy"] == pytest.approx(1 / 3)
    assert metrics["unigram_loss"] == pytest.approx(-np.mean(np.log([5 / 11, 2 / 11, 3 / 11])))
    assert metrics["unigram_accuracy"] == pytest.approx(1 / 3)  # the most frequent token, 2, is 1 of 3 targets

    # Accuracy on the positions shown as the mask token (id 7) only: the kept-token position (input 2, right) is out.
    inputs = np.array([[0, 2, 5, 7], [7, 5, 5, 5]])
    metrics = pretraining.masked_lm_metrics(log_probs, mask_token_id=7)(EvalPrediction(predictions, labels, inputs))
    assert metrics["accuracy"] == pytest.approx(1 / 3)
    assert metrics["mask_token_accuracy"] == 0.0
    predictions[1, 0] = 3
    metrics = pretraining.masked_lm_metrics(log_probs, mask_token_id=7)(EvalPrediction(predictions, labels, inputs))
    assert metrics["mask_token_accuracy"] == pytest.approx(1 / 2)


def test_sparse_prediction_gives_the_dense_loss_and_predictions_in_place(tiny_tokenizer_dir):
    from mhe_transformers import MHEForMaskedLM

    config = tiny_config(num_hidden_layers=1)
    model = MHEForMaskedLM(config).eval()
    input_ids = torch.randint(2, config.vocab_size, (3, 10), generator=torch.Generator().manual_seed(0))
    labels = torch.full_like(input_ids, -100)
    labels[0, 1], labels[1, 4], labels[1, 7], labels[2, 0] = 5, 6, 7, 8
    dense = model(input_ids, labels=labels)
    model.config.sparse_prediction = True
    sparse = model(input_ids, labels=labels)
    assert sparse.logits.shape == (4, config.vocab_size)
    assert torch.allclose(sparse.loss, dense.loss, atol=1e-6)
    assert torch.allclose(sparse.logits, dense.logits[labels != -100], atol=1e-5)
    assert model(input_ids).logits.shape == (3, 10, config.vocab_size)  # without labels, every position is scored
    # The metrics see the sparse predictions where the dense ones would be.
    in_place = pretraining._argmax_logits(sparse.logits, labels)
    expected = torch.where(labels != -100, dense.logits.argmax(-1), -100)
    assert torch.equal(in_place, expected)


def test_masks_depend_on_the_batch_only(tiny_tokenizer_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    collator = pretraining.BatchSeededMLMCollator(tokenizer, mlm_probability=0.5, seed=0)
    batch = [{"input_ids": tokenizer("the quick dog jumps over a small boat")["input_ids"]} for _ in range(4)]
    torch.manual_seed(1)
    first = collator(batch)
    state = torch.get_rng_state()
    torch.manual_seed(2)  # another global RNG state: same masks
    second = collator(batch)
    assert torch.equal(first["input_ids"], second["input_ids"]) and torch.equal(first["labels"], second["labels"])
    assert (first["labels"] != -100).any()
    assert not torch.equal(collator(batch[:3])["labels"], first["labels"][:3])  # another batch, other masks
    torch.manual_seed(1)
    collator(batch)
    assert torch.equal(torch.get_rng_state(), state)  # dropout's RNG is left alone


# --- interrupting and resuming ----------------------------------------------------------------------------------


class SimulatedCrash(Exception):
    pass


class CrashAfterStep(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise SimulatedCrash(f"stopped after step {self.step}")


def resumable_argv(tiny_corpus, tiny_tokenizer_dir, output_dir) -> list[str]:
    # Dropout stays on and masking is random: resuming must restore the RNG states too, not only the weights.
    return [
        *TINY_MODEL_ARGS, *QUICK_TRAINING_ARGS, "--tokenizer_name", str(tiny_tokenizer_dir),
        "--train_files", str(tiny_corpus), "--output_dir", str(output_dir), "--max_seq_length", "32",
        "--do_train", "true", "--max_steps", "6", "--save_steps", "3", "--logging_steps", "1",
        "--per_device_train_batch_size", "8",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def uninterrupted_dir(tmp_path_factory, tiny_corpus, tiny_tokenizer_dir):
    output_dir = tmp_path_factory.mktemp("uninterrupted") / "run"
    pretraining.main(resumable_argv(tiny_corpus, tiny_tokenizer_dir, output_dir))
    return output_dir


@pytest.fixture(scope="module")
def interrupted_dir(tmp_path_factory, tiny_corpus, tiny_tokenizer_dir):
    """A run that crashed after step 5, its last checkpoint being step 3's."""
    output_dir = tmp_path_factory.mktemp("interrupted") / "run"
    args = loop.parse_args(
        pretraining.ARGUMENT_CLASSES, resumable_argv(tiny_corpus, tiny_tokenizer_dir, output_dir)
    )
    with pytest.raises(SimulatedCrash):
        pretraining.run(*args, callbacks=[CrashAfterStep(5)])
    return output_dir


def test_interrupted_run_leaves_loadable_checkpoints_and_no_final_model(interrupted_dir):
    # The run's folder carries the marker that lets a later --overwrite_output_dir recognise it as this tool's.
    assert sorted(path.name for path in interrupted_dir.iterdir()) == [OUTPUT_MARKER, "checkpoint-3"]
    assert [path.name for path in interrupted_dir.parent.iterdir()] == ["run"]  # no half-written final folder
    model = AutoModelForMaskedLM.from_pretrained(interrupted_dir / "checkpoint-3")
    assert json.loads((interrupted_dir / "checkpoint-3" / "trainer_state.json").read_text())["global_step"] == 3
    assert model.config.hidden_size == 32


def test_resuming_reaches_the_uninterrupted_result(
    uninterrupted_dir, interrupted_dir, tmp_path, tiny_corpus, tiny_tokenizer_dir
):
    resumed_dir = tmp_path / "run"
    shutil.copytree(interrupted_dir, resumed_dir)
    argv = resumable_argv(tiny_corpus, tiny_tokenizer_dir, resumed_dir) + ["--resume_from_checkpoint", "true"]
    pretraining.main(argv)

    expected, resumed = load_file(uninterrupted_dir / "model.safetensors"), load_file(resumed_dir / "model.safetensors")
    assert expected.keys() == resumed.keys()
    for name in expected:
        torch.testing.assert_close(resumed[name], expected[name], rtol=1e-5, atol=1e-6, msg=name)

    def losses(folder):
        history = json.loads((folder / "trainer_state.json").read_text())["log_history"]
        return {entry["step"]: entry["loss"] for entry in history if "loss" in entry}

    assert losses(resumed_dir) == pytest.approx(losses(uninterrupted_dir), rel=1e-5)
    assert sorted(losses(resumed_dir)) == [1, 2, 3, 4, 5, 6]


def assert_same_weights(folder, expected_folder):
    expected, resumed = load_file(expected_folder / "model.safetensors"), load_file(folder / "model.safetensors")
    assert expected.keys() == resumed.keys()
    for name in expected:
        torch.testing.assert_close(resumed[name], expected[name], rtol=1e-5, atol=1e-6, msg=name)


def test_resuming_a_finished_run_only_writes_the_final_folder(
    uninterrupted_dir, tmp_path, tiny_corpus, tiny_tokenizer_dir
):
    """The state a kill during the final save leaves: checkpoints up to max_steps, no final model. Trainer alone
    would train a step 7 of 6 (and save checkpoint-7); resuming must only write the final folder."""
    resumed_dir = tmp_path / "run"
    resumed_dir.mkdir()
    (resumed_dir / OUTPUT_MARKER).write_text("")
    for name in ("checkpoint-3", "checkpoint-6"):
        shutil.copytree(uninterrupted_dir / name, resumed_dir / name)
    pretraining.main(resumable_argv(tiny_corpus, tiny_tokenizer_dir, resumed_dir) + ["--resume_from_checkpoint", "true"])

    assert sorted(path.name for path in resumed_dir.glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-6"]
    assert json.loads((resumed_dir / "trainer_state.json").read_text())["global_step"] == 6
    expected, resumed = load_file(uninterrupted_dir / "model.safetensors"), load_file(resumed_dir / "model.safetensors")
    assert all(torch.equal(resumed[name], expected[name]) for name in expected)  # the checkpoint's, untouched


# Killed (SIGKILL) at five points, in pretraining and fine-tuning, then resumed: tests/test_resume.py.


# --- bad input fails before any training --------------------------------------------------------------------------


@pytest.fixture
def base_argv(tmp_path, tiny_corpus, tiny_tokenizer_dir):
    return [
        *TINY_MODEL_ARGS, *QUICK_TRAINING_ARGS, "--tokenizer_name", str(tiny_tokenizer_dir),
        "--train_files", str(tiny_corpus), "--output_dir", str(tmp_path / "out"), "--do_train", "true",
        "--max_seq_length", "32", "--max_steps", "1",
    ]  # fmt: skip


def without(argv: list[str], option: str) -> list[str]:
    i = argv.index(option)
    return argv[:i] + argv[i + 2 :]


def test_bad_input_fails_before_training(tmp_path, base_argv, tiny_corpus):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    blank = tmp_path / "blank.txt"
    blank.write_text("\n \n")  # lines, but no text: nothing to train on
    wrong_column = tmp_path / "wrong_column.csv"
    wrong_column.write_text("id,body\n1,some text\n")
    unknown_key = tmp_path / "unknown_key.yaml"
    unknown_key.write_text("learning_rat: 0.1\n")
    cases = [
        (without(base_argv, "--model_config"), UsageError, "exactly one of --model_config .* got neither"),
        (base_argv + ["--model_name_or_path", str(tmp_path)], UsageError, "exactly one of .* got both"),
        (base_argv + ["--train_files", str(tmp_path / "missing.txt")], FileNotFoundError, "missing.txt"),
        (base_argv + ["--train_files", str(empty)], ValueError, "empty: .*empty.txt"),
        (base_argv + ["--train_files", str(blank)], ValueError, "train.* is empty"),
        (base_argv + ["--train_files", str(wrong_column)], ValueError, r"'text' \(--text_column\).*\['id', 'body'\]"),
        (base_argv + ["--attention_type", "bogus"], UsageError, "--attention_type.*invalid choice: 'bogus'"),
        (base_argv + ["--config_overrides", "num_hiden_layers=1"], ValueError,
         r"Unknown model configuration field\(s\) in --config_overrides: num_hiden_layers \(did you mean "
         "num_hidden_layers"),
        (base_argv + ["--max_steps", "-5"], UsageError, "max_steps must be positive"),
        (base_argv + ["--output_dir", str(empty / "out")], ValueError, "empty.txt is a file"),  # unwritable
        (base_argv + ["--max_steps", "0"], UsageError, "max_steps must be positive"),
        (base_argv + ["--max_seq_length", "65"], ValueError, "max_position_embeddings"),
        (base_argv + ["--resume_from_checkpoint", "true"], ValueError, "no complete checkpoint-N folder"),
        (base_argv + ["--do_train", "false"], UsageError, "Nothing to do"),
        (["--config", str(unknown_key)] + base_argv, UsageError, "Unknown argument.*learning_rat"),
        (["--config", str(tmp_path / "missing.yaml")] + base_argv, UsageError, "missing.yaml"),
    ]
    for argv, error, message in cases:
        with pytest.raises(error, match=message):
            pretraining.main(argv)
        assert not (tmp_path / "out").exists(), argv  # nothing was trained or written

    # A trained model keeps its configuration.
    continued = without(base_argv, "--model_config") + ["--model_name_or_path", str(tmp_path)]
    with pytest.raises(UsageError, match="--config_overrides only apply to a new model"):
        pretraining.main(continued)
    with pytest.raises(UsageError, match="--attention_type only apply to a new model"):
        pretraining.main(without(continued, "--config_overrides") + ["--attention_type", "mha"])


def test_an_earlier_run_is_neither_mixed_in_nor_lost(tmp_path, base_argv):
    earlier = tmp_path / "out" / "checkpoint-7"
    earlier.mkdir(parents=True)
    (tmp_path / "out" / OUTPUT_MARKER).write_text("")  # an earlier run of these scripts
    with pytest.raises(ValueError, match="already holds an earlier run"):
        pretraining.main(base_argv)
    assert earlier.is_dir()
    pretraining.main(base_argv + ["--overwrite_output_dir", "true", "--save_strategy", "no"])
    assert not earlier.exists() and (tmp_path / "out" / "model.safetensors").is_file()


def test_unigram_output_bias_starts_training_at_the_unigram_baseline(tmp_path, base_argv):
    # Learning rate 0: the saved model is the initial one. Sparse prediction and relative position bias on too.
    argv = without(base_argv, "--learning_rate") + [
        "--learning_rate", "0", "--do_eval", "true", "--validation_split_percentage", "10",
        "--output_bias_init", "unigram", "--per_device_eval_batch_size", "16", "--config_overrides",
        "hidden_size=32,intermediate_size=64,num_hidden_layers=1,max_position_embeddings=64,"
        "sparse_prediction=true,position_embedding_type=relative_bias",
    ]  # fmt: skip
    argv = without(argv, "--config_overrides") if argv.count("--config_overrides") > 1 else argv
    metrics = pretraining.main(argv)
    # Every evaluation reports the unigram baseline on its masked positions; the untrained model with the
    # unigram bias is that baseline, up to its small random logits.
    assert metrics["eval_unigram_loss"] > 0 and 0 <= metrics["eval_unigram_accuracy"] <= 1
    assert metrics["eval_loss"] == pytest.approx(metrics["eval_unigram_loss"], abs=0.05)
    # The pipeline passes the inputs to the metrics: the accuracy at positions shown as [MASK] is reported too.
    assert 0 <= metrics["eval_mask_token_accuracy"] <= 1
    model = AutoModelForMaskedLM.from_pretrained(tmp_path / "out")
    assert model.config.sparse_prediction and model.config.position_embedding_type == "relative_bias"
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "out")
    bias = model.lm_head.decoder.bias.detach()
    special = tokenizer.all_special_ids
    assert torch.all(bias[special] <= bias.min() + 1e-6)  # specials: the rarest token's bias, not -inf
    assert torch.logsumexp(bias[[i for i in range(len(tokenizer)) if i not in special]], 0) == pytest.approx(0, abs=1e-4)

    with pytest.raises(UsageError, match="initialises a NEW model"):
        pretraining.main(without(argv, "--do_train") + ["--do_train", "false"])
