"""Pretrain an MHE encoder with masked language modelling (mhe_transformers.training.pretrain).

    python scripts/pretrain_mlm.py --config configs/pretrain/wordnet-tiny.yaml [--field value ...]
    accelerate launch --multi_gpu --num_processes 8 scripts/pretrain_mlm.py --config configs/pretrain/bert-base-hub.yaml

See configs/README.md for the config files, overrides and launching several processes.
"""

from mhe_transformers.training.pretrain import main
from mhe_transformers.utils.cli import run_script

if __name__ == "__main__":
    run_script(main)
