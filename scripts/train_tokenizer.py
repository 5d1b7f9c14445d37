"""Train a BERT-style WordPiece tokenizer and save it for AutoTokenizer.from_pretrained.

Local files and Hub datasets take the same path, `datasets.load_dataset`:

    python scripts/train_tokenizer.py --train_files data/wordnet/corpus.txt --vocab_size 8000 --output_dir tok
    python scripts/train_tokenizer.py --dataset_name wikitext --dataset_config_name wikitext-103-raw-v1 ...
"""

import argparse
from pathlib import Path

import datasets

from mhe_transformers.tokenization import train_wordpiece_tokenizer

# datasets' packaged builders for local files, by file extension.
BUILDERS = {".txt": "text", ".text": "text", ".csv": "csv", ".json": "json", ".jsonl": "json"}


def load_texts(args) -> datasets.Dataset:
    if args.dataset_name:
        return datasets.load_dataset(args.dataset_name, args.dataset_config_name, split=args.split)
    extensions = {Path(f).suffix for f in args.train_files}
    if len(extensions) != 1 or extensions.pop() not in BUILDERS:
        raise SystemExit(f"--train_files must all have one extension out of {sorted(BUILDERS)}")
    builder = BUILDERS[Path(args.train_files[0]).suffix]
    return datasets.load_dataset(builder, data_files=args.train_files, split="train")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--train_files", nargs="+", help="local .txt (one text per line), .csv or .json(l) files")
    source.add_argument("--dataset_name", help="a datasets.load_dataset name (needs a network for Hub datasets)")
    parser.add_argument("--dataset_config_name", default=None)
    parser.add_argument("--split", default="train", help="split of --dataset_name to train on")
    parser.add_argument("--text_column", default="text")
    parser.add_argument("--vocab_size", type=int, default=8000)
    parser.add_argument("--min_frequency", type=int, default=2)
    parser.add_argument("--lowercase", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--model_max_length", type=int, default=512)
    parser.add_argument("--output_dir", required=True)
    args = parser.parse_args()

    dataset = load_texts(args)
    if args.text_column not in dataset.column_names:
        raise SystemExit(f"--text_column {args.text_column!r} not in the dataset columns {dataset.column_names}")

    def batches(batch_size: int = 1000):
        for start in range(0, len(dataset), batch_size):
            yield [text for text in dataset[start : start + batch_size][args.text_column] if text]

    tokenizer = train_wordpiece_tokenizer(
        batches(),
        vocab_size=args.vocab_size,
        output_dir=args.output_dir,
        lowercase=args.lowercase,
        min_frequency=args.min_frequency,
        model_max_length=args.model_max_length,
    )
    print(f"Trained a {len(tokenizer)}-token WordPiece tokenizer on {len(dataset)} texts; saved to {args.output_dir}")


if __name__ == "__main__":
    main()
