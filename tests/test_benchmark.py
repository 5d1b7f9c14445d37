"""The benchmark's formulas against instantiated models, its memory method, and a seconds-long run of the script."""

import json
import runpy
import sys

import pytest
import torch
from conftest import tiny_config
from torch.utils.flop_counter import FlopCounterMode

from mhe_transformers import ATTENTION_TYPES, MHEConfig, MHEModel
from mhe_transformers.experiments.benchmark import (
    BenchmarkArguments,
    build_bert,
    peak_step_memory,
)
from mhe_transformers.experiments.benchmark import main as benchmark_main
from mhe_transformers.models.mhe.parameter_counts import (
    attention_parameter_formula,
    count_parameters,
    encoder_matmul_flops,
    encoder_parameter_formula,
)
from mhe_transformers.utils.run_folder import OUTPUT_MARKER


@pytest.mark.parametrize("attention_type", ATTENTION_TYPES)
@pytest.mark.parametrize("overrides", [{}, {"attention_bias": False}, {"head_dim": 6}], ids=["bias", "no-bias", "head_dim"])
def test_parameter_formulas_equal_instantiated_models(attention_type, overrides):
    config = tiny_config(attention_type, **overrides)
    counts = count_parameters(MHEModel(config, add_pooling_layer=False))
    per_layer = attention_parameter_formula(
        attention_type, config.hidden_size, config.num_attention_heads, config.head_dim, config.num_key_value_heads,
        bias=config.attention_bias,
    )
    assert counts["attention"] == config.num_hidden_layers * per_layer
    assert counts["total"] == encoder_parameter_formula(config)
    with_pooler = sum(p.numel() for p in MHEModel(config, add_pooling_layer=True).parameters())
    assert with_pooler == encoder_parameter_formula(config, add_pooling_layer=True)


def test_bert_has_the_counts_of_mha():
    config = tiny_config("mha")
    assert count_parameters(build_bert(config)) == count_parameters(MHEModel(config, add_pooling_layer=False))


@pytest.mark.parametrize("n, d", [(12, 64), (4, 8)])
def test_formula_reproduces_the_papers_headline_count(n, d):
    # Xue & Aletras: with h = n·d, MHA needs (3n² − 3n)d² − 3nd more Q/K/V parameters than MHE; the output
    # projection is the same in both, and bias=False leaves only weights and head embeddings.
    h = n * d
    difference = attention_parameter_formula("mha", h, n, d, bias=False) - attention_parameter_formula("mhe_mul", h, n, d, bias=False)
    assert difference == (3 * n**2 - 3 * n) * d**2 - 3 * n * d
    assert attention_parameter_formula("mhe_add", h, n, d, bias=False) - h * h == 3 * n * d**2 + 3 * n * d


def test_gqa_formula_needs_its_key_value_heads():
    with pytest.raises(ValueError, match="key/value heads"):
        attention_parameter_formula("gqa", 32, 4, 8)
    with pytest.raises(ValueError, match="attention_type"):
        attention_parameter_formula("mla", 32, 4, 8)


@pytest.mark.parametrize("attention_type", ATTENTION_TYPES)
def test_flop_formula_equals_counted_matmuls(attention_type):
    config = tiny_config(attention_type, attn_implementation="eager")  # eager: every matmul is a visible aten op
    model = MHEModel(config, add_pooling_layer=False).eval()
    batch, seq_len = 2, 10
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(input_ids=torch.randint(1, config.vocab_size, (batch, seq_len)))
    assert counter.get_total_flops() == batch * encoder_matmul_flops(config, seq_len)


def test_flop_ratio_of_bert_base_dims():
    mha = MHEConfig(attention_type="mha")
    mhe = MHEConfig(attention_type="mhe_mul")
    ratio = encoder_matmul_flops(mha, 128) / encoder_matmul_flops(mhe, 128)
    assert 1.25 < ratio < 1.30  # MHE shrinks only the Q/K/V projections, about a quarter of BERT-base's matmuls


def test_peak_step_memory_sees_what_a_step_holds_at_once():
    n = 1 << 20  # 4 MiB of float32

    def sequential():
        for _ in range(3):
            torch.ones(n).sum()

    def simultaneous():
        tensors = [torch.ones(n) for _ in range(3)]
        return sum(t.sum() for t in tensors)

    cpu = torch.device("cpu")
    assert 4 * n <= peak_step_memory(sequential, cpu) < 2 * 4 * n
    assert 3 * 4 * n <= peak_step_memory(simultaneous, cpu) < 4 * 4 * n


def test_bad_arguments_fail_before_any_model_is_built():
    with pytest.raises(ValueError, match="--sizes"):
        BenchmarkArguments(sizes=["huge"])
    with pytest.raises(ValueError, match="--seq_lens"):
        BenchmarkArguments(seq_lens=[1024])
    with pytest.raises(ValueError, match="--attention_types"):
        BenchmarkArguments(attention_types=["mha", "mla"])


def test_script_writes_json_markdown_and_png(tmp_path, monkeypatch, capsys):
    output_dir = tmp_path / "bench"
    argv = ["benchmark.py", "--micro", "--vocab_size", "128", "--seq_lens", "8", "--batch_size", "2",
            "--repeats", "1", "--warmup", "0", "--output_dir", str(output_dir)]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path("scripts/benchmark.py", run_name="__main__")
    # A progress bar, as Trainer's: one tick per timed setting (here the two modes of one size and length).
    progress = capsys.readouterr().err
    assert "benchmark: 100%" in progress and "| 2/2 [" in progress, progress

    names = sorted(p.name for p in output_dir.iterdir())
    assert names == [OUTPUT_MARKER, "benchmark.json", "benchmark.md", "benchmark.png"]
    results = json.loads((output_dir / "benchmark.json").read_text())
    assert set(results) == {"environment", "settings", "parameters", "speed"}
    assert [row["attention_type"] for row in results["speed"]] == list(ATTENTION_TYPES)
    for row in results["parameters"]:
        assert row["total"] == row["total_formula"] and row["attention"] == row["attention_formula"]
    for row in results["speed"]:
        for mode in ("forward", "train"):
            assert row[mode]["tokens_per_s"] > 0 and row[mode]["speed_ratio"] > 0
            # Parameters are part of the peak; a training step also holds gradients and activations.
            assert row[mode]["peak_memory_bytes"] > 0
        assert row["train"]["peak_memory_bytes"] > row["forward"]["peak_memory_bytes"]
    markdown = (output_dir / "benchmark.md").read_text()
    for attention_type in ATTENTION_TYPES:
        assert f"| micro | {attention_type} |" in markdown
        assert f"| micro | 8 | float32/sdpa | {attention_type} |" in markdown
    assert (output_dir / "benchmark.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left behind


def test_disable_tqdm_turns_the_progress_bar_off(tmp_path, capsys):
    benchmark_main([
        "--micro", "--vocab_size", "128", "--seq_lens", "8", "--batch_size", "2", "--repeats", "1", "--warmup", "0",
        "--attention_types", "mha", "--modes", "forward", "--memory", "false", "--disable_tqdm", "true",
        "--output_dir", str(tmp_path / "bench"),
    ])  # fmt: skip
    assert "benchmark:" not in capsys.readouterr().err


def test_the_speed_page_and_figure_are_built_from_the_committed_records_alone(tmp_path):
    """`make report`'s speed part: every record's rows in one table and one figure, the hand-written head kept, the
    same records giving the same bytes; a file that is not a benchmark report is named, not skipped."""
    from mhe_transformers.experiments.benchmark import write_records_page
    from mhe_transformers.experiments.report import GENERATED_MARKER

    records = tmp_path / "records"
    records.mkdir()
    for seq_len in (8, 16):
        benchmark_main([
            "--micro", "--vocab_size", "128", "--seq_lens", str(seq_len), "--batch_size", "2", "--repeats", "2",
            "--warmup", "0", "--attention_types", "mha", "mhe_mul", "--disable_tqdm", "true",
            "--output_dir", str(tmp_path / f"bench-{seq_len}"),
        ])  # fmt: skip
        (records / f"micro-{seq_len}.json").write_bytes((tmp_path / f"bench-{seq_len}" / "benchmark.json").read_bytes())
    page, figure = tmp_path / "speed-memory.md", tmp_path / "speed.png"
    page.write_text(f"# Speed\n\nHand-written prose.\n\n{GENERATED_MARKER}\n\nan old table\n")
    write_records_page(records, page, figure, GENERATED_MARKER)
    text = page.read_text()
    assert text.startswith("# Speed\n\nHand-written prose.\n\n" + GENERATED_MARKER) and "an old table" not in text
    for seq_len in (8, 16):
        result = json.loads((records / f"micro-{seq_len}.json").read_text())
        assert result["environment"]["command"] in text
        for row in result["speed"]:
            ratio = row["train"]["speed_ratio"]
            assert f"| micro | {seq_len} | {row['attention_type']} | {row['flop_ratio_bert_over_ours']:.3f} |" in text
            assert f"{ratio:.3f} [" in text
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "(speed.png)" in text
    first = (page.read_bytes(), figure.read_bytes())
    write_records_page(records, page, figure, GENERATED_MARKER)
    assert (page.read_bytes(), figure.read_bytes()) == first

    (records / "notes.json").write_text('{"speed": []}')
    with pytest.raises(ValueError, match="notes.json: not a benchmark.json"):
        write_records_page(records, page, figure, GENERATED_MARKER)
    (records / "notes.json").write_text('{"speed": [')  # a copy cut short
    with pytest.raises(ValueError, match="notes.json: not valid JSON"):
        write_records_page(records, page, figure, GENERATED_MARKER)
