"""The decode benchmark's closed forms against instantiated models, and a seconds-long run of its script."""

import json
import runpy
import sys

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from mhe_transformers import ATTENTION_TYPES, MHEConfig, MHEForCausalLM
from mhe_transformers.experiments.decode_benchmark import (
    build_gpt2,
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


def test_decode_benchmark_script_runs_and_reports_every_type(tmp_path, monkeypatch):
    argv = ["benchmark_decode.py", "--micro", "--contexts", "24", "--prompt_len", "8", "--decode_steps", "3",
            "--repeats", "1", "--warmup", "0", "--vocab_size", "50", "--compare_kernels", "--output_dir", str(tmp_path)]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path("scripts/benchmark_decode.py", run_name="__main__")
    results = json.loads((tmp_path / "benchmark-decode.json").read_text())
    rows = {(row["attention_type"], row["kernel"]): row for row in results["decode"]}
    assert {t for t, _ in rows} == set(ATTENTION_TYPES)
    assert {("mhe_mul", "repeat_kv"), ("mhe_mul", "enable_gqa"), ("gqa", "repeat_kv")} <= set(rows)
    heads = 4
    assert rows["mhe_mul", "sdpa"]["cache_ratio"] == pytest.approx(1 / heads)
    assert rows["mha", "sdpa"]["cache_ratio"] == pytest.approx(1.0)
    assert rows["gqa", "sdpa"]["cache_ratio"] == pytest.approx(rows["gqa", "sdpa"]["cache_bytes_formula"] / rows["mha", "sdpa"]["cache_bytes_formula"])
    assert all(row["tokens_per_s"] > 0 and row["bytes_ratio_gpt2_over_ours"] > 0 for row in rows.values())
    assert (tmp_path / "benchmark-decode.md").read_text().count("| micro |") == len(rows)
