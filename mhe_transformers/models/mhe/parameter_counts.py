"""Parameter and FLOP counts: closed forms per attention type, and the one counter of a model's parameters that the
model card, the benchmark and the comparison report (and the tests check against the closed forms).

One rule for what "attention parameters" are: the Q/K/V/O projections, their biases and MHE's head embeddings
(frozen or not). Position parameters are not attention parameters, wherever they live: the learned absolute position
embeddings and the relative position bias tables (`relative_position_bias`, inside each attention module) both count
in the total only, so that types compared with the same positional option differ only in their attention."""

from __future__ import annotations

import torch
from torch import nn

from .configuration_mhe import ATTENTION_TYPES, MHE_TYPES, MHEConfig


def _projection_sizes(attention_type: str, n: int, d: int, g: int | None) -> tuple[int, int, int, int]:
    """(q_proj outputs, k_proj = v_proj outputs, o_proj inputs, query heads) of one attention layer."""
    if attention_type not in ATTENTION_TYPES:
        raise ValueError(f"attention_type must be one of {ATTENTION_TYPES}, got {attention_type!r}.")
    if attention_type == "gqa" and not g:
        raise ValueError("attention_type='gqa' needs g, its number of key/value heads.")
    return {
        "mha": (n * d, n * d, n * d, n),
        "gqa": (n * d, (g or 0) * d, n * d, n),
        "mqa": (n * d, d, n * d, n),
        "sha": (d, d, d, 1),
        "mhe_add": (d, d, n * d, n),  # one shared projection of a single head's size; n heads through embeddings
        "mhe_mul": (d, d, n * d, n),
    }[attention_type]


def attention_parameter_formula(attention_type: str, h: int, n: int, d: int, g: int | None = None, bias: bool = True) -> int:
    """Attention-only parameters of ONE layer: Q/K/V/O projection weights, their biases, and MHE's head embeddings.

    h: hidden size, n: heads, d: head size, g: key/value heads (gqa only). With h = n·d the Q/K/V weights are
    3n²d² for MHA and 3nd² for MHE, which adds 3nd head-embedding parameters (docs/model.md).
    """
    q_out, kv_out, o_in, _ = _projection_sizes(attention_type, n, d, g)
    weights = h * (q_out + 2 * kv_out) + o_in * h
    biases = q_out + 2 * kv_out + h if bias else 0
    head_embeddings = 3 * n * d if attention_type in MHE_TYPES else 0
    return weights + biases + head_embeddings


def position_parameter_formula(config: MHEConfig) -> tuple[int, int]:
    """(absolute position embeddings, relative position bias of ONE layer): one of the two is zero. The bias has a
    table of 2·max_distance + 1 offsets per head, or a single table with `relative_attention_per_head=False` (and for
    SHA, which has one head)."""
    if config.position_embedding_type == "absolute":
        return config.max_position_embeddings * config.hidden_size, 0
    heads = 1 if config.attention_type == "sha" or not config.relative_attention_per_head else config.num_attention_heads
    return 0, heads * (2 * config.relative_attention_max_distance + 1)


def encoder_parameter_formula(config: MHEConfig, add_pooling_layer: bool = False) -> int:
    """All parameters of `MHEModel(config)`: embeddings, layers (attention, position bias, two LayerNorms,
    feed-forward), pooler. With attention_type="mha" and absolute positions this is also the count of `BertModel` of
    the same dimensions."""
    h, f = config.hidden_size, config.intermediate_size
    absolute_positions, position_bias = position_parameter_formula(config)
    embeddings = (config.vocab_size + config.type_vocab_size) * h + absolute_positions + 2 * h
    attention = attention_parameter_formula(
        config.attention_type, h, config.num_attention_heads, config.head_dim, config.num_key_value_heads, config.attention_bias
    )
    layer = attention + position_bias + 2 * h + (h * f + f) + (f * h + h) + 2 * h
    pooler = h * h + h if add_pooling_layer else 0
    return embeddings + config.num_hidden_layers * layer + pooler


def encoder_matmul_flops(config: MHEConfig, seq_len: int) -> int:
    """Matmul FLOPs (2 per multiply-add) of one forward pass of the encoder over one sequence of `seq_len` tokens:
    Q/K/V/O projections, attention scores and weighted values, feed-forward. Element-wise work (MHE's head
    embeddings, softmax, LayerNorm, GELU) is left out. A backward pass costs twice a forward one for every matmul,
    so the ratio between two models is the same for training."""
    h, f, T, d = config.hidden_size, config.intermediate_size, seq_len, config.head_dim
    q_out, kv_out, o_in, query_heads = _projection_sizes(
        config.attention_type, config.num_attention_heads, d, config.num_key_value_heads
    )
    projections = 2 * T * h * (q_out + 2 * kv_out) + 2 * T * o_in * h
    attention = 2 * (2 * T * T * d) * query_heads  # Q·Kᵀ and A·V, per query head
    feed_forward = 2 * (2 * T * h * f)
    return config.num_hidden_layers * (projections + attention + feed_forward)


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Total parameters and attention-only ones (projections, their biases and head embeddings; not LayerNorms, not
    the relative position bias: see the module docstring). Works for MHEModel (`layers.N.attention.*`) and BertModel
    (`encoder.layer.N.attention.{self,output.dense}.*`)."""
    attention = sum(
        p.numel()
        for name, p in model.named_parameters()
        if ".attention." in name and "LayerNorm" not in name and not name.endswith("relative_position_bias")
    )
    return {"total": sum(p.numel() for p in model.parameters()), "attention": attention}


def count_config_parameters(model_class, config, **init_kwargs) -> dict[str, int]:
    """`count_parameters` of `model_class(config, **init_kwargs)` built on the meta device: instant, and allocates
    nothing even for large configs."""
    with torch.device("meta"):
        return count_parameters(model_class(config, **init_kwargs))
