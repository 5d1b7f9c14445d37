"""Fine-tune a checkpoint for text classification: GLUE or local files (mhe_transformers.training.finetune).

    python scripts/finetune.py --config configs/finetune/wordnet-supersense.yaml [--field value ...]
    python scripts/finetune.py --config configs/finetune/mrpc.yaml --model_name_or_path outputs/pretrain-mhe_mul
"""

from mhe_transformers.training.finetune import main
from mhe_transformers.utils.cli import run_script

if __name__ == "__main__":
    run_script(main)
