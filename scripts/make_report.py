"""Rebuild every comparison table and the PRR figure of docs/results/ from the committed records alone
(mhe_transformers.experiments.report).

    python scripts/make_report.py        # = make report
"""

from mhe_transformers.experiments.report import main
from mhe_transformers.utils.cli import run_script

if __name__ == "__main__":
    run_script(main)
