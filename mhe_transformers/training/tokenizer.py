"""Train a BERT-style WordPiece tokenizer from local text files or any iterator of text.

The result is a `PreTrainedTokenizerFast` saved with `save_pretrained`, so
`AutoTokenizer.from_pretrained(output_dir)` loads it offline.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Union

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from ..data import text
from ..utils import cli
from ..utils.run_folder import atomic_directory, check_output_dir, claim_output_dir

SPECIAL_TOKENS = {
    "pad_token": "[PAD]",
    "unk_token": "[UNK]",
    "cls_token": "[CLS]",
    "sep_token": "[SEP]",
    "mask_token": "[MASK]",
}

# Text files, or texts: an iterator of strings or of batches (lists) of strings, such as
# `dataset[i : i + 1000]["text"]` slices of a `datasets.Dataset`.
TextSource = Union[str, os.PathLike, Iterable[Union[str, os.PathLike]], Iterable[Iterable[str]]]


def train_wordpiece_tokenizer(
    files_or_iterator: TextSource,
    vocab_size: int,
    output_dir: str | os.PathLike,
    lowercase: bool = True,
    min_frequency: int = 2,
    model_max_length: int = 512,
) -> PreTrainedTokenizerFast:
    """Train a WordPiece vocabulary of `vocab_size` tokens and save the tokenizer to `output_dir`.

    `files_or_iterator` is a path, a list of paths (text files, one or more documents per line),
    or an iterator of strings / batches of strings. A list counts as paths only if every entry
    is a path object or names an existing file; otherwise it is read as texts.
    Special tokens, normalization (BERT: clean text, CJK spacing, optional lowercasing and accent
    stripping) and the `[CLS] A [SEP] B [SEP]` template with token_type_ids 0/1 follow BERT.
    """
    if vocab_size <= len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size must exceed the {len(SPECIAL_TOKENS)} special tokens, got {vocab_size}.")
    tokenizer = Tokenizer(models.WordPiece(unk_token=SPECIAL_TOKENS["unk_token"]))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        # Listed first, so they get ids 0..4 in this order ([PAD] = 0, as models expect).
        special_tokens=list(SPECIAL_TOKENS.values()),
        continuing_subword_prefix="##",
        show_progress=False,
    )
    files = _as_files(files_or_iterator)
    if files is not None:
        missing = [str(f) for f in files if not Path(f).is_file()]
        if missing:
            raise FileNotFoundError(f"Training text file(s) not found: {', '.join(missing)}")
        tokenizer.train([str(f) for f in files], trainer)
    else:
        tokenizer.train_from_iterator(files_or_iterator, trainer)
    tokenizer.model = _canonical_wordpiece(tokenizer)

    cls, sep = SPECIAL_TOKENS["cls_token"], SPECIAL_TOKENS["sep_token"]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{cls} $A {sep}",
        pair=f"{cls} $A {sep} $B:1 {sep}:1",  # ":1" = token_type_id of the second segment
        special_tokens=[(cls, tokenizer.token_to_id(cls)), (sep, tokenizer.token_to_id(sep))],
    )

    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        model_max_length=model_max_length,
        do_lower_case=lowercase,
        # Without this the fast tokenizer would not return the template's token_type_ids.
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],
        **SPECIAL_TOKENS,
    )
    with atomic_directory(output_dir) as tmp_dir:
        wrapped.save_pretrained(tmp_dir)
    return wrapped


def _canonical_wordpiece(tokenizer: Tokenizer) -> models.WordPiece:
    """The trained WordPiece model with its ids reassigned: special tokens first (in SPECIAL_TOKENS order), then every other
    token in code-point order.

    The trainer numbers the `##` tokens and the merges it learns in hash-map iteration order, which changes from one
    process to the next (huggingface/tokenizers#1794), so the same vocabulary comes out under different ids, and a model
    trained on it starts from different embeddings. WordPiece encodes by longest match on the vocabulary alone, so
    renumbering changes no tokenization.
    """
    model, vocab = tokenizer.model, tokenizer.get_vocab(with_added_tokens=True)
    specials = list(SPECIAL_TOKENS.values())
    ordered = specials + sorted(token for token in vocab if token not in specials)
    return models.WordPiece(
        {token: index for index, token in enumerate(ordered)},
        unk_token=model.unk_token,
        continuing_subword_prefix=model.continuing_subword_prefix,
        max_input_chars_per_word=model.max_input_chars_per_word,
    )


def _as_files(source: TextSource) -> list[str | os.PathLike] | None:
    """The file paths in `source`, or None if `source` holds texts."""
    if isinstance(source, (str, os.PathLike)):
        return [source]
    if isinstance(source, (list, tuple)) and source:
        if all(isinstance(item, os.PathLike) or (isinstance(item, str) and Path(item).is_file()) for item in source):
            return list(source)
    return None


@dataclass
class TokenizerArguments:
    output_dir: str = field(metadata={"help": "A new or empty folder (or this script's earlier output)."})
    train_files: list[str] | None = field(
        default=None, metadata={"help": "Local .txt (one text per line), .csv or .json(l) files."}
    )
    dataset_name: str | None = field(
        default=None, metadata={"help": "A datasets.load_dataset name (needs a network for Hub datasets)."}
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "Hub dataset configuration name."})
    split: str = field(default="train", metadata={"help": "Split of --dataset_name to train on."})
    text_column: str = field(default="text", metadata={"help": "Column holding the texts."})
    vocab_size: int = field(default=8000, metadata={"help": "Tokens in the vocabulary, special tokens included."})
    min_frequency: int = field(default=2, metadata={"help": "Merges seen fewer times are not learned."})
    lowercase: bool = field(default=True, metadata={"help": "Lowercase and strip accents (BERT uncased)."})
    model_max_length: int = field(default=512, metadata={"help": "The tokenizer's model_max_length."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Replace this script's earlier output."})

    def __post_init__(self):
        if bool(self.train_files) == bool(self.dataset_name):
            raise ValueError("Pass exactly one of --train_files and --dataset_name.")
        if self.vocab_size <= len(SPECIAL_TOKENS):
            raise ValueError(
                f"--vocab_size must exceed the {len(SPECIAL_TOKENS)} special tokens, got {self.vocab_size}."
            )


def check_output_folder(args: TokenizerArguments) -> None:
    """Before reading anything: a folder that is not ours, or an input, is never replaced (a usage error)."""
    check_output_dir(args.output_dir, args.overwrite_output_dir, inputs=args.train_files or ())


def main(argv: Sequence[str] | None = None) -> PreTrainedTokenizerFast:
    """`scripts/train_tokenizer.py`: train on local files or a Hub dataset, through `text.load_raw_datasets`."""
    (args,) = cli.parse_args(
        (TokenizerArguments,), argv, description="Train a BERT-style WordPiece tokenizer.", validate=check_output_folder
    )
    raw = text.load_raw_datasets(args.dataset_name, args.dataset_config_name, {args.split: args.train_files})
    if args.split not in raw:
        raise ValueError(f"--split {args.split!r}: the dataset has splits {list(raw)}.")
    dataset = raw[args.split]
    text.check_columns(dataset, {"--text_column": args.text_column}, args.split)

    def batches(batch_size: int = 1000):
        for start in range(0, len(dataset), batch_size):
            yield [text for text in dataset[start : start + batch_size][args.text_column] if text]

    with claim_output_dir(args.output_dir, args.overwrite_output_dir, inputs=args.train_files or ()):
        tokenizer = train_wordpiece_tokenizer(
            batches(),
            vocab_size=args.vocab_size,
            output_dir=args.output_dir,
            lowercase=args.lowercase,
            min_frequency=args.min_frequency,
            model_max_length=args.model_max_length,
        )
    print(f"Trained a {len(tokenizer)}-token WordPiece tokenizer on {len(dataset)} texts; saved to {args.output_dir}")
    return tokenizer
