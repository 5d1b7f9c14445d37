"""A few Trainer steps of masked-LM and of classification on tiny in-memory data: the loss goes down."""

import pytest
import torch
from conftest import tiny_config
from datasets import Dataset
from transformers import Trainer, TrainingArguments

from mhe_transformers import MHEForMaskedLM, MHEForSequenceClassification


def training_args(tmp_path, steps):
    return TrainingArguments(
        output_dir=str(tmp_path), max_steps=steps, per_device_train_batch_size=8, learning_rate=3e-3,
        warmup_steps=0, lr_scheduler_type="constant", logging_steps=1, save_strategy="no", report_to=[],
        use_cpu=True, seed=0, disable_tqdm=True,
    )


def losses(trainer):
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


@pytest.mark.parametrize("attention_type", ["mhe_mul", "mhe_add"])
def test_trainer_masked_lm_loss_goes_down(tmp_path, attention_type):
    generator = torch.Generator().manual_seed(0)
    # A learnable pattern: each sequence repeats one random token, so a masked token equals its neighbours.
    input_ids = torch.randint(4, 12, (64, 1), generator=generator).expand(64, 16).clone()
    labels = torch.full_like(input_ids, -100)
    mask = torch.rand(input_ids.shape, generator=generator) < 0.2
    labels[mask] = input_ids[mask]
    masked_inputs = input_ids.masked_fill(mask, 3)
    data = Dataset.from_dict({"input_ids": masked_inputs.tolist(), "labels": labels.tolist()})
    torch.manual_seed(0)
    model = MHEForMaskedLM(tiny_config(attention_type))
    trainer = Trainer(model=model, args=training_args(tmp_path, 40), train_dataset=data)
    trainer.train()
    history = losses(trainer)
    assert sum(history[-5:]) / 5 < 0.5 * sum(history[:5]) / 5


def test_trainer_classification_loss_goes_down(tmp_path):
    generator = torch.Generator().manual_seed(0)
    config = tiny_config(num_labels=2)
    input_ids = torch.randint(4, config.vocab_size, (64, 12), generator=generator)
    labels = (input_ids[:, 1] >= (4 + config.vocab_size) // 2).long()  # the class is decided by one token
    data = Dataset.from_dict({"input_ids": input_ids.tolist(), "labels": labels.tolist()})
    torch.manual_seed(0)
    model = MHEForSequenceClassification(config)
    trainer = Trainer(model=model, args=training_args(tmp_path, 60), train_dataset=data)
    trainer.train()
    history = losses(trainer)
    assert sum(history[-5:]) / 5 < 0.5 * sum(history[:5]) / 5
