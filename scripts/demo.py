"""Pretrain, fine-tune, test and reload a tiny MHE model on offline WordNet data: `make demo` (mhe_transformers.demo).

    python scripts/demo.py [--output-dir outputs/demo] [--pretrain-args "--max_steps 100"] ...
"""

from mhe_transformers.demo import main

if __name__ == "__main__":
    main()
