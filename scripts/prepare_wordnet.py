"""Write the offline WordNet pretraining corpus and gloss -> supersense task (mhe_transformers.data.wordnet).

    python scripts/prepare_wordnet.py --output_dir data/wordnet [--max_synsets 2000] [--wordnet_dir DIR]
"""

from mhe_transformers.data.wordnet import main
from mhe_transformers.utils.cli import run_script

if __name__ == "__main__":
    run_script(main)
