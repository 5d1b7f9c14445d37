# Copyright 2026 The mhe-transformers authors. Licensed under the Apache License, Version 2.0.
"""PyTorch MHE model: a BERT-style encoder with Multiple Head Embeddings attention (and its baselines).

This file ships as remote code next to the weights: it imports only torch, transformers and the configuration file.

MHE (Xue & Aletras, Findings of EMNLP 2023) keeps ONE query/key/value projection of the size of a single head and
makes the heads differ by a learned embedding per head:

    MHE-MUL:  Q_i = (X W^Q) * e_i^Q,   K_i = (X W^K) * e_i^K,   V_i = (X W^V) * e_i^V
    MHE-ADD:  Q_i =  X W^Q  + e_i^Q,   K_i =  X W^K  + e_i^K,   V_i =  X W^V  + e_i^V

Both are computed here with a single shared key/value head (the shape of multi-query attention), so the attention
kernels of Transformers (eager, sdpa, flash-attention, flex-attention) apply unchanged:

    MUL: Q_i K_i^T = ((X W^Q) * e_i^Q * e_i^K) (X W^K)^T     -> fold e^K into the query
         A_i V_i   = (A_i X W^V) * e_i^V                      -> scale each head's output
    ADD: Q_i K_i^T = (X W^Q + e_i^Q)(X W^K)^T + a term constant along the key axis, which softmax removes,
         so e^K has no effect on the output (it is kept for fidelity and parameter counts; its gradient is zero);
         A_i V_i   = A_i X W^V + e_i^V                        -> exact whenever each row of A_i sums to one.
    Under attention dropout the rows of A_i no longer sum to one: the fused ADD path adds e_i^V undropped, which
    equals the materialised computation in expectation (inverted dropout keeps each row's expected sum at one).

The same identities hold under a causal mask (the term ADD's softmax removes is constant along each row's visible
keys), so `MHEForCausalLM` caches only X W^K and X W^V: one (batch, 1, seq, head_dim) key and value per layer, the
cache of multi-query attention, 1/n of multi-head attention's.
"""

import json
import os
import shutil
import struct
from collections.abc import Callable
from typing import NamedTuple

import torch
import transformers
from torch import nn
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, DynamicCache
from transformers.generation import GenerationMixin
from transformers.masking_utils import (
    create_bidirectional_mask,
    create_causal_mask,
    find_packed_sequence_indices,
    packed_sequence_mask_function,
)
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import (
    BaseModelOutputWithPooling,
    BaseModelOutputWithPoolingAndCrossAttentions,
    CausalLMOutputWithPast,
    MaskedLMOutput,
    MultipleChoiceModelOutput,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, PreTrainedModel
from transformers.utils import cached_file, logging
from transformers.utils.deprecation import deprecate_kwarg
from transformers.utils.generic import can_return_tuple, merge_with_config_defaults
from transformers.utils.output_capturing import capture_outputs

from .configuration_mhe import (
    DECODER_MIN_TRANSFORMERS,
    DECODER_SUPPORTED,
    HEAD_EMBEDDING_IDENTITY,
    MHE_TYPES,
    MHEConfig,
)

logger = logging.get_logger(__name__)

# The key/value cache is passed as `cache=`, as Transformers' own models take it since 5.24. The name they used
# before, `past_key_values`, is still accepted and renamed, with the FutureWarning those models give: the same
# decorator with the same arguments as modeling_llama.py's (`deprecate_kwarg(old name, removal version, new_name)`).
CACHE_RENAMED = ("past_key_values", "5.40.0", "cache")
# Names other models or older Transformers releases give a key/value cache; passed here, it is refused (it would
# otherwise flow unread through **kwargs).
UNREAD_CACHE_NAMES = ("past_key_value", "layer_past", "cache_params", "past")

class MHEEmbeddings(nn.Module):
    """Word, learned absolute position (`position_embedding_type="absolute"`) and token type embeddings, summed and
    layer-normalised as in BERT."""

    def __init__(self, config: MHEConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = (
            nn.Embedding(config.max_position_embeddings, config.hidden_size)
            if config.position_embedding_type == "absolute"
            else None
        )
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros(inputs_embeds.shape[:2], dtype=torch.long, device=inputs_embeds.device)
        embeddings = inputs_embeds + self.token_type_embeddings(token_type_ids)
        if self.position_embeddings is not None:
            if position_ids is None:
                position_ids = torch.arange(inputs_embeds.shape[1], device=inputs_embeds.device).unsqueeze(0)
            embeddings = embeddings + self.position_embeddings(position_ids)
        return self.dropout(self.LayerNorm(embeddings))


def repeat_kv(hidden_states: torch.Tensor, n_rep: int) -> torch.Tensor:
    """(batch, kv_heads, seq, dim) -> (batch, kv_heads * n_rep, seq, dim), each key/value head serving n_rep queries."""
    batch, kv_heads, seq_length, head_dim = hidden_states.shape
    if n_rep == 1:
        return hidden_states
    hidden_states = hidden_states[:, :, None].expand(batch, kv_heads, n_rep, seq_length, head_dim)
    return hidden_states.reshape(batch, kv_heads * n_rep, seq_length, head_dim)


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    position_bias: torch.Tensor | None = None,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    batch, num_heads, q_length, head_dim = query.shape
    if q_length == 1 and module.num_key_value_groups > 1:
        # Decoding one token: lay each key/value head's query heads along the query axis, (b, n, 1, d) ->
        # (b, kv_heads, n / kv_heads, d), so the cache is read once instead of being copied n / kv_heads times by
        # repeat_kv. A (b, 1, 1, kv) mask broadcasts over the new query axis unchanged.
        query = query.reshape(batch, key.shape[1], -1, head_dim)
    else:
        key = repeat_kv(key, module.num_key_value_groups)
        value = repeat_kv(value, module.num_key_value_groups)
    attn_weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if position_bias is not None:
        attn_weights = attn_weights + position_bias
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            attention_mask = torch.where(attention_mask, 0.0, torch.finfo(attn_weights.dtype).min)
        attn_weights = attn_weights + attention_mask
    attn_weights = nn.functional.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query.dtype)
    attn_weights = nn.functional.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value)
    if q_length == 1:  # undo the packing above (a no-op otherwise)
        attn_output = attn_output.reshape(batch, num_heads, 1, head_dim)
        attn_weights = attn_weights.reshape(batch, num_heads, 1, -1)
    return attn_output.transpose(1, 2).contiguous(), attn_weights


def sdpa_decode_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """sdpa for one new token against a cache with fewer key/value heads than query heads (MHE, MQA, GQA): the query
    heads of each key/value head are laid along the query axis, (b, n, 1, d) -> (b, g, n / g, d), so the cache is read
    in place. Transformers' sdpa packs so only outside torch.compile; compiled, it copies the cache n / g times
    (repeat_kv) at every step, which made compiled MHE-MUL decode 4x slower than eager (docs/results/decoding.md)."""
    batch, num_heads, _, head_dim = query.shape
    kv_heads = key.shape[1]
    query = query.reshape(batch, kv_heads, num_heads // kv_heads, head_dim)
    if attention_mask is not None and attention_mask.shape[1] != 1:  # a mask per query head: packed the same way
        attention_mask = attention_mask.reshape(attention_mask.shape[0], kv_heads, num_heads // kv_heads, -1)
    attn_output = nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling
    )
    return attn_output.reshape(batch, num_heads, 1, head_dim).transpose(1, 2), None


class MHEAttention(nn.Module):
    """Self-attention of every type in `MHEConfig.attention_type`, through Transformers' attention interface.

    Projection sizes (h = hidden_size, n = heads, d = head_dim, g = num_key_value_heads):

        type     q_proj     k_proj/v_proj   o_proj     head embeddings
        mha      h -> n*d   h -> n*d        n*d -> h   -
        gqa      h -> n*d   h -> g*d        n*d -> h   -
        mqa      h -> n*d   h -> d          n*d -> h   -
        sha      h -> d     h -> d          d -> h     -
        mhe_*    h -> d     h -> d          n*d -> h   3 x (n, d)
    """

    def __init__(self, config: MHEConfig, layer_idx: int | None = None):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.attention_type = config.attention_type
        self.head_dim = config.head_dim
        self.num_heads = 1 if self.attention_type == "sha" else config.num_attention_heads
        self.num_key_value_heads = config.num_key_value_heads
        self.num_key_value_groups = self.num_heads // self.num_key_value_heads
        self.scaling = self.head_dim**-0.5
        self.attention_dropout = config.attention_probs_dropout_prob
        self.is_causal = config.is_decoder

        is_mhe = self.attention_type in MHE_TYPES
        num_query_projections = 1 if is_mhe else self.num_heads
        bias = config.attention_bias
        self.q_proj = nn.Linear(config.hidden_size, num_query_projections * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(config.hidden_size, self.num_key_value_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(config.hidden_size, self.num_key_value_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, config.hidden_size, bias=bias)
        if is_mhe:
            shape = (self.num_heads, self.head_dim)
            # Frozen (`freeze_head_embeddings`), they stay parameters, so checkpoints keep their keys and parameter
            # counts their meaning; `requires_grad=False` keeps them out of every optimiser (Trainer's included).
            trainable = not config.freeze_head_embeddings
            self.q_head_embeddings = nn.Parameter(torch.empty(shape), requires_grad=trainable)
            self.k_head_embeddings = nn.Parameter(torch.empty(shape), requires_grad=trainable)
            self.v_head_embeddings = nn.Parameter(torch.empty(shape), requires_grad=trainable)
        self.relative_position_bias = None
        if config.position_embedding_type == "relative_bias":
            if config.is_decoder:  # the bias below assumes as many queries as keys (no key/value cache)
                raise ValueError("position_embedding_type='relative_bias' is implemented for encoders only.")
            # A learned logit bias per key-minus-query offset in [-max, max]: one table per head, or one shared by
            # all heads (`relative_attention_per_head=False`; single-head attention has one table either way).
            self.max_distance = config.relative_attention_max_distance
            tables = self.num_heads if config.relative_attention_per_head else 1
            self.relative_position_bias = nn.Parameter(torch.empty(tables, 2 * self.max_distance + 1))

    def neighbour_bias_init(self) -> torch.Tensor:
        """The relative position bias at the start: zero (uniform attention), plus `relative_attention_neighbour_init`
        on one offset per head, -1, +1, -2, +2, ... in turn (within +-max_distance); a table shared by all heads gets
        it on both immediate neighbours, -1 and +1, so no head is favoured."""
        bias = torch.zeros_like(self.relative_position_bias, device="cpu")
        strength = self.config.relative_attention_neighbour_init
        if strength and not self.config.relative_attention_per_head:
            bias[:, [self.max_distance - 1, self.max_distance + 1]] = strength
        elif strength:
            for head in range(self.num_heads):
                distance = head // 2 % self.max_distance + 1
                bias[head, self.max_distance + (distance if head % 2 else -distance)] = strength
        return bias

    def position_bias(self, seq_length: int, position_ids: torch.Tensor | None, device) -> torch.Tensor:
        """(batch or 1, heads, seq, seq) bias added to the attention logits; offsets from `position_ids` when given
        (packed sequences restart them), else 0..seq_length-1."""
        positions = position_ids if position_ids is not None else torch.arange(seq_length, device=device)[None]
        offsets = (positions[:, None, :] - positions[:, :, None]).clamp(-self.max_distance, self.max_distance)
        bias = self.relative_position_bias[:, offsets + self.max_distance].transpose(0, 1)
        # A shared table (one row) is broadcast over the heads as a view: flex attention indexes the bias by head.
        return bias.expand(-1, self.num_heads, -1, -1)

    @deprecate_kwarg(*CACHE_RENAMED)
    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)
        # (batch, heads, seq, head_dim); for MHE the query has one head until the embeddings expand it to n.
        query = self.q_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        key = self.k_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        value = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)

        if self.attention_type == "mhe_mul":
            query = query * (self.q_head_embeddings * self.k_head_embeddings)[:, None, :]
        elif self.attention_type == "mhe_add":
            # `0 * e^K` keeps e^K in the graph with its true (zero) gradient, so distributed training does not
            # report it as an unused parameter.
            query = query + (self.q_head_embeddings + 0 * self.k_head_embeddings)[:, None, :]
        if cache is not None:
            # The key and value carry no head embedding (it is folded into the query or applied to the output), so
            # the cache holds the shared head only: (batch, num_key_value_heads, seq, head_dim).
            key, value = cache.update(key, value, self.layer_idx)

        implementation = self.config._attn_implementation
        if implementation == "sdpa" and kwargs.get("output_attentions", self.config.output_attentions):
            # sdpa never forms the attention probabilities: compute this call eagerly (sdpa's boolean mask works
            # there too) instead of returning none, as users of `output_attentions=True` expect.
            logger.warning_once(
                "output_attentions=True with attn_implementation='sdpa': this forward pass uses eager attention to "
                "return the attention probabilities (slower, O(seq_len^2) memory). Load the model with "
                "attn_implementation='eager' to silence this warning."
            )
            implementation = "eager"
        if self.relative_position_bias is not None:
            if implementation not in ("eager", "sdpa", "flex_attention"):
                raise ValueError(
                    f"position_embedding_type='relative_bias' adds a bias to the attention logits, which "
                    f"attn_implementation='{implementation}' cannot take; use 'sdpa', 'eager' or 'flex_attention'."
                )
            kwargs["position_bias"] = self.position_bias(
                query.shape[2], kwargs.get("position_ids"), query.device
            ).to(query.dtype)
        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager_attention_forward)
        if implementation == "sdpa" and query.shape[2] == 1 and self.num_key_value_groups > 1 and cache is not None:
            attention_interface = sdpa_decode_attention  # one token per step: reads the shared cache in place
        attn_output, attn_weights = attention_interface(
            self,
            query,
            key,
            value,
            attention_mask,
            dropout=self.attention_dropout if self.training else 0.0,
            scaling=self.scaling,
            **kwargs,
        )  # attn_output: (batch, seq, heads, head_dim)

        if self.attention_type == "mhe_mul":
            attn_output = attn_output * self.v_head_embeddings
        elif self.attention_type == "mhe_add":
            attn_output = attn_output + self.v_head_embeddings
        attn_output = attn_output.reshape(*input_shape, -1).contiguous()
        return self.o_proj(attn_output), attn_weights


class MHEFeedForward(nn.Module):
    def __init__(self, config: MHEConfig):
        super().__init__()
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = ACT2FN[config.hidden_act]
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.down_proj(self.act(self.up_proj(hidden_states))))


class MHELayer(GradientCheckpointingLayer):
    """A post-LayerNorm Transformer encoder layer, as in BERT."""

    def __init__(self, config: MHEConfig, layer_idx: int | None = None):
        super().__init__()
        self.attention = MHEAttention(config, layer_idx)
        self.attention_dropout = nn.Dropout(config.hidden_dropout_prob)
        self.attention_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.feed_forward = MHEFeedForward(config)
        self.output_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        attn_output, _ = self.attention(hidden_states, attention_mask, **kwargs)  # weights: recorded by a hook
        hidden_states = self.attention_norm(hidden_states + self.attention_dropout(attn_output))
        return self.output_norm(hidden_states + self.feed_forward(hidden_states))


class MHEPooler(nn.Module):
    """BERT's pooler: a dense layer and tanh on the first ([CLS]) token (`MHEModel(config, add_pooling_layer=True)`)."""

    def __init__(self, config: MHEConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = nn.Tanh()

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.activation(self.dense(hidden_states[:, 0]))


class MHEClassificationHead(nn.Module):
    """The head of sequence classification and multiple choice, on the first ([CLS]) token: BERT's pooler (dense,
    tanh), dropout, and the output layer, as `classifier.dense` and `classifier.out_proj` (RoBERTa's layout).

    The pooler is part of the head, not of the encoder, because nothing trains it before fine-tuning: masked-LM and
    causal-LM pretraining never use it, so a classifier made from their checkpoints starts with a new one. Inside
    `classifier` it is trained and saved with the rest of the new head, also by PEFT, whose default
    `modules_to_save` for `task_type="SEQ_CLS"` is ["classifier", "score"]: an adapter reloads to the logits it was
    trained to in any process, whatever that process's seed. Checkpoints that hold the pooler in `model.pooler.dense`
    and the output layer in `classifier` are renamed into it on load (`CLASSIFIER_KEY_MAPPING`)."""

    def __init__(self, config: MHEConfig, num_outputs: int):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = nn.Tanh()
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(dropout)
        self.out_proj = nn.Linear(config.hidden_size, num_outputs)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.out_proj(self.dropout(self.activation(self.dense(hidden_states[:, 0]))))


# Checkpoint keys of classifiers saved with the pooler in the encoder -> MHEClassificationHead's (regular expressions,
# as `from_pretrained(key_mapping=...)` takes them); a base-model checkpoint's pooler (no `model.` prefix) too.
CLASSIFIER_KEY_MAPPING = {
    r"^(?:model\.)?pooler\.dense\.": "classifier.dense.",
    r"^classifier\.weight$": "classifier.out_proj.weight",
    r"^classifier\.bias$": "classifier.out_proj.bias",
}


class MHEPreTrainedModel(PreTrainedModel):
    config_class = MHEConfig
    config: MHEConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["MHEEmbeddings", "MHELayer"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    # `output_hidden_states` / `output_attentions` are recorded by hooks on these modules (`capture_outputs`): the
    # embedding output plus each layer's output, and each attention's probabilities (the 2nd item it returns).
    _can_record_outputs = {"hidden_states": MHELayer, "attentions": MHEAttention}

    def save_pretrained(self, save_directory, *args, **kwargs):
        # `save_pretrained` writes `auto_map` entries only for the saved class and its config; list every head so
        # that, say, a masked-LM checkpoint loads with AutoModelForSequenceClassification(trust_remote_code=True).
        if self._auto_class is not None:
            self.config.auto_map = {**AUTO_MAP, **(getattr(self.config, "auto_map", None) or {})}
        super().save_pretrained(save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True):
            for name in sorted(os.listdir(save_directory)):
                if name.endswith(".safetensors"):
                    _stamp_attention_type(os.path.join(save_directory, name), self.config.attention_type)

    _checkpoint_key_mapping: dict[str, str] | None = None  # old checkpoint key (regex) -> this class's key

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        own_mapping = cls._checkpoint_key_mapping or {}
        if own_mapping:
            kwargs["key_mapping"] = {**own_mapping, **(kwargs.get("key_mapping") or {})}
        loaded = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded  # (model, loading_info) with output_loading_info
        conversions = getattr(model, "_weight_conversions", None)
        if own_mapping and isinstance(conversions, list):
            # save_pretrained writes the renamings it finds here back in reverse (`save_original_format`): a model
            # loaded from an older layout would be saved in it again (and these patterns do not reverse). Always save
            # the current layout.
            model._weight_conversions = [
                conversion
                for conversion in conversions
                if not set(getattr(conversion, "source_patterns", None) or ()) & set(own_mapping)
            ]
        if pretrained_model_name_or_path is not None:
            _check_weights_attention_type(model.config, pretrained_model_name_or_path, kwargs)
        if model.config.freeze_head_embeddings:
            _freeze_loaded_head_embeddings(model)
        return loaded

    def _init_weights(self, module: nn.Module):
        super()._init_weights(module)  # Linear / Embedding: N(0, initializer_range), biases 0, LayerNorm 1 and 0
        if isinstance(module, MHEAttention) and module.relative_position_bias is not None:
            init.copy_(module.relative_position_bias, module.neighbour_bias_init())
        if isinstance(module, MHEAttention) and module.attention_type in MHE_TYPES:
            std = self.config.initializer_range
            mode = self.config.head_embedding_init
            if self.config.freeze_head_embeddings:  # fixed at the identity: every head equals the shared projection
                mode = HEAD_EMBEDDING_IDENTITY[module.attention_type]
            for embeddings in (module.q_head_embeddings, module.k_head_embeddings, module.v_head_embeddings):
                if mode == "ones":
                    init.ones_(embeddings)
                elif mode == "zeros":
                    init.zeros_(embeddings)
                elif mode == "default" and module.attention_type == "mhe_mul":
                    init.normal_(embeddings, mean=1.0, std=std)  # near 1: starts as a plain shared projection
                else:
                    init.normal_(embeddings, mean=0.0, std=std)


# MHE-MUL and MHE-ADD weights have the same names and shapes, so a config edited from one to the other would load the
# other's weights without a word and compute something else. The attention type is therefore recorded in the
# safetensors metadata of every saved weights file and checked on load (files without it, older ones, are trusted).
# The header is read and written here by hand (8-byte little-endian length, then JSON) because this file may import
# only torch and transformers; the tensors and their offsets are left as they are.
WEIGHTS_ATTENTION_TYPE_KEY = "mhe_attention_type"


def _read_safetensors_metadata(path: str) -> dict:
    with open(path, "rb") as file:
        (length,) = struct.unpack("<Q", file.read(8))
        return json.loads(file.read(length)).get("__metadata__") or {}


def _stamp_attention_type(path: str, attention_type: str) -> None:
    with open(path, "rb") as file:
        (length,) = struct.unpack("<Q", file.read(8))
        header = json.loads(file.read(length))
        header.setdefault("__metadata__", {})[WEIGHTS_ATTENTION_TYPE_KEY] = attention_type
        encoded = json.dumps(header, separators=(",", ":")).encode()
        encoded += b" " * (-len(encoded) % 8)  # keep the data section 8-byte aligned, as safetensors writes it
        stamped = path + ".stamping"
        with open(stamped, "wb") as out:
            out.write(struct.pack("<Q", len(encoded)))
            out.write(encoded)
            shutil.copyfileobj(file, out)
    os.replace(stamped, path)


def _check_weights_attention_type(config: MHEConfig, name_or_path, kwargs: dict) -> None:
    """Refuse weights saved by another attention type than the config's (see WEIGHTS_ATTENTION_TYPE_KEY)."""
    lookup = {key: kwargs[key] for key in ("cache_dir", "revision", "subfolder") if kwargs.get(key) is not None}
    lookup.update(local_files_only=True, _raise_exceptions_for_missing_entries=False)
    weights = cached_file(name_or_path, "model.safetensors", **lookup)
    if weights is None:  # sharded: the first shard carries the same stamp
        index = cached_file(name_or_path, "model.safetensors.index.json", **lookup)
        if index is None:
            return
        with open(index) as file:
            first_shard = sorted(set(json.load(file)["weight_map"].values()))[0]
        weights = cached_file(name_or_path, first_shard, **lookup)
        if weights is None:
            return
    saved_type = _read_safetensors_metadata(weights).get(WEIGHTS_ATTENTION_TYPE_KEY)
    if saved_type is not None and saved_type != config.attention_type:
        raise ValueError(
            f"The weights in {weights} were saved by an attention_type='{saved_type}' model, but the config says "
            f"attention_type='{config.attention_type}': they would load without an error and compute something "
            f"else. Restore attention_type='{saved_type}' in the config."
        )


def _freeze_loaded_head_embeddings(model: MHEPreTrainedModel) -> None:
    """Loading replaces every parameter by a new, trainable one: freeze the head embeddings again
    (`freeze_head_embeddings`), after checking that the checkpoint holds their identity values."""
    identity = float(HEAD_EMBEDDING_IDENTITY[model.config.attention_type] == "ones")
    for name, param in model.named_parameters():
        if name.endswith("_head_embeddings"):
            if not torch.all(param == identity):
                raise ValueError(
                    f"freeze_head_embeddings=True fixes the head embeddings at {identity}, but the checkpoint's "
                    f"{name} holds other values; load it with freeze_head_embeddings=False."
                )
            param.requires_grad_(False)


def _check_inputs(
    config: MHEConfig, input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds, past_length: int = 0
):
    """Turn the usual silent or cryptic failures (index errors deep inside torch) into errors that name the input.
    `past_length`: tokens already in a decoder's cache, which the attention mask and the positions also cover (a
    tensor for a StaticCache: under torch.compile the checks that need its value are skipped).

    Shapes are checked everywhere. Id ranges are checked only for tensors on the CPU: reading a tensor's min/max on
    an accelerator waits for the device at every step, so there an out-of-range id is left to the device's own
    index check (run one batch on the CPU to get the named error). Skipped under `torch.compile`/`torch.export`.
    """
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError("Pass exactly one of input_ids or inputs_embeds.")
    if input_ids is not None:
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must have shape (batch, seq_len), got {tuple(input_ids.shape)}.")
        shape = tuple(input_ids.shape)
    else:
        if inputs_embeds.dim() != 3 or inputs_embeds.shape[-1] != config.hidden_size:
            raise ValueError(
                f"inputs_embeds must have shape (batch, seq_len, hidden_size={config.hidden_size}), "
                f"got {tuple(inputs_embeds.shape)}."
            )
        shape = tuple(inputs_embeds.shape[:2])
    if shape[0] == 0 or shape[1] == 0:
        raise ValueError(f"The inputs are empty (batch size and sequence length must be at least 1), shape {shape}.")
    if isinstance(past_length, torch.Tensor) and not torch.compiler.is_compiling():
        past_length = int(past_length)  # a StaticCache counts its tokens in a tensor
    if not isinstance(past_length, torch.Tensor):  # (under torch.compile, reading it would break the graph)
        _check_total_length(config, shape, attention_mask, past_length)
    if attention_mask is not None and attention_mask.dim() not in (2, 4):
        raise ValueError(f"attention_mask must be 2D (batch, seq_len) or 4D, got {attention_mask.dim()}D.")
    for name, ids in (("token_type_ids", token_type_ids), ("position_ids", position_ids)):
        if ids is not None and ids.shape[-1] != shape[1]:
            raise ValueError(f"{name} has shape {tuple(ids.shape)} but the inputs have shape {shape}.")
    if torch.compiler.is_compiling():
        return  # the range checks below read values, which breaks graphs
    for name, ids, bound in (
        ("input_ids", input_ids, config.vocab_size),
        ("token_type_ids", token_type_ids, config.type_vocab_size),
        ("position_ids", position_ids, config.max_position_embeddings),
    ):
        if ids is not None and ids.numel() and ids.device.type == "cpu":
            low, high = ids.aminmax()
            if low < 0 or high >= bound:
                raise ValueError(
                    f"{name} must lie in [0, {bound}), got values in [{int(low)}, {int(high)}]; "
                    "check that the tokenizer matches the model's configuration."
                )


def _check_total_length(config: MHEConfig, shape: tuple, attention_mask, past_length: int) -> None:
    """The checks of `_check_inputs` that need the number of cached tokens."""
    total_length = past_length + shape[1]
    if total_length > config.max_position_embeddings:
        raise ValueError(
            f"Sequence length {total_length} (cached {past_length} + new {shape[1]}) exceeds "
            f"max_position_embeddings={config.max_position_embeddings}; truncate the inputs "
            "(e.g. tokenizer(..., truncation=True, max_length=...)) or generate fewer tokens."
            if past_length
            else f"Sequence length {shape[1]} exceeds max_position_embeddings={config.max_position_embeddings}; "
            "truncate the inputs (e.g. tokenizer(..., truncation=True, max_length=...))."
        )
    mask_shape = (shape[0], total_length)
    if attention_mask is not None and attention_mask.dim() == 2 and tuple(attention_mask.shape) != mask_shape:
        raise ValueError(
            f"attention_mask has shape {tuple(attention_mask.shape)} but the inputs have shape {shape}"
            + (f" after {past_length} cached tokens, so it must be {mask_shape}." if past_length else ".")
        )
    if attention_mask is not None and attention_mask.dim() == 4:
        # a decoder's cache that pre-allocates (StaticCache) makes the key axis longer than the tokens seen so far
        key_length = attention_mask.shape[-1]
        if (
            attention_mask.shape[0] != shape[0]
            or attention_mask.shape[-2] != shape[1]
            or not (key_length >= total_length if config.is_decoder else key_length == total_length)
        ):
            raise ValueError(
                f"A 4D attention_mask must have shape ({shape[0]}, 1, {shape[1]}, {total_length}), "
                f"got {tuple(attention_mask.shape)}."
            )


def _check_cache_arguments(cache, kwargs: dict) -> None:
    """Refuse a cache the model would not read. Every keyword argument the model does not name flows on through
    `**kwargs` to the attention kernels, which ignore what they do not know: a cache passed under another name (say
    `past_key_value=`, the attention layers' name in transformers 4) would be dropped without a word, and each chunk of a
    chunked prefill would attend to itself only."""
    if cache is not None and not isinstance(cache, Cache):
        raise TypeError(
            f"cache must be a transformers Cache (DynamicCache, StaticCache, ...), got {type(cache).__name__}; "
            "a legacy tuple of (key, value) pairs is not read."
        )
    for name, value in kwargs.items():
        if isinstance(value, Cache) or (name in UNREAD_CACHE_NAMES and value is not None):
            raise TypeError(
                f"Got a cache as `{name}=`, which this model does not read: pass it as `cache=` "
                f"(or `{CACHE_RENAMED[0]}=`, its deprecated name)."
            )


def _packed_sequences(config: MHEConfig, position_ids, attention_mask, batch_size: int) -> torch.Tensor | None:
    """Sequence index of each token when several sequences are packed into one row, else None.

    Packed batches (`DataCollatorWithFlattening`) carry no attention_mask, and their position_ids restart at 0 where
    a new sequence begins. Transformers' `find_packed_sequence_indices` finds those restarts; the attention mask then
    keeps each sequence to itself. Flash-attention kernels get the position_ids instead and split a single packed row
    into its sequences themselves; they cannot for several packed rows, which is refused.
    """
    if position_ids is None or attention_mask is not None:
        return None
    packed = find_packed_sequence_indices(position_ids.expand(batch_size, -1))
    if packed is not None and config._attn_implementation.startswith("flash_attention") and batch_size > 1:
        raise ValueError(
            f"Packed sequences (position_ids restarting within a row, no attention_mask) in a batch of {batch_size} "
            f"rows are not supported by attn_implementation='{config._attn_implementation}', which can only unpack a "
            "single row: pack everything into one row (DataCollatorWithFlattening does) or use sdpa/eager."
        )
    return packed


class MHEModel(MHEPreTrainedModel):
    """The bare MHE encoder, returning hidden states.

    `pooler_output` is None unless `add_pooling_layer=True` adds BERT's pooler ([CLS] dense + tanh). It is off by
    default because no checkpoint of this family trains one: pretraining never uses it, and the classifier heads keep
    their own (`classifier.dense`, see MHEClassificationHead). A pooler built here would be initialised afresh at
    every load, in a different way in every process.

    With `config.is_decoder` it is a causal decoder: causal masks, and a key/value cache (`cache`, `use_cache`)."""

    def __init__(self, config: MHEConfig, add_pooling_layer: bool = False):
        super().__init__(config)
        self.embeddings = MHEEmbeddings(config)
        self.layers = nn.ModuleList([MHELayer(config, layer_idx) for layer_idx in range(config.num_hidden_layers)])
        self.pooler = MHEPooler(config) if add_pooling_layer else None
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value):
        self.embeddings.word_embeddings = value

    @deprecate_kwarg(*CACHE_RENAMED)
    @merge_with_config_defaults
    @capture_outputs
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        cache: Cache | None = None,
        use_cache: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling | BaseModelOutputWithPoolingAndCrossAttentions:
        """
        Args:
            input_ids: token ids, (batch, seq_len). attention_mask: 1 for real tokens, 0 for padding, (batch, seq_len).
            token_type_ids: segment ids for sentence pairs. position_ids: absolute positions (default 0..seq_len-1);
                without an attention_mask, positions restarting at 0 inside a row mark packed sequences, which then
                attend only within themselves (as `DataCollatorWithFlattening` produces them).
            output_hidden_states: return the embedding output and every layer's output.
            output_attentions: return each layer's attention probabilities. Under sdpa that forward pass falls back to
                eager attention (with a warning); flash/flex attention cannot return them and raise.
            cache, use_cache (decoders only): the key/value cache of the tokens seen so far (attention_mask then
                covers those tokens too: (batch, cached + seq_len)); whether to create and return one. Any
                Transformers cache works (DynamicCache, StaticCache, also under torch.compile); `past_key_values=`,
                its deprecated name, is read too, with upstream models' FutureWarning.
        """
        if kwargs.get("output_attentions", self.config.output_attentions) and self.config._attn_implementation not in (
            "eager",
            "sdpa",
        ):
            raise ValueError(
                f"output_attentions=True needs attn_implementation='eager' (or 'sdpa', which falls back to eager for "
                f"that call); the model uses '{self.config._attn_implementation}'."
            )
        _check_cache_arguments(cache, kwargs)
        if self.config.is_decoder:
            return self._decode(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds, cache,
                                use_cache, **kwargs)  # fmt: skip
        if cache is not None:  # (use_cache is ignored: it defaults to config.use_cache for encoders too)
            raise ValueError("A key/value cache needs a decoder: set is_decoder=True (MHEForCausalLM does).")
        _check_inputs(self.config, input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds)
        hidden_states = self.embeddings(input_ids, token_type_ids, position_ids, inputs_embeds)
        packed = _packed_sequences(self.config, position_ids, attention_mask, hidden_states.shape[0])
        attention_mask = create_bidirectional_mask(
            config=self.config,
            inputs_embeds=hidden_states,
            attention_mask=attention_mask,
            and_mask_function=packed_sequence_mask_function(packed) if packed is not None else None,
        )
        for layer in self.layers:
            hidden_states = layer(hidden_states, attention_mask, position_ids=position_ids, **kwargs)
        return BaseModelOutputWithPooling(
            last_hidden_state=hidden_states,
            pooler_output=self.pooler(hidden_states) if self.pooler is not None else None,
        )

    def _decode(self, input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds, cache, use_cache, **kwargs):
        """The decoder's forward: causal masks (packed sequences included, from position_ids) and a key/value cache."""
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        past_length = cache.get_seq_length() if cache is not None else 0
        _check_inputs(
            self.config, input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds, past_length
        )
        if position_ids is None and cache is not None:
            # positions continue after the cached tokens (an addition, not a branch: a StaticCache's length is a tensor)
            reference = input_ids if input_ids is not None else inputs_embeds
            position_ids = (torch.arange(reference.shape[1], device=reference.device) + past_length)[None]
        hidden_states = self.embeddings(input_ids, token_type_ids, position_ids, inputs_embeds)
        attention_mask = create_causal_mask(
            config=self.config,
            inputs_embeds=hidden_states,
            attention_mask=attention_mask,
            cache=cache,
            position_ids=position_ids,
            # Decoding one token: an explicit mask makes sdpa lay the query heads along the query axis of their
            # key/value head ("pack_gqa") instead of copying the cache per head (see eager_attention_forward).
            allow_is_causal_skip=hidden_states.shape[1] > 1,
        )
        for layer in self.layers:
            hidden_states = layer(hidden_states, attention_mask, position_ids=position_ids, cache=cache, **kwargs)
        return BaseModelOutputWithPoolingAndCrossAttentions(
            last_hidden_state=hidden_states,
            pooler_output=self.pooler(hidden_states) if self.pooler is not None else None,
            cache=cache,
        )


class MHELMPredictionHead(nn.Module):
    """BERT's masked-LM head: dense + activation + LayerNorm, then a decoder tied to the word embeddings."""

    def __init__(self, config: MHEConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = ACT2FN[config.hidden_act]
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)  # weight tied, bias of its own

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.LayerNorm(self.act(self.dense(hidden_states))))


class MHEForMaskedLM(MHEPreTrainedModel):
    _tied_weights_keys = {"lm_head.decoder.weight": "model.embeddings.word_embeddings.weight"}

    def __init__(self, config: MHEConfig):
        super().__init__(config)
        self.model = MHEModel(config)
        self.lm_head = MHELMPredictionHead(config)
        self.post_init()

    def get_output_embeddings(self):
        return self.lm_head.decoder

    def set_output_embeddings(self, new_embeddings):
        self.lm_head.decoder = new_embeddings

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        **kwargs,
    ) -> MaskedLMOutput:
        """labels: token ids to predict at masked positions, -100 elsewhere (as DataCollatorForLanguageModeling makes).
        With `config.sparse_prediction` and labels, the logits are those of the masked positions only, in row-major
        order: shape (number of labels != -100, vocab_size)."""
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            return_dict=True,
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state
        if self.config.sparse_prediction and labels is not None:
            # Only the masked positions have a target: skip the vocabulary projection everywhere else.
            predicted = labels != -100
            hidden_states, labels = hidden_states[predicted], labels[predicted]
        logits = self.lm_head(hidden_states)
        loss = None
        if labels is not None:
            loss = self.loss_function(logits, labels, vocab_size=self.config.vocab_size, **kwargs)
        return MaskedLMOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions)


class MHEForCausalLM(MHEPreTrainedModel, GenerationMixin):
    """A causal language model: the MHE stack with causal masks, a key/value cache and the masked-LM head predicting
    the next token. For MHE-MUL/MHE-ADD (and MQA, single-head) the cache holds one (batch, 1, seq, head_dim) key and
    value per layer, for GQA (batch, num_key_value_heads, ...), for MHA (batch, num_attention_heads, ...): the
    config's `num_key_value_heads`, from which a StaticCache (`generate(..., cache_implementation="static")`, or
    `torch.compile` of the forward pass) sizes the buffers it allocates ahead."""

    _tied_weights_keys = {"lm_head.decoder.weight": "model.embeddings.word_embeddings.weight"}

    def __init__(self, config: MHEConfig):
        if not DECODER_SUPPORTED:
            raise ImportError(
                f"MHEForCausalLM needs transformers>={DECODER_MIN_TRANSFORMERS} (its cache API); transformers "
                f"{transformers.__version__} is installed. The encoder heads work with it."
            )
        if not config.is_decoder:
            if config.architectures and "MHEForCausalLM" not in config.architectures:
                # warm-starting from, say, a masked-LM checkpoint: its bidirectional attention becomes causal
                logger.warning(f"Building MHEForCausalLM from a {config.architectures[0]} config: attention becomes causal.")
            config.is_decoder = True
        super().__init__(config)
        self.model = MHEModel(config)
        self.lm_head = MHELMPredictionHead(config)
        self.post_init()

    def get_output_embeddings(self):
        return self.lm_head.decoder

    def set_output_embeddings(self, new_embeddings):
        self.lm_head.decoder = new_embeddings

    @deprecate_kwarg(*CACHE_RENAMED)
    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        cache: Cache | None = None,
        use_cache: bool | None = None,
        labels: torch.LongTensor | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        """labels: the input ids (-100 where no loss is wanted); the loss shifts them by one inside.
        logits_to_keep: compute logits for the last that many positions only (0: all), as generate() asks."""
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            cache=cache,
            use_cache=use_cache,
            return_dict=True,
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden_states[:, keep, :])
        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)
        return CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )


class MHEForSequenceClassification(MHEPreTrainedModel):
    """[CLS] -> `classifier` (pooler dense + tanh, dropout, out_proj; see MHEClassificationHead). Regression, single-
    and multi-label `problem_type`s as in BERT."""

    _checkpoint_key_mapping = CLASSIFIER_KEY_MAPPING

    def __init__(self, config: MHEConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.model = MHEModel(config)
        self.classifier = MHEClassificationHead(config, config.num_labels)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput:
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            return_dict=True,
            **kwargs,
        )
        logits = self.classifier(outputs.last_hidden_state)
        loss = None
        if labels is not None:
            loss = self.loss_function(labels, logits, self.config, **kwargs)
        return SequenceClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


class MHEForTokenClassification(MHEPreTrainedModel):
    def __init__(self, config: MHEConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.model = MHEModel(config)
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        **kwargs,
    ) -> TokenClassifierOutput:
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            return_dict=True,
            **kwargs,
        )
        logits = self.classifier(self.dropout(outputs.last_hidden_state))
        loss = None
        if labels is not None:
            loss = self.loss_function(logits, labels, self.config, **kwargs)
        return TokenClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


class MHEForQuestionAnswering(MHEPreTrainedModel):
    """Extractive QA: start and end logits for every token."""

    def __init__(self, config: MHEConfig):
        super().__init__(config)
        self.model = MHEModel(config)
        self.qa_outputs = nn.Linear(config.hidden_size, 2)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        start_positions: torch.LongTensor | None = None,
        end_positions: torch.LongTensor | None = None,
        **kwargs,
    ) -> QuestionAnsweringModelOutput:
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            return_dict=True,
            **kwargs,
        )
        start_logits, end_logits = self.qa_outputs(outputs.last_hidden_state).unbind(dim=-1)
        loss = None
        if start_positions is not None and end_positions is not None:
            loss = self.loss_function(start_logits, end_logits, start_positions, end_positions, **kwargs)
        return QuestionAnsweringModelOutput(
            loss=loss,
            start_logits=start_logits.contiguous(),
            end_logits=end_logits.contiguous(),
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )


class MHEForMultipleChoice(MHEPreTrainedModel):
    """Inputs of shape (batch, num_choices, seq_len); one score per choice from [CLS] through `classifier` (see
    MHEClassificationHead)."""

    accepts_loss_kwargs = False  # plain mean cross-entropy over examples, not over tokens
    _checkpoint_key_mapping = CLASSIFIER_KEY_MAPPING

    def __init__(self, config: MHEConfig):
        super().__init__(config)
        self.model = MHEModel(config)
        self.classifier = MHEClassificationHead(config, 1)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        **kwargs,
    ) -> MultipleChoiceModelOutput:
        reference = input_ids if input_ids is not None else inputs_embeds
        if reference is None or reference.dim() < 3:
            raise ValueError("MHEForMultipleChoice expects inputs of shape (batch, num_choices, seq_len).")
        num_choices = reference.shape[1]

        def flatten(tensor):  # (batch, num_choices, seq_len, ...) -> (batch * num_choices, seq_len, ...)
            return tensor.flatten(0, 1) if tensor is not None else None

        outputs = self.model(
            input_ids=flatten(input_ids),
            attention_mask=flatten(attention_mask),
            token_type_ids=flatten(token_type_ids),
            position_ids=flatten(position_ids),
            inputs_embeds=flatten(inputs_embeds),
            return_dict=True,
            **kwargs,
        )
        logits = self.classifier(outputs.last_hidden_state).view(-1, num_choices)
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return MultipleChoiceModelOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


class Head(NamedTuple):
    auto_class: str  # the Auto class that loads the head (its key in `config.auto_map`)
    task: str | None  # its name for the converter (`--task`), matched by suffix against a source's architecture;
    # None: the converter (BERT-family encoders) does not produce this head
    pipeline_tag: str | None  # the Hub pipeline it serves, if any


# One row per head; everything else is derived from this table: `AUTO_MAP`, the package's Auto registrations
# (mhe_transformers/__init__.py), the converter's tasks and the model card's pipeline tags.
HEADS = {
    MHEModel: Head("AutoModel", "base", "feature-extraction"),
    MHEForMaskedLM: Head("AutoModelForMaskedLM", "masked-lm", "fill-mask"),
    MHEForSequenceClassification: Head(
        "AutoModelForSequenceClassification", "sequence-classification", "text-classification"
    ),
    MHEForTokenClassification: Head("AutoModelForTokenClassification", "token-classification", "token-classification"),
    MHEForQuestionAnswering: Head("AutoModelForQuestionAnswering", "question-answering", "question-answering"),
    MHEForMultipleChoice: Head("AutoModelForMultipleChoice", "multiple-choice", None),
    MHEForCausalLM: Head("AutoModelForCausalLM", None, "text-generation"),
}

# Every Auto class a checkpoint of this family can be loaded with; written into `config.auto_map` on save.
AUTO_MAP = {
    "AutoConfig": "configuration_mhe.MHEConfig",
    **{head.auto_class: f"modeling_mhe.{model_class.__name__}" for model_class, head in HEADS.items()},
}


__all__ = [
    "HEADS",
    "MHEPreTrainedModel",
    "MHEModel",
    "MHEForMaskedLM",
    "MHEForCausalLM",
    "MHEForSequenceClassification",
    "MHEForTokenClassification",
    "MHEForQuestionAnswering",
    "MHEForMultipleChoice",
]
