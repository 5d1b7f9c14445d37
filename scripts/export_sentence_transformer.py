"""Save an MHE encoder as a sentence-transformers model: modules.json, pooling config, model card
(mhe_transformers.interop.sentence_transformer; needs `pip install 'mhe-transformers[sentence-transformers]'`).

    python scripts/export_sentence_transformer.py --model_name_or_path outputs/minilm-mhe_mul \\
        --output_dir outputs/minilm-mhe_mul-st --pooling mean --normalize true
"""

from mhe_transformers.interop.sentence_transformer import main
from mhe_transformers.utils.cli import run_script

if __name__ == "__main__":
    run_script(main)
