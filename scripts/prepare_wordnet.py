"""Write the offline WordNet pretraining corpus and gloss -> supersense task (DESIGN.md §3).

    python scripts/prepare_wordnet.py --output-dir data/wordnet
"""

import argparse
import json

from mhe_transformers.wordnet import SPLITS, prepare_wordnet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--wordnet-dir", default=None, help="WordNet 3.0 dict directory (default: $WNSEARCHDIR or /usr/share/wordnet)"
    )
    parser.add_argument("--output-dir", default="data/wordnet")
    parser.add_argument("--max-synsets", type=int, default=None, help="keep a deterministic subset (tests, demos)")
    parser.add_argument(
        "--corpus-splits",
        nargs="+",
        default=["train"],
        choices=SPLITS,
        help="splits whose glosses go into corpus.txt (default: train only, so held-out glosses stay unseen)",
    )
    parser.add_argument("--no-examples", action="store_true", help="leave example sentences out of corpus.txt")
    args = parser.parse_args()

    counts = prepare_wordnet(
        args.output_dir,
        args.wordnet_dir,
        max_synsets=args.max_synsets,
        corpus_splits=args.corpus_splits,
        include_examples=not args.no_examples,
    )
    print(json.dumps(counts, indent=1))
    print(f"Wrote {args.output_dir}")


if __name__ == "__main__":
    main()
