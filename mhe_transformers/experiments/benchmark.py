"""Parameters, speed and memory of every attention type against `transformers.BertModel`.

    python scripts/benchmark.py --output_dir outputs/benchmark

For each model size and attention type this measures, next to a BertModel of the same dimensions and the same
`attn_implementation`:

* parameters: total and attention-only, each next to its closed-form formula;
* forward (inference) and forward+backward (training) tokens/s, as the ratio ours / BERT, next to the analytic
  ratio of matmul FLOPs, the speed-up the matmuls alone allow (MHE saves FLOPs in the Q/K/V projections only);
* peak memory of the same two steps, as the ratio ours / BERT.

What "attention-only" parameters include: the query/key/value/output projection weights and their biases, and
(MHE) the three head-embedding tables. Not included: the LayerNorm after attention, which every type and BERT
have alike.

How time is measured: all models (BERT and one model per attention type) are built in the same process; after
`warmup` untimed rounds, each repeat times BERT, then every attention type in turn with a BERT step after each
(B a B b B c ... B, the order of the types rotated at every repeat). A type's speed ratio in one repeat is the mean
time of the two BERT steps around it over its own time; the reported ratio is the median over `repeats`, and
tokens/s are from median step times. Load on the machine that changes over seconds hits both sides of each ratio
alike, so the ratios stay meaningful where absolute numbers are noisy. Forward runs in `model.eval()` under
`torch.inference_mode()`; forward+backward runs in train mode with every dropout probability set to 0 in both
configs (no dropout kernels in either), backpropagating the mean of the last hidden state, the gradients allocated
by backward and freed after the step (as `Trainer`'s `zero_grad` does). Inputs are the same random token ids without
padding for every model; no model has a pooler.

How peak memory is measured: the peak, during one step, of the bytes held by tensors above what was held before the
step, plus the model's parameter bytes. So the training peak is parameters + gradients + activations saved for
backward + transient buffers (no optimizer state: Adam would add twice the parameter bytes, favouring the smaller
model further). On CPU the bytes come from `torch.profiler`'s allocation events (`profile_memory=True`: every
allocation and free of PyTorch's CPU allocator, replayed in time order), on CUDA from
`torch.cuda.max_memory_allocated`. Scratch memory that oneDNN/MKL allocate on their own is not seen on CPU, for
either model.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import statistics
import time
from collections.abc import Callable, Collection, Sequence
from pathlib import Path

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile
from tqdm.auto import tqdm
from transformers import BertConfig, BertModel

from ..models.mhe.configuration_mhe import ATTENTION_TYPES, MHEConfig, default_num_key_value_heads
from ..models.mhe.modeling_mhe import MHEModel
from ..models.mhe.parameter_counts import (
    attention_parameter_formula,
    count_parameters,
    encoder_matmul_flops,
    encoder_parameter_formula,
)
from ..utils import cli
from ..utils.run_folder import check_output_dir, claim_output_dir
from .environment import environment, load_average, write_report

logger = logging.getLogger(__name__)

# BERT-base and BERT-small (Turc et al., 2019: google/bert_uncased_L-4_H-512_A-8) dimensions.
SIZES = {
    "base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072},
    "small": {"hidden_size": 512, "num_hidden_layers": 4, "num_attention_heads": 8, "intermediate_size": 2048},
}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
MODES = ("forward", "train")


# ---------------------------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------------------------


def build_config(
    size: dict, attention_type: str, vocab_size: int, attn_implementation: str, **overrides
) -> MHEConfig:
    """An MHE config of the given dimensions with every dropout off, so that forward+backward compares matmuls,
    not dropout kernels (BERT gets the same); `overrides` are further config fields."""
    n = size["num_attention_heads"]
    return MHEConfig(
        **size,
        attention_type=attention_type,
        num_key_value_heads=default_num_key_value_heads(n) if attention_type == "gqa" else None,
        vocab_size=vocab_size,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        attn_implementation=attn_implementation,
        **overrides,
    )


def build_bert(config: MHEConfig) -> BertModel:
    """`transformers.BertModel` with the dimensions, dropout and attn_implementation of `config`, no pooler."""
    bert_config = BertConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        intermediate_size=config.intermediate_size,
        hidden_act=config.hidden_act,
        hidden_dropout_prob=config.hidden_dropout_prob,
        attention_probs_dropout_prob=config.attention_probs_dropout_prob,
        max_position_embeddings=config.max_position_embeddings,
        type_vocab_size=config.type_vocab_size,
        layer_norm_eps=config.layer_norm_eps,
        attn_implementation=config._attn_implementation,
    )
    return BertModel(bert_config, add_pooling_layer=False)


# ---------------------------------------------------------------------------------------------------------------
# Timing and memory
# ---------------------------------------------------------------------------------------------------------------


def make_step(model: nn.Module, input_ids: torch.Tensor, mode: str) -> Callable[[], None]:
    """One forward (eval, inference mode) or forward+backward (train mode, gradients allocated and freed) step."""
    if mode == "forward":
        model.eval()

        def step():
            with torch.inference_mode():
                model(input_ids=input_ids)

    elif mode == "train":
        model.train()

        def step():
            model(input_ids=input_ids).last_hidden_state.float().mean().backward()
            model.zero_grad(set_to_none=True)  # as Trainer does after each optimizer step: frees the gradients

    else:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
    return step


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_alternately(
    steps: dict[str, Callable[[], None]], reference: str, repeats: int, warmup: int, device: torch.device
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Time every step, each non-reference step sandwiched between two reference steps (`alternate`). Returns the
    seconds of every step and, for each non-reference entry, its speed-up in every repeat."""

    def timed(name: str) -> float:
        _synchronize(device)
        start = time.perf_counter()
        steps[name]()
        _synchronize(device)
        seconds[name].append(time.perf_counter() - start)
        return seconds[name][-1]

    for _ in range(warmup):
        for step in steps.values():
            step()
    seconds = {name: [] for name in steps}
    return seconds, alternate(timed, reference, [name for name in steps if name != reference], repeats)


def alternate(timed: Callable[[str], float], reference: str, others: list[str], repeats: int) -> dict[str, list[float]]:
    """Run `timed(name)` as R a R b R c R ... (the order of a, b, c rotates at every repeat) and return, for each of
    `others`, its speed-up in every repeat: the mean time of the two reference runs around it / its own time. Load
    that changes over seconds hits both sides of each ratio alike."""
    speedups = {name: [] for name in others}
    for repeat in range(repeats):
        shift = repeat % len(others) if others else 0
        before = timed(reference)
        for name in others[shift:] + others[:shift]:
            own = timed(name)
            after = timed(reference)
            speedups[name].append((before + after) / 2 / own)
            before = after
    return speedups


def peak_step_memory(step: Callable[[], None], device: torch.device) -> int:
    """Peak bytes that one call of `step` holds above what was held before it (see the module docstring)."""
    if device.type == "cuda":
        _synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        step()
        _synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    # Each "[memory]" event is one allocation (+bytes) or free (-bytes); replay them in time order.
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: e.start_ns())
    held = peak = 0
    for event in events:
        held += event.nbytes()
        peak = max(peak, held)
    return peak


def parameter_bytes(model: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


# ---------------------------------------------------------------------------------------------------------------
# The benchmark
# ---------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class BenchmarkArguments:
    output_dir: str = dataclasses.field(
        default="outputs/benchmark", metadata={"help": "Folder for benchmark.json, benchmark.md and benchmark.png."}
    )
    sizes: list[str] = dataclasses.field(
        default_factory=lambda: ["base", "small"], metadata={"help": f"Model sizes out of {sorted(SIZES)}."}
    )
    attention_types: list[str] = dataclasses.field(
        default_factory=lambda: list(ATTENTION_TYPES), metadata={"help": "Attention types to compare with BERT."}
    )
    seq_lens: list[int] = dataclasses.field(default_factory=lambda: [128, 512], metadata={"help": "Sequence lengths."})
    batch_size: int = dataclasses.field(default=8, metadata={"help": "Sequences per step."})
    repeats: int = dataclasses.field(default=5, metadata={"help": "Timed steps per model; figures are medians."})
    warmup: int = dataclasses.field(default=1, metadata={"help": "Untimed rounds of every model first."})
    modes: list[str] = dataclasses.field(
        default_factory=lambda: list(MODES), metadata={"help": "forward (inference) and/or train (forward+backward)."}
    )
    attn_implementations: list[str] | None = dataclasses.field(
        default=None,
        metadata={"help": "sdpa, eager, flash_attention_2, ...; default sdpa (and flash_attention_2 on CUDA if installed)."},
    )
    dtypes: list[str] | None = dataclasses.field(
        default=None, metadata={"help": f"Out of {sorted(DTYPES)}; default float32 on CPU, float32 and bfloat16 on CUDA."}
    )
    device: str = dataclasses.field(default="cpu", metadata={"help": "cpu or cuda[:N]."})
    threads: int | None = dataclasses.field(
        default=None, metadata={"help": "torch.set_num_threads for the CPU run (default: torch's, one per core)."}
    )
    vocab_size: int = dataclasses.field(default=30522, metadata={"help": "BERT's vocabulary by default."})
    memory: bool = dataclasses.field(default=True, metadata={"help": "Measure peak memory (one extra step per model)."})
    micro: bool = dataclasses.field(
        default=False, metadata={"help": "Tiny dimensions instead of --sizes (hidden 64, 2 layers): a seconds-long smoke run."}
    )
    seed: int = dataclasses.field(default=0)
    disable_tqdm: bool = dataclasses.field(
        default=False, metadata={"help": "No progress bar (settings timed / total), as Trainer's --disable_tqdm."}
    )
    overwrite_output_dir: bool = dataclasses.field(
        default=False, metadata={"help": "Replace an earlier benchmark report in output_dir."}
    )

    def __post_init__(self):
        # Checked before any model is built, so a typo fails in a second.
        check_choices(
            ("sizes", self.sizes, SIZES),
            ("attention_types", self.attention_types, ATTENTION_TYPES),
            ("modes", self.modes, MODES),
            ("dtypes", self.dtypes or [], DTYPES),
        )
        if self.threads is not None and self.threads <= 0:
            raise ValueError(f"--threads must be positive, got {self.threads}.")
        for name in ("batch_size", "repeats", "vocab_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name} must be positive, got {getattr(self, name)}.")
        if self.warmup < 0:
            raise ValueError(f"--warmup must be >= 0, got {self.warmup}.")
        if not self.seq_lens or min(self.seq_lens) <= 0 or max(self.seq_lens) > 512:
            raise ValueError(f"--seq_lens must lie in [1, 512] (BERT's max_position_embeddings), got {self.seq_lens}.")
        if not self.attention_types or not self.modes:
            raise ValueError("--attention_types and --modes must not be empty.")
        check_device(self.device)

    def setups(self) -> list[tuple[str, str]]:
        """(dtype, attn_implementation) pairs to run; flash-attention only in half precision."""
        on_cuda = torch.device(self.device).type == "cuda"
        dtypes = self.dtypes or (["float32", "bfloat16"] if on_cuda else ["float32"])
        implementations = self.attn_implementations
        if implementations is None:
            from transformers.utils import is_flash_attn_2_available

            implementations = ["sdpa"] + (["flash_attention_2"] if on_cuda and is_flash_attn_2_available() else [])
        return [
            (dtype, impl)
            for dtype in dtypes
            for impl in implementations
            if not (impl.startswith("flash") and dtype == "float32")
        ]


def check_choices(*options: tuple[str, Sequence, Collection]) -> None:
    """Raise naming the option and the allowed values for each `(option, values, allowed)` with an unknown value."""
    for name, values, allowed in options:
        unknown = [value for value in values if value not in allowed]
        if unknown:
            raise ValueError(f"--{name}: unknown value(s) {unknown}; choose from {sorted(allowed)}.")


def check_device(name: str) -> None:
    device = torch.device(name)
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"--device must be cpu or cuda[:N], got {name!r}.")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda, but torch.cuda.is_available() is False.")


MICRO_SIZE = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128}


def run_benchmark(args: BenchmarkArguments) -> dict:
    """Every measurement of the module docstring, as a JSON-serialisable dict."""
    device = torch.device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    sizes = {"micro": MICRO_SIZE} if args.micro else {name: SIZES[name] for name in args.sizes}
    results = {"environment": environment(device), "settings": dataclasses.asdict(args), "parameters": [], "speed": []}
    results["settings"]["setups"] = args.setups()
    # One tick per timed setting: a (size, dtype/implementation, sequence length, mode), every model alternately.
    total = len(sizes) * len(args.setups()) * len(args.seq_lens) * len(args.modes)
    with tqdm(total=total, desc="benchmark", unit="setting", disable=args.disable_tqdm) as progress:
        for size_name, size in sizes.items():
            results["parameters"] += parameter_rows(size_name, size, args.attention_types, args.vocab_size)
            for dtype_name, impl in args.setups():
                for seq_len in args.seq_lens:
                    results["speed"] += speed_rows(size_name, size, seq_len, dtype_name, impl, args, device, progress)
    results["environment"]["load_average_end"] = load_average()
    return results


def parameter_rows(size_name: str, size: dict, attention_types: Sequence[str], vocab_size: int) -> list[dict]:
    """Measured counts (instantiated models) next to the formulas; BertModel's count as the reference."""
    rows = []
    with torch.device("meta"):  # counting needs shapes only
        reference = build_config(size, "mha", vocab_size, "sdpa")
        bert_counts = count_parameters(build_bert(reference))
        for attention_type in attention_types:
            config = build_config(size, attention_type, vocab_size, "sdpa")
            counts = count_parameters(MHEModel(config, add_pooling_layer=False))
            per_layer = attention_parameter_formula(
                attention_type, config.hidden_size, config.num_attention_heads, config.head_dim, config.num_key_value_heads
            )
            rows.append(
                {
                    "size": size_name,
                    "attention_type": attention_type,
                    "num_key_value_heads": config.num_key_value_heads,
                    "total": counts["total"],
                    "total_formula": encoder_parameter_formula(config),
                    "attention": counts["attention"],
                    "attention_formula": config.num_hidden_layers * per_layer,
                    "attention_per_layer_formula": per_layer,
                    "bert_total": bert_counts["total"],
                    "bert_attention": bert_counts["attention"],
                }
            )
    return rows


def speed_rows(
    size_name: str,
    size: dict,
    seq_len: int,
    dtype_name: str,
    impl: str,
    args: BenchmarkArguments,
    device: torch.device,
    progress: tqdm | None = None,
) -> list[dict]:
    """Tokens/s and peak memory of BERT and every attention type at one (size, seq_len, dtype, implementation)."""
    dtype = DTYPES[dtype_name]
    torch.manual_seed(args.seed)
    reference = build_config(size, "mha", args.vocab_size, impl)
    models = {"bert": build_bert(reference)}
    for attention_type in args.attention_types:
        models[attention_type] = MHEModel(build_config(size, attention_type, args.vocab_size, impl), add_pooling_layer=False)
    for model in models.values():
        model.to(device=device, dtype=dtype)
    # Same ids for every model; 0 is the padding id, so it is left out (no padding, no attention mask anywhere).
    input_ids = torch.randint(1, args.vocab_size, (args.batch_size, seq_len), device=device)
    tokens = args.batch_size * seq_len
    bert_flops = encoder_matmul_flops(reference, seq_len)

    load_start = load_average()
    measured = {}
    for mode in args.modes:
        steps = {name: make_step(model, input_ids, mode) for name, model in models.items()}
        logger.info("Timing %s, %s, seq_len %d, %s/%s", mode, size_name, seq_len, dtype_name, impl)
        if progress is not None:
            progress.set_postfix_str(f"{size_name} {dtype_name}/{impl} seq {seq_len} {mode}")
        seconds, speedups = time_alternately(steps, "bert", args.repeats, args.warmup, device)
        for name, model in models.items():
            memory = None
            if args.memory:
                memory = parameter_bytes(model) + peak_step_memory(steps[name], device)
            measured[name, mode] = {
                "seconds": seconds[name],
                "tokens_per_s": tokens / statistics.median(seconds[name]),
                "speedups": speedups.get(name),
                "peak_memory_bytes": memory,
            }
        if progress is not None:
            progress.update()
    load_end = load_average()

    rows = []
    for attention_type in args.attention_types:
        config = models[attention_type].config
        row = {
            "size": size_name,
            "seq_len": seq_len,
            "batch_size": args.batch_size,
            "dtype": dtype_name,
            "attn_implementation": impl,
            "attention_type": attention_type,
            # The speed-up the matmuls alone allow. Element-wise work, kernel efficiency and BertModel's own overheads
            # (the mha row: the same matmuls as BERT) move measured ratios around it.
            "flop_ratio_bert_over_ours": bert_flops / encoder_matmul_flops(config, seq_len),
            "load_average": {"start": load_start, "end": load_end},
        }
        for mode in args.modes:
            ours, bert = measured[attention_type, mode], measured["bert", mode]
            row[mode] = {
                "tokens_per_s": ours["tokens_per_s"],
                "bert_tokens_per_s": bert["tokens_per_s"],
                # Median over repeats of the paired ratio (time of the BERT steps around ours / ours).
                "speed_ratio": statistics.median(ours["speedups"]),
                "speed_ratios": ours["speedups"],
                "seconds": ours["seconds"],
                "bert_seconds": bert["seconds"],
                "peak_memory_bytes": ours["peak_memory_bytes"],
                "bert_peak_memory_bytes": bert["peak_memory_bytes"],
                "memory_ratio": (
                    ours["peak_memory_bytes"] / bert["peak_memory_bytes"] if ours["peak_memory_bytes"] is not None else None
                ),
            }
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------------------------
# Reports
# ---------------------------------------------------------------------------------------------------------------


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:,.1f}"


def _quartiles(values: list[float]) -> str:
    """The spread of the per-repeat ratios, "[first quartile–third quartile]", a hint of how busy the machine was."""
    if len(values) < 2:
        return ""
    first, _, third = statistics.quantiles(values, n=4, method="inclusive")
    return f"[{first:.2f}–{third:.2f}]"


def markdown_report(results: dict) -> str:
    env = results["environment"]
    lines = [
        "# MHE benchmark",
        "",
        f"`{env['command']}` on {env['cpu']} ({env['cpu_count']} CPUs, {env['torch_threads']} torch threads), "
        f"device {env['device']}, torch {env['torch']}, transformers {env['transformers']}, {env['date']}; "
        f"load average (1/5/15 min) {env['load_average_start']} at start, {env['load_average_end']} at end.",
        "",
        "## Parameters",
        "",
        "Attention-only = Q/K/V/O projection weights and biases plus MHE's head embeddings, summed over layers "
        "(LayerNorms excluded). Encoder without pooler; BertModel of the same dimensions has the counts of `mha`.",
        "",
        "| size | attention | total | total (formula) | attention-only | attention (formula) | attention / BERT |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in results["parameters"]:
        lines.append(
            f"| {row['size']} | {row['attention_type']} | {row['total']:,} | {row['total_formula']:,} | "
            f"{row['attention']:,} | {row['attention_formula']:,} | {row['attention'] / row['bert_attention']:.3f} |"
        )
    modes = results["settings"]["modes"]
    lines += [
        "",
        "## Speed and peak memory, ratios ours / BertModel",
        "",
        "Speed: median over repeats of BERT's step time (the BERT steps just before and after) / ours, [quartiles]; "
        "above 1 = faster than BERT. FLOP limit: BERT's matmul FLOPs / ours. Memory: peak-memory ratio (below 1 = less than "
        f"BERT). {results['settings']['repeats']} repeats, batch {results['settings']['batch_size']}, "
        "random ids without padding.",
        "",
    ]
    header = ["size", "seq", "dtype/attn", "attention", "FLOP limit"]
    for mode in modes:
        header += [f"{mode} tok/s", f"{mode} speed", f"{mode} peak MiB", f"{mode} memory"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * 4 + "---:|" * (len(header) - 4)]
    for row in results["speed"]:
        cells = [
            row["size"],
            str(row["seq_len"]),
            f"{row['dtype']}/{row['attn_implementation']}",
            row["attention_type"],
            f"{row['flop_ratio_bert_over_ours']:.3f}",
        ]
        for mode in modes:
            m = row[mode]
            memory_ratio = "-" if m["memory_ratio"] is None else f"{m['memory_ratio']:.3f}"
            cells += [
                f"{m['tokens_per_s']:,.0f} (BERT {m['bert_tokens_per_s']:,.0f})",
                f"{m['speed_ratio']:.3f} {_quartiles(m['speed_ratios'])}",
                f"{_mib(m['peak_memory_bytes'])} (BERT {_mib(m['bert_peak_memory_bytes'])})",
                memory_ratio,
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    """One panel per (size, dtype/attn, seq_len): speed and memory ratios by attention type, FLOP limit marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = {}
    for row in results["speed"]:
        key = (row["size"], f"{row['dtype']}/{row['attn_implementation']}", row["seq_len"])
        panels.setdefault(key, []).append(row)
    modes = results["settings"]["modes"]
    columns = min(len(panels), 2) or 1
    rows_count = max(1, math.ceil(len(panels) / columns))
    fig, axes = plt.subplots(rows_count, columns, figsize=(6.5 * columns, 3.8 * rows_count), squeeze=False)
    series = [(f"{mode} speed", mode, "speed_ratio") for mode in modes] + [
        (f"{mode} memory", mode, "memory_ratio") for mode in modes
    ]
    width = 0.8 / len(series)
    for ax, ((size, setup, seq_len), rows) in zip(axes.flat, panels.items()):
        positions = range(len(rows))
        for i, (label, mode, key) in enumerate(series):
            values = [row[mode][key] or 0.0 for row in rows]
            ax.bar([p + (i - (len(series) - 1) / 2) * width for p in positions], values, width, label=label)
        ax.scatter(positions, [row["flop_ratio_bert_over_ours"] for row in rows], marker="_", s=400, color="black",
                   label="FLOP limit (speed)", zorder=3)
        ax.axhline(1.0, color="grey", linewidth=0.8)
        ax.set_xticks(list(positions), [row["attention_type"] for row in rows])
        ax.set_title(f"{size}, seq {seq_len}, {setup}")
        ax.set_ylabel("ours / BertModel")
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    # One legend under all panels, so it never hides a bar or a FLOP mark.
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3 * columns, fontsize="small", frameon=False)
    fig.tight_layout(rect=(0, 0.12 / rows_count, 1, 1))
    fig.savefig(path, dpi=120, metadata={"Software": None})  # no version string: the same data, the same bytes
    plt.close(fig)


# ---------------------------------------------------------------------------------------------------------------
# The committed records and the page built from them (`make benchmark-records`, then `make report`)
# ---------------------------------------------------------------------------------------------------------------

MODE_LABELS = {"forward": "forward", "train": "fwd+bwd"}  # a mode of MODES -> the speed page's column name


def load_records(records_dir: str | Path) -> list[dict]:
    """The committed benchmark reports (`<setting>.json`, each the benchmark.json of one run), by file name."""
    records = []
    for path in sorted(Path(records_dir).glob("*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not valid JSON ({error}).") from None
        if not isinstance(record, dict) or not {"environment", "settings", "speed"} <= set(record):
            raise ValueError(f"{path}: not a benchmark.json (needs environment, settings and speed).")
        records.append(record)
    return records


def common_modes(records: Sequence[dict]) -> list[str]:
    """The modes (of MODES, in its order) that every record measured: the columns the page and figure can show."""
    return [mode for mode in MODES if all(mode in record["settings"]["modes"] for record in records)]


def records_markdown(records: Sequence[dict]) -> str:
    """The speed and memory table of every committed record, the machine and command of each, and the figure."""
    if not records:
        return "No benchmark records yet: `make benchmark-records` on an idle machine, then `make report`.\n"
    lines = ["The runs (the load average at start and end of each says how busy the machine was):", ""]
    for record in records:
        env, settings = record["environment"], record["settings"]
        lines.append(
            f"- `{env['command']}`: {env['date']}; {env['cpu']} ({env['cpu_count']} CPUs, {env['torch_threads']} "
            f"torch threads), Python {env['python']}, torch {env['torch']}, transformers {env['transformers']}; "
            f"{settings['repeats']} repeats; load average {env['load_average_start']} -> {env['load_average_end']}"
        )
    lines += [
        "",
        "Speed: median over repeats of BERT's step time (the steps just before and after) / ours [quartiles], above 1 ="
        " faster. FLOP limit: BERT's matmul FLOPs / ours. Memory: peak-memory ratio, below 1 = less than BERT. tok/s:"
        " ours (BERT's).",
        "",
    ]
    modes = common_modes(records)
    header = ["size", "seq", "attention", "FLOP limit"]
    for mode in modes:
        label = MODE_LABELS[mode]
        header += [f"{label} speed", f"{label} tok/s", f"{label} peak MiB", f"{label} memory"]
    lines += ["| " + " | ".join(header) + " |", "|---|---:|---|" + "---:|" * (len(header) - 3)]
    for row in (row for record in records for row in record["speed"]):
        cells = [row["size"], str(row["seq_len"]), row["attention_type"], f"{row['flop_ratio_bert_over_ours']:.3f}"]
        for mode in modes:
            m = row[mode]
            cells += [
                f"{m['speed_ratio']:.3f} {_quartiles(m['speed_ratios'])}".strip(),
                f"{m['tokens_per_s']:,.0f} ({m['bert_tokens_per_s']:,.0f})",
                f"{_mib(m['peak_memory_bytes'])} ({_mib(m['bert_peak_memory_bytes'])})",
                "-" if m["memory_ratio"] is None else f"{m['memory_ratio']:.3f}",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_records_page(records_dir: str | Path, page: str | Path, figure_path: str | Path, marker: str) -> str:
    """Rewrite `page` below `marker` (the hand-written part above is kept) from the records, and draw every
    record's speed rows in one figure (`plot`). Returns the generated part."""
    records = load_records(records_dir)
    generated = records_markdown(records)
    if records:
        rows = [row for record in records for row in record["speed"]]
        plot({"settings": {"modes": common_modes(records)}, "speed": rows}, Path(figure_path))
        generated += f"\n![speed and memory ratios against BertModel]({Path(figure_path).name})\n"
    page = Path(page)
    head = page.read_text(encoding="utf-8") if page.is_file() else "# Speed and memory against BertModel\n\n"
    head = head.split(marker)[0].rstrip("\n") + "\n\n" + marker + "\n\n"
    page.write_text(head + generated, encoding="utf-8")
    return generated


def main(argv: Sequence[str] | None = None) -> dict:
    (args,) = cli.parse_args((BenchmarkArguments,), argv, description=__doc__.split("\n\n")[0])
    return run_and_report(args, run_benchmark, "benchmark", markdown_report, plot)


def run_and_report(args, run: Callable, stem: str, markdown: Callable[[dict], str], plot: Callable) -> dict:
    """`run(args)`, then `<stem>.json`, `<stem>.md` and `<stem>.png` written to `args.output_dir` (a temporary folder
    that then replaces it) and the tables printed: the command line of this benchmark and of the decode one."""
    # Before hours of measuring, not after: a folder that is not ours, or ours without --overwrite_output_dir.
    check_output_dir(args.output_dir, args.overwrite_output_dir)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    with claim_output_dir(args.output_dir, args.overwrite_output_dir):  # no other run writes there meanwhile
        results = run(args)
        report = markdown(results)
        output_dir = write_report(args.output_dir, stem, results, report, plot)
    print(report)
    print(f"Wrote {output_dir}/{stem}.json, {stem}.md and {stem}.png")
    return results


__all__ = [
    "SIZES",
    "BenchmarkArguments",
    "peak_step_memory",
    "time_alternately",
    "run_benchmark",
    "load_records",
    "records_markdown",
    "write_records_page",
    "main",
]
