"""ONNX export of every head (torch.onnx dynamo exporter) checked against PyTorch in ONNX Runtime."""

import subprocess
import sys

import pytest
import torch
from conftest import REPO_ROOT, tiny_config

pytest.importorskip("onnxruntime", reason="needs the [onnx] extra: pip install 'mhe-transformers[onnx]'")
onnx = pytest.importorskip("onnx", reason="needs the [onnx] extra: pip install 'mhe-transformers[onnx]'")
pytest.importorskip("onnxscript", reason="needs the [onnx] extra: pip install 'mhe-transformers[onnx]'")

from mhe_transformers.interop.onnx import TASK_TO_MODEL_CLASS, export_onnx  # noqa: E402


def save_head(task, folder, attention_type="mhe_mul"):
    torch.manual_seed(0)
    model = TASK_TO_MODEL_CLASS[task](tiny_config(attention_type, num_labels=3)).eval()
    with torch.no_grad():  # MUL embeddings start near 1: spread them so a wrong export could not hide
        for name, param in model.named_parameters():
            if "head_embeddings" in name:
                param.copy_(torch.randn_like(param))
    model.save_pretrained(folder)
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("task", list(TASK_TO_MODEL_CLASS))
def test_every_head_exports_with_dynamic_axes_and_matches_pytorch(task, tmp_path):
    folder = save_head(task, tmp_path / "checkpoint", "mhe_add" if task == "fill-mask" else "mhe_mul")
    report = export_onnx(folder, task=task)
    assert report.path == folder / "onnx" / "model.onnx" and report.path.exists()
    assert report.max_abs_diff < 1e-4  # checked inside on a shape other than the export's, with padding
    graph = onnx.load(str(report.path)).graph
    assert [i.name for i in graph.input] == ["input_ids", "attention_mask", "token_type_ids"]
    assert [o.name for o in graph.output] == list(report.output_names)
    dims = [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert all(isinstance(d, str) and d for d in dims), dims  # batch (choices) and sequence are symbolic
    assert not list((folder / "onnx").glob(".onnx-export-*"))  # no temporary folder left


@pytest.mark.slow
def test_export_script_writes_next_to_the_checkpoint(tmp_path):
    folder = save_head("text-classification", tmp_path / "classifier")
    process = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts/export_onnx.py"), "--model_name_or_path", str(folder)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert process.returncode == 0, process.stderr[-3000:]
    assert (folder / "onnx" / "model.onnx").exists()
    assert "text-classification" in process.stdout and "max abs diff" in process.stdout


def test_unknown_task_is_refused(tmp_path):
    folder = save_head("fill-mask", tmp_path / "mlm")
    with pytest.raises(ValueError, match="Unknown task 'summarization'"):
        export_onnx(folder, task="summarization")
