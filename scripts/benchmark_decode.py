"""Decode tokens/s and key/value-cache bytes of every attention type against transformers.GPT2LMHeadModel.

    python scripts/benchmark_decode.py --output_dir outputs/benchmark-decode      # base and small dims, contexts 512, 2048
    python scripts/benchmark_decode.py --sizes small --contexts 512 --decode_steps 32 --compare_kernels  # quicker
    python scripts/benchmark_decode.py --device cuda                              # bfloat16 on a GPU

Writes benchmark-decode.json, .md and .png to --output_dir. What is measured, and how, is documented in
mhe_transformers/experiments/decode_benchmark.py.
"""

from mhe_transformers.experiments.decode_benchmark import main
from mhe_transformers.utils.cli import run_script

if __name__ == "__main__":
    run_script(main)
