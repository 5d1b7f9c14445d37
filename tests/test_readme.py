"""The README's "Use it with…" snippets run as written, in a fresh process, on a tiny checkpoint."""

import re
import shutil
import subprocess
import sys

import pytest
from conftest import REPO_ROOT


def use_it_with_snippets() -> list[str]:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Use it with…", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_the_section_has_a_snippet_per_integration():
    snippets = "\n".join(use_it_with_snippets())
    for name in ("peft", "sentence_transformers", "onnxruntime", "answer_question", "DataCollatorWithFlattening"):
        assert name in snippets


@pytest.mark.slow
def test_use_it_with_snippets_run(tiny_pretrained_dir, tmp_path):
    for module, extra in (("peft", "peft"), ("sentence_transformers", "sentence-transformers"), ("onnxruntime", "onnx")):
        pytest.importorskip(module, reason=f"needs the [{extra}] extra: pip install 'mhe-transformers[{extra}]'")
    shutil.copytree(tiny_pretrained_dir, tmp_path / "outputs" / "pretrain-mhe_mul")
    code = "\n".join(use_it_with_snippets()) + "\nprint('SNIPPETS OK', answer['answer'] in 'The small dog runs across the field.')\n"
    process = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert process.returncode == 0, process.stderr[-4000:]
    assert "SNIPPETS OK True" in process.stdout
    assert (tmp_path / "outputs/lora-adapter/adapter_model.safetensors").is_file()
    assert (tmp_path / "outputs/mhe-sentence-embeddings/modules.json").is_file()
    assert (tmp_path / "outputs/pretrain-mhe_mul/onnx/model.onnx").is_file()
