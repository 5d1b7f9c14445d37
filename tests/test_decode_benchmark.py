"""The decode benchmark's closed forms against instantiated models, and seconds-long runs of its script."""

import json
import runpy
import sys

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import StaticCache

from mhe_transformers import ATTENTION_TYPES, MHEConfig, MHEForCausalLM
from mhe_transformers.experiments import decode_benchmark
from mhe_transformers.experiments.decode_benchmark import (
    build_gpt2,
    bytes_limit,
    decode_step_bytes,
    decode_step_flops,
    gpt2_decode_step_flops,
    kv_cache_bytes,
)

TINY = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
            max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)  # fmt: skip


def tiny_config(attention_type):
    return MHEConfig(**TINY, attention_type=attention_type, num_key_value_heads=2 if attention_type == "gqa" else None,
                     is_decoder=True, attn_implementation="eager")  # fmt: skip


def decode_one_token(model, context: int):
    """FLOPs counted by torch, and the cache, of decoding token number `context` after a prefill of context - 1."""
    ids = torch.randint(1, TINY["vocab_size"], (1, context))
    with torch.no_grad():
        cache = model(input_ids=ids[:, :-1], use_cache=True).cache
        with FlopCounterMode(display=False) as counter:
            out = model(input_ids=ids[:, -1:], position_ids=torch.tensor([[context - 1]]), cache=cache, use_cache=True)
    return counter.get_total_flops(), out.cache


def measured_bytes(model, batch: int, cache_tokens: int) -> int:
    """Bytes of the model's parameters (each tensor once) and of the cache it fills with `cache_tokens` tokens."""
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    with torch.no_grad():
        cache = model(input_ids=torch.randint(1, TINY["vocab_size"], (batch, cache_tokens)), use_cache=True).cache
    return weights + decode_benchmark.cache_bytes(cache)


@pytest.mark.parametrize("attention_type", ATTENTION_TYPES)
def test_decode_flops_and_cache_bytes_equal_what_the_model_does(attention_type):
    config = tiny_config(attention_type)
    flops, cache = decode_one_token(MHEForCausalLM(config).eval(), context=20)
    assert flops == decode_step_flops(config, 20)
    measured = sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))
    assert measured == kv_cache_bytes(config.num_hidden_layers, config.num_key_value_heads, config.head_dim, 1, 20, 4)


def test_gpt2_decode_flops_and_cache_equal_the_formula():
    config = tiny_config("mha")
    flops, cache = decode_one_token(build_gpt2(config, "eager").eval(), context=20)
    assert flops == gpt2_decode_step_flops(config, 20)
    measured = sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))
    assert measured == kv_cache_bytes(config.num_hidden_layers, config.num_attention_heads, config.head_dim, 1, 20, 4)


@pytest.mark.parametrize("attention_type", [*ATTENTION_TYPES, "gpt2"])
def test_bytes_per_step_are_the_weights_and_the_cache_the_model_holds(attention_type):
    gpt2 = attention_type == "gpt2"
    config = tiny_config("mha" if gpt2 else attention_type)
    model = (build_gpt2(config, "eager") if gpt2 else MHEForCausalLM(config)).eval()
    assert decode_step_bytes(config, 3, 11, 4, gpt2=gpt2) == measured_bytes(model, 3, 11)


def test_bytes_limit_is_gpt2_bytes_over_ours_over_the_decoded_steps():
    ours, reference = tiny_config("mhe_mul"), tiny_config("mha")
    mhe, gpt2 = MHEForCausalLM(ours).eval(), build_gpt2(reference, "eager").eval()
    # Two steps decoding tokens 9 and 10: a dynamic cache is read at 9 then 10 positions, a static one at 10 twice.
    dynamic = (measured_bytes(gpt2, 2, 9) + measured_bytes(gpt2, 2, 10)) / (
        measured_bytes(mhe, 2, 9) + measured_bytes(mhe, 2, 10)
    )
    assert bytes_limit(ours, reference, 2, 10, 2, 4, "dynamic") == pytest.approx(dynamic)
    static = measured_bytes(gpt2, 2, 10) / measured_bytes(mhe, 2, 10)
    for cache in ("static", "compiled"):
        assert bytes_limit(ours, reference, 2, 10, 2, 4, cache) == pytest.approx(static)
    assert static > 1  # GPT-2 caches every head


@pytest.mark.parametrize("cache", ["static", "compiled"])
def test_static_decoding_restarts_from_the_prefill_at_every_call(cache, monkeypatch):
    """make_decode's static cache is one buffer for every call: each call must decode from the prefill again (its
    length set back), reading the same number of positions, never running past the buffer."""
    if cache == "compiled":
        monkeypatch.setattr(torch, "compile", lambda function, **kwargs: function)  # the same loop, uncompiled
    model = MHEForCausalLM(tiny_config("mhe_mul")).eval()
    prompt = torch.randint(1, TINY["vocab_size"], (2, 12))
    seen = []
    original_update = StaticCache.update

    def recording_update(self, key_states, value_states, layer_idx, *args, **kwargs):
        if layer_idx == 0:
            seen.append(int(self.get_seq_length()))
        return original_update(self, key_states, value_states, layer_idx, *args, **kwargs)

    monkeypatch.setattr(StaticCache, "update", recording_update)
    run = decode_benchmark.make_decode(model, prompt, 12, 3, torch.device("cpu"), cache)
    first_bytes = run()[1]
    prefill_calls = len(seen) - 3
    seen.clear()
    for _ in range(2):
        assert run()[1] == first_bytes == kv_cache_bytes(2, 1, 8, 2, 12, 4)
    assert seen == [9, 10, 11] * 2 and prefill_calls == (1 if cache == "static" else 2)


def run_script(tmp_path, monkeypatch, *extra):
    argv = ["benchmark_decode.py", "--micro", "--contexts", "24", "--prompt_len", "8", "--decode_steps", "3",
            "--repeats", "1", "--warmup", "0", "--vocab_size", "50", "--output_dir", str(tmp_path), *extra]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path("scripts/benchmark_decode.py", run_name="__main__")
    return json.loads((tmp_path / "benchmark-decode.json").read_text()), (tmp_path / "benchmark-decode.md").read_text()


def test_decode_benchmark_script_runs_and_reports_every_type_and_cache(tmp_path, monkeypatch):
    results, report = run_script(tmp_path, monkeypatch, "--compare_kernels", "--caches", "dynamic", "static")
    rows = {(row["attention_type"], row["kernel"]): row for row in results["decode"]}
    assert {t for t, _ in rows} == set(ATTENTION_TYPES)
    assert {("mhe_mul", "repeat_kv"), ("mhe_mul", "enable_gqa"), ("gqa", "repeat_kv")} <= set(rows)
    heads = 4
    assert rows["mhe_mul", "sdpa"]["cache_ratio"] == pytest.approx(1 / heads)
    assert rows["mha", "sdpa"]["cache_ratio"] == pytest.approx(1.0)
    assert rows["gqa", "sdpa"]["cache_ratio"] == pytest.approx(rows["gqa", "sdpa"]["cache_bytes_formula"] / rows["mha", "sdpa"]["cache_bytes_formula"])
    for row in rows.values():
        assert "compiled" not in row
        for cache in ("dynamic", "static"):
            assert row[cache]["tokens_per_s"] > 0 and row[cache]["gpt2_tokens_per_s"] > 0 and row[cache]["speed_ratio"] > 0
            assert row[cache]["bytes_limit"] > 0
    assert rows["mhe_mul", "sdpa"]["dynamic"]["bytes_limit"] > rows["mha", "sdpa"]["dynamic"]["bytes_limit"]
    assert report.count("| micro |") == len(rows)
    assert "| dynamic tok/s (GPT-2) | speed | limit | static tok/s (GPT-2) | speed | limit |" in report
    # each limit printed next to its speed ratio
    mhe_line = next(line for line in report.splitlines() if line.startswith("| micro | 24 | 3 | mhe_mul | sdpa |"))
    assert f"| {rows['mhe_mul', 'sdpa']['static']['bytes_limit']:.2f} |" in mhe_line


def test_compiled_cache_is_left_out_with_its_reason_where_compile_does_not_run(tmp_path, monkeypatch):
    monkeypatch.setattr(decode_benchmark, "compile_unavailable", lambda: "no C++ compiler (simulated)")
    results, report = run_script(tmp_path, monkeypatch, "--attention_types", "mhe_mul", "--caches", "static", "compiled")
    assert results["settings"]["caches_measured"] == ["static"]
    assert results["settings"]["compiled_left_out"] == "no C++ compiler (simulated)"
    assert "compiled" not in results["decode"][0] and "Compiled cache left out: no C++ compiler" in report


@pytest.mark.slow
def test_decode_benchmark_compiles_where_torch_compile_runs(tmp_path, monkeypatch):
    reason = decode_benchmark.compile_unavailable()
    if reason:
        pytest.skip(reason)
    results, report = run_script(tmp_path, monkeypatch, "--attention_types", "mhe_mul", "--caches", "compiled")
    (row,) = results["decode"]
    assert row["compiled"]["tokens_per_s"] > 0 and row["compiled"]["bytes_limit"] > 1
    assert "| compiled tok/s (GPT-2) | speed | limit |" in report


def test_unknown_cache_is_a_usage_error(tmp_path, monkeypatch, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_script(tmp_path, monkeypatch, "--caches", "paged")
    assert exit_info.value.code == 2 and "--caches: unknown value(s) ['paged']" in capsys.readouterr().err
