"""Convert a pretrained BERT/RoBERTa checkpoint (multi-head attention) into an MHE checkpoint (docs/conversion.md).

    python scripts/convert_mha_to_mhe.py --model_name_or_path bert-base-uncased --output_dir outputs/bert-mhe-mul \\
        --attention_type mhe_mul
    # measure what survived on held-out WordNet glosses, then recover by distilling the original for 300 steps:
    python scripts/convert_mha_to_mhe.py --model_name_or_path path/to/minilm --output_dir outputs/minilm-mhe-mul \\
        --evaluate --recover_steps 300 --recover_learning_rate 1e-3

The output folder holds the MHE weights, the two model code files (it loads with trust_remote_code=True), the
tokenizer and conversion_report.json; it is written atomically (a temporary folder renamed at the end).
"""

from mhe_transformers.interop.conversion import main
from mhe_transformers.utils.cli import run_script

if __name__ == "__main__":
    run_script(main)
