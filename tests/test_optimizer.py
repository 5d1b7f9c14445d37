"""Weight decay in the training pipelines (mhe_transformers/training/optimizer.py): head embeddings and relative
position-bias tables are never decayed; every other weight is, as Trainer does."""

import pytest
from transformers import TrainingArguments

from mhe_transformers import MHEConfig, MHEForMaskedLM
from mhe_transformers.training import finetune, finetune_qa, pretrain
from mhe_transformers.training.optimizer import MHETrainer


def _groups(model, tmp_path):
    args = TrainingArguments(output_dir=str(tmp_path), weight_decay=0.01, report_to="none", use_cpu=True)
    optimizer = MHETrainer(model=model, args=args).create_optimizer()
    names = {id(p): n for n, p in model.named_parameters()}
    return {group["weight_decay"]: {names[id(p)] for p in group["params"]} for group in optimizer.param_groups}


@pytest.mark.parametrize("attention_type", ["mhe_mul", "mhe_add"])
def test_head_embeddings_and_position_bias_are_not_decayed(attention_type, tmp_path):
    config = MHEConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                       attention_type=attention_type, position_embedding_type="relative_bias")  # fmt: skip
    groups = _groups(MHEForMaskedLM(config), tmp_path)
    no_decay, decay = groups[0.0], groups[0.01]
    for kind in ("q", "k", "v"):
        assert f"model.layers.0.attention.{kind}_head_embeddings" in no_decay
    assert "model.layers.0.attention.relative_position_bias" in no_decay
    assert not any("head_embeddings" in name or "position_bias" in name for name in decay)
    # Everything else keeps Trainer's rule: weights decayed, biases and LayerNorms not.
    assert "model.layers.0.attention.q_proj.weight" in decay and "model.layers.0.attention.q_proj.bias" in no_decay
    assert any("norm" in name.lower() for name in no_decay)


def test_every_training_pipeline_builds_its_trainer_from_the_one_subclass():
    for module in (pretrain, finetune, finetune_qa):
        assert module.MHETrainer is MHETrainer and "MHETrainer(" in open(module.__file__).read()
