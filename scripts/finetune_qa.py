"""Fine-tune a checkpoint for extractive question answering on SQuAD-style data (mhe_transformers.training.finetune_qa).

    python scripts/finetune_qa.py --config configs/finetune/squad.yaml --model_name_or_path outputs/pretrain-mhe_mul
"""

from mhe_transformers.training.finetune_qa import main
from mhe_transformers.utils.cli import run_script

if __name__ == "__main__":
    run_script(main)
