"""Export a checkpoint to ONNX (dynamic batch and sequence axes) and check it in ONNX Runtime
(mhe_transformers.interop.onnx; needs `pip install 'mhe-transformers[onnx]'`).

    python scripts/export_onnx.py --model_name_or_path outputs/pretrain-mhe_mul            # -> .../onnx/model.onnx
    python scripts/export_onnx.py --model_name_or_path outputs/supersense --task text-classification
"""

from mhe_transformers.interop.onnx import main
from mhe_transformers.utils.cli import run_script

if __name__ == "__main__":
    run_script(main)
