"""Convert a BERT sentence-transformers model (all-MiniLM-L6-v2) to MHE, recover it by distillation on a multi-domain
English corpus read from Debian packages, score it on held-out domains, and save it as a sentence-transformers model
with a model card (docs/conversion.md, docs/results/minilm.md; `make convert-minilm`).

    python scripts/convert_sentence_transformer.py --model_name_or_path path/to/all-MiniLM-L6-v2 \\
        --output_dir outputs/minilm-mhe_mul --recover_steps 1500 --recover_embedding_weight 1

The folder loads with `SentenceTransformer(path, trust_remote_code=True)` and passes `scripts/push_to_hub.py`'s checks.
"""

from mhe_transformers.interop.embedding_conversion import main
from mhe_transformers.utils.cli import run_script

if __name__ == "__main__":
    run_script(main)
