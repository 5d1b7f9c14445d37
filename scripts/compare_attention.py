"""Compare attention types as the paper does: pretrain one model per type with the same data, budget, seed and
recipe, fine-tune each on the same tasks, and report scores (mean ± std over seeds), parameter counts and the
Performance Retention Ratio PRR = score / score(MHA).

    python scripts/compare_attention.py --config configs/compare/wordnet-tiny.yaml   # offline, CPU
    python scripts/compare_attention.py --config configs/compare/glue-base.yaml      # GLUE, GPU, Hub data
    python scripts/compare_attention.py --config ... --seeds 42 --attention_types mha mhe_mul   # a subset

Writes comparison.json, comparison.md and comparison.png to the config's output_dir; a rerun skips finished runs.
"""

from mhe_transformers.experiments.compare import main
from mhe_transformers.utils.cli import run_script

if __name__ == "__main__":
    run_script(main)
