"""Decoding speed and key/value-cache size of every attention type against `transformers.GPT2LMHeadModel`.

    python scripts/benchmark_decode.py --output_dir outputs/benchmark-decode

For each model size, context length and attention type, `MHEForCausalLM` and a `GPT2LMHeadModel` of the same
dimensions (hidden size, layers, heads, feed-forward size, vocabulary; GPT-2's multi-head attention) decode greedily
from a prompt of `prompt_len` random tokens (batch `batch_size`) up to `context` tokens, one token per step through
the key/value cache, with each cache of `--caches`:

* `dynamic`: a `DynamicCache`, which concatenates every step's key and value onto new tensors (generate()'s default);
* `static`: a `StaticCache` of `context` positions, allocated once and written in place (the attention reads the
  whole buffer, the positions not written yet masked);
* `compiled`: the static cache with the forward pass `torch.compile`d (compiled in an untimed step before timing;
  left out, with the reason in the report's settings, where torch.compile does not run).

Reported, as ratios ours / GPT-2 (GPT-2 decoding with the same kind of cache) where it makes sense:

* decode tokens/s: batch x decoded tokens / decode seconds (the prompt's prefill is not timed). With
  `--decode_steps k` only the last k steps before `context` are decoded (the cache is prefilled with
  `context - k` tokens, once per model and cache, untimed): the decode rate near `context`, in a fraction of the time;
* next to each speed ratio, its bytes-moved limit: GPT-2's bytes read over ours, summed over the decoded steps, each
  step reading every weight once and the cache (`decode_step_bytes`). Decoding at small batch is bound by memory
  traffic, so this is the speed-up a memory-bound decoder can approach; a static cache reads its whole buffer at
  every step, so its limit differs from the dynamic cache's when few steps are decoded from a short prefill;
* key/value-cache bytes at `context`: measured on the cache object after decoding (keys and values of every layer);
  MHE-MUL/MHE-ADD, MQA and single-head cache one (batch, 1, seq, head_dim) key and value per layer, GPT-2 n of them;
* the FLOP limit: GPT-2's matmul FLOPs of the decoded steps / ours.

`--compare_kernels` adds, for the types whose key/value heads serve several query heads (MHE, MQA, GQA), two ways
of running the same attention that Transformers would otherwise pick: `repeat_kv` (copy the cache once per query
head at every step, then multi-head attention, as `eager` and `sdpa` do without `enable_gqa`) and `enable_gqa`
(torch's grouped sdpa). The default path lays the query heads of one key/value head along the query axis of one
attention, (batch, n, 1, d) -> (batch, g, n / g, d), and reads the cache once (`sdpa` and `eager`, compiled or not).

Timing: every model in the same process; for each kind of cache, each repeat runs GPT-2, then each of ours with a
GPT-2 run after it (R a R b R ..., the order rotated at each repeat); a model's speed ratio in a repeat is the mean
decode time of the two GPT-2 runs around it over its own, the reported ratio the median over repeats. Decoding runs
in eval mode under `torch.inference_mode()`, every dropout off.
"""

from __future__ import annotations

import dataclasses
import logging
import statistics
import time
from collections.abc import Callable, Sequence

import torch
from transformers import (
    AttentionInterface,
    AttentionMaskInterface,
    DynamicCache,
    GPT2Config,
    GPT2LMHeadModel,
    StaticCache,
)
from transformers.masking_utils import sdpa_mask

from ..models.mhe.configuration_mhe import ATTENTION_TYPES, MHEConfig
from ..models.mhe.modeling_mhe import MHEForCausalLM, repeat_kv
from ..models.mhe.parameter_counts import encoder_parameter_formula
from ..utils import cli
from .benchmark import (
    DTYPES,
    MICRO_SIZE,
    SIZES,
    _mib,
    _quartiles,
    _synchronize,
    alternate,
    check_choices,
    check_device,
    run_and_report,
)
from .benchmark import build_config as benchmark_config
from .environment import environment, load_average

logger = logging.getLogger(__name__)

GROUPED_TYPES = ("mhe_mul", "mhe_add", "mqa", "gqa")  # several query heads per key/value head


# ---------------------------------------------------------------------------------------------------------------
# The attention kernels compared by --compare_kernels, registered with Transformers' attention interface
# ---------------------------------------------------------------------------------------------------------------


def _sdpa(module, query, key, value, attention_mask, scaling=None, **sdpa_kwargs):
    out = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask, scale=scaling, is_causal=False, **sdpa_kwargs
    )
    return out.transpose(1, 2).contiguous(), None


def repeat_kv_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """Decode-only sdpa that first copies every key/value head once per query head it serves."""
    groups = module.num_key_value_groups
    return _sdpa(module, query, repeat_kv(key, groups), repeat_kv(value, groups), attention_mask, scaling)


def enable_gqa_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """Decode-only sdpa with torch's grouped-query support (`enable_gqa=True`)."""
    return _sdpa(module, query, key, value, attention_mask, scaling, enable_gqa=module.num_key_value_groups > 1)


KERNELS = {"repeat_kv": repeat_kv_attention, "enable_gqa": enable_gqa_attention}
for _name, _function in KERNELS.items():
    AttentionInterface.register(_name, _function)
    AttentionMaskInterface.register(_name, sdpa_mask)


# ---------------------------------------------------------------------------------------------------------------
# Closed-form FLOPs and bytes of one decode step
# ---------------------------------------------------------------------------------------------------------------


def kv_cache_bytes(num_layers: int, kv_heads: int, head_dim: int, batch: int, seq: int, element_size: int) -> int:
    """Keys and values of every layer: 2 x layers x (batch, kv_heads, seq, head_dim)."""
    return 2 * num_layers * batch * kv_heads * seq * head_dim * element_size


def decode_step_flops(config: MHEConfig, context: int) -> int:
    """Matmul FLOPs (2 per multiply-add) of decoding ONE token of one sequence with `context` tokens in the cache
    (itself included): projections, attention over the cache, feed-forward, and the LM head. GPT-2 is
    `attention_type="mha"` without the LM head's dense layer (`lm_head_dense=False`)."""
    return _decode_step_flops(config, context, lm_head_dense=True)


def _decode_step_flops(config: MHEConfig, context: int, lm_head_dense: bool) -> int:
    h, f, d, n = config.hidden_size, config.intermediate_size, config.head_dim, config.num_attention_heads
    g = config.num_key_value_heads
    q_out, kv_out, o_in, query_heads = {
        "mha": (n * d, n * d, n * d, n),
        "gqa": (n * d, g * d, n * d, n),
        "mqa": (n * d, d, n * d, n),
        "sha": (d, d, d, 1),
        "mhe_add": (d, d, n * d, n),
        "mhe_mul": (d, d, n * d, n),
    }[config.attention_type]
    layer = 2 * h * (q_out + 2 * kv_out) + 2 * o_in * h + 2 * 2 * context * d * query_heads + 2 * 2 * h * f
    head = 2 * h * config.vocab_size + (2 * h * h if lm_head_dense else 0)
    return config.num_hidden_layers * layer + head


def gpt2_decode_step_flops(config: MHEConfig, context: int) -> int:
    """As decode_step_flops for GPT2LMHeadModel of the dimensions of `config` (an "mha" config): its LM head is one
    linear layer."""
    return _decode_step_flops(config, context, lm_head_dense=False)


def decoder_parameters(config: MHEConfig, gpt2: bool = False) -> int:
    """Parameters of `MHEForCausalLM(config)`, or with `gpt2` of `GPT2LMHeadModel` of the dimensions of `config` (an
    "mha" config); tied word embeddings counted once."""
    h, f, vocab = config.hidden_size, config.intermediate_size, config.vocab_size
    if gpt2:  # wte, wpe; per layer ln_1, c_attn (h -> 3h), c_proj, ln_2, c_fc, mlp.c_proj; ln_f; the LM head is wte
        layer = 2 * h + (h * 3 * h + 3 * h) + (h * h + h) + 2 * h + (h * f + f) + (f * h + h)
        return (vocab + config.max_position_embeddings) * h + config.num_hidden_layers * layer + 2 * h
    # the LM head: dense, LayerNorm, and the decoder's bias (its weight is the word embeddings' unless untied)
    lm_head = (h * h + h) + 2 * h + vocab + (0 if config.tie_word_embeddings else vocab * h)
    return encoder_parameter_formula(config) + lm_head


def decode_step_bytes(config: MHEConfig, batch: int, cache_tokens: int, element_size: int, gpt2: bool = False) -> int:
    """The fewest bytes one decode step reads, the limit of a memory-bound decoder (time per step >= bytes / memory
    bandwidth): every weight once (the word embeddings too: the LM head multiplies by all of them) and the keys and
    values of `cache_tokens` positions of each of `batch` sequences. `gpt2`: GPT2LMHeadModel of the dimensions of
    `config` (an "mha" config), whose cache holds every head.

    BERT-base dimensions (vocabulary 30522), batch 8, 2048 cached tokens, float32: MHA reads 1.21 GB of cache and
    0.44 GB of weights, MHE-MUL 0.10 GB and 0.36 GB: MHE-MUL decodes at most about 3.5x faster."""
    kv_heads = config.num_attention_heads if gpt2 else config.num_key_value_heads
    weights = decoder_parameters(config, gpt2) * element_size
    cache = kv_cache_bytes(config.num_hidden_layers, kv_heads, config.head_dim, batch, cache_tokens, element_size)
    return weights + cache


def bytes_limit(
    config: MHEConfig, reference: MHEConfig, batch: int, context: int, decode_steps: int, element_size: int, cache: str
) -> float:
    """GPT-2's (of the dimensions of `reference`) bytes read over ours, summed over the decode steps that end at
    `context`: the speed-up ratio a memory-bound decoder can approach. The step that decodes token `position` reads
    `position` cached positions from a dynamic cache, and the whole buffer, `context` positions, from a static one."""
    positions = range(context - decode_steps + 1, context + 1)

    def total(model_config: MHEConfig, gpt2: bool) -> int:
        return sum(
            decode_step_bytes(model_config, batch, position if cache == "dynamic" else context, element_size, gpt2)
            for position in positions
        )

    return total(reference, True) / total(config, False)


# ---------------------------------------------------------------------------------------------------------------
# Models and timing
# ---------------------------------------------------------------------------------------------------------------


def build_config(size: dict, attention_type: str, vocab_size: int, context: int, impl: str) -> MHEConfig:
    """benchmark.build_config's config (dropout off), as a decoder with positions for `context` tokens."""
    return benchmark_config(size, attention_type, vocab_size, impl, max_position_embeddings=context, is_decoder=True)


def build_gpt2(config: MHEConfig, impl: str) -> GPT2LMHeadModel:
    """`transformers.GPT2LMHeadModel` with the dimensions of `config`, dropout off."""
    gpt2_config = GPT2Config(
        vocab_size=config.vocab_size,
        n_positions=config.max_position_embeddings,
        n_embd=config.hidden_size,
        n_layer=config.num_hidden_layers,
        n_head=config.num_attention_heads,
        n_inner=config.intermediate_size,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        attn_implementation=impl,
    )
    return GPT2LMHeadModel(gpt2_config)


def cache_bytes(cache) -> int:
    """Bytes of the keys and values a Transformers cache holds."""
    return sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))


CACHES = ("dynamic", "static", "compiled")  # the kinds of cache decoded with (see the module docstring)


def compile_unavailable() -> str | None:
    """Why torch.compile cannot run here (no C++ compiler for its CPU backend, say), or None."""
    if not hasattr(torch, "compile"):
        return "this torch has no torch.compile"
    try:
        torch.compile(lambda x: x * 2, fullgraph=True)(torch.ones(2))
    except Exception as error:  # whatever the backend raises is the reason
        return f"torch.compile does not run here: {type(error).__name__}: {error}"[:300]
    return None


def make_decode(
    model, prompt: torch.Tensor, context: int, decode_steps: int, device: torch.device, cache: str = "dynamic"
) -> Callable[[], tuple[float, int]]:
    """A callable that decodes `decode_steps` tokens greedily, one at a time through a cache of kind `cache` (CACHES),
    after a prefill of `context - decode_steps` tokens, and returns (decode seconds, cache bytes at the end). The
    prefill (and, for `compiled`, the compilation: one step) runs once, on the first call, untimed."""
    prefill = context - decode_steps
    forward = torch.compile(model.forward, dynamic=False) if cache == "compiled" else model.forward
    state = {}

    def step(cache_object, next_ids, position: int):
        position_ids = torch.full((prompt.shape[0], 1), position, device=device)
        out = forward(input_ids=next_ids, position_ids=position_ids, cache=cache_object, use_cache=True)
        return out.cache, out.logits[:, -1:].argmax(-1)

    def prefilled():
        """A cache holding the prefill's keys and values, and the first token to decode."""
        if cache == "dynamic":
            if not state:
                out = model(input_ids=prompt[:, :prefill], use_cache=True)
                state["kv"] = [(layer.keys, layer.values) for layer in out.cache.layers]
                state["next_ids"] = out.logits[:, -1:].argmax(-1)
            # A new cache holding the prefill's tensors, not copies: a DynamicCache concatenates into new tensors and
            # never writes into the ones it holds.
            fresh = DynamicCache()
            for layer_idx, (keys, values) in enumerate(state["kv"]):
                fresh.update(keys, values, layer_idx)
            return fresh, state["next_ids"]
        if not state:  # one buffer for every call, written in place; its length is set back to the prefill's
            state["cache"] = StaticCache(config=model.config, max_cache_len=context)
            out = model(input_ids=prompt[:, :prefill], cache=state["cache"], use_cache=True)
            state["next_ids"] = out.logits[:, -1:].argmax(-1)
            if cache == "compiled":
                step(state["cache"], state["next_ids"], prefill)  # compiles
        state["cache"].crop(prefill - int(state["cache"].get_seq_length()))
        return state["cache"], state["next_ids"]

    def run() -> tuple[float, int]:
        with torch.inference_mode():
            cache_object, next_ids = prefilled()
            _synchronize(device)
            start = time.perf_counter()
            for position in range(prefill, context):
                cache_object, next_ids = step(cache_object, next_ids, position)
            _synchronize(device)
            return time.perf_counter() - start, cache_bytes(cache_object)

    return run


def time_alternately(
    runs: dict[str, Callable[[], tuple[float, int]]], reference: str, repeats: int, warmup: int
) -> tuple[dict[str, list[float]], dict[str, list[float]], dict[str, int]]:
    """As benchmark.time_alternately (`benchmark.alternate`), with each run timing its own decode loop (the prefill
    left out) and returning its cache bytes too."""
    cache = {}
    for _ in range(warmup):
        for name, run in runs.items():
            cache[name] = run()[1]
    seconds = {name: [] for name in runs}

    def timed(name):
        elapsed, cache[name] = runs[name]()
        seconds[name].append(elapsed)
        return elapsed

    speedups = alternate(timed, reference, [name for name in runs if name != reference], repeats)
    return seconds, speedups, cache


# ---------------------------------------------------------------------------------------------------------------
# The benchmark
# ---------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class DecodeBenchmarkArguments:
    output_dir: str = dataclasses.field(
        default="outputs/benchmark-decode", metadata={"help": "Folder for benchmark-decode.json/.md/.png."}
    )
    sizes: list[str] = dataclasses.field(
        default_factory=lambda: ["base", "small"], metadata={"help": f"Model sizes out of {sorted(SIZES)}."}
    )
    attention_types: list[str] = dataclasses.field(
        default_factory=lambda: list(ATTENTION_TYPES), metadata={"help": "Attention types to compare with GPT-2."}
    )
    contexts: list[int] = dataclasses.field(
        default_factory=lambda: [512, 2048], metadata={"help": "Context lengths reached by decoding."}
    )
    prompt_len: int = dataclasses.field(default=128, metadata={"help": "Prompt tokens (prefilled, untimed)."})
    decode_steps: int | None = dataclasses.field(
        default=None,
        metadata={"help": "Decode only the last k steps before each context (default: all, from prompt_len)."},
    )
    batch_size: int = dataclasses.field(default=8, metadata={"help": "Sequences decoded together."})
    repeats: int = dataclasses.field(default=3, metadata={"help": "Timed runs per model; figures are medians."})
    warmup: int = dataclasses.field(default=1, metadata={"help": "Untimed runs of every model first."})
    attn_implementation: str = dataclasses.field(default="sdpa", metadata={"help": "sdpa or eager (both models)."})
    compare_kernels: bool = dataclasses.field(
        default=False, metadata={"help": "Also time MHE/MQA/GQA with the repeat_kv and enable_gqa kernels."}
    )
    caches: list[str] = dataclasses.field(
        default_factory=lambda: list(CACHES),
        metadata={"help": f"Caches to decode with, out of {list(CACHES)} (compiled: a static cache and torch.compile)."},
    )
    dtype: str | None = dataclasses.field(
        default=None, metadata={"help": f"Out of {sorted(DTYPES)}; default float32 on CPU, bfloat16 on CUDA."}
    )
    device: str = dataclasses.field(default="cpu", metadata={"help": "cpu or cuda[:N]."})
    threads: int | None = dataclasses.field(default=None, metadata={"help": "torch.set_num_threads on CPU."})
    vocab_size: int = dataclasses.field(default=50257, metadata={"help": "GPT-2's vocabulary by default."})
    micro: bool = dataclasses.field(
        default=False, metadata={"help": "Tiny dimensions instead of --sizes: a seconds-long smoke run."}
    )
    seed: int = dataclasses.field(default=0)
    overwrite_output_dir: bool = dataclasses.field(
        default=False, metadata={"help": "Replace an earlier decode benchmark report in output_dir."}
    )

    def __post_init__(self):
        check_choices(
            ("sizes", self.sizes, SIZES),
            ("attention_types", self.attention_types, ATTENTION_TYPES),
            ("dtype", [self.dtype] if self.dtype else [], DTYPES),
            ("attn_implementation", [self.attn_implementation], ("sdpa", "eager")),
            ("caches", self.caches, CACHES),
        )
        if not self.caches:
            raise ValueError("--caches must not be empty.")
        for name in ("batch_size", "repeats", "vocab_size", "prompt_len"):
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name} must be positive, got {getattr(self, name)}.")
        if self.warmup < 0:
            raise ValueError(f"--warmup must be >= 0, got {self.warmup}.")
        if not self.contexts or min(self.contexts) <= self.prompt_len:
            raise ValueError(f"--contexts must all exceed --prompt_len {self.prompt_len}, got {self.contexts}.")
        if self.decode_steps is not None and not 0 < self.decode_steps <= min(self.contexts) - self.prompt_len:
            raise ValueError(
                f"--decode_steps must lie in [1, {min(self.contexts) - self.prompt_len}] (the shortest context minus "
                f"the prompt), got {self.decode_steps}."
            )
        if not self.attention_types:
            raise ValueError("--attention_types must not be empty.")
        check_device(self.device)

    def dtype_name(self) -> str:
        return self.dtype or ("bfloat16" if torch.device(self.device).type == "cuda" else "float32")


def run_benchmark(args: DecodeBenchmarkArguments) -> dict:
    device = torch.device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    sizes = {"micro": MICRO_SIZE} if args.micro else {name: SIZES[name] for name in args.sizes}
    results = {"environment": environment(device), "settings": dataclasses.asdict(args), "decode": []}
    results["settings"]["dtype"] = args.dtype_name()
    caches = list(args.caches)
    if "compiled" in caches:
        reason = compile_unavailable()
        if reason:
            logger.warning("Leaving out the compiled cache: %s", reason)
            caches.remove("compiled")
            results["settings"]["compiled_left_out"] = reason
    results["settings"]["caches_measured"] = caches
    for size_name, size in sizes.items():
        for context in args.contexts:
            results["decode"] += decode_rows(size_name, size, context, args, caches, device)
    results["environment"]["load_average_end"] = load_average()
    return results


def time_caches(models: dict, prompt, context: int, decode_steps: int, args, caches: list[str], device) -> dict:
    """{cache: (seconds, speed-ups, cache bytes, load average)} of `time_alternately` for each kind of cache, GPT-2
    decoding with the same kind as the reference. One kind at a time: its caches are freed before the next."""
    timings = {}
    for cache in caches:
        runs = {name: make_decode(model, prompt, context, decode_steps, device, cache) for name, model in models.items()}
        logger.info("Decoding to context %d (%d steps) with the %s cache", context, decode_steps, cache)
        load_start = load_average()
        if cache == "compiled":
            import torch._dynamo

            torch._dynamo.reset()  # the graphs of earlier sizes and contexts
            # one compiled forward per model: more than dynamo's default 8 per function; never fall back silently
            with torch._dynamo.config.patch(recompile_limit=4 * len(models), fail_on_recompile_limit_hit=True):
                timed = time_alternately(runs, "gpt2", args.repeats, args.warmup)
        else:
            timed = time_alternately(runs, "gpt2", args.repeats, args.warmup)
        timings[cache] = (*timed, {"start": load_start, "end": load_average()})
        del runs
    return timings


def decode_rows(
    size_name: str, size: dict, context: int, args: DecodeBenchmarkArguments, caches: list[str], device
) -> list[dict]:
    dtype = DTYPES[args.dtype_name()]
    torch.manual_seed(args.seed)
    impl = args.attn_implementation
    reference = build_config(size, "mha", args.vocab_size, context, impl)
    models = {"gpt2": build_gpt2(reference, impl)}
    variants = {}  # model name -> (attention type, kernel)
    for attention_type in args.attention_types:
        kernels = [impl] + (list(KERNELS) if args.compare_kernels and attention_type in GROUPED_TYPES else [])
        for kernel in kernels:
            name = attention_type if kernel == impl else f"{attention_type}+{kernel}"
            models[name] = MHEForCausalLM(build_config(size, attention_type, args.vocab_size, context, kernel))
            variants[name] = (attention_type, kernel)
    for model in models.values():
        model.to(device=device, dtype=dtype).eval()
    decode_steps = args.decode_steps or context - args.prompt_len
    # Random ids, no padding; the same for every model. Greedy decoding feeds each model its own predictions.
    prompt = torch.randint(1, args.vocab_size, (args.batch_size, context), device=device)
    logger.info("Decoding %s to context %d, %s/%s", size_name, context, args.dtype_name(), impl)
    timings = time_caches(models, prompt, context, decode_steps, args, caches, device)

    element_size = torch.tensor([], dtype=dtype).element_size()
    gpt2_params = sum(p.numel() * p.element_size() for p in models["gpt2"].parameters())
    positions = range(context - decode_steps + 1, context + 1)
    gpt2_flops = sum(gpt2_decode_step_flops(reference, position) for position in positions)
    _, _, cache_sizes, _ = timings[caches[0]]
    rows = []
    for name, (attention_type, kernel) in variants.items():
        config = models[name].config
        flops = sum(decode_step_flops(config, position) for position in positions)
        row = {
            "size": size_name,
            "context": context,
            "prompt_len": args.prompt_len,
            "decode_steps": decode_steps,
            "batch_size": args.batch_size,
            "dtype": args.dtype_name(),
            "attention_type": attention_type,
            "kernel": kernel,
            "cache_bytes": cache_sizes[name],
            "gpt2_cache_bytes": cache_sizes["gpt2"],
            "cache_ratio": cache_sizes[name] / cache_sizes["gpt2"],
            "cache_bytes_formula": kv_cache_bytes(
                config.num_hidden_layers, config.num_key_value_heads, config.head_dim, args.batch_size, context, element_size
            ),
            "flop_ratio_gpt2_over_ours": gpt2_flops / flops,
            "parameter_bytes": sum(p.numel() * p.element_size() for p in models[name].parameters()),
            "gpt2_parameter_bytes": gpt2_params,
        }
        for cache, (seconds, speedups, _, load) in timings.items():
            row[cache] = speed_figures(name, seconds, speedups, args.batch_size * decode_steps, load)
            row[cache]["bytes_limit"] = bytes_limit(
                config, reference, args.batch_size, context, decode_steps, element_size, cache
            )
        rows.append(row)
    return rows


def speed_figures(name: str, seconds: dict, speedups: dict, tokens: int, load: dict) -> dict:
    """One model's decode speed with one kind of cache, and GPT-2's with the same kind."""
    return {
        "tokens_per_s": tokens / statistics.median(seconds[name]),
        "gpt2_tokens_per_s": tokens / statistics.median(seconds["gpt2"]),
        "speed_ratio": statistics.median(speedups[name]),
        "speed_ratios": speedups[name],
        "seconds": seconds[name],
        "gpt2_seconds": seconds["gpt2"],
        "load_average": load,
    }


def markdown_report(results: dict) -> str:
    env, settings = results["environment"], results["settings"]
    caches = settings["caches_measured"]
    left_out = f" Compiled cache left out: {settings['compiled_left_out']}" if settings.get("compiled_left_out") else ""
    lines = [
        "# MHE decode benchmark",
        "",
        f"`{env['command']}` on {env['cpu']} ({env['cpu_count']} CPUs, {env['torch_threads']} torch threads), "
        f"device {env['device']}, torch {env['torch']}, transformers {env['transformers']}, {env['date']}; "
        f"load average (1/5/15 min) {env['load_average_start']} at start, {env['load_average_end']} at end.",
        "",
        f"Greedy decoding, batch {settings['batch_size']}, prompt {settings['prompt_len']} random tokens, "
        f"{settings['dtype']}, {settings['attn_implementation']} (both models), {settings['repeats']} repeats. "
        "For each cache (dynamic: DynamicCache; static: StaticCache; compiled: StaticCache and torch.compile), "
        "tok/s and speed: median over repeats of GPT-2's decode time with the same cache (the runs just before and "
        "after) / ours [quartiles]; limit: GPT-2's bytes read / ours over the decoded steps (every weight once and "
        "the cache), the speed-up a memory-bound decoder can approach. FLOP limit: GPT-2's matmul FLOPs / ours. "
        f"Cache: keys and values of every layer at the context length.{left_out}",
        "",
        "| size | context | steps | attention | kernel | "
        + "".join(f"{cache} tok/s (GPT-2) | speed | limit | " for cache in caches)
        + "FLOP limit | cache MiB (GPT-2) | cache ratio |",
        "|---|---:|---:|---|---|" + "---:|---:|---:|" * len(caches) + "---:|---:|---:|",
    ]
    for row in results["decode"]:
        speeds = "".join(
            f"{row[cache]['tokens_per_s']:,.0f} ({row[cache]['gpt2_tokens_per_s']:,.0f}) | "
            f"{row[cache]['speed_ratio']:.2f} {_quartiles(row[cache]['speed_ratios'])} | "
            f"{row[cache]['bytes_limit']:.2f} | "
            for cache in caches
        )
        lines.append(
            f"| {row['size']} | {row['context']} | {row['decode_steps']} | {row['attention_type']} | {row['kernel']} | "
            f"{speeds}{row['flop_ratio_gpt2_over_ours']:.2f} | "
            f"{_mib(row['cache_bytes'])} ({_mib(row['gpt2_cache_bytes'])}) | {row['cache_ratio']:.4f} |"
        )
    return "\n".join(lines) + "\n"


def plot(results: dict, path) -> None:
    """One panel per (size, context): the decode speed ratio with each cache, its bytes-moved limit marked, and
    1 / cache ratio, by attention type."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    caches = results["settings"]["caches_measured"]
    panels = {}
    for row in results["decode"]:
        panels.setdefault((row["size"], row["context"]), []).append(row)
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 3.8), squeeze=False)
    width = 0.8 / (len(caches) + 1)
    for ax, ((size, context), rows) in zip(axes.flat, panels.items()):
        positions = range(len(rows))
        for i, cache in enumerate(caches):
            x = [p - 0.4 + width * (i + 0.5) for p in positions]
            ax.bar(x, [row[cache]["speed_ratio"] for row in rows], width, label=f"speed / GPT-2, {cache} cache")
            ax.scatter(x, [row[cache]["bytes_limit"] for row in rows], marker="_", s=200, color="black", zorder=3,
                       label="bytes-moved limit" if i == 0 else None)  # fmt: skip
        x = [p - 0.4 + width * (len(caches) + 0.5) for p in positions]
        ax.bar(x, [1 / row["cache_ratio"] for row in rows], width, label="GPT-2 cache / ours", color="grey")
        ax.axhline(1.0, color="grey", linewidth=0.8)
        ax.set_xticks(list(positions), [f"{row['attention_type']}\n{row['kernel']}" for row in rows], fontsize="small")
        ax.set_yscale("log")
        ax.set_title(f"{size}, context {context}")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize="small", frameon=False)
    fig.tight_layout(rect=(0, 0.14, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> dict:
    (args,) = cli.parse_args((DecodeBenchmarkArguments,), argv, description=__doc__.split("\n\n")[0])
    return run_and_report(args, run_benchmark, "benchmark-decode", markdown_report, plot)


__all__ = [
    "CACHES",
    "DecodeBenchmarkArguments",
    "bytes_limit",
    "compile_unavailable",
    "decode_step_bytes",
    "decode_step_flops",
    "kv_cache_bytes",
    "run_benchmark",
    "main",
]
