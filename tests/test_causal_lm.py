"""MHEForCausalLM: causal masking, the key/value cache (its shapes per attention type, and that decoding with it gives
exactly what recomputing the whole prefix gives), generation, remote-code loading through the text-generation
pipeline, and Trainer training."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import AutoModelForCausalLM, DynamicCache

from mhe_transformers import ATTENTION_TYPES, MHEConfig, MHEForCausalLM, MHEModel
from mhe_transformers.models.mhe.modeling_mhe import AUTO_MAP

HEADS, KV_HEADS_GQA, HEAD_DIM = 4, 2, 8
CONFIG = dict(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=HEADS, intermediate_size=64,
              max_position_embeddings=48, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)  # fmt: skip
# Key/value heads in the cache, as the design promises (not read from the config, which the test would then trust).
CACHED_KV_HEADS = {"mhe_mul": 1, "mhe_add": 1, "mqa": 1, "sha": 1, "gqa": KV_HEADS_GQA, "mha": HEADS}
IMPLEMENTATIONS = ("eager", "sdpa")
PAD = 0
# Row 0 is left-padded by 3; row 1 fills the batch.
INPUT_IDS = torch.tensor([[PAD, PAD, PAD, 5, 9, 11, 7], [2, 7, 3, 8, 4, 12, 6]])
ATTENTION_MASK = (INPUT_IDS != PAD).long()


def make_model(attention_type: str, attn_implementation: str = "eager", seed: int = 0) -> MHEForCausalLM:
    torch.manual_seed(seed)
    config = MHEConfig(**CONFIG, attention_type=attention_type, num_key_value_heads=KV_HEADS_GQA, is_decoder=True)
    config._attn_implementation = attn_implementation
    model = MHEForCausalLM(config).eval()
    if attention_type in ("mhe_mul", "mhe_add"):
        # Spread the head embeddings: at their near-constant initialisation every head would look the same.
        with torch.no_grad():
            for layer in model.model.layers:
                for embeddings in (layer.attention.q_head_embeddings, layer.attention.v_head_embeddings):
                    embeddings.normal_(1.0 if attention_type == "mhe_mul" else 0.0, 0.5)
    return model


def generate(model, do_sample: bool, use_cache: bool, input_ids=INPUT_IDS, attention_mask=ATTENTION_MASK, **kwargs):
    torch.manual_seed(123)  # the same random draws for both runs of a sampled comparison
    return model.generate(
        input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=10, min_new_tokens=10, do_sample=do_sample,
        use_cache=use_cache, pad_token_id=PAD, output_logits=True, return_dict_in_generate=True, **kwargs,
    )  # fmt: skip


@pytest.mark.parametrize("attn_implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("do_sample", [False, True], ids=["greedy", "sampled"])
@pytest.mark.parametrize("attention_type", ATTENTION_TYPES)
def test_generate_with_cache_equals_recomputing_without_cache(attention_type, do_sample, attn_implementation):
    model = make_model(attention_type, attn_implementation)
    cached = generate(model, do_sample, use_cache=True)
    recomputed = generate(model, do_sample, use_cache=False)
    assert torch.equal(cached.sequences, recomputed.sequences)
    torch.testing.assert_close(torch.stack(cached.logits), torch.stack(recomputed.logits), atol=1e-4, rtol=1e-4)
    # Not trivially equal: the continuation depends on the prompt and the rows differ.
    assert not torch.equal(cached.sequences[0, -10:], cached.sequences[1, -10:])


@pytest.mark.parametrize("attn_implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("attention_type", ATTENTION_TYPES)
def test_left_padding_gives_the_unpadded_continuation(attention_type, attn_implementation):
    model = make_model(attention_type, attn_implementation)
    batched = generate(model, do_sample=False, use_cache=True)
    real = ATTENTION_MASK[0].bool()
    alone = generate(model, False, True, INPUT_IDS[:1, real], ATTENTION_MASK[:1, real])
    assert torch.equal(batched.sequences[0, -10:], alone.sequences[0, -10:])
    torch.testing.assert_close(
        torch.stack(batched.logits)[:, 0], torch.stack(alone.logits)[:, 0], atol=1e-4, rtol=1e-4
    )


@pytest.mark.parametrize("attn_implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("attention_type", ATTENTION_TYPES)
def test_cached_steps_match_one_full_forward(attention_type, attn_implementation):
    """Teacher forcing: the logits of a prefill plus one-token steps through the cache are those of one forward pass."""
    model = make_model(attention_type, attn_implementation)
    position_ids = (ATTENTION_MASK.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        full = model(INPUT_IDS, attention_mask=ATTENTION_MASK, position_ids=position_ids, use_cache=False).logits
        prefix = 4
        out = model(
            INPUT_IDS[:, :prefix], attention_mask=ATTENTION_MASK[:, :prefix], position_ids=position_ids[:, :prefix]
        )
        steps = [out.logits]
        for t in range(prefix, INPUT_IDS.shape[1]):
            out = model(
                INPUT_IDS[:, t : t + 1],
                attention_mask=ATTENTION_MASK[:, : t + 1],
                position_ids=position_ids[:, t : t + 1],
                cache=out.cache,
            )
            steps.append(out.logits)
    stepped = torch.cat(steps, dim=1)
    real = ATTENTION_MASK.bool()  # padded positions' outputs are meaningless
    torch.testing.assert_close(stepped[real], full[real], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("attention_type", ATTENTION_TYPES)
def test_cache_holds_the_shared_key_value_head_only(attention_type):
    model = make_model(attention_type)
    with torch.no_grad():
        cache = model(INPUT_IDS, attention_mask=ATTENTION_MASK, use_cache=True).cache
    assert isinstance(cache, DynamicCache) and len(cache.layers) == CONFIG["num_hidden_layers"]
    expected = (INPUT_IDS.shape[0], CACHED_KV_HEADS[attention_type], INPUT_IDS.shape[1], HEAD_DIM)
    for layer in cache.layers:
        assert tuple(layer.keys.shape) == expected and tuple(layer.values.shape) == expected
    if attention_type in ("mhe_mul", "mhe_add"):
        # The cached key is X W^K itself: no head embedding is applied to it.
        attention = model.model.layers[0].attention
        with torch.no_grad():
            hidden = model.model.embeddings(INPUT_IDS)
            torch.testing.assert_close(cache.layers[0].keys[:, 0], attention.k_proj(hidden))


def test_mhe_cache_is_one_nth_of_mha():
    sizes = {}
    for attention_type in ("mha", "mhe_mul", "mhe_add"):
        with torch.no_grad():
            cache = make_model(attention_type)(INPUT_IDS, use_cache=True).cache
        sizes[attention_type] = sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))
    assert sizes["mhe_mul"] * HEADS == sizes["mha"] and sizes["mhe_add"] == sizes["mhe_mul"]


@pytest.mark.parametrize("attention_type", ["mhe_mul", "gqa", "mha"])
def test_decoder_is_causal_and_the_encoder_is_not(attention_type):
    changed = INPUT_IDS[1:].clone()
    changed[0, -1] = 40  # only the last token differs
    decoder = make_model(attention_type)
    encoder = MHEModel(MHEConfig(**CONFIG, attention_type=attention_type, num_key_value_heads=KV_HEADS_GQA)).eval()
    with torch.no_grad():
        before, after = decoder(INPUT_IDS[1:]).logits, decoder(changed).logits
        encoded_before, encoded_after = encoder(INPUT_IDS[1:]).last_hidden_state, encoder(changed).last_hidden_state
    torch.testing.assert_close(before[:, :-1], after[:, :-1])  # earlier positions cannot see the change
    assert not torch.allclose(before[:, -1], after[:, -1])
    assert not torch.allclose(encoded_before[:, 0], encoded_after[:, 0])  # the encoder still looks both ways


def test_encoder_refuses_a_cache():
    encoder = MHEModel(MHEConfig(**CONFIG))
    with pytest.raises(ValueError, match="is_decoder=True"):
        encoder(INPUT_IDS, cache=DynamicCache())


def test_generating_past_the_position_table_names_the_limit():
    model = make_model("mhe_mul")
    with pytest.raises(ValueError, match="max_position_embeddings=48"):
        model.generate(INPUT_IDS, attention_mask=ATTENTION_MASK, max_new_tokens=60, pad_token_id=PAD)


def test_encoder_checkpoint_warm_starts_a_causal_lm(tmp_path):
    from mhe_transformers import MHEForMaskedLM

    torch.manual_seed(0)
    MHEForMaskedLM(MHEConfig(**CONFIG)).save_pretrained(tmp_path)
    model = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert type(model) is MHEForCausalLM and model.config.is_decoder and model.model.layers[0].attention.is_causal


# Run in a fresh interpreter where a meta-path finder refuses `mhe_transformers` (as tests/test_save_load.py does):
# only the code saved next to the weights can define the model.
REMOTE_GENERATE = textwrap.dedent(
    """
    import importlib.abc, json, sys
    class BlockMHE(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "mhe_transformers" or name.startswith("mhe_transformers."):
                raise ImportError("mhe_transformers is blocked in this process")
    sys.meta_path.insert(0, BlockMHE())
    from transformers import pipeline
    generator = pipeline("text-generation", model=sys.argv[1], trust_remote_code=True, device="cpu")
    try:
        import mhe_transformers
        blocked = False
    except ImportError:
        blocked = True
    out = generator(sys.argv[2], max_new_tokens=6, do_sample=False, return_full_text=False)
    print(json.dumps({"blocked": blocked, "model_class": type(generator.model).__module__ + "." + type(generator.model).__name__,
                      "text": out[0]["generated_text"]}))
    """
)


def test_checkpoint_generates_through_the_pipeline_as_remote_code(tmp_path, tiny_tokenizer_dir):
    from transformers import AutoTokenizer, pipeline

    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    torch.manual_seed(0)
    model = MHEForCausalLM(MHEConfig(**{**CONFIG, "vocab_size": len(tokenizer)}, is_decoder=True)).eval()
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["auto_map"]["AutoModelForCausalLM"] == "modeling_mhe.MHEForCausalLM" == AUTO_MAP["AutoModelForCausalLM"]
    assert saved["is_decoder"] is True

    prompt = "a small dog seen near the"
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    result = subprocess.run(
        [sys.executable, "-c", REMOTE_GENERATE, str(tmp_path), prompt],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["blocked"]
    assert report["model_class"].startswith("transformers_modules.") and report["model_class"].endswith(".MHEForCausalLM")
    # The same text as the locally installed package generates.
    local = pipeline("text-generation", model=str(tmp_path), device="cpu")
    expected = local(prompt, max_new_tokens=6, do_sample=False, return_full_text=False)[0]["generated_text"]
    assert report["text"] == expected and report["text"].strip()


@pytest.mark.parametrize("attention_type", ["mhe_mul", "mqa", "gqa"])
def test_decoding_reads_the_shared_head_without_copying_it(attention_type, monkeypatch):
    """At one token per step, the query heads are laid along the query axis of their key/value head: the kernel sees
    the cache with its own number of heads, never repeated once per query head."""
    import mhe_transformers.models.mhe.modeling_mhe as modeling

    seen = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def recording_sdpa(query, key, value, *args, **kwargs):
        seen.append(("sdpa", query.shape[1], query.shape[2], key.shape[1], kwargs.get("enable_gqa", False)))
        return sdpa(query, key, value, *args, **kwargs)

    original_repeat_kv = modeling.repeat_kv

    def recording_repeat_kv(hidden_states, n_rep):
        seen.append(("repeat_kv", n_rep))
        return original_repeat_kv(hidden_states, n_rep)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", recording_sdpa)
    monkeypatch.setattr(modeling, "repeat_kv", recording_repeat_kv)
    kv_heads = CACHED_KV_HEADS[attention_type]
    for implementation in IMPLEMENTATIONS:
        model = make_model(attention_type, implementation)
        with torch.no_grad():
            out = model(INPUT_IDS[1:, :-1], use_cache=True)
            seen.clear()
            model(INPUT_IDS[1:, -1:], cache=out.cache)
        # every layer: kv_heads "heads" of HEADS / kv_heads query rows each, no copy of the cache
        if implementation == "sdpa":
            assert seen == [("sdpa", kv_heads, HEADS // kv_heads, kv_heads, False)] * CONFIG["num_hidden_layers"]
        else:
            assert seen == []


def test_positions_continue_from_the_cache_without_position_ids():
    model = make_model("mhe_mul")
    ids = INPUT_IDS[1:]
    with torch.no_grad():
        full = model(ids).logits
        out = model(ids[:, :4])
        stepped = [out.logits]
        for t in range(4, ids.shape[1]):
            out = model(ids[:, t : t + 1], cache=out.cache)
            stepped.append(out.logits)
    torch.testing.assert_close(torch.cat(stepped, dim=1), full, atol=1e-5, rtol=1e-5)


def test_the_decoder_names_the_transformers_it_needs(monkeypatch):
    import mhe_transformers.models.mhe.modeling_mhe as modeling

    monkeypatch.setattr(modeling, "DECODER_SUPPORTED", False)
    with pytest.raises(ImportError, match=r"transformers>=5\.24\.0"):
        MHEForCausalLM(MHEConfig(**CONFIG))
    MHEModel(MHEConfig(**CONFIG))  # the encoders do not care
