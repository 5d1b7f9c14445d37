"""Pretrain an MHE decoder (MHEForCausalLM) with causal language modelling (mhe_transformers.training.pretrain, --objective clm).

    python scripts/pretrain_clm.py --config configs/pretrain/wordnet-clm-tiny.yaml [--field value ...]
    accelerate launch --multi_gpu --num_processes 8 scripts/pretrain_clm.py --config ... --dataset_name wikitext ...

The same pipeline as scripts/pretrain_mlm.py; see configs/README.md for the config files and overrides.
"""

import sys

from mhe_transformers.training.pretrain import main
from mhe_transformers.utils.cli import run_script

if __name__ == "__main__":
    run_script(main, ["--objective", "clm", *sys.argv[1:]])
