"""Compare attention types as the paper does: pretrain one model per arm and seed with the comparison's recipe,
fine-tune each on the same tasks, and write one JSON record per finished run (mhe_transformers.experiments.compare).

    python scripts/compare_attention.py --comparison configs/compare/main.yaml --max_minutes 40   # make compare-main
    python scripts/compare_attention.py --comparison configs/compare/main.yaml --dry_run          # what is missing

Runs whose record exists are skipped; `make report` turns the records into the tables and figure of docs/results/.
"""

from mhe_transformers.experiments.compare import main
from mhe_transformers.utils.cli import run_script

if __name__ == "__main__":
    run_script(main)
