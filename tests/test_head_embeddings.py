"""What the head embeddings and the position options do: the position bias shared by all heads
(`relative_attention_per_head=False`), head embeddings frozen at their identity values (`freeze_head_embeddings`), and
the effective-parameter statement of docs/model.md (only n·d of MHE's 3·n·d head-embedding numbers change the
function)."""

import math

import pytest
import torch
from conftest import tiny_config
from datasets import Dataset
from test_modeling import build, padded_batch, randomise_head_embeddings
from test_trainer import training_args
from transformers import Trainer

from mhe_transformers import ATTENTION_TYPES, MHEConfig, MHEForCausalLM, MHEForMaskedLM, MHEModel
from mhe_transformers.hub import push as hub
from mhe_transformers.models.mhe.parameter_counts import count_parameters, encoder_parameter_formula

MAX_DISTANCE = 3


def relative_config(attention_type, per_head, **overrides):
    return tiny_config(
        attention_type,
        position_embedding_type="relative_bias",
        relative_attention_max_distance=MAX_DISTANCE,
        relative_attention_per_head=per_head,
        **overrides,
    )


# ---------------------------------------------------------------------------------------------------------------------
# The relative position bias shared by all heads


@pytest.mark.parametrize("attention_type", ATTENTION_TYPES)
def test_shared_bias_is_one_table_that_every_head_gets(attention_type):
    model = build(MHEModel, relative_config(attention_type, per_head=False), "eager")
    randomise_head_embeddings(model)
    with torch.no_grad():
        for layer in model.layers:
            assert layer.attention.relative_position_bias.shape == (1, 2 * MAX_DISTANCE + 1)
            layer.attention.relative_position_bias.normal_(0, 2.0)
            # No content in the scores (every key is zero): attention is decided by the position bias alone.
            layer.attention.k_proj.weight.zero_()
            layer.attention.k_proj.bias.zero_()
    input_ids = torch.randint(1, model.config.vocab_size, (2, 9))
    attentions = model(input_ids, output_attentions=True).attentions[0]  # (batch, heads, query, key)
    for head in range(1, attentions.shape[1]):
        torch.testing.assert_close(attentions[:, head], attentions[:, 0])

    # The same weights on sdpa (the bias enters as its float mask), padded, give the eager outputs.
    sdpa = build(MHEModel, relative_config(attention_type, per_head=False), "sdpa")
    sdpa.load_state_dict(model.state_dict())
    input_ids, attention_mask = padded_batch(model.config.vocab_size, [9, 5, 2])
    with torch.no_grad():
        expected = model(input_ids, attention_mask).last_hidden_state
        actual = sdpa(input_ids, attention_mask).last_hidden_state
    real = attention_mask.bool()
    torch.testing.assert_close(actual[real], expected[real], atol=1e-5, rtol=1e-5)


def test_per_head_bias_lets_heads_differ_where_the_shared_one_cannot():
    """The contrast to the test above: with a table per head, position alone already tells the heads apart."""
    model = build(MHEModel, relative_config("mha", per_head=True), "eager")
    with torch.no_grad():
        attention = model.layers[0].attention
        assert attention.relative_position_bias.shape == (attention.num_heads, 2 * MAX_DISTANCE + 1)
        attention.relative_position_bias.normal_(0, 2.0)
        attention.k_proj.weight.zero_()
        attention.k_proj.bias.zero_()
    attentions = model(torch.randint(1, 99, (2, 9)), output_attentions=True).attentions[0]
    assert not torch.allclose(attentions[:, 1], attentions[:, 0], atol=1e-3)


def test_single_head_attention_is_the_same_model_with_per_head_and_shared_bias():
    per_head = build(MHEModel, relative_config("sha", per_head=True), "eager")
    shared = build(MHEModel, relative_config("sha", per_head=False), "eager")
    with torch.no_grad():
        for layer in per_head.layers:
            layer.attention.relative_position_bias.normal_(0, 2.0)
    shared.load_state_dict(per_head.state_dict())  # same keys and shapes: one head, one table
    input_ids, attention_mask = padded_batch(per_head.config.vocab_size, [9, 5, 2])
    with torch.no_grad():
        assert torch.equal(
            per_head(input_ids, attention_mask).last_hidden_state, shared(input_ids, attention_mask).last_hidden_state
        )


@pytest.mark.parametrize("attention_type", ["mha", "mhe_mul", "sha"])
def test_shared_neighbour_init_starts_every_head_on_both_neighbours(attention_type):
    config = relative_config(attention_type, per_head=False, relative_attention_neighbour_init=8.0)
    model = build(MHEModel, config, "eager")
    table = model.layers[0].attention.relative_position_bias[0]
    expected = torch.zeros(2 * MAX_DISTANCE + 1)
    expected[[MAX_DISTANCE - 1, MAX_DISTANCE + 1]] = 8.0
    assert torch.equal(table, expected)
    attentions = model(torch.randint(1, 99, (2, 10)), output_attentions=True).attentions[0]
    queries = torch.arange(2, 8)
    previous, following = attentions[:, :, queries, queries - 1], attentions[:, :, queries, queries + 1]
    assert torch.all(previous > 0.4) and torch.all(following > 0.4)  # about half on each, in every head


def test_default_is_a_table_per_head():
    """Configs (and checkpoints) without the field keep the bias per head they were trained with."""
    saved = tiny_config("mha", position_embedding_type="relative_bias").to_dict()
    del saved["relative_attention_per_head"]
    assert MHEConfig.from_dict(saved).relative_attention_per_head is True


@pytest.mark.parametrize("attention_type", ATTENTION_TYPES)
@pytest.mark.parametrize("per_head", [True, False])
def test_the_position_bias_counts_in_the_total_not_in_the_attention(attention_type, per_head):
    config = relative_config(attention_type, per_head)
    counts = count_parameters(MHEModel(config, add_pooling_layer=False))
    assert counts["total"] == encoder_parameter_formula(config)
    absolute = count_parameters(MHEModel(tiny_config(attention_type), add_pooling_layer=False))
    assert counts["attention"] == absolute["attention"]  # the positional option leaves the attention count alone
    tables = 1 if attention_type == "sha" or not per_head else config.num_attention_heads
    bias = config.num_hidden_layers * tables * (2 * MAX_DISTANCE + 1)
    positions = config.max_position_embeddings * config.hidden_size
    assert counts["total"] - bias == absolute["total"] - positions


def test_invalid_position_and_freeze_options_name_the_field():
    with pytest.raises(Exception, match="relative_attention_per_head"):
        tiny_config("mha", relative_attention_per_head=False)  # absolute positions have no bias to share
    for attention_type in ("mha", "mqa", "gqa", "sha"):
        with pytest.raises(Exception, match="freeze_head_embeddings"):
            tiny_config(attention_type, freeze_head_embeddings=True)
    with pytest.raises(Exception, match="freeze_head_embeddings"):
        tiny_config("mhe_mul", freeze_head_embeddings=True, head_embedding_init="normal")
    with pytest.raises(Exception, match="freeze_head_embeddings"):
        tiny_config("mhe_add", freeze_head_embeddings=True, head_embedding_init="ones")


# ---------------------------------------------------------------------------------------------------------------------
# Head embeddings frozen at their identity values

IDENTITY = {"mhe_mul": 1.0, "mhe_add": 0.0}


def head_embeddings(model):
    return {name: param for name, param in model.named_parameters() if name.endswith("_head_embeddings")}


@pytest.mark.parametrize("attention_type", ["mhe_mul", "mhe_add"])
def test_frozen_head_embeddings_start_at_identity_and_make_every_head_alike(attention_type):
    model = build(MHEModel, tiny_config(attention_type, freeze_head_embeddings=True), "eager")
    embeddings = head_embeddings(model)
    assert len(embeddings) == 3 * model.config.num_hidden_layers
    for param in embeddings.values():
        assert not param.requires_grad and torch.all(param == IDENTITY[attention_type])
    attentions = model(torch.randint(1, 99, (2, 9)), output_attentions=True).attentions
    for layer_attentions in attentions:
        for head in range(1, layer_attentions.shape[1]):
            torch.testing.assert_close(layer_attentions[:, head], layer_attentions[:, 0])
    # Built on the meta device and materialised (as from_pretrained does), the values are the same.
    with torch.device("meta"):
        meta = MHEModel(tiny_config(attention_type, freeze_head_embeddings=True))
    meta.to_empty(device="cpu").init_weights()
    for param in head_embeddings(meta).values():
        assert not param.requires_grad and torch.all(param == IDENTITY[attention_type])


def masked_lm_data(vocab_size):
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(4, vocab_size, (16, 12), generator=generator)
    labels = torch.full_like(input_ids, -100)
    labels[:, ::3] = input_ids[:, ::3]
    return Dataset.from_dict({"input_ids": input_ids.masked_fill(labels != -100, 3).tolist(), "labels": labels.tolist()})


@pytest.mark.parametrize("attention_type", ["mhe_mul", "mhe_add"])
def test_frozen_head_embeddings_survive_saving_loading_and_trainer(tmp_path, attention_type):
    config = relative_config(attention_type, per_head=False, freeze_head_embeddings=True)
    build(MHEForMaskedLM, config).save_pretrained(tmp_path / "model")
    model = MHEForMaskedLM.from_pretrained(tmp_path / "model")
    assert model.config.freeze_head_embeddings and not model.config.relative_attention_per_head
    assert model.model.layers[0].attention.relative_position_bias.shape == (1, 2 * MAX_DISTANCE + 1)
    assert not any(param.requires_grad for param in head_embeddings(model).values())
    before = {name: param.detach().clone() for name, param in model.named_parameters()}
    Trainer(model=model, args=training_args(tmp_path / "run", 3), train_dataset=masked_lm_data(99)).train()
    for name, param in model.named_parameters():
        if name.endswith("_head_embeddings"):
            assert torch.all(param == IDENTITY[attention_type]), name
        elif name.endswith(("q_proj.weight", "v_proj.weight", "relative_position_bias")):
            assert not torch.equal(param, before[name]), name  # the rest of the model did train


def test_loading_trained_head_embeddings_as_frozen_is_refused(tmp_path):
    model = build(MHEForMaskedLM, tiny_config("mhe_mul"))  # default init: 1 + N(0, 0.02), not the identity
    model.config.freeze_head_embeddings = True
    model.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="freeze_head_embeddings"):
        MHEForMaskedLM.from_pretrained(tmp_path)


def test_remote_code_keeps_the_shared_bias_and_the_frozen_embeddings(tmp_path):
    config = relative_config("mhe_add", per_head=False, freeze_head_embeddings=True)
    model = build(MHEForMaskedLM, config)
    model.save_pretrained(tmp_path)
    input_ids, _ = padded_batch(config.vocab_size, [9])
    with torch.no_grad():
        expected = model(input_ids).logits[0, :, :4].flatten().tolist()
    process = hub.run_without_package(
        """
        import json, sys, torch, transformers
        model = transformers.AutoModelForMaskedLM.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
        frozen = [not p.requires_grad for n, p in model.named_parameters() if n.endswith("_head_embeddings")]
        with torch.no_grad():
            logits = model(torch.tensor(json.loads(sys.argv[2]))).logits[0, :, :4].flatten()
        close = bool(torch.allclose(logits, torch.tensor(json.loads(sys.argv[3])), atol=1e-5))
        print("RESULT", type(model).__module__.startswith("transformers_modules"), len(frozen), all(frozen), close)
        """,
        str(tmp_path),
        str(input_ids.tolist()),
        str(expected),
    )
    assert f"RESULT True {3 * config.num_hidden_layers} True True" in process.stdout, process.stderr[-2000:]


# ---------------------------------------------------------------------------------------------------------------------
# The effective-parameter statement (docs/model.md): only n·d of the 3·n·d head-embedding numbers change the function


def materialised_add_attention(attention, hidden_states, visible):
    """MHE-ADD with every head's Q_i, K_i, V_i formed explicitly, e^K included. visible: (batch, query, key) bool."""
    q, k, v = attention.q_proj(hidden_states), attention.k_proj(hidden_states), attention.v_proj(hidden_states)
    heads = []
    for i in range(attention.num_heads):
        q_i = q + attention.q_head_embeddings[i]
        k_i = k + attention.k_head_embeddings[i]
        v_i = v + attention.v_head_embeddings[i]
        scores = (q_i @ k_i.transpose(-1, -2) / math.sqrt(attention.head_dim)).masked_fill(~visible, float("-inf"))
        heads.append(scores.softmax(dim=-1) @ v_i)
    return attention.o_proj(torch.cat(heads, dim=-1))


@pytest.mark.parametrize("mask", ["padding", "causal"])
def test_add_key_embedding_has_zero_gradient_and_no_effect(mask):
    # In float64, so that rounding (about 1e-8 of the gradients in float32) does not hide a true zero.
    model = build(MHEModel, tiny_config("mhe_add", initializer_range=0.2)).double()
    randomise_head_embeddings(model)
    attention = model.layers[0].attention
    torch.manual_seed(1)
    hidden_states = torch.randn(3, 7, model.config.hidden_size, dtype=torch.float64)
    if mask == "padding":
        lengths = torch.tensor([7, 4, 2])
        visible = (torch.arange(7)[None, :] < lengths[:, None])[:, None, :].expand(3, 7, 7)
    else:
        visible = torch.ones(7, 7, dtype=torch.bool).tril()[None].expand(3, 7, 7)
    weights = torch.randn_like(hidden_states)  # a random projection: every output element counts
    (materialised_add_attention(attention, hidden_states, visible) * weights).sum().backward()
    # Softmax is shift-invariant per query: q_i·e_i^K is the same for every key, so e^K cannot matter.
    assert attention.k_head_embeddings.grad.abs().max() < 1e-12 * attention.q_head_embeddings.grad.abs().max()
    with torch.no_grad():
        before = materialised_add_attention(attention, hidden_states, visible)
        attention.k_head_embeddings.normal_(0, 5.0)
        torch.testing.assert_close(materialised_add_attention(attention, hidden_states, visible), before)

    # The model's fused computation (encoder with padding; decoder with its causal mask) gives it exactly zero.
    input_ids, attention_mask = padded_batch(99, [9, 5, 2])
    for model_class, config in ((MHEForMaskedLM, tiny_config("mhe_add")), (MHEForCausalLM, tiny_config("mhe_add"))):
        lm = build(model_class, config).train()
        randomise_head_embeddings(lm)
        lm(input_ids, attention_mask, labels=input_ids.masked_fill(attention_mask == 0, -100)).loss.backward()
        for layer in lm.model.layers:
            assert torch.count_nonzero(layer.attention.k_head_embeddings.grad) == 0
            assert torch.count_nonzero(layer.attention.q_head_embeddings.grad) > 0


def outputs(model):
    """Hidden states of the real tokens of a padded batch (built with initializer_range=0.2, so that attention is far
    from uniform and the outputs depend on the scores)."""
    input_ids, attention_mask = padded_batch(model.config.vocab_size, [9, 6, 3])
    with torch.no_grad():
        return model(input_ids, attention_mask).last_hidden_state[attention_mask.bool()]


def test_add_value_embedding_is_an_output_bias():
    """Σ_i e_i^V W_{O,i} moves into o_proj's bias: e^V set to zero, the outputs stay the same."""
    model = build(MHEModel, tiny_config("mhe_add", initializer_range=0.2))
    randomise_head_embeddings(model)
    expected = outputs(model)
    with torch.no_grad():
        for layer in model.layers:
            attention = layer.attention
            attention.o_proj.bias += attention.o_proj.weight @ attention.v_head_embeddings.flatten()
            attention.v_head_embeddings.zero_()
    torch.testing.assert_close(outputs(model), expected, atol=1e-5, rtol=1e-5)


def test_mul_value_embedding_folds_into_the_output_projection():
    """W_O's input columns of head i scaled by e_i^V: e^V set to one, the outputs stay the same."""
    model = build(MHEModel, tiny_config("mhe_mul", initializer_range=0.2))
    randomise_head_embeddings(model)
    expected = outputs(model)
    with torch.no_grad():
        for layer in model.layers:
            attention = layer.attention
            attention.o_proj.weight *= attention.v_head_embeddings.flatten()[None, :]
            attention.v_head_embeddings.fill_(1.0)
    torch.testing.assert_close(outputs(model), expected, atol=1e-5, rtol=1e-5)


def test_mul_scores_depend_on_the_product_of_query_and_key_embeddings_only():
    model = build(MHEModel, tiny_config("mhe_mul", initializer_range=0.2))
    randomise_head_embeddings(model)
    expected = outputs(model)
    with torch.no_grad():
        for layer in model.layers:
            scale = torch.empty_like(layer.attention.q_head_embeddings).uniform_(0.5, 2.0)
            layer.attention.q_head_embeddings *= scale
            layer.attention.k_head_embeddings /= scale
    torch.testing.assert_close(outputs(model), expected, atol=1e-5, rtol=1e-5)
    # The check has teeth: changing the product does change the outputs.
    with torch.no_grad():
        model.layers[0].attention.q_head_embeddings *= 2.0
    assert not torch.allclose(outputs(model), expected, atol=1e-3)
