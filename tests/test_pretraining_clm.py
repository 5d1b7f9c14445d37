"""Causal-LM pretraining (mhe_transformers.training.pretrain with --objective clm) end to end on a tiny corpus, offline:
Trainer halves the loss, and the checkpoint is a Hub-ready text-generation model."""

import json
import math

import pytest
import torch
from conftest import QUICK_TRAINING_ARGS, REPO_ROOT, TINY_MODEL_ARGS
from huggingface_hub import ModelCard
from transformers import AutoModelForCausalLM, AutoTokenizer, EvalPrediction

from mhe_transformers import MHEForCausalLM
from mhe_transformers.hub import push as hub
from mhe_transformers.training import pretrain as pretraining


@pytest.fixture(scope="module")
def clm_run(tmp_path_factory, tiny_corpus, tiny_tokenizer_dir):
    output_dir = tmp_path_factory.mktemp("pretrain-clm") / "mhe_mul-clm"
    argv = [
        "--config", str(REPO_ROOT / "configs/pretrain/wordnet-clm-tiny.yaml"), *TINY_MODEL_ARGS, *QUICK_TRAINING_ARGS,
        "--tokenizer_name", str(tiny_tokenizer_dir), "--train_files", str(tiny_corpus), "--output_dir", str(output_dir),
        "--max_seq_length", "32", "--validation_split_percentage", "10", "--max_steps", "100", "--save_steps", "100",
        "--per_device_train_batch_size", "16", "--per_device_eval_batch_size", "16", "--logging_steps", "5",
        "--learning_rate", "5e-3", "--lr_scheduler_type", "constant",
    ]  # fmt: skip
    return output_dir, pretraining.main(argv)


def test_trainer_halves_the_causal_lm_loss(clm_run):
    output_dir, metrics = clm_run
    state = json.loads((output_dir / "trainer_state.json").read_text())
    losses = [entry["loss"] for entry in state["log_history"] if "loss" in entry]
    assert len(losses) >= 10
    assert losses[-1] <= losses[0] / 2, losses
    assert metrics["perplexity"] == pytest.approx(math.exp(metrics["eval_loss"]))
    assert 0 < metrics["eval_accuracy"] <= 1


def test_clm_checkpoint_is_a_hub_ready_decoder_that_generates(clm_run, tiny_tokenizer_dir):
    output_dir, _ = clm_run
    config = json.loads((output_dir / "config.json").read_text())
    assert config["architectures"] == ["MHEForCausalLM"] and config["is_decoder"] is True
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_mhe.MHEForCausalLM"
    card = ModelCard.load(output_dir / "README.md")
    assert card.data.pipeline_tag == "text-generation"
    assert 'pipeline("text-generation"' in card.text and "causal decoder" in card.text
    assert "`transformers>=5.24.0,<6.0.0`" in card.text  # the decoder's cache API, not the encoders' 5.4
    assert hub.verify_checkpoint(output_dir).task == "text-generation"  # loads without mhe_transformers too

    tokenizer = AutoTokenizer.from_pretrained(output_dir)
    model = AutoModelForCausalLM.from_pretrained(output_dir).eval()
    assert isinstance(model, MHEForCausalLM)
    assert model.generation_config.eos_token_id == tokenizer.sep_token_id
    tokenizer.padding_side = "left"
    inputs = tokenizer(["the dog that is", "a quick"], return_tensors="pt", padding=True, add_special_tokens=False)
    out = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    assert out.shape[0] == 2 and out.shape[1] > inputs["input_ids"].shape[1]


def test_next_token_accuracy_compares_each_prediction_with_the_following_token():
    predictions = torch.tensor([[5, 6, 7, 9]]).numpy()  # the prediction at position t is for token t + 1
    labels = torch.tensor([[1, 5, 6, -100]]).numpy()
    assert pretraining.next_token_accuracy(EvalPrediction(predictions, labels)) == {"accuracy": 1.0}
    labels = torch.tensor([[1, 5, 8, 7]]).numpy()
    assert pretraining.next_token_accuracy(EvalPrediction(predictions, labels)) == {"accuracy": pytest.approx(2 / 3)}
