"""Train a BERT-style WordPiece tokenizer and save it for AutoTokenizer.from_pretrained.

Local files and Hub datasets take the same path, `datasets.load_dataset`:

    python scripts/train_tokenizer.py --train_files data/wordnet/corpus.txt --vocab_size 8000 --output_dir tok
    python scripts/train_tokenizer.py --dataset_name wikitext --dataset_config_name wikitext-103-raw-v1 ...
"""

from mhe_transformers.training.tokenizer import main
from mhe_transformers.utils.cli import run_script

if __name__ == "__main__":
    run_script(main)
