# Copyright 2026 The mhe-transformers authors. Licensed under the Apache License, Version 2.0.
"""Configuration of the MHE model family (remote code: imports only transformers and huggingface_hub).

MHE (Multiple Head Embeddings; Xue & Aletras, Findings of EMNLP 2023, arXiv:2310.07911) replaces the per-head
query/key/value projections of multi-head attention with one shared projection of the size of a single head plus a
small learned embedding per head. The same configuration also builds the baselines MHE is compared against, so that
every comparison is a single `attention_type` switch.
"""

from typing import Literal, get_args

import transformers
from huggingface_hub.dataclasses import strict
from packaging import version
from transformers import PreTrainedConfig

# Checked here, the first file a loader imports: on older releases the dataclass config below fails with an obscure
# error. 5.4 is the oldest release the two code files were verified on (5.0-5.3 lack dataclass configs).
SUPPORTED_TRANSFORMERS = (version.parse("5.4.0"), version.parse("6.0.0"))
if not SUPPORTED_TRANSFORMERS[0] <= version.parse(transformers.__version__) < SUPPORTED_TRANSFORMERS[1]:
    raise ImportError(
        f"The MHE model code supports transformers>={SUPPORTED_TRANSFORMERS[0]},<{SUPPORTED_TRANSFORMERS[1]}; "
        f"transformers {transformers.__version__} is installed. Run `pip install 'transformers>=5.4,<6'`."
    )
# The decoder (MHEForCausalLM) follows the cache API of transformers 5.24 (`cache=`, no `cache_position`); building
# one on an older release raises (modeling_mhe); the encoders work from SUPPORTED_TRANSFORMERS[0].
DECODER_MIN_TRANSFORMERS = version.parse("5.24.0")
DECODER_SUPPORTED = version.parse(transformers.__version__) >= DECODER_MIN_TRANSFORMERS

AttentionType = Literal["mhe_mul", "mhe_add", "mha", "mqa", "gqa", "sha"]
HeadEmbeddingInit = Literal["default", "normal", "ones", "zeros"]
ATTENTION_TYPES: tuple[str, ...] = get_args(AttentionType)
HEAD_EMBEDDING_INITS: tuple[str, ...] = get_args(HeadEmbeddingInit)
PositionEmbeddingType = Literal["absolute", "relative_bias"]
POSITION_EMBEDDING_TYPES: tuple[str, ...] = get_args(PositionEmbeddingType)
MHE_TYPES = ("mhe_mul", "mhe_add")  # one shared Q/K/V projection of a single head's size, plus per-head embeddings
# The head-embedding value that leaves the shared projection unchanged (`freeze_head_embeddings`: all heads identical).
HEAD_EMBEDDING_IDENTITY = {"mhe_mul": "ones", "mhe_add": "zeros"}


def default_num_key_value_heads(num_attention_heads: int) -> int:
    """GQA's key/value heads when a recipe gives none (`--attention_type gqa`, the benchmark): a quarter of the heads
    (BERT-base: 12 -> 3), but at least two so that GQA differs from MQA, rounded down to a divisor of the head
    count. The config itself never guesses: `MHEConfig(attention_type="gqa")` needs `num_key_value_heads`."""
    groups = max(2, num_attention_heads // 4)
    while num_attention_heads % groups:
        groups -= 1
    return groups


@strict
class MHEConfig(PreTrainedConfig):
    r"""
    A BERT-style bidirectional encoder (or, with `is_decoder=True`, a causal decoder) whose attention is one of:

    - `"mhe_mul"`: shared Q/K/V projections of one head size, multiplied per head by learned embeddings (default);
    - `"mhe_add"`: the same, with the per-head embeddings added;
    - `"mha"`: standard multi-head attention; `"mqa"`: multi-query (one key/value head);
    - `"gqa"`: grouped-query with `num_key_value_heads` key/value heads; `"sha"`: a single head of size `head_dim`.

    Args:
        head_dim (`int`, *optional*): size of each head; `hidden_size // num_attention_heads` when not given.
        num_key_value_heads (`int`, *optional*): key/value heads of `"gqa"`; must divide `num_attention_heads`.
            Ignored (and set to what the attention type implies) for the other types.
        head_embedding_init (`str`): `"default"` draws MHE-ADD embeddings from `N(0, initializer_range)` and MHE-MUL
            ones from `1 + N(0, initializer_range)` (so MUL starts close to a plain shared projection);
            `"normal"` uses `N(0, initializer_range)` for both, `"ones"` / `"zeros"` set constants.
        attention_bias (`bool`): bias in the Q/K/V and output projections (BERT uses biases).
        is_decoder (`bool`): causal attention with a key/value cache, as `MHEForCausalLM` needs (it sets it).
        use_cache (`bool`): whether a decoder returns its key/value cache by default.
        position_embedding_type (`str`): `"absolute"` (BERT's learned position embeddings, added to the word
            embeddings) or `"relative_bias"`: no absolute embeddings; each attention layer adds a learned bias per
            head and per key-query offset (clipped to +-`relative_attention_max_distance`) to the attention logits,
            initialised at zero (see `relative_attention_neighbour_init`).
        relative_attention_max_distance (`int`): offsets beyond it share one bias (`"relative_bias"` only).
        relative_attention_per_head (`bool`): `"relative_bias"` only. True: one bias table per head (each head can
            learn its own positional pattern, a channel that tells heads apart by itself). False: ONE table per layer,
            shared by all its heads, so every head of every attention type gets the same positional information.
        relative_attention_neighbour_init (`float`): `"relative_bias"` only. When positive, attention starts on the
            neighbours: with a bias per head, each head's bias starts at this value on one offset (head 0: the
            previous token, head 1: the next, head 2: two back, head 3: two ahead, ...); with a shared bias, the one
            table starts at this value on both immediate neighbours (offsets -1 and +1), for every head. Zero
            elsewhere. With the default 0.0 attention starts uniform, and a small masked-LM encoder then learns
            nothing from its context for hundreds of steps: a masked token's neighbours reach it averaged over the
            whole sequence, too weakly to learn from (docs/results/demo.md). 8.0 puts about 97%
            of a head's weight on its neighbour (per head), or about 49% on each of the two (shared).
        freeze_head_embeddings (`bool`): MHE types only. Fix the head embeddings at their identity values (MHE-MUL: 1,
            MHE-ADD: 0) and exclude them from training (`requires_grad=False`), so all heads are identical: the
            ablation that measures what the head embeddings buy. They stay parameters in the checkpoint.
        sparse_prediction (`bool`): when `MHEForMaskedLM` gets `labels`, run the prediction head on the masked
            positions only and return logits of shape (masked tokens, vocab_size) (as ModernBERT does). The loss is
            the same; a training step is cheaper, since the head over the vocabulary dominates a small model.

    The other fields mean what they mean in `BertConfig`.

    Example:

    ```python
    >>> from mhe_transformers import MHEConfig, MHEModel
    >>> model = MHEModel(MHEConfig(attention_type="mhe_mul"))
    ```
    """

    model_type = "mhe"

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    head_dim: int | None = None
    attention_type: AttentionType = "mhe_mul"
    num_key_value_heads: int | None = None
    head_embedding_init: HeadEmbeddingInit = "default"
    attention_bias: bool = True
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float | int = 0.1
    attention_probs_dropout_prob: float | int = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int | None = 0
    tie_word_embeddings: bool = True
    classifier_dropout: float | int | None = None
    is_decoder: bool = False
    use_cache: bool = True
    position_embedding_type: PositionEmbeddingType = "absolute"
    relative_attention_max_distance: int = 16
    relative_attention_per_head: bool = True
    relative_attention_neighbour_init: float | int = 0.0
    freeze_head_embeddings: bool = False
    sparse_prediction: bool = False

    def __post_init__(self, **kwargs):
        # Derived fields only; every check is in `validate_mhe`, which `@strict` runs once the config is built.
        if self.head_dim is None and self.num_attention_heads > 0 and self.hidden_size % self.num_attention_heads == 0:
            self.head_dim = self.hidden_size // self.num_attention_heads
        self.num_key_value_heads = self.num_key_value_heads_for_type()
        super().__post_init__(**kwargs)

    def __setattr__(self, name, value):
        super().__setattr__(name, value)
        # Key/value heads follow the attention type: changing the type of a built config must not leave the old
        # type's count (an "mha" with one key/value head would be MQA in disguise, and would not reload).
        if name == "attention_type" and "num_key_value_heads" in self.__dict__ and value != "gqa":
            super().__setattr__("num_key_value_heads", self.num_key_value_heads_for_type())

    def num_key_value_heads_for_type(self) -> int | None:
        return {
            "mha": self.num_attention_heads,
            "gqa": self.num_key_value_heads,
            "sha": 1,
        }.get(self.attention_type, 1)  # mqa, mhe_add and mhe_mul share one key/value head

    def validate_mhe(self):
        """The checks across fields (`@strict` checks each field's type and `Literal` choices on its own); run by
        `@strict` after `__init__` and by `save_pretrained`. Raises naming the first invalid field."""
        if self.relative_attention_max_distance <= 0:
            raise ValueError(
                f"relative_attention_max_distance must be a positive integer, got {self.relative_attention_max_distance}."
            )
        if self.relative_attention_neighbour_init < 0:
            raise ValueError(
                f"relative_attention_neighbour_init must be non-negative, got {self.relative_attention_neighbour_init}."
            )
        if self.relative_attention_neighbour_init and self.position_embedding_type != "relative_bias":
            raise ValueError(
                "relative_attention_neighbour_init initialises the relative position bias: it needs "
                f"position_embedding_type='relative_bias', got {self.position_embedding_type!r}."
            )
        if not self.relative_attention_per_head and self.position_embedding_type != "relative_bias":
            raise ValueError(
                "relative_attention_per_head=False shares the relative position bias across heads: it needs "
                f"position_embedding_type='relative_bias', got {self.position_embedding_type!r}."
            )
        if self.freeze_head_embeddings:
            if self.attention_type not in MHE_TYPES:
                raise ValueError(
                    f"freeze_head_embeddings fixes MHE's head embeddings: it needs attention_type in {MHE_TYPES}, "
                    f"got {self.attention_type!r}."
                )
            identity = HEAD_EMBEDDING_IDENTITY[self.attention_type]
            if self.head_embedding_init not in ("default", identity):
                raise ValueError(
                    f"freeze_head_embeddings fixes {self.attention_type}'s head embeddings at {identity!r}; "
                    f"head_embedding_init={self.head_embedding_init!r} contradicts it (use 'default' or {identity!r})."
                )
        for name in (
            "vocab_size",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "max_position_embeddings",
            "type_vocab_size",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}.")
        if self.head_dim is not None and self.head_dim <= 0:
            raise ValueError(f"head_dim must be a positive integer or None, got {self.head_dim}.")
        if self.head_dim is None:  # left unset by __post_init__: hidden_size is not a multiple of the heads
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                f"({self.num_attention_heads}) when head_dim is not given; set head_dim explicitly otherwise."
            )
        if self.attention_type == "gqa":
            kv_heads = self.num_key_value_heads
            if kv_heads is None or kv_heads <= 0 or self.num_attention_heads % kv_heads != 0:
                raise ValueError(
                    f"num_key_value_heads must be a positive divisor of num_attention_heads "
                    f"({self.num_attention_heads}) for attention_type='gqa', got {kv_heads}."
                )
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < 1:
                raise ValueError(f"{name} must be in [0, 1), got {value}.")
        if self.initializer_range < 0:
            raise ValueError(f"initializer_range must be non-negative, got {self.initializer_range}.")
        if self.layer_norm_eps <= 0:
            raise ValueError(f"layer_norm_eps must be positive, got {self.layer_norm_eps}.")
        if self.pad_token_id is not None and not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(f"pad_token_id must be None or in [0, vocab_size={self.vocab_size}), got {self.pad_token_id}.")


__all__ = ["ATTENTION_TYPES", "HEAD_EMBEDDING_IDENTITY", "MHE_TYPES", "MHEConfig", "default_num_key_value_heads"]
