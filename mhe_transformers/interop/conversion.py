# Copyright 2026 The mhe-transformers authors. Licensed under the Apache License, Version 2.0.
"""Convert a pretrained BERT-family (multi-head attention) checkpoint into an MHE model (docs/conversion.md).

Everything except the query/key/value projections maps one to one and is copied bit for bit. Each layer's per-head
Q/K/V weights are replaced by one shared projection plus per-head embeddings fitted by least squares, after a
per-head change of basis that leaves the original model's function unchanged ("alignment"). docs/conversion.md
states the method; in short, with every head's weights written `x @ W` and its bias appended as a last row
(`W_i` of shape (hidden + 1, head_dim)):

    MUL:  min over W, e_i   sum_i ||W_i - W diag(e_i)||^2     solved exactly, column by column (a rank-1 problem)
    ADD:  min over W, e_i   sum_i ||W_i - (W + bias row e_i)||^2 = mean of the heads, biases reproduced exactly
    alignment: W_i^Q, W_i^K -> W_i^Q R_i, W_i^K R_i and W_i^V -> W_i^V S_i, W_O,i -> S_i^T W_O,i (R_i, S_i orthogonal),
    chosen by alternating the exact fit with an orthogonal Procrustes step; the objective never increases.
"""

from __future__ import annotations

import copy
import json
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import transformers
from torch import nn
from transformers import AutoConfig, AutoTokenizer, PreTrainedModel
from transformers.activations import ACT2FN

from ..data import text
from ..data.wordnet import wordnet_texts
from ..models.mhe.configuration_mhe import MHE_TYPES, MHEConfig
from ..models.mhe.heads import head_for
from ..models.mhe.modeling_mhe import (
    HEADS,
    MHEForMaskedLM,
    MHEForQuestionAnswering,
    MHEForSequenceClassification,
    MHEForTokenClassification,
    MHEModel,
    MHEPreTrainedModel,
)
from ..utils import cli
from ..utils.run_folder import atomic_directory, check_output_dir, claim_output_dir
from .distillation import RecoveryArguments, distill_hidden_states

SUPPORTED_MODEL_TYPES = ("bert", "roberta")
REPORT_NAME = "conversion_report.json"

# task -> (Auto class that loads the source, MHE class that receives it), from modeling_mhe.HEADS. The task is read
# from the source's `config.architectures` (e.g. "BertForMaskedLM" -> "masked-lm") unless given.
TASKS = {
    head.task: (getattr(transformers, head.auto_class), model_class) for model_class, head in HEADS.items() if head.task
}


class ConversionError(ValueError):
    """The source checkpoint (or a conversion option) cannot be converted; raised before anything is written."""


# ----------------------------------------------------------------------------------------------------------------
# Per-layer fitting. Pure tensor algebra in float64; every head's weights in `x @ W` form with the bias as last row.
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class HeadProjections:
    """The per-head weights of one attention layer.

    query/key/value: (heads, hidden + 1, head_dim), head i's `[W_i; b_i]` so that `[x, 1] @ W_i` is its projection.
    output: (heads, head_dim, hidden), the rows of the output projection that read head i (its bias is not per head).
    """

    query: torch.Tensor
    key: torch.Tensor
    value: torch.Tensor
    output: torch.Tensor

    @classmethod
    def from_linears(cls, query: nn.Linear, key: nn.Linear, value: nn.Linear, output: nn.Linear, num_heads: int):
        head_dim = query.out_features // num_heads
        output_weight = output.weight.detach().double()  # (hidden, heads * head_dim)
        return cls(
            query=split_heads(query, num_heads),
            key=split_heads(key, num_heads),
            value=split_heads(value, num_heads),
            output=output_weight.T.reshape(num_heads, head_dim, -1),
        )


def split_heads(linear: nn.Linear, num_heads: int) -> torch.Tensor:
    """nn.Linear(hidden, heads * head_dim) -> (heads, hidden + 1, head_dim); head i owns output features i*d:(i+1)*d,
    the layout that `.view(batch, seq, heads, head_dim)` in BERT's attention reads."""
    augmented = torch.cat([linear.weight.detach().double().T, linear.bias.detach().double()[None]])
    return augmented.reshape(augmented.shape[0], num_heads, -1).transpose(0, 1)


@dataclass
class SharedProjection:
    """MHE's projection: `weight` (hidden + 1, head_dim), the shared `[W; b]`; `head_embeddings` (heads, head_dim)."""

    weight: torch.Tensor
    head_embeddings: torch.Tensor

    def per_head(self, attention_type: str) -> torch.Tensor:
        """The (heads, hidden + 1, head_dim) per-head weights this projection is equivalent to."""
        if attention_type == "mhe_mul":  # [x, 1] W diag(e_i)
            return self.weight[None] * self.head_embeddings[:, None, :]
        heads = self.weight[None].repeat(len(self.head_embeddings), 1, 1)  # mhe_add: x W + b + e_i
        heads[:, -1] += self.head_embeddings
        return heads


def fit_shared_projection(
    heads: torch.Tensor, attention_type: str, input_moment: torch.Tensor | None = None
) -> SharedProjection:
    """The least-squares optimum of `sum_i ||heads[i] - fitted_i||^2` over the MHE projections of `attention_type`.

    The norm is the Frobenius norm, or with `input_moment` G (the second moment `X^T X / n` of the layer's inputs
    `X = [x, 1]`, shape (hidden + 1, hidden + 1)) the input-weighted norm `||A||_G^2 = trace(A^T G A)`: the mean
    squared error of the fitted heads' outputs on those inputs, so directions the layer's inputs actually take count
    and unused ones do not.
    MUL: the objective splits over columns j: `||M_j - w_j e_j^T||^2` with
    `M_j = [heads[0][:, j], ..., heads[n-1][:, j]]` of shape (hidden + 1, heads): a best rank-1 approximation, solved
    exactly by M_j's top singular pair (Eckart-Young; in the G-norm, of `G^(1/2) M_j`: the top eigenvector r of
    `M_j^T G M_j` and `w_j = M_j r`). The scale between w_j and e_j is free: e_j is set to root-mean-square 1 and
    positive sum (like MUL's initialisation near 1).
    ADD: `W = mean_i W_i` (the embeddings' mean is absorbed into the bias row, so they are centred); head i's
    embedding is the least-squares coefficient of `D_i = W_i - W` on the bias row `u`: `e_i = D_i^T G u / u^T G u`,
    which is D_i's bias row, `b_i - mean_i b_i`, in the Frobenius norm (G = I): the biases are then reproduced exactly.
    """
    num_heads = heads.shape[0]
    if attention_type == "mhe_add":
        weight = heads.mean(0)
        deviations = heads - weight
        if input_moment is None:
            return SharedProjection(weight, deviations[:, -1])
        return SharedProjection(weight, deviations.transpose(1, 2) @ input_moment[:, -1] / input_moment[-1, -1])
    columns = heads.permute(2, 1, 0).contiguous()  # (head_dim, hidden + 1, heads): M_j for every column j
    # Top right singular vector of M_j = top eigenvector of the small (heads x heads) Gram matrix M_j^T (G) M_j.
    _, eigenvectors = torch.linalg.eigh(columns.transpose(1, 2) @ weighted(columns, input_moment))
    right = eigenvectors[..., -1]  # (head_dim, heads), unit norm
    left = (columns @ right[..., None])[..., 0]  # (head_dim, hidden + 1): M_j r, the best w_j for that e_j
    sign = torch.where(right.sum(-1, keepdim=True) < 0, -1.0, 1.0).to(right)
    scale = sign * num_heads**0.5
    return SharedProjection(weight=(left / scale).T, head_embeddings=(right * scale).T)


def orthogonal_procrustes(
    pairs: Sequence[tuple[torch.Tensor, torch.Tensor]], input_moment: torch.Tensor | None = None
) -> torch.Tensor:
    """The orthogonal R minimising `sum ||source @ R - target||^2` over the (source, target) pairs (Frobenius, or
    the G-norm of fit_shared_projection), batched over the leading (head) dimension: U V^T from the SVD of
    `sum source^T G target` (Schönemann 1966)."""
    cross = sum(source.transpose(-1, -2) @ weighted(target, input_moment) for source, target in pairs)
    u, _, vh = torch.linalg.svd(cross)
    return u @ vh


def weighted(heads: torch.Tensor, input_moment: torch.Tensor | None) -> torch.Tensor:
    """G @ heads (heads itself in the Frobenius norm, G = I)."""
    return heads if input_moment is None else input_moment @ heads


def squared_norm(heads: torch.Tensor, input_moment: torch.Tensor | None = None) -> float:
    """sum over heads of `||heads_i||^2`, Frobenius or in the G-norm (`trace(H^T G H)`)."""
    return float((heads * weighted(heads, input_moment)).sum())


def relative_error(heads: torch.Tensor, fitted: torch.Tensor, input_moment: torch.Tensor | None = None) -> float:
    """||heads - fitted|| / ||heads|| over all heads together (Frobenius, or in the G-norm)."""
    return (squared_norm(heads - fitted, input_moment) / squared_norm(heads, input_moment)) ** 0.5


@dataclass
class LayerFit:
    query: SharedProjection
    key: SharedProjection
    value: SharedProjection
    aligned: HeadProjections  # the original heads in the aligned bases: the same function as the original layer
    fit_error: dict[str, float]  # relative error of the final fit's weights, for query / key / value
    unaligned_fit_error: dict[str, float]  # the same fit without alignment (iteration 0), for comparison
    iterations: int
    # With an input moment: the relative error of the heads' outputs on the layer's inputs (what the fit minimised).
    output_fit_error: dict[str, float] | None = None


def align_and_fit(
    projections: HeadProjections,
    attention_type: str,
    max_iterations: int = 100,
    tolerance: float = 1e-7,
    input_moment: torch.Tensor | None = None,
) -> LayerFit:
    """Choose each head's basis and fit the MHE projections jointly, by block coordinate descent on

        sum_i ||W_i^Q R_i - fit^Q_i||^2 + ||W_i^K R_i - fit^K_i||^2 + ||W_i^V S_i - fit^V_i||^2

    over orthogonal R_i, S_i and the MHE projections (Frobenius norms, or with `input_moment` the input-weighted
    norm of fit_shared_projection). Query and key share R_i: `(x W_i^Q R_i)(x W_i^K R_i)^T` keeps
    every attention logit, and `S_i^T` is applied to head i's rows of the output projection, which keeps the layer's
    output (R^-T = R for orthogonal R). Each step is an exact minimisation (`fit_shared_projection` given the bases,
    `orthogonal_procrustes` given the fit), so the objective never increases; starting from the identity, the result
    is never worse than fitting without alignment and is exact when the heads already have MHE form. Iteration
    stops when the objective improves by less than `tolerance` (relative) or after `max_iterations` Procrustes steps.
    """
    check_attention_type(attention_type)
    query, key, value = projections.query, projections.key, projections.value
    num_heads, _, head_dim = query.shape
    moment = None if input_moment is None else input_moment.to(query.dtype)
    identity = torch.eye(head_dim, dtype=query.dtype).expand(num_heads, head_dim, head_dim)
    rotation_qk, rotation_v = identity, identity
    unaligned_fit_error, previous_objective, iterations = None, float("inf"), 0
    # Small matrices: more than one thread only adds synchronisation (and stalls badly on a busy machine).
    num_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        while True:
            aligned = {"query": query @ rotation_qk, "key": key @ rotation_qk, "value": value @ rotation_v}
            shared = {name: fit_shared_projection(heads, attention_type, moment) for name, heads in aligned.items()}
            fitted = {name: shared[name].per_head(attention_type) for name in aligned}
            errors = {name: relative_error(aligned[name], fitted[name]) for name in aligned}
            unaligned_fit_error = unaligned_fit_error or errors
            objective = sum(squared_norm(aligned[name] - fitted[name], moment) for name in aligned)
            converged = objective >= previous_objective * (1 - tolerance)
            if converged or iterations == max_iterations:
                break
            previous_objective, iterations = objective, iterations + 1
            rotation_qk = orthogonal_procrustes([(query, fitted["query"]), (key, fitted["key"])], moment)
            rotation_v = orthogonal_procrustes([(value, fitted["value"])], moment)
    finally:
        torch.set_num_threads(num_threads)
    output_fit_error = None
    if moment is not None:
        output_fit_error = {name: relative_error(aligned[name], fitted[name], moment) for name in aligned}
    return LayerFit(
        query=shared["query"],
        key=shared["key"],
        value=shared["value"],
        aligned=HeadProjections(
            aligned["query"], aligned["key"], aligned["value"], rotation_v.transpose(1, 2) @ projections.output
        ),
        fit_error=errors,
        unaligned_fit_error=unaligned_fit_error,
        iterations=iterations,
        output_fit_error=output_fit_error,
    )


# ----------------------------------------------------------------------------------------------------------------
# Whole models.
# ----------------------------------------------------------------------------------------------------------------


def position_offset(source_config) -> int:
    """RoBERTa numbers real tokens from `pad_token_id + 1` (its pads get position `pad_token_id`); MHE from 0."""
    return source_config.pad_token_id + 1 if source_config.model_type == "roberta" else 0


def check_attention_type(attention_type: str) -> None:
    """Conversion targets the MHE types only: the baselines have no shared projection to fit."""
    if attention_type not in MHE_TYPES:
        raise ConversionError(f"attention_type must be one of {MHE_TYPES}, got {attention_type!r}.")


def check_source_config(source_config, attention_type: str) -> None:
    """Raise a ConversionError naming the first property of the source that this conversion cannot map."""
    check_attention_type(attention_type)
    model_type = getattr(source_config, "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ConversionError(
            f"Cannot convert a {model_type!r} model: only BERT-family encoders ({', '.join(SUPPORTED_MODEL_TYPES)}) "
            "have the layout MHE maps onto (post-LayerNorm encoder, absolute positions, Q/K/V/output projections)."
        )
    hidden_size, num_heads = source_config.hidden_size, source_config.num_attention_heads
    if num_heads <= 0 or hidden_size % num_heads != 0:
        raise ConversionError(
            f"hidden_size={hidden_size} is not a multiple of num_attention_heads={num_heads}: the source's heads "
            "cannot be split into equal head_dim blocks, so they cannot be mapped onto MHE heads."
        )
    position_embedding_type = getattr(source_config, "position_embedding_type", "absolute")
    if position_embedding_type != "absolute":
        raise ConversionError(
            f"position_embedding_type={position_embedding_type!r} is not supported: MHE uses absolute positions."
        )
    if getattr(source_config, "is_decoder", False) or getattr(source_config, "add_cross_attention", False):
        raise ConversionError("Decoder / cross-attention BERT checkpoints are not supported: MHE is an encoder.")
    if not isinstance(source_config.hidden_act, str) or source_config.hidden_act not in ACT2FN:
        raise ConversionError(f"hidden_act={source_config.hidden_act!r} is not a Transformers activation name.")
    if model_type == "roberta" and source_config.max_position_embeddings <= position_offset(source_config):
        raise ConversionError(
            f"max_position_embeddings={source_config.max_position_embeddings} leaves no position after RoBERTa's "
            f"offset of pad_token_id + 1 = {position_offset(source_config)}."
        )


def mhe_config_from(source_config, attention_type: str) -> MHEConfig:
    """An MHEConfig with the source's dimensions, dropout, labels and special tokens."""
    check_source_config(source_config, attention_type)
    label_fields = ("id2label", "label2id", "problem_type") if hasattr(source_config, "id2label") else ()
    return MHEConfig(
        attention_type=attention_type,
        vocab_size=source_config.vocab_size,
        hidden_size=source_config.hidden_size,
        num_hidden_layers=source_config.num_hidden_layers,
        num_attention_heads=source_config.num_attention_heads,
        intermediate_size=source_config.intermediate_size,
        hidden_act=source_config.hidden_act,
        hidden_dropout_prob=source_config.hidden_dropout_prob,
        attention_probs_dropout_prob=source_config.attention_probs_dropout_prob,
        max_position_embeddings=source_config.max_position_embeddings - position_offset(source_config),
        type_vocab_size=source_config.type_vocab_size,
        initializer_range=source_config.initializer_range,
        layer_norm_eps=source_config.layer_norm_eps,
        pad_token_id=source_config.pad_token_id,
        tie_word_embeddings=getattr(source_config, "tie_word_embeddings", True),
        classifier_dropout=getattr(source_config, "classifier_dropout", None),
        **{name: getattr(source_config, name) for name in label_fields},
    )


def copied_weights(source: PreTrainedModel, target: MHEPreTrainedModel) -> dict[str, torch.Tensor]:
    """{target parameter name: source tensor} for everything that maps one to one: all but Q/K/V and the output
    projection's weight (which the alignment rotates; its bias is copied)."""
    source_base, prefix = source.base_model, "" if isinstance(target, MHEModel) else "model."
    embeddings, offset = source_base.embeddings, position_offset(source.config)
    mapping = {
        "embeddings.word_embeddings.weight": embeddings.word_embeddings.weight,
        "embeddings.position_embeddings.weight": embeddings.position_embeddings.weight[offset:],
        "embeddings.token_type_embeddings.weight": embeddings.token_type_embeddings.weight,
        "embeddings.LayerNorm.weight": embeddings.LayerNorm.weight,
        "embeddings.LayerNorm.bias": embeddings.LayerNorm.bias,
    }
    for i, layer in enumerate(source_base.encoder.layer):
        for target_name, module in (
            ("attention_norm", layer.attention.output.LayerNorm),
            ("feed_forward.up_proj", layer.intermediate.dense),
            ("feed_forward.down_proj", layer.output.dense),
            ("output_norm", layer.output.LayerNorm),
        ):
            mapping[f"layers.{i}.{target_name}.weight"] = module.weight
            mapping[f"layers.{i}.{target_name}.bias"] = module.bias
        mapping[f"layers.{i}.attention.o_proj.bias"] = layer.attention.output.dense.bias
    mapping = {prefix + name: tensor for name, tensor in mapping.items()}
    mapping |= head_weights(source, target)
    return {name: tensor.detach() for name, tensor in mapping.items()}


def head_weights(source: PreTrainedModel, target: MHEPreTrainedModel) -> dict[str, torch.Tensor]:
    """The task head's weights, by target name."""
    if isinstance(target, MHEModel):
        return {}
    if isinstance(target, MHEForMaskedLM):
        if source.config.model_type == "bert":
            head = source.cls.predictions
            dense, norm = head.transform.dense, head.transform.LayerNorm
        else:
            if source.config.hidden_act != "gelu":
                raise ConversionError(
                    f"RoBERTa's masked-LM head always applies gelu, MHE's applies hidden_act="
                    f"{source.config.hidden_act!r}: the head would change; convert with task='base' instead."
                )
            head = source.lm_head
            dense, norm = head.dense, head.layer_norm
        # The decoder's own bias is what the source's forward pass adds (tied to `bias` by default, not necessarily).
        decoder_bias = head.decoder.bias if head.decoder.bias is not None else head.bias
        mapping = {
            "lm_head.dense.weight": dense.weight,
            "lm_head.dense.bias": dense.bias,
            "lm_head.LayerNorm.weight": norm.weight,
            "lm_head.LayerNorm.bias": norm.bias,
            "lm_head.decoder.bias": decoder_bias,
        }
        if not target.config.tie_word_embeddings:
            mapping["lm_head.decoder.weight"] = head.decoder.weight
        return mapping
    if isinstance(target, MHEForQuestionAnswering):
        return {"qa_outputs.weight": source.qa_outputs.weight, "qa_outputs.bias": source.qa_outputs.bias}
    classifier = source.classifier
    if isinstance(target, MHEForTokenClassification):
        return {"classifier.weight": classifier.weight, "classifier.bias": classifier.bias}
    # Sequence classification and multiple choice: MHE's head is the pooler (dense -> tanh on the first token),
    # dropout and out_proj.
    if source.config.model_type == "roberta" and isinstance(target, MHEForSequenceClassification):
        # RoBERTa's head is dropout -> dense -> tanh -> dropout -> out_proj on <s>: MHE's, with one more dropout.
        dense, out_proj = classifier.dense, classifier.out_proj
    else:  # BERT's heads (and RoBERTa's multiple-choice head) use the encoder's pooler, then one linear layer
        dense, out_proj = getattr(source.base_model, "pooler", None), classifier
        if dense is None:
            raise ConversionError(
                f"The source {type(source).__name__} has no pooler, which {type(target).__name__}'s head needs."
            )
        dense = dense.dense
    return {
        "classifier.dense.weight": dense.weight,
        "classifier.dense.bias": dense.bias,
        "classifier.out_proj.weight": out_proj.weight,
        "classifier.out_proj.bias": out_proj.bias,
    }


@torch.no_grad()
def convert_model(
    source: PreTrainedModel,
    attention_type: str,
    target_class: type[MHEPreTrainedModel] | None = None,
    max_iterations: int = 100,
    input_moments: Sequence[torch.Tensor] | None = None,
) -> tuple[MHEPreTrainedModel, list[dict]]:
    """Build the MHE model equivalent of `source` (a BERT or RoBERTa model with or without a task head).

    Returns the model (in eval mode) and one dict per layer with the relative fit errors. `target_class` defaults to
    the MHE class of the source's head. `input_moments` (one per layer, from `layer_input_moments`) weights each
    layer's fit by the inputs it sees; without them every weight counts alike.
    """
    config = mhe_config_from(source.config, attention_type)
    if target_class is None:
        target_class = TASKS[task_of(type(source).__name__)][1]
    target = target_class(config).eval()
    base = target.base_model
    mapping = copied_weights(source, target)
    state = target.state_dict()
    for name, tensor in mapping.items():
        if state[name].shape != tensor.shape:
            raise ConversionError(
                f"{name}: the source tensor has shape {tuple(tensor.shape)}, MHE expects {tuple(state[name].shape)}."
            )
        state[name].copy_(tensor)

    num_heads = config.num_attention_heads
    if input_moments is not None and len(input_moments) != config.num_hidden_layers:
        raise ConversionError(f"{len(input_moments)} input moments for {config.num_hidden_layers} layers.")
    layer_reports = []
    for i, (source_layer, target_layer) in enumerate(zip(source.base_model.encoder.layer, base.layers)):
        source_attention = source_layer.attention
        projections = HeadProjections.from_linears(
            source_attention.self.query,
            source_attention.self.key,
            source_attention.self.value,
            source_attention.output.dense,
            num_heads,
        )
        moment = None if input_moments is None else input_moments[i]
        fit = align_and_fit(projections, attention_type, max_iterations, input_moment=moment)
        attention = target_layer.attention
        for name in ("query", "key", "value"):
            shared: SharedProjection = getattr(fit, name)
            projection = getattr(attention, f"{name[0]}_proj")
            projection.weight.copy_(shared.weight[:-1].T)
            projection.bias.copy_(shared.weight[-1])
            getattr(attention, f"{name[0]}_head_embeddings").copy_(shared.head_embeddings)
        # Rows of W_O per head, rotated with their value head: (heads, d, hidden) -> torch's (hidden, heads * d).
        attention.o_proj.weight.copy_(fit.aligned.output.reshape(-1, config.hidden_size).T)
        layer_reports.append(
            {
                "layer": i,
                "fit_error": fit.fit_error,
                "unaligned_fit_error": fit.unaligned_fit_error,
                "alignment_iterations": fit.iterations,
            }
            | ({} if fit.output_fit_error is None else {"output_fit_error": fit.output_fit_error})
        )
    if config.tie_word_embeddings and isinstance(target, MHEForMaskedLM):
        target.tie_weights()
    return target, layer_reports


@torch.no_grad()
def layer_input_moments(
    source: PreTrainedModel, tokenizer, texts: Sequence[str], max_length: int = 128, batch_size: int = 32
) -> list[torch.Tensor]:
    """Per layer of `source`, the second moment `X^T X / n` (float64) of its attention inputs `X = [x, 1]` over the
    real tokens of `texts`: the weights of the input-weighted fit (`fit_shared_projection`). In a BERT-family
    (post-LayerNorm) encoder, layer i's attention reads `hidden_states[i]`."""
    if not texts:
        raise ConversionError("The input-weighted fit needs at least one text to measure the layers' inputs on.")
    source = source.eval()
    sums, count = None, 0
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(list(texts[start : start + batch_size]), truncation=True, max_length=max_length,
                          padding=True, return_tensors="pt")  # fmt: skip
        states = source.base_model(**batch, output_hidden_states=True).hidden_states[:-1]
        real = batch["attention_mask"].bool()
        inputs = [torch.nn.functional.pad(state[real].double(), (0, 1), value=1.0) for state in states]
        moments = [x.T @ x for x in inputs]
        sums = moments if sums is None else [total + moment for total, moment in zip(sums, moments)]
        count += int(real.sum())
    return [total / count for total in sums]


def task_of(architecture: str) -> str:
    """"BertForMaskedLM" -> "masked-lm": the converter's task of the MHE head for that architecture (heads.head_for)."""
    head = head_for(architecture)
    if head is None or head.task is None:
        raise ConversionError(
            f"No MHE head for architecture {architecture!r}; pass task= one of {sorted(TASKS)} to choose one."
        )
    return head.task


# ----------------------------------------------------------------------------------------------------------------
# Measuring what survived.
# ----------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def sentence_embeddings(
    model: PreTrainedModel, tokenizer, texts: Sequence[str], batch_size: int = 64, max_length: int = 128
) -> torch.Tensor:
    """Attention-masked mean of the base model's last hidden states, one row per text (as sentence-transformers'
    mean pooling). Padding is on the right, which RoBERTa's position numbering needs to match MHE's."""
    model.eval()
    device = next(model.parameters()).device
    rows = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(
            list(texts[start : start + batch_size]),
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        ).to(device)
        hidden = model.base_model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        rows.append((hidden * mask).sum(1) / mask.sum(1).clamp(min=1))
    return torch.cat(rows)


def mean_cosine_similarity(
    model: PreTrainedModel, reference: PreTrainedModel, tokenizer, texts: Sequence[str], **kwargs
) -> float:
    """Mean over `texts` of the cosine similarity between the two models' mean-pooled sentence embeddings."""
    a = sentence_embeddings(model, tokenizer, texts, **kwargs)
    b = sentence_embeddings(reference, tokenizer, texts, **kwargs)
    return float(nn.functional.cosine_similarity(a, b, dim=-1).mean())


@torch.no_grad()
def with_random_qkv(model: MHEPreTrainedModel, seed: int = 0) -> MHEPreTrainedModel:
    """A copy of `model` whose Q/K/V projections and head embeddings are freshly initialised (as MHEConfig's
    defaults): the control for how much the fitted projections carry over."""
    model = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    std = model.config.initializer_range
    for layer in model.base_model.layers:
        attention = layer.attention
        for name in ("q", "k", "v"):
            projection = getattr(attention, f"{name}_proj")
            projection.weight.copy_(torch.randn(projection.weight.shape, generator=generator) * std)
            projection.bias.zero_()
            embeddings = getattr(attention, f"{name}_head_embeddings")
            mean = 1.0 if model.config.attention_type == "mhe_mul" else 0.0
            embeddings.copy_(mean + torch.randn(embeddings.shape, generator=generator) * std)
    return model


def random_model_like(model: MHEPreTrainedModel, seed: int = 0) -> MHEPreTrainedModel:
    """A freshly initialised model of the same class and configuration: the floor of the similarity scale."""
    with torch.random.fork_rng():  # seeded without disturbing the caller's random state
        torch.manual_seed(seed)
        return type(model)(copy.deepcopy(model.config)).eval()


# ----------------------------------------------------------------------------------------------------------------
# Checkpoints.
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class SourceCheckpoint:
    model: PreTrainedModel
    tokenizer: object
    task: str


def load_source(
    model_name_or_path: str,
    attention_type: str,
    task: str | None = None,
    tokenizer_name: str | None = None,
    **hub_kwargs,
) -> SourceCheckpoint:
    """Load and check a BERT-family checkpoint (local folder or Hub id) and its tokenizer.

    Every check that can fail runs here, before any weights are converted or anything is written."""
    try:
        source_config = AutoConfig.from_pretrained(model_name_or_path, **hub_kwargs)
    except (OSError, ValueError) as error:
        raise ConversionError(f"Cannot read a model configuration from {model_name_or_path!r}: {error}") from error
    check_source_config(source_config, attention_type)
    if task is None:
        architectures = getattr(source_config, "architectures", None) or ["Model"]
        task = task_of(architectures[0])
    if task not in TASKS:
        raise ConversionError(f"task must be one of {sorted(TASKS)}, got {task!r}.")
    try:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_name or model_name_or_path, **hub_kwargs)
    except (OSError, ValueError, TypeError) as error:
        raise ConversionError(
            f"Cannot load a tokenizer from {tokenizer_name or model_name_or_path!r} ({error}); the converted "
            "checkpoint is written with its tokenizer: pass tokenizer_name (--tokenizer_name) to use another one."
        ) from error
    # Transformers 5 builds an empty tokenizer (special tokens only) from config.json alone when a folder has no
    # tokenizer files: catch that, and any tokenizer whose ids would overflow the embedding matrix.
    if len(tokenizer) <= len(tokenizer.all_special_tokens) or len(tokenizer) > source_config.vocab_size:
        raise ConversionError(
            f"Cannot load a tokenizer with a vocabulary from {tokenizer_name or model_name_or_path!r}: it has "
            f"{len(tokenizer)} tokens for a model with vocab_size={source_config.vocab_size} (are its tokenizer files "
            "missing?). Pass tokenizer_name (--tokenizer_name) to use another one."
        )
    auto_class = TASKS[task][0]
    try:
        model, loading_info = auto_class.from_pretrained(
            model_name_or_path, dtype=torch.float32, output_loading_info=True, **hub_kwargs
        )
    except (OSError, ValueError) as error:
        raise ConversionError(f"Cannot load the {task} model weights of {model_name_or_path!r}: {error}") from error
    if loading_info["missing_keys"]:
        missing = sorted(loading_info["missing_keys"])
        raise ConversionError(
            f"{model_name_or_path!r} has no weights for {missing[:5]}{' ...' if len(missing) > 5 else ''} of the "
            f"{type(model).__name__} it was loaded as, which would be randomly initialised; choose the task its "
            f"weights cover (task=, --task), e.g. 'base' or 'masked-lm'."
        )
    return SourceCheckpoint(model.eval(), tokenizer, task)


@dataclass
class Evaluation:
    """Held-out texts on which to compare converted and original sentence embeddings."""

    texts: Sequence[str]
    batch_size: int = 64
    max_length: int = 128
    baselines: bool = True  # also score a randomly initialised model and the converted one with random Q/K/V


@dataclass
class ConversionResult:
    model: MHEPreTrainedModel
    report: dict = field(default_factory=dict)


def evaluate_similarity(model, reference, tokenizer, evaluation: Evaluation) -> float:
    kwargs = {"batch_size": evaluation.batch_size, "max_length": evaluation.max_length}
    return mean_cosine_similarity(model, reference, tokenizer, evaluation.texts, **kwargs)


def conversion_report(
    model_name_or_path, source: SourceCheckpoint, model: MHEPreTrainedModel, layer_reports: list[dict],
    attention_type: str, max_alignment_iterations: int, random_qkv: bool = False,
) -> dict:  # fmt: skip
    """The report's description of the conversion: classes, parameter counts, the fit error per layer and mean."""

    def mean_error(key: str) -> dict[str, float]:
        return {
            name: sum(layer[key][name] for layer in layer_reports) / len(layer_reports)
            for name in ("query", "key", "value")
        }

    return {
        "source": str(model_name_or_path),
        "source_class": type(source.model).__name__,
        "target_class": type(model).__name__,
        "attention_type": attention_type,
        "method": "per-head orthogonal alignment + exact least-squares fit, see docs/conversion.md",
        "max_alignment_iterations": max_alignment_iterations,
        "random_qkv": random_qkv,
        "parameters": {"source": source.model.num_parameters(), "converted": model.num_parameters()},
        "layers": layer_reports,
        "mean_fit_error": mean_error("fit_error"),
        "mean_unaligned_fit_error": mean_error("unaligned_fit_error"),
    } | ({"mean_output_fit_error": mean_error("output_fit_error")} if "output_fit_error" in layer_reports[0] else {})


def convert_checkpoint(
    model_name_or_path: str,
    output_dir: str | os.PathLike,
    attention_type: str = "mhe_mul",
    *,
    task: str | None = None,
    tokenizer_name: str | None = None,
    max_alignment_iterations: int = 100,
    random_qkv: bool = False,
    overwrite_output_dir: bool = False,
    evaluation: Evaluation | None = None,
    recovery: RecoveryArguments | None = None,
    recovery_texts: Sequence[str] | None = None,
    seed: int = 0,
    **hub_kwargs,
) -> ConversionResult:
    """Convert `model_name_or_path` and write the MHE checkpoint, its tokenizer and `conversion_report.json` to
    `output_dir` (atomically: a temporary folder beside it is renamed at the end, so a failed run leaves nothing).

    `random_qkv=True` replaces the fitted Q/K/V by fresh random ones: a control experiment for what the fit is worth.
    `evaluation` adds mean cosine similarities to the original's sentence embeddings to the report; `recovery`
    with `recover_steps > 0` first distils the original into the converted model on `recovery_texts`.
    """
    output_dir = Path(output_dir)
    # One run into output_dir at a time, from this check to the final rename (run_folder.claim_output_dir).
    with claim_output_dir(output_dir, overwrite_output_dir, inputs=[model_name_or_path, tokenizer_name]):
        recover = recovery is not None and recovery.recover_steps > 0
        if recover and not recovery_texts:
            raise ConversionError("Recovery training (recover_steps > 0) needs training texts; none were given.")
        source = load_source(model_name_or_path, attention_type, task, tokenizer_name, **hub_kwargs)
        model, layer_reports = convert_model(
            source.model, attention_type, TASKS[source.task][1], max_alignment_iterations
        )
        if random_qkv:
            model = with_random_qkv(model, seed)

        report = conversion_report(
            model_name_or_path, source, model, layer_reports, attention_type, max_alignment_iterations, random_qkv
        )
        reference = source.model
        if evaluation is not None:
            candidates = {"converted": model}
            if evaluation.baselines:
                candidates |= {
                    "random_qkv": with_random_qkv(model, seed), "random_init": random_model_like(model, seed)
                }
            report["similarity"] = {
                name: evaluate_similarity(candidate, reference, source.tokenizer, evaluation)
                for name, candidate in candidates.items()
            } | {"texts": len(evaluation.texts)}
        if recover:
            report["recovery"] = distill_hidden_states(
                model, reference, source.tokenizer, recovery_texts, recovery, seed
            )
            model.eval()
            if evaluation is not None:
                report["similarity"]["recovered"] = evaluate_similarity(model, reference, source.tokenizer, evaluation)

        with atomic_directory(output_dir) as tmp_dir:
            model.save_pretrained(tmp_dir)
            source.tokenizer.save_pretrained(tmp_dir)
            (tmp_dir / REPORT_NAME).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
        return ConversionResult(model, report)


# -----------------------------------------------------------------------------------------------------------------
# Command line


@dataclass
class ConversionArguments:
    model_name_or_path: str = field(metadata={"help": "A BERT or RoBERTa checkpoint: local folder or Hub id."})
    output_dir: str = field(metadata={"help": "Where to write the MHE checkpoint."})
    attention_type: str = field(default="mhe_mul", metadata={"choices": MHE_TYPES})
    task: str | None = field(
        default=None,
        metadata={"help": "Head to convert (default: from the checkpoint's architectures).", "choices": sorted(TASKS)},
    )
    tokenizer_name: str | None = field(default=None, metadata={"help": "Tokenizer, if not the checkpoint's own."})
    max_alignment_iterations: int = field(
        default=100, metadata={"help": "Alignment/fit alternations per layer (0: fit without alignment)."}
    )
    random_qkv: bool = field(
        default=False, metadata={"help": "Control experiment: random instead of fitted Q/K/V projections."}
    )
    overwrite_output_dir: bool = field(default=False)
    revision: str = field(default="main", metadata={"help": "Hub revision (branch, tag or commit)."})
    cache_dir: str | None = field(default=None)
    seed: int = field(default=0)


@dataclass
class DataArguments:
    evaluate: bool = field(
        default=False,
        metadata={"help": "Report the mean cosine similarity of mean-pooled sentence embeddings to the original."},
    )
    eval_file: str | None = field(
        default=None,
        metadata={"help": "Held-out texts (.txt lines, .csv/.json(l) `text` column); default: WordNet test glosses."},
    )
    eval_samples: int = field(default=256, metadata={"help": "Texts sampled (seeded) from the evaluation texts."})
    eval_baselines: bool = field(
        default=True, metadata={"help": "Also score a random model and the converted one with random Q/K/V."}
    )
    train_file: str | None = field(
        default=None,
        metadata={"help": "Recovery texts (as --eval_file); default: WordNet train-split glosses and examples."},
    )
    dataset_name: str | None = field(default=None, metadata={"help": "Recovery texts from datasets.load_dataset."})
    dataset_config_name: str | None = field(default=None)
    text_column: str = field(default="text")


def check_output_folder(args: ConversionArguments, data_args: DataArguments, recovery_args: RecoveryArguments) -> None:
    """Before loading anything: a folder that is not ours, or an input, is never replaced (a usage error)."""
    check_output_dir(args.output_dir, args.overwrite_output_dir, inputs=[args.model_name_or_path, args.tokenizer_name])


def read_texts(args: ConversionArguments, data_args: DataArguments, recovery_args: RecoveryArguments):
    """The evaluation (`Evaluation` or None) and recovery texts (or None) the arguments ask for, read before
    converting so that a bad path fails fast."""
    evaluation = recovery_texts = None
    if data_args.evaluate:
        texts = text.load_texts(data_args.eval_file) if data_args.eval_file else wordnet_texts("test")
        texts = random.Random(args.seed).sample(texts, min(data_args.eval_samples, len(texts)))
        evaluation = Evaluation(texts, baselines=data_args.eval_baselines)
    if recovery_args.recover_steps > 0:
        if data_args.train_file or data_args.dataset_name:
            recovery_texts = text.load_texts(
                data_args.train_file, data_args.dataset_name, data_args.dataset_config_name,
                text_column=data_args.text_column,
            )  # fmt: skip
        else:
            recovery_texts = wordnet_texts("train", include_examples=True)
    return evaluation, recovery_texts


def main(argv: Sequence[str] | None = None) -> None:
    """`scripts/convert_mha_to_mhe.py`: convert, evaluate and recover from the command line (docs/conversion.md)."""
    args, data_args, recovery_args = cli.parse_args(
        (ConversionArguments, DataArguments, RecoveryArguments),
        argv,
        description="Convert a BERT/RoBERTa checkpoint into an MHE checkpoint (docs/conversion.md).",
        validate=check_output_folder,
    )
    evaluation, recovery_texts = read_texts(args, data_args, recovery_args)
    result = convert_checkpoint(
        args.model_name_or_path,
        args.output_dir,
        args.attention_type,
        task=args.task,
        tokenizer_name=args.tokenizer_name,
        max_alignment_iterations=args.max_alignment_iterations,
        random_qkv=args.random_qkv,
        overwrite_output_dir=args.overwrite_output_dir,
        evaluation=evaluation,
        recovery=recovery_args,
        recovery_texts=recovery_texts,
        seed=args.seed,
        revision=args.revision,
        cache_dir=args.cache_dir,
    )
    print_report(result.report, args.output_dir)


def print_report(report: dict, output_dir: str) -> None:
    """The conversion report in a few lines: classes and sizes, the fit per layer, similarity and recovery."""
    print(f"{report['source_class']} -> {report['target_class']} ({report['attention_type']}), "
          f"parameters {report['parameters']['source']:,} -> {report['parameters']['converted']:,}")
    print("relative fit error per layer (query / key / value), aligned [unaligned]:")
    for layer in report["layers"]:
        aligned, unaligned = layer["fit_error"], layer["unaligned_fit_error"]
        print(f"  layer {layer['layer']:2d}: "
              + " / ".join(f"{aligned[name]:.3f} [{unaligned[name]:.3f}]" for name in ("query", "key", "value"))
              + f"  ({layer['alignment_iterations']} alignment steps)")
    for name in ("similarity", "recovery"):
        if name in report:
            print(f"{name}: {json.dumps(report[name])}")
    print(f"Wrote {output_dir}")
