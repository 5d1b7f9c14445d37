"""MHEForCausalLM's cache arguments and cache classes: chunked prefill through the cache under each name the model
accepts (`cache`, and `past_key_values` with upstream's deprecation warning) equals one full pass; a cache under a
name the model does not read is refused; `StaticCache` holds the shared key/value head only, generates what the
dynamic cache generates (greedy, sampling, beam search), and runs under torch.compile."""

import warnings

import pytest
import torch
from test_causal_lm import ATTENTION_MASK, CACHED_KV_HEADS, CONFIG, HEAD_DIM, INPUT_IDS, PAD, make_model
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM, StaticCache

from mhe_transformers import ATTENTION_TYPES, MHEConfig, MHEModel
from mhe_transformers.experiments.decode_benchmark import compile_unavailable

IDS = INPUT_IDS[1:].repeat(2, 1)  # no padding: a full pass and a chunked one see the same tokens
IDS[1] = IDS[1].flip(0)
CHUNK_ENDS = {2: (3, 7), 3: (2, 5, 7)}  # the end of each chunk of the 7 tokens


def chunked(model, cache_name: str, ends) -> torch.Tensor:
    """Logits of IDS fed in chunks ending at `ends`, each chunk reading the cache the previous ones filled, passed
    as `cache_name=`."""
    cache, logits, start = DynamicCache(config=model.config), [], 0
    for end in ends:
        mask = torch.ones(IDS.shape[0], end, dtype=torch.long)  # covers the cached tokens too
        out = model(IDS[:, start:end], attention_mask=mask, **{cache_name: cache}, use_cache=True)
        cache = out.cache
        logits.append(out.logits if hasattr(out, "logits") else out.last_hidden_state)
        start = end
    return torch.cat(logits, dim=1)


@pytest.mark.parametrize("cache_name", ["cache", "past_key_values"])
@pytest.mark.parametrize("chunks", sorted(CHUNK_ENDS))
@pytest.mark.parametrize("attention_type", ATTENTION_TYPES)
def test_chunked_prefill_equals_one_full_pass(attention_type, chunks, cache_name):
    model = make_model(attention_type, "sdpa")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # the deprecated name's warning: tested below
        full = model(IDS).logits
        logits = chunked(model, cache_name, CHUNK_ENDS[chunks])
    torch.testing.assert_close(logits, full, atol=1e-5, rtol=1e-5)
    # Not trivially equal: without the cache, a later chunk's logits differ.
    with torch.no_grad():
        alone = model(IDS[:, CHUNK_ENDS[chunks][0] :]).logits
    assert not torch.allclose(alone, full[:, CHUNK_ENDS[chunks][0] :], atol=1e-3)


def test_the_base_decoder_reads_the_deprecated_name_too():
    torch.manual_seed(0)
    model = MHEModel(MHEConfig(**CONFIG, is_decoder=True)).eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        full = model(IDS).last_hidden_state
        hidden = chunked(model, "past_key_values", CHUNK_ENDS[2])
    torch.testing.assert_close(hidden, full, atol=1e-5, rtol=1e-5)


def deprecation_warnings(model, **kwargs) -> list[str]:
    with warnings.catch_warnings(record=True) as caught, torch.no_grad():
        warnings.simplefilter("always")
        model(IDS[:, :3], past_key_values=DynamicCache(config=model.config), use_cache=True, **kwargs)
    return [str(w.message) for w in caught if issubclass(w.category, FutureWarning)]


def test_the_deprecated_name_warns_as_upstream_models_do():
    torch.manual_seed(0)
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=4, num_key_value_heads=2)).eval()  # fmt: skip
    (upstream,) = deprecation_warnings(llama)
    assert "past_key_values" in upstream and "`cache`" in upstream
    ours = deprecation_warnings(make_model("mhe_mul"))
    assert ours == [upstream.replace("LlamaForCausalLM", "MHEForCausalLM")]
    # With both names, the new one wins and the warning says so (as upstream).
    (both,) = deprecation_warnings(make_model("mhe_mul"), cache=DynamicCache())
    assert both.startswith("Both `past_key_values` and `cache` are set for `MHEForCausalLM.forward`")


@pytest.mark.parametrize("name", ["past_key_value", "layer_past", "cache_params", "some_cache"])
def test_a_cache_under_a_name_the_model_does_not_read_is_refused(name):
    model = make_model("mhe_mul")
    with torch.no_grad():
        cache = model(IDS[:, :3], use_cache=True).cache
        with pytest.raises(TypeError, match=f"`{name}=`.*pass it as `cache=`"):
            model(IDS[:, 3:], **{name: cache})


def test_a_legacy_tuple_cache_is_refused():
    model = make_model("mhe_mul")
    with torch.no_grad():
        cache = model(IDS[:, :3], use_cache=True).cache
        legacy = tuple((layer.keys, layer.values) for layer in cache.layers)
        with pytest.raises(TypeError, match="must be a transformers Cache.*got tuple"):
            model(IDS[:, 3:], cache=legacy)


# ---------------------------------------------------------------------------------------------------------------
# StaticCache
# ---------------------------------------------------------------------------------------------------------------

DECODING = {
    "greedy": dict(do_sample=False),
    "sampling": dict(do_sample=True, top_k=0),
    "beam": dict(do_sample=False, num_beams=3),
}


def generate(model, cache_implementation, **kwargs):
    torch.manual_seed(123)  # the same random draws for both runs of a sampled comparison
    return model.generate(input_ids=INPUT_IDS, attention_mask=ATTENTION_MASK, max_new_tokens=10, min_new_tokens=10,
                          pad_token_id=PAD, cache_implementation=cache_implementation, return_dict_in_generate=True,
                          **kwargs)  # fmt: skip


@pytest.mark.parametrize("decoding", sorted(DECODING))
@pytest.mark.parametrize(
    "attention_type, attn_implementation",
    [(attention_type, "sdpa") for attention_type in ATTENTION_TYPES] + [("mhe_mul", "eager"), ("gqa", "eager")],
)
def test_static_cache_generates_what_the_dynamic_cache_does(attention_type, attn_implementation, decoding):
    model = make_model(attention_type, attn_implementation)
    dynamic = generate(model, "dynamic", **DECODING[decoding])
    static = generate(model, "static", **DECODING[decoding])
    assert isinstance(static.cache, StaticCache) and isinstance(dynamic.cache, DynamicCache)
    assert torch.equal(static.sequences, dynamic.sequences)
    # The static buffers hold the shared key/value head only, as the dynamic cache does.
    rows = INPUT_IDS.shape[0] * DECODING[decoding].get("num_beams", 1)
    keys = static.cache.layers[0].keys
    assert tuple(keys.shape) == (rows, CACHED_KV_HEADS[attention_type], keys.shape[2], HEAD_DIM)
    assert keys.shape[2] >= INPUT_IDS.shape[1] + 10 - 1  # the last token generated is never fed back


@pytest.mark.parametrize("attention_type", ATTENTION_TYPES)
def test_static_cache_allocated_ahead_has_the_shared_head_shape(attention_type):
    """What generate() allocates before the first step (chunked prefill, torch.export) is read from the config's
    num_key_value_heads and head_dim: it must be the shape the attention writes."""
    model = make_model(attention_type)
    assert model._get_static_cache_init_shape() == (CACHED_KV_HEADS[attention_type], HEAD_DIM)
    cache = StaticCache(config=model.config, max_cache_len=12)
    cache.early_initialization(2, *model._get_static_cache_init_shape(), torch.float32, torch.device("cpu"))
    with torch.no_grad():
        out = model(IDS[:2, :4], cache=cache)
        torch.testing.assert_close(out.logits, model(IDS[:2, :4]).logits, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("attention_type", ["mhe_mul", "mhe_add", "mqa", "gqa"])
def test_compiled_decoding_reads_the_shared_cache_in_place(attention_type):
    """Under torch.compile, Transformers' sdpa copies the key/value cache once per query head (repeat_kv) when one
    token is decoded; the model packs the query heads itself instead, so no tensor of the traced step has the shape of
    a per-query-head cache (which made compiled MHE-MUL decode 4x slower than eager)."""
    reason = compile_unavailable()
    if reason:
        pytest.skip(reason)
    import torch._dynamo

    model = make_model(attention_type, "sdpa")
    batch, length = IDS.shape[0], IDS.shape[1] + 2
    shapes = []

    def record_shapes(graph_module, example_inputs):  # a dynamo backend that keeps the traced graph's tensor shapes
        for node in graph_module.graph.nodes:
            value = node.meta.get("example_value")
            if isinstance(value, torch.Tensor):
                shapes.append(tuple(value.shape))
        return graph_module.forward

    with torch.no_grad():
        static = StaticCache(config=model.config, max_cache_len=length)
        out = model(IDS, cache=static)
        torch._dynamo.reset()
        compiled = torch.compile(model.forward, backend=record_shapes, fullgraph=True, dynamic=False)
        position = torch.full((batch, 1), IDS.shape[1])
        step = compiled(input_ids=out.logits[:, -1:].argmax(-1), position_ids=position, cache=static)
    assert torch.isfinite(step.logits).all()
    cache_shape = (batch, CACHED_KV_HEADS[attention_type], length, HEAD_DIM)
    per_query_head = (batch, CONFIG["num_attention_heads"], length, HEAD_DIM)
    assert cache_shape in shapes  # the trace read the cache itself
    assert per_query_head not in shapes


def test_compiled_forward_with_a_static_cache_matches_eager_decoding():
    reason = compile_unavailable()
    if reason:
        pytest.skip(reason)
    import torch._dynamo

    model = make_model("mhe_mul", "sdpa")
    steps, batch = 4, IDS.shape[0]
    with torch.no_grad():
        out = model(IDS, use_cache=True)  # the reference: eager decoding through the dynamic cache
        cache, next_ids, expected = out.cache, out.logits[:, -1:].argmax(-1), []
        for _ in range(steps):
            out = model(next_ids, cache=cache)
            cache, next_ids = out.cache, out.logits[:, -1:].argmax(-1)
            expected.append(out.logits)

        static = StaticCache(config=model.config, max_cache_len=IDS.shape[1] + steps)
        out = model(IDS, cache=static)  # prefill, eager
        next_ids, got = out.logits[:, -1:].argmax(-1), []
        torch._dynamo.reset()
        compiled = torch.compile(model.forward, fullgraph=True, dynamic=False)
        for step in range(steps):
            position = torch.full((batch, 1), IDS.shape[1] + step)
            with torch._dynamo.config.patch(error_on_recompile=step > 0):  # one graph serves every step
                out = compiled(input_ids=next_ids, position_ids=position, cache=static)
            next_ids = out.logits[:, -1:].argmax(-1)
            got.append(out.logits)
    torch.testing.assert_close(torch.cat(got, dim=1), torch.cat(expected, dim=1), atol=1e-4, rtol=1e-4)
    assert tuple(static.layers[0].keys.shape) == (batch, 1, IDS.shape[1] + steps, HEAD_DIM)
