"""Parameters, speed and peak memory of every attention type against transformers.BertModel of the same dimensions.

    python scripts/benchmark.py --output_dir outputs/benchmark                 # BERT-base and BERT-small dims, CPU
    python scripts/benchmark.py --sizes base --seq_lens 128 --repeats 7        # the headline setting only
    python scripts/benchmark.py --device cuda --output_dir outputs/benchmark-cuda  # + bf16, flash-attention if installed

Writes benchmark.json (every measurement), benchmark.md (tables) and benchmark.png to --output_dir.
What is measured, and how, is documented in mhe_transformers/experiments/benchmark.py.
"""

from mhe_transformers.experiments.benchmark import main
from mhe_transformers.utils.cli import run_script

if __name__ == "__main__":
    run_script(main)
