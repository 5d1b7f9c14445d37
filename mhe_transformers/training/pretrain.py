"""Masked-language-model pretraining of an MHE encoder (or any AutoModelForMaskedLM), after transformers'
examples/pytorch/language-modeling/run_mlm.py; with `--objective clm`, causal-language-model pretraining of an MHE
decoder (MHEForCausalLM, or any AutoModelForCausalLM), after run_clm.py.

    python scripts/pretrain_mlm.py --config configs/pretrain/wordnet-tiny.yaml [--field value ...]
    python scripts/pretrain_clm.py --config configs/pretrain/wordnet-clm-tiny.yaml [--field value ...]
    accelerate launch --multi_gpu --num_processes 8 scripts/pretrain_mlm.py --config ...

Texts are tokenized, concatenated and cut into blocks of `max_seq_length` tokens (run_mlm's group_texts).
MLM: BatchSeededMLMCollator masks them on the fly; evaluation reports the MLM loss, its perplexity and the accuracy
on masked tokens. CLM: every token predicts the next one; evaluation reports the loss, its perplexity and the
next-token accuracy.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import chain

import numpy as np
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    DataCollatorForLanguageModeling,
    Trainer,
    TrainerCallback,
)

from ..data import text
from ..models.mhe.configuration_mhe import ATTENTION_TYPES, AttentionType
from ..utils import cli
from . import arguments, loop
from .arguments import MHETrainingArguments
from .optimizer import MHETrainer

logger = logging.getLogger(__name__)


OUTPUT_BIAS_INITS = ("zeros", "unigram")


@dataclass
class ModelArguments(arguments.ModelArguments):
    """A NEW model (`--model_config` and its options) or a trained one to continue pretraining
    (`--model_name_or_path`)."""

    model_config: str | None = field(
        default=None, metadata={"help": "Dimensions (configs/model/<size>.json) of a NEW model to pretrain."}
    )
    attention_type: AttentionType | None = field(
        default=None,
        metadata={"help": f"Attention of a new model: {', '.join(ATTENTION_TYPES)} (default: mhe_mul)."},
    )
    config_overrides: str | None = field(
        default=None, metadata={"help": "Override model config fields of a new model: 'num_hidden_layers=4,...'."}
    )
    output_bias_init: str = field(
        default="zeros",
        metadata={
            "help": "Masked-LM decoder bias of a NEW model: 'zeros' (BERT), or 'unigram': the log-frequencies of the "
            "training tokens, so that training starts at the unigram baseline instead of spending its first hundreds "
            "of steps learning token frequencies (Adam moves a bias by about the learning rate per step).",
            "choices": OUTPUT_BIAS_INITS,
        },
    )

    def check_model_source(self) -> None:
        """Exactly one of a new model's config file and a trained model; the new-model options only for the former
        (a trained model keeps its own configuration); a tokenizer for a new model."""
        arguments.check_local_path(self.model_name_or_path, "--model_name_or_path", self.cache_dir)
        arguments.check_local_path(self.tokenizer_name, "--tokenizer_name", self.cache_dir)
        if bool(self.model_config) == bool(self.model_name_or_path):
            raise ValueError(
                "Pass exactly one of --model_config (a configs/model/<size>.json file: train a new model) and "
                "--model_name_or_path (a checkpoint folder or Hub id: continue training it)"
                + ("; got both." if self.model_config else "; got neither.")
            )
        given = [f"--{name}" for name in ("attention_type", "config_overrides") if getattr(self, name) is not None]
        if self.model_name_or_path and given:
            raise ValueError(
                f"{', '.join(given)} only apply to a new model (--model_config): a trained model keeps its own."
            )
        if not (self.tokenizer_name or self.model_name_or_path):
            raise ValueError(
                "A new model needs a tokenizer: pass --tokenizer_name (e.g. one trained with scripts/train_tokenizer.py)."
            )


OBJECTIVES = ("mlm", "clm")


@dataclass
class DataArguments:
    dataset_name: str | None = field(default=None, metadata={"help": "Hub dataset name, e.g. wikitext."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "Hub dataset configuration name."})
    train_files: list[str] | None = field(
        default=None, metadata={"help": "Local training text files (.txt: one text a line; .csv; .json(l))."}
    )
    validation_files: list[str] | None = field(default=None, metadata={"help": "Local validation files."})
    text_column: str = field(default="text", metadata={"help": "Column holding the texts."})
    validation_split_percentage: int = field(
        default=5, metadata={"help": "Percentage of train held out for validation when there is no validation split."}
    )
    max_seq_length: int = field(default=128, metadata={"help": "Tokens per training block."})
    objective: str = field(
        default="mlm", metadata={"help": "mlm (masked LM, an encoder) or clm (causal LM, a decoder: MHEForCausalLM)."}
    )
    mlm_probability: float = field(default=0.15, metadata={"help": "Share of tokens to mask."})
    streaming: bool = field(
        default=False,
        metadata={
            "help": "Read the data as a stream (datasets' IterableDataset) instead of preparing it on disk first: for "
            "corpora larger than the disk or memory. Needs max_steps and a validation split (or --validation_files)."
        },
    )
    shuffle_buffer_size: int = field(
        default=10_000,
        metadata={"help": "With --streaming: blocks shuffled in a buffer of this size, seeded (0: stream order)."},
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Train on a random subset of this many blocks (the same for every run)."}
    )
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Evaluate on a random subset of this many blocks (the same for every run)."}
    )
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "Processes for tokenization."})

    def __post_init__(self):
        if not 0 < self.validation_split_percentage < 100:
            raise ValueError(
                f"validation_split_percentage must be in (0, 100), got {self.validation_split_percentage}."
            )
        if not 0 < self.mlm_probability < 1:
            raise ValueError(f"mlm_probability must be in (0, 1), got {self.mlm_probability}.")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}.")
        if self.max_seq_length < 2:
            raise ValueError(f"max_seq_length must be at least 2, got {self.max_seq_length}.")
        if self.shuffle_buffer_size < 0:
            raise ValueError(f"shuffle_buffer_size must be 0 (no shuffling) or positive, got {self.shuffle_buffer_size}.")


ARGUMENT_CLASSES = (ModelArguments, DataArguments, MHETrainingArguments)


@dataclass
class BatchSeededMLMCollator(DataCollatorForLanguageModeling):
    """DataCollatorForLanguageModeling whose masks depend only on the seed and on what the batch holds.

    Masks drawn from the global RNG, or from one generator that runs on, differ between a resumed run and an
    uninterrupted one: Trainer restores the RNG state only after fetching the first batch of the resumed run, and
    accelerate's dataloader collates one batch ahead. Seeding each batch from its contents makes resuming exact,
    leaves the global RNG to dropout (which then resumes exactly too), still masks a block differently whenever it
    comes back in another shuffled batch (dynamic masking), and masks an evaluation set the same way every time.
    """

    def torch_call(self, examples):
        digest = hashlib.sha256(str(self.seed).encode())
        for example in examples:
            digest.update(np.asarray(example["input_ids"], dtype=np.int64).tobytes())
        self.generator = torch.Generator().manual_seed(int.from_bytes(digest.digest()[:8], "little"))
        self._generator_pid = os.getpid()  # tells the parent class to use this generator as it is
        return super().torch_call(examples)


def main(argv: Sequence[str] | None = None) -> dict:
    """Pretrain from `[--config FILE.yaml] [--field value ...]`; returns the final metrics (all_results.json)."""
    return run(*cli.parse_args(ARGUMENT_CLASSES, argv, description=__doc__, validate=check_arguments))


def check_arguments(model_args: ModelArguments, data_args: DataArguments, training_args: MHETrainingArguments) -> None:
    """The checks of the command line that need no data (usage errors), so that a bad command fails in seconds."""
    model_args.check_model_source()
    arguments.check_something_to_do(training_args)
    if data_args.streaming and training_args.do_train and training_args.max_steps <= 0:
        raise ValueError("--streaming has no length to count epochs with: set --max_steps.")
    if model_args.output_bias_init == "unigram" and not (
        model_args.model_config and training_args.do_train and not data_args.streaming
    ):
        raise ValueError(
            "--output_bias_init unigram initialises a NEW model (--model_config) from the counts of a training split "
            "that is not streamed (--do_train without --streaming)."
        )


@loop.holds_output_dir
def run(
    model_args: ModelArguments,
    data_args: DataArguments,
    training_args: MHETrainingArguments,
    callbacks: list[TrainerCallback] | None = None,
) -> dict:
    """Check the arguments, load the texts, build (or load) the model, cut the texts into blocks, train, evaluate
    and save the final checkpoint; returns the final metrics."""
    check_arguments(model_args, data_args, training_args)
    resume_checkpoint = loop.set_up_run(training_args)
    raw_datasets = load_texts(data_args, training_args, model_args.cache_dir)
    tokenizer = loop.load_tokenizer(model_args)
    model = build_model(model_args, data_args, tokenizer)
    train_dataset, eval_dataset = prepare_blocks(raw_datasets, tokenizer, data_args, training_args)
    unigram = unigram_baseline(model_args, data_args, training_args, tokenizer, train_dataset, eval_dataset)
    if model_args.output_bias_init == "unigram":
        start_at_unigram(model, unigram)
    trainer = make_trainer(model, tokenizer, data_args, training_args, train_dataset, eval_dataset, unigram, callbacks)
    # After the Trainer is built: its arguments, callbacks and integrations (--report_to) are checked by now.
    data_files = [*(data_args.train_files or []), *(data_args.validation_files or [])]
    loop.claim_output_dir(
        training_args,
        resume_checkpoint,
        inputs=[model_args.model_config, model_args.model_name_or_path, model_args.tokenizer_name, *data_files],
    )
    metrics = loop.train_and_evaluate(
        trainer, resume_checkpoint, _length(train_dataset), lambda: evaluate(trainer, eval_dataset)
    )
    return loop.save_final_checkpoint(
        trainer,
        metrics,
        (model_args, data_args, training_args),
        task="text-generation" if data_args.objective == "clm" else "fill-mask",
        datasets=loop.datasets_used(data_args.dataset_name, data_args.train_files or []),
        base_model=model_args.model_name_or_path,
    )


def load_texts(data_args: DataArguments, training_args: MHETrainingArguments, cache_dir: str | None) -> dict:
    """The splits this run reads (train and/or validation), blank lines left out, each checked not to be empty."""
    raw_datasets = text.load_raw_datasets(
        data_args.dataset_name,
        data_args.dataset_config_name,
        {"train": data_args.train_files, "validation": data_args.validation_files},
        cache_dir=cache_dir,
        streaming=data_args.streaming,
    )
    for split, dataset in raw_datasets.items():
        text.check_columns(dataset, {"--text_column": data_args.text_column}, split)
        with training_args.main_process_first(desc=f"dropping blank lines of {split}"):
            raw_datasets[split] = dataset.filter(
                lambda text: bool(text and not text.isspace()), input_columns=data_args.text_column
            )
        text.check_not_empty(raw_datasets[split], f"{split} split (blank lines left out)")
    if training_args.do_train and "train" not in raw_datasets:
        raise ValueError(f"--do_train needs a train split; the data has {list(raw_datasets)}: pass --train_files.")
    raw_datasets = _with_validation_split(raw_datasets, data_args, training_args)
    needed = ["train"] * training_args.do_train + ["validation"] * training_args.do_eval
    return {split: raw_datasets[split] for split in needed}


def build_model(model_args: ModelArguments, data_args: DataArguments, tokenizer):
    """A new masked-LM encoder (or, with --objective clm, causal-LM decoder) from --model_config, sized to the
    tokenizer; or the trained --model_name_or_path, its embeddings grown to a larger tokenizer."""
    causal = data_args.objective == "clm"
    if tokenizer.mask_token is None and not causal:
        raise ValueError(f"The tokenizer {tokenizer.name_or_path} has no mask token, which masked-language modelling needs.")
    config = None
    if model_args.model_config:
        config = loop.build_config(
            model_args.model_config, tokenizer, model_args.attention_type, model_args.config_overrides
        )
        if causal:
            config.is_decoder = True
    auto_class = AutoModelForCausalLM if causal else AutoModelForMaskedLM
    model = loop.load_model(
        auto_class, model_args, tokenizer, data_args.max_seq_length, config=config, grow_embeddings=True
    )
    if causal:
        # Texts end with the tokenizer's end token ([SEP] for a BERT-style one): generation stops there.
        end = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
        model.generation_config.eos_token_id = end
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def prepare_blocks(raw_datasets, tokenizer, data_args: DataArguments, training_args: MHETrainingArguments) -> tuple:
    """The train and validation datasets (None where not needed) of `max_seq_length`-token blocks, subsampled, the
    training stream shuffled in a seeded buffer."""
    blocks = _tokenize_and_group(raw_datasets, tokenizer, data_args, training_args)
    train_dataset = eval_dataset = None
    if training_args.do_train:
        train_dataset = text.subsample(blocks["train"], data_args.max_train_samples)
        if data_args.streaming and data_args.shuffle_buffer_size > 0:
            # A stream cannot be shuffled as a whole; a seeded buffer gives the same order on every run (and resume).
            train_dataset = train_dataset.shuffle(seed=training_args.seed, buffer_size=data_args.shuffle_buffer_size)
        text.check_not_empty(train_dataset, f"train split, cut into {data_args.max_seq_length}-token blocks,")
    if training_args.do_eval:
        eval_dataset = text.subsample(blocks["validation"], data_args.max_eval_samples)
        text.check_not_empty(eval_dataset, f"validation split, cut into {data_args.max_seq_length}-token blocks,")
    return train_dataset, eval_dataset


def unigram_baseline(
    model_args: ModelArguments,
    data_args: DataArguments,
    training_args: MHETrainingArguments,
    tokenizer,
    train_dataset,
    eval_dataset,
) -> np.ndarray | None:
    """The unigram log-probabilities a masked-LM evaluation (or `--output_bias_init unigram`) needs, else None: of
    the training blocks; of the evaluation blocks when there is no training or the training data is streamed
    (counting a whole stream would read it all once more)."""
    masked_lm_eval = training_args.do_eval and data_args.objective == "mlm"
    if not (masked_lm_eval or model_args.output_bias_init == "unigram"):
        return None
    counted = train_dataset if training_args.do_train and not data_args.streaming else eval_dataset
    return unigram_log_probs(counted, len(tokenizer), tokenizer.all_special_ids)


def start_at_unigram(model, unigram: np.ndarray) -> None:
    """Set the masked-LM decoder bias to the unigram log-probabilities (`--output_bias_init unigram`)."""
    decoder = model.get_output_embeddings()
    with torch.no_grad():
        # Special tokens are never predicted: give them the rarest token's bias rather than -inf.
        log_probs = np.where(np.isfinite(unigram), unigram, unigram[np.isfinite(unigram)].min())
        decoder.bias[: len(log_probs)] = torch.as_tensor(log_probs, dtype=decoder.bias.dtype)


def make_trainer(
    model, tokenizer, data_args: DataArguments, training_args: MHETrainingArguments, train_dataset, eval_dataset,
    unigram: np.ndarray | None, callbacks: list[TrainerCallback] | None,
) -> Trainer:  # fmt: skip
    """Trainer with the objective's collator (masks seeded per batch for MLM) and evaluation metrics."""
    causal = data_args.objective == "clm"
    if training_args.do_eval and not causal and "inputs" not in training_args.include_for_metrics:
        # The inputs tell which predicted positions showed the mask token (masked_lm_metrics' mask_token_accuracy).
        training_args.include_for_metrics = [*training_args.include_for_metrics, "inputs"]
    if causal:
        collator = DataCollatorForLanguageModeling(tokenizer, mlm=False)
        compute_metrics = next_token_accuracy
    else:
        collator = BatchSeededMLMCollator(tokenizer, mlm_probability=data_args.mlm_probability, seed=training_args.seed)
        compute_metrics = masked_lm_metrics(unigram, tokenizer.mask_token_id)
    return MHETrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        data_collator=collator,
        compute_metrics=compute_metrics if training_args.do_eval else None,
        preprocess_logits_for_metrics=_argmax_logits if training_args.do_eval else None,
        callbacks=callbacks,
    )


def evaluate(trainer: Trainer, eval_dataset) -> dict:
    """Trainer's evaluation plus the perplexity of its loss and the number of blocks (a stream has no length)."""
    eval_metrics = trainer.evaluate()
    try:
        eval_metrics["perplexity"] = math.exp(eval_metrics["eval_loss"])
    except OverflowError:
        eval_metrics["perplexity"] = math.inf
    if _length(eval_dataset) is not None:
        eval_metrics["eval_samples"] = _length(eval_dataset)
    return eval_metrics


def _with_validation_split(raw_datasets, data_args: DataArguments, training_args: MHETrainingArguments):
    """Hold out validation_split_percentage of train when the data has no validation split (as run_mlm does)."""
    if "validation" in raw_datasets or not training_args.do_eval:
        return raw_datasets
    if data_args.streaming:
        raise ValueError(
            "With --streaming, evaluation needs a validation split: pass --validation_files or a dataset that has one."
        )
    # Shuffled with a fixed seed: corpora are often sorted (WordNet: nouns first), and every process must agree.
    split = raw_datasets["train"].train_test_split(
        test_size=data_args.validation_split_percentage / 100, seed=training_args.seed
    )
    raw_datasets["train"], raw_datasets["validation"] = split["train"], split["test"]
    return raw_datasets


def _tokenize_and_group(raw_datasets, tokenizer, data_args: DataArguments, training_args: MHETrainingArguments):
    block_size = data_args.max_seq_length
    text_column = data_args.text_column

    def tokenize(batch):
        # The special-tokens mask saves DataCollatorForLanguageModeling from recomputing it.
        return tokenizer(batch[text_column], return_special_tokens_mask=True, verbose=False)

    def group_texts(batch):
        # Concatenate, then cut into full blocks; the remainder of each batch of texts is dropped (run_mlm).
        concatenated = {key: list(chain(*values)) for key, values in batch.items()}
        total = len(concatenated["input_ids"]) // block_size * block_size
        return {
            key: [values[i : i + block_size] for i in range(0, total, block_size)]
            for key, values in concatenated.items()
        }

    map_kwargs = {} if data_args.streaming else {"num_proc": data_args.preprocessing_num_workers}
    blocks = {}
    for split, dataset in raw_datasets.items():
        # One process tokenizes and fills the datasets cache; the others then read it.
        with training_args.main_process_first(desc=f"tokenizing {split}"):
            tokenized = dataset.map(tokenize, batched=True, remove_columns=dataset.column_names, **map_kwargs)
            blocks[split] = tokenized.map(group_texts, batched=True, **map_kwargs)
    return blocks


def masked_token_accuracy(eval_prediction) -> dict[str, float]:
    """Accuracy of the predicted token ids (already argmax-ed by _argmax_logits) at the masked positions only."""
    predictions, labels = eval_prediction.predictions, eval_prediction.label_ids
    masked = labels != -100
    # Plain numpy: an evaluate module would copy millions of tokens through Arrow for one mean.
    return {"accuracy": float((predictions[masked] == labels[masked]).mean()) if masked.any() else 0.0}


def unigram_log_probs(blocks, vocab_size: int, special_ids: Sequence[int]) -> np.ndarray:
    """Log-probabilities of the frequency (unigram) model of the tokens in `blocks` (a dataset with `input_ids`):
    the best a model that ignores context can do. Special tokens get probability 0 (the collator never masks
    them); add-one smoothing keeps every other token finite."""
    counts = np.zeros(vocab_size, dtype=np.float64)
    for batch in blocks.iter(batch_size=1024):
        counts += np.bincount(np.concatenate([np.asarray(ids) for ids in batch["input_ids"]]), minlength=vocab_size)
    counts += 1.0
    counts[list(special_ids)] = 0.0
    with np.errstate(divide="ignore"):
        return np.log(counts / counts.sum())


def masked_lm_metrics(unigram: np.ndarray | None = None, mask_token_id: int | None = None):
    """compute_metrics for masked-LM evaluation: masked-token accuracy and, given the unigram log-probabilities,
    the unigram baseline ON THE SAME MASKED POSITIONS: its cross-entropy (`unigram_loss`, to read next to
    eval_loss) and top-1 accuracy (`unigram_accuracy`: always predicting the most frequent token).

    Given `mask_token_id` and the inputs (Trainer's `include_for_metrics=["inputs"]`), also `mask_token_accuracy`:
    the accuracy on the positions the model saw as the mask token. Of the other predicted positions, BERT's 10%
    kept ones show the answer itself, which a model learns to copy long before it learns anything from the context:
    a masked-LM accuracy can rise on copying alone, this one cannot."""

    def compute(eval_prediction) -> dict[str, float]:
        metrics = masked_token_accuracy(eval_prediction)
        labels = eval_prediction.label_ids
        if unigram is not None:
            targets = labels[labels != -100]
            if targets.size:
                metrics["unigram_loss"] = float(-unigram[targets].mean())
                metrics["unigram_accuracy"] = float((targets == unigram.argmax()).mean())
        inputs = getattr(eval_prediction, "inputs", None)
        if mask_token_id is not None and inputs is not None:
            shown_mask = (np.asarray(inputs) == mask_token_id) & (labels != -100)
            if shown_mask.any():
                metrics["mask_token_accuracy"] = float((eval_prediction.predictions[shown_mask] == labels[shown_mask]).mean())
        return metrics

    return compute


def next_token_accuracy(eval_prediction) -> dict[str, float]:
    """Accuracy of the token predicted at each position (argmax-ed by _argmax_logits) against the next token."""
    predictions, labels = eval_prediction.predictions[:, :-1], eval_prediction.label_ids[:, 1:]
    scored = labels != -100
    return {"accuracy": float((predictions[scored] == labels[scored]).mean()) if scored.any() else 0.0}


def _argmax_logits(logits, labels):
    # Keeps only the predicted token ids: accumulating the full (batch, seq, vocab) logits would not fit in memory.
    if isinstance(logits, tuple):
        logits = logits[0]
    if logits.dim() == 2:
        # Sparse prediction (config.sparse_prediction): one row per masked position, in row-major order. Put the
        # predictions back in place so that they line up with the labels.
        predictions = torch.full_like(labels, -100)
        predictions[labels != -100] = logits.argmax(dim=-1)
        return predictions
    return logits.argmax(dim=-1)


def _length(dataset) -> int | None:
    return len(dataset) if hasattr(dataset, "__len__") else None


__all__ = ["ModelArguments", "DataArguments", "main", "run"]
