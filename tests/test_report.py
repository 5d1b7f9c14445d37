"""`make report` (mhe_transformers/experiments/report.py): the tables and figure come from the records alone, are
byte-identical when rebuilt, and say what is missing when records are."""

import shutil

import pytest
from test_compare import FakePipeline, write_comparison

from mhe_transformers.experiments import benchmark, compare, report
from mhe_transformers.models.mhe.parameter_counts import attention_parameter_formula


@pytest.fixture
def folder(tmp_path, tiny_classification_dir, tiny_tokenizer_dir):
    """A configs folder with a toy design stage and a toy main comparison (final), records in folder/records."""
    write_comparison(tmp_path, tiny_classification_dir, tiny_tokenizer_dir, name="ablation", seeds=[42, 43],
                     groups={"absolute": {"types": ["mha", "mhe_mul"], "position": "absolute"},
                             "shared_bias": {"types": ["mha", "mhe_mul"], "position": "absolute"}})  # fmt: skip
    write_comparison(tmp_path, tiny_classification_dir, tiny_tokenizer_dir, name="main", stage="final", seeds=[42, 43, 44],
                     groups={"main": {"types": ["mha", "mhe_mul", "mhe_add"], "position": "absolute"},
                             "matched": {"types": ["mha"], "position": "absolute", "model": {"head_dim": 6},
                                         "reference": "main"}})  # fmt: skip
    return tmp_path


def build(folder):
    page, figure = folder / "docs" / "comparison.md", folder / "docs" / "prr.png"
    report.write_report(folder, folder / "records", page, figure)
    return page.read_bytes(), figure.read_bytes(), (folder / "docs" / "curves.png").read_bytes()


def test_with_no_records_the_page_says_what_is_missing(folder):
    page, figure, curves = build(folder)
    text = page.decode()
    assert "| ablation | design | 0 | 8 | 0.1 | 0 |" in text and "| main | final | 0 | 12 | 0.2 | 0 |" in text
    assert "- Every run missing: `make compare-ablation`, `make compare-main`." in text
    assert "Choice of `position`: not yet (0 of 8 runs recorded)." in text
    assert "| main/mhe_mul vs main/mha, task | – | – | – | 0 | – | – |" in text
    assert figure[:8] == curves[:8] == b"\x89PNG\r\n\x1a\n" and "![Pretraining loss per arm](curves.png)" in text


def test_partial_records_give_n_per_cell_primary_endpoints_and_identical_rebuilds(folder):
    compare.main(["--comparison", str(folder / "main.yaml"), "--max_runs", "8"], pipeline=FakePipeline())
    page = folder / "docs" / "comparison.md"
    page.parent.mkdir()
    page.write_text("# Pre-registration\n\nWritten by hand.\n\n" + report.GENERATED_MARKER + "\nstale table\n")
    first = build(folder)
    text = first[0].decode()
    assert text.startswith("# Pre-registration\n\nWritten by hand.\n\n" + report.GENERATED_MARKER)
    assert "stale table" not in text and "| main | final | 8 | 12 |" in text
    assert "- main, missing seeds: main/mha 44; main/mhe_mul 44; main/mhe_add 44; matched/mha 44" in text
    rows = {line.split(" | ")[0][2:]: line for line in text.splitlines() if line.startswith("| main/") or
            line.startswith("| matched/")}  # fmt: skip
    assert rows["main/mhe_mul"].split(" | ")[2] == "2" and rows["matched/mha"].split(" | ")[2] == "2"
    # Parameter counts come from the runs' (fake: hidden 32, 4 heads, 2 layers) checkpoints.
    assert rows["main/mha"].split(" | ")[1] == f"{2 * attention_parameter_formula('mha', 32, 4, 8):,}"
    assert rows["matched/mha"].split(" | ")[1] == f"{2 * attention_parameter_formula('mha', 32, 4, 6):,}"
    # Primary endpoints: every one with 2 of its 3 planned seeds, Holm-adjusted over those present in the table; a
    # sentence each that claims nothing before every planned seed is recorded.
    assert text.count(" from 2 of 3 seeds: interim, no claim.") == 8 and "below MHA" not in text
    assert "MHE-MUL's task PRR against MHA is " in text and "MHE-ADD's masked-LM PRR against MHA (matched) is" in text
    # Curves: the mean over each arm's seeds of the logged losses (FakePipeline logs 6.0 then 5.0, every run).
    main_comparison = next(c for c in report.load(folder, folder / "records") if c.config.name == "main")
    assert report.mean_curves(main_comparison)["main/mha"] == ([1, 2], [6.0, 5.0], 2)
    record = main_comparison.arm_records("main/mha")[0]
    record["pretraining_curve"] = [[1, 7.0], [2, 6.0], [3, 5.5]]  # one seed logged more steps: shared steps only
    assert report.mean_curves(main_comparison)["main/mha"] == ([1, 2], [6.5, 5.5], 2)
    # The same records give the same bytes, with the checkpoints gone and again from a fresh copy.
    shutil.rmtree(folder / "runs", ignore_errors=True)
    assert build(folder) == first
    copy = folder / "copy"
    shutil.copytree(folder / "records", copy / "records")
    for name in ("ablation.yaml", "main.yaml"):
        shutil.copy(folder / name, copy / name)
    (copy / "docs").mkdir()
    (copy / "docs" / "comparison.md").write_text(page.read_text().split(report.GENERATED_MARKER)[0])
    assert build(copy) == first


def test_a_finished_design_stage_states_its_choice(folder):
    compare.main(["--comparison", str(folder / "ablation.yaml")], pipeline=FakePipeline())
    text = build(folder)[0].decode()
    assert "Mean selection score on validation by `position`: absolute " in text and "Chosen: **absolute**." in text


def test_the_shipped_report_builds_from_the_committed_records(tmp_path):
    from conftest import REPO_ROOT

    page, figure = tmp_path / "comparison.md", tmp_path / "prr.png"
    shutil.copy(REPO_ROOT / "docs/results/comparison.md", page)
    report.write_report(REPO_ROOT / "configs/compare", REPO_ROOT / "docs/results/records", page, figure)
    assert page.read_bytes() == (REPO_ROOT / "docs/results/comparison.md").read_bytes()
    assert figure.read_bytes() == (REPO_ROOT / "docs/results/prr.png").read_bytes()
    assert (tmp_path / "curves.png").read_bytes() == (REPO_ROOT / "docs/results/curves.png").read_bytes()
    # The speed page and figure, from the committed benchmark records (`make benchmark-records`).
    speed_page, speed_figure = tmp_path / "speed-memory.md", tmp_path / "speed.png"
    shutil.copy(REPO_ROOT / "docs/results/speed-memory.md", speed_page)
    benchmark.write_records_page(REPO_ROOT / "docs/results/records/benchmark", speed_page, speed_figure,
                                 report.GENERATED_MARKER)  # fmt: skip
    assert speed_page.read_bytes() == (REPO_ROOT / "docs/results/speed-memory.md").read_bytes()
    assert speed_figure.read_bytes() == (REPO_ROOT / "docs/results/speed.png").read_bytes()


def test_an_endpoint_is_claimed_only_when_complete_holm_significant_and_its_interval_excludes_1():
    below = {"estimate": 0.95, "low": 0.93, "high": 0.97}
    assert report.endpoint_sentence("MHE-MUL", "task", "MHA", below, 8, 8, 0.004) == (
        "MHE-MUL's task PRR against MHA is 0.950 [0.930, 0.970], Holm-adjusted p = 0.0040: below MHA.")
    assert report.endpoint_sentence("MHE-MUL", "task", "MHA", below, 3, 8, 0.004) == (
        "MHE-MUL's task PRR against MHA is 0.950 [0.930, 0.970] from 3 of 8 seeds: interim, no claim.")
    assert report.endpoint_sentence("MHE-MUL", "task", "MHA", below, 8, 8, 0.08).endswith(
        "Holm-adjusted p = 0.0800: no difference shown.")  # the interval alone is not enough
    across = {"estimate": 0.99, "low": 0.97, "high": 1.01}
    assert report.endpoint_sentence("MHE-ADD", "masked-LM", "MHA", across, 8, 8, 0.01).endswith(
        "no difference shown.")  # a p-value alone is not enough either
    above = {"estimate": 1.02, "low": 1.01, "high": 1.03}
    assert report.endpoint_sentence("X", "task", "MHA", above, 8, 8, 0.01).endswith(": above MHA.")
