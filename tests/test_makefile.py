"""`make clean` removes exactly what the Makefile's targets write (MAKE_OUTPUTS), and every folder a target writes is
in that list: your own runs under outputs/ and data/, and the committed comparison records, stay."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import REPO_ROOT

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")

MAKEFILE = (REPO_ROOT / "Makefile").read_text()
COMPARISONS = re.search(r"^COMPARISONS := (.*)$", MAKEFILE, re.M).group(1).split()
WRITING_TARGETS = ("demo", "benchmark", "benchmark-records", "benchmark-decode", "convert-minilm", *(f"compare-{c}" for c in COMPARISONS))


def dry_run(*targets: str, cwd: Path = REPO_ROOT) -> str:
    """The commands `make` would run for `targets` (`make -n`: nothing runs, the venv is not built)."""
    return subprocess.run(["make", "-n", *targets], cwd=cwd, capture_output=True, text=True, check=True).stdout


def make_outputs() -> set[str]:
    """MAKE_OUTPUTS, as `make clean` iterates over it."""
    return set(re.search(r"for path in (.*?); do", dry_run("clean")).group(1).split())


def test_every_folder_a_target_writes_is_one_clean_removes():
    outputs = make_outputs()
    commands = dry_run(*WRITING_TARGETS)
    written = set(re.findall(r"--(?:output_dir|data_dir) (\S+)", commands))
    loops = dict(re.findall(r"for (\w+) in ([^;]+);", commands))  # `for type in mhe_mul mhe_add; do ...`
    for path in list(written):
        for variable, values in loops.items():
            if f"${variable}" in path:
                written.remove(path)
                written |= {path.replace(f"${variable}", value) for value in values.split()}
    for config in re.findall(r"--comparison (configs/compare/\S+\.yaml)", commands):
        recipe = yaml.safe_load((REPO_ROOT / config).read_text())
        written.add(recipe.get("runs_dir", "outputs/compare"))
        for name, folders in (recipe.get("prepare") or {}).items():
            if name.endswith("_dir"):  # wordnet_dir, eval_wordnet_dir, tokenizer_dir: prepared when missing
                written |= {folder.format(**recipe) for folder in ([folders] if isinstance(folders, str) else folders)}
    assert written and {"outputs/demo", "data/wordnet"} <= written
    left = [path for path in written if not any(path == out or path.startswith(out + "/") for out in outputs)]
    assert not left, f"written by a target but left by make clean: {sorted(left)}"
    assert not [path for path in outputs if path.rstrip("/") in ("outputs", "data", "docs", ".", "")]
    assert not [path for path in outputs if path.startswith("docs")]  # records and pages are committed


def test_clean_removes_only_the_makefiles_folders(tmp_path):
    shutil.copy(REPO_ROOT / "Makefile", tmp_path / "Makefile")
    ours = ["outputs/demo", "data/wordnet", "outputs/benchmark/cpu", ".venv"]
    yours = ["outputs/my-run", "data/my-corpus", "outputs/benchmark/gpu"]
    for folder in ours + yours:
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "file.txt").write_text("x")
    printed = subprocess.run(["make", "clean"], cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert not any((tmp_path / folder).exists() for folder in ours)
    assert all((tmp_path / folder / "file.txt").is_file() for folder in yours)
    assert all(f"removing {folder}" in printed for folder in ours)
    assert "my-run" not in printed and "my-corpus" not in printed
