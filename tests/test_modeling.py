"""The MHE attention against a straightforward per-head reference, and the model family's behaviour."""

import copy
import math

import pytest
import torch
from conftest import tiny_config
from transformers.masking_utils import create_bidirectional_mask

from mhe_transformers import (
    ATTENTION_TYPES,
    MHEForMaskedLM,
    MHEForMultipleChoice,
    MHEForQuestionAnswering,
    MHEForSequenceClassification,
    MHEForTokenClassification,
    MHEModel,
)
from mhe_transformers.models.mhe.parameter_counts import attention_parameter_formula


def build(model_class, config, attn_implementation="eager", seed=0):
    torch.manual_seed(seed)
    # A copy: `_from_config` sets the kernel on the config it is given, which would switch earlier models built
    # from the same config object to this kernel too (an "eager" model silently running sdpa).
    return model_class._from_config(copy.deepcopy(config), attn_implementation=attn_implementation).eval()


def randomise_head_embeddings(model):
    """Default MUL embeddings are close to 1; spread them so a bug in how they enter cannot hide."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "head_embeddings" in name:
                param.copy_(torch.randn_like(param))


def reference_mhe_attention(attention, hidden_states, padding_mask):
    """Materialise every head's Q_i, K_i, V_i exactly as the paper writes them (docs/model.md)."""
    q, k, v = attention.q_proj(hidden_states), attention.k_proj(hidden_states), attention.v_proj(hidden_states)
    combine = torch.mul if attention.attention_type == "mhe_mul" else torch.add
    heads = []
    for i in range(attention.num_heads):
        q_i = combine(q, attention.q_head_embeddings[i])
        k_i = combine(k, attention.k_head_embeddings[i])
        v_i = combine(v, attention.v_head_embeddings[i])
        scores = q_i @ k_i.transpose(-1, -2) / math.sqrt(attention.head_dim)
        if padding_mask is not None:
            scores = scores.masked_fill(~padding_mask.bool()[:, None, :], float("-inf"))
        heads.append(scores.softmax(dim=-1) @ v_i)
    return attention.o_proj(torch.cat(heads, dim=-1))


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("attention_type", ["mhe_mul", "mhe_add"])
def test_fused_mhe_equals_per_head_reference(attention_type, padded, attn_implementation):
    config = tiny_config(attention_type)
    model = build(MHEModel, config, attn_implementation)
    randomise_head_embeddings(model)
    attention = model.layers[0].attention
    torch.manual_seed(1)
    hidden_states = torch.randn(3, 7, config.hidden_size)
    padding_mask = torch.ones(3, 7, dtype=torch.long)
    if padded:
        padding_mask[1, 4:] = 0
        padding_mask[2, 2:] = 0
    mask = create_bidirectional_mask(config=model.config, inputs_embeds=hidden_states, attention_mask=padding_mask)

    def outputs_and_grads(forward):
        attention.zero_grad()
        x = hidden_states.clone().requires_grad_(True)
        out = forward(x)
        # A fixed random projection of the output, so every output element contributes to the gradient.
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        grads = {name: p.grad.clone() for name, p in attention.named_parameters()}
        return out.detach(), x.grad, grads

    fused = outputs_and_grads(lambda x: attention(x, mask)[0])
    reference = outputs_and_grads(lambda x: reference_mhe_attention(attention, x, padding_mask))

    torch.testing.assert_close(fused[0], reference[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fused[1], reference[1], atol=1e-5, rtol=1e-5)
    for name in reference[2]:
        torch.testing.assert_close(fused[2][name], reference[2][name], atol=1e-5, rtol=1e-5, msg=name)
    if attention_type == "mhe_add":
        # Softmax removes e^K entirely: its true gradient is zero (docs/model.md).
        assert torch.count_nonzero(fused[2]["k_head_embeddings"]) == 0
        assert reference[2]["k_head_embeddings"].abs().max() < 1e-5


def padded_batch(vocab_size, lengths, seq_length=9, seed=0):
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(1, vocab_size, (len(lengths), seq_length), generator=generator)
    attention_mask = torch.zeros_like(input_ids)
    for row, length in enumerate(lengths):
        attention_mask[row, :length] = 1
        input_ids[row, length:] = 0
    return input_ids, attention_mask


@pytest.mark.parametrize("attention_type", ATTENTION_TYPES)
def test_sdpa_equals_eager(attention_type):
    config = tiny_config(attention_type)
    eager = build(MHEModel, config, "eager")
    randomise_head_embeddings(eager)
    sdpa = build(MHEModel, config, "sdpa")
    sdpa.load_state_dict(eager.state_dict())
    input_ids, attention_mask = padded_batch(config.vocab_size, [9, 5, 2])
    with torch.no_grad():
        expected = eager(input_ids, attention_mask).last_hidden_state
        actual = sdpa(input_ids, attention_mask).last_hidden_state
    real = attention_mask.bool()
    torch.testing.assert_close(actual[real], expected[real], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("attention_type", ATTENTION_TYPES)
def test_padded_batch_equals_each_sequence_alone(attention_type):
    config = tiny_config(attention_type)
    model = build(MHEModel, config, "sdpa")
    randomise_head_embeddings(model)
    lengths = [9, 6, 3]
    input_ids, attention_mask = padded_batch(config.vocab_size, lengths)
    with torch.no_grad():
        batched = model(input_ids, attention_mask).last_hidden_state
        for row, length in enumerate(lengths):
            alone = model(input_ids[row : row + 1, :length]).last_hidden_state[0]
            torch.testing.assert_close(batched[row, :length], alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("attention_type", ATTENTION_TYPES)
def test_parameter_counts_match_closed_form(attention_type):
    config = tiny_config(attention_type, num_hidden_layers=3)
    h, n, d, g = config.hidden_size, config.num_attention_heads, config.head_dim, 2
    model = MHEModel(config)
    expected_attention = attention_parameter_formula(attention_type, h, n, d, g)  # mhe_transformers.models.mhe.parameter_counts
    for layer in model.layers:
        assert sum(p.numel() for p in layer.attention.parameters()) == expected_attention
    layer_norms = 2 * 2 * h
    feed_forward = 2 * h * config.intermediate_size + config.intermediate_size + h
    embeddings = (config.vocab_size + config.max_position_embeddings + config.type_vocab_size) * h + 2 * h
    expected_total = embeddings + config.num_hidden_layers * (expected_attention + feed_forward + layer_norms)  # no pooler
    assert model.num_parameters() == expected_total
    if attention_type.startswith("mhe"):
        # The paper's headline: MHE needs 3nd more Q/K/V parameters than a single head (weights only, no bias).
        sha = MHEModel(tiny_config("sha")).layers[0].attention
        mhe = model.layers[0].attention
        qkv = lambda a: sum(p.numel() for n_, p in a.named_parameters() if n_[0] in "qkv" and "bias" not in n_)
        assert qkv(mhe) - qkv(sha) == 3 * n * d


def test_gradient_checkpointing_gives_the_same_gradients():
    config = tiny_config("mhe_mul")
    input_ids, attention_mask = padded_batch(config.vocab_size, [9, 4])

    def gradients(checkpointing):
        model = build(MHEForMaskedLM, config, "sdpa").train()
        if checkpointing:
            model.activation_checkpointing_enable()
        attention_calls = []
        model.model.layers[0].attention.register_forward_hook(lambda *_: attention_calls.append(1))
        model(input_ids, attention_mask, labels=input_ids).loss.backward()
        return {name: p.grad for name, p in model.named_parameters()}, len(attention_calls)

    (plain, plain_calls), (checkpointed, checkpointed_calls) = gradients(False), gradients(True)
    assert (plain_calls, checkpointed_calls) == (1, 2)  # checkpointing recomputes the layer in the backward pass
    assert plain.keys() == checkpointed.keys()
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], msg=name)


def test_bf16_autocast_forward_runs():
    config = tiny_config("mhe_mul")
    model = build(MHEForMaskedLM, config, "sdpa")
    input_ids, attention_mask = padded_batch(config.vocab_size, [9, 4])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(input_ids, attention_mask).logits
    assert logits.dtype == torch.bfloat16
    assert torch.isfinite(logits.float()).all()
    with torch.no_grad():
        full_precision = model(input_ids, attention_mask).logits
    assert (logits.float() - full_precision).abs().max() < 0.25


def test_outputs_hidden_states_and_attentions_with_eager():
    config = tiny_config("mhe_add")
    model = build(MHEModel, config, "eager")
    input_ids, attention_mask = padded_batch(config.vocab_size, [9, 4])
    out = model(input_ids, attention_mask, output_attentions=True, output_hidden_states=True)
    assert len(out.hidden_states) == config.num_hidden_layers + 1
    torch.testing.assert_close(out.hidden_states[-1], out.last_hidden_state)
    assert len(out.attentions) == config.num_hidden_layers
    assert out.attentions[0].shape == (2, config.num_attention_heads, 9, 9)
    torch.testing.assert_close(out.attentions[0].sum(-1), torch.ones(2, config.num_attention_heads, 9))
    assert out.attentions[0][1, :, :, 4:].abs().max() == 0  # padded keys get no attention
    as_tuple = model(input_ids, attention_mask, return_dict=False)
    torch.testing.assert_close(as_tuple[0], out.last_hidden_state)


def test_heads_give_the_right_shapes_and_losses():
    config = tiny_config("mhe_mul", num_labels=3)
    input_ids, attention_mask = padded_batch(config.vocab_size, [9, 4])

    mlm = build(MHEForMaskedLM, config)
    assert mlm.lm_head.decoder.weight is mlm.model.embeddings.word_embeddings.weight
    labels = torch.full_like(input_ids, -100)
    labels[:, 1] = input_ids[:, 1]
    out = mlm(input_ids, attention_mask, labels=labels)
    assert out.logits.shape == (2, 9, config.vocab_size)
    expected = torch.nn.functional.cross_entropy(out.logits.view(-1, config.vocab_size), labels.view(-1))
    torch.testing.assert_close(out.loss, expected)

    classifier = build(MHEForSequenceClassification, config)
    out = classifier(input_ids, attention_mask, labels=torch.tensor([0, 2]))
    assert out.logits.shape == (2, 3) and classifier.config.problem_type == "single_label_classification"
    torch.testing.assert_close(out.loss, torch.nn.functional.cross_entropy(out.logits, torch.tensor([0, 2])))

    multi_label = build(MHEForSequenceClassification, tiny_config(num_labels=3, problem_type="multi_label_classification"))
    targets = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    out = multi_label(input_ids, attention_mask, labels=targets)
    torch.testing.assert_close(out.loss, torch.nn.functional.binary_cross_entropy_with_logits(out.logits, targets))

    regression = build(MHEForSequenceClassification, tiny_config(num_labels=1))
    out = regression(input_ids, attention_mask, labels=torch.tensor([0.5, -1.0]))
    assert regression.config.problem_type == "regression"
    torch.testing.assert_close(out.loss, torch.nn.functional.mse_loss(out.logits.squeeze(), torch.tensor([0.5, -1.0])))

    tagger = build(MHEForTokenClassification, config)
    tags = torch.randint(0, 3, input_ids.shape)
    out = tagger(input_ids, attention_mask, labels=tags)
    assert out.logits.shape == (2, 9, 3)
    torch.testing.assert_close(out.loss, torch.nn.functional.cross_entropy(out.logits.view(-1, 3), tags.view(-1)))

    qa = build(MHEForQuestionAnswering, config)
    out = qa(input_ids, attention_mask, start_positions=torch.tensor([1, 2]), end_positions=torch.tensor([3, 3]))
    assert out.start_logits.shape == out.end_logits.shape == (2, 9) and out.loss > 0

    choice = build(MHEForMultipleChoice, config)
    choices = input_ids[None].expand(3, -1, -1).transpose(0, 1)  # (batch=2, choices=3, seq)
    out = choice(choices, attention_mask[:, None].expand(-1, 3, -1), labels=torch.tensor([0, 2]))
    assert out.logits.shape == (2, 3)
    torch.testing.assert_close(out.loss, torch.nn.functional.cross_entropy(out.logits, torch.tensor([0, 2])))


def test_head_embedding_initialisation_follows_the_config():
    mul = MHEModel(tiny_config("mhe_mul", initializer_range=0.02)).layers[0].attention.q_head_embeddings
    add = MHEModel(tiny_config("mhe_add", initializer_range=0.02)).layers[0].attention.q_head_embeddings
    assert abs(mul.mean().item() - 1.0) < 0.02 and 0 < mul.std().item() < 0.05
    assert abs(add.mean().item()) < 0.02 and 0 < add.std().item() < 0.05
    ones = MHEModel(tiny_config("mhe_add", head_embedding_init="ones")).layers[0].attention.v_head_embeddings
    assert torch.equal(ones, torch.ones_like(ones))


@pytest.mark.parametrize("attention_type", ATTENTION_TYPES)
def test_relative_position_bias_matches_across_kernels_and_padding(attention_type):
    config = tiny_config(attention_type, position_embedding_type="relative_bias", relative_attention_max_distance=3)
    eager = build(MHEModel, config, "eager")
    randomise_head_embeddings(eager)
    assert eager.embeddings.position_embeddings is None  # no absolute positions with relative_bias
    with torch.no_grad():
        for layer in eager.layers:
            bias = layer.attention.relative_position_bias
            assert bias.shape == (layer.attention.num_heads, 7) and torch.count_nonzero(bias) == 0  # starts at zero
            bias.normal_(0, 2.0)
    sdpa = build(MHEModel, config, "sdpa")
    sdpa.load_state_dict(eager.state_dict())
    lengths = [9, 5, 2]
    input_ids, attention_mask = padded_batch(config.vocab_size, lengths)
    with torch.no_grad():
        expected = eager(input_ids, attention_mask).last_hidden_state
        actual = sdpa(input_ids, attention_mask).last_hidden_state
        real = attention_mask.bool()
        torch.testing.assert_close(actual[real], expected[real], atol=1e-5, rtol=1e-5)
        alone = sdpa(input_ids[1:2, :5]).last_hidden_state[0]
        torch.testing.assert_close(actual[1, :5], alone, atol=1e-5, rtol=1e-5)
        # Word order matters: reversing the tokens changes the outputs (beyond reversing them).
        reversed_ids = input_ids[:1].flip(-1)
        assert not torch.allclose(sdpa(reversed_ids).last_hidden_state.flip(1), actual[:1], atol=1e-3)


def test_relative_position_bias_puts_attention_on_the_chosen_offset():
    config = tiny_config("mha", position_embedding_type="relative_bias", relative_attention_max_distance=4)
    model = build(MHEModel, config, "eager")
    with torch.no_grad():
        model.layers[0].attention.relative_position_bias[:, 4 - 1] = 30.0  # offset -1: the previous token
    input_ids = torch.randint(1, config.vocab_size, (2, 8))
    attentions = model(input_ids, output_attentions=True).attentions[0]  # (batch, heads, query, key)
    assert torch.all(attentions[:, :, torch.arange(1, 8), torch.arange(0, 7)] > 0.99)
    # The bias gets a gradient at initialisation (zero bias, uniform attention): nothing has to be learned first.
    model = build(MHEForMaskedLM, config, "sdpa").train()
    labels = input_ids.clone()
    model(input_ids, labels=labels).loss.backward()
    assert model.model.layers[0].attention.relative_position_bias.grad.abs().sum() > 0
    with pytest.raises(Exception, match="position_embedding_type"):
        tiny_config(position_embedding_type="rotary")


@pytest.mark.parametrize("attention_type", ["mha", "mhe_mul", "mhe_add"])
def test_neighbour_init_starts_each_head_on_its_own_neighbour(attention_type):
    config = tiny_config(attention_type, position_embedding_type="relative_bias", relative_attention_neighbour_init=8.0)
    model = build(MHEModel, config, "eager")
    input_ids = torch.randint(1, config.vocab_size, (2, 10))
    attentions = model(input_ids, output_attentions=True).attentions[0]  # (batch, heads, query, key)
    queries = torch.arange(2, 8)
    for head, offset in enumerate([-1, 1, -2, 2]):  # heads 0..3: previous, next, two back, two ahead
        assert torch.all(attentions[:, head, queries, queries + offset] > 0.9)
    # The default starts uniform (every key equally weighted, whatever the weights).
    uniform = build(MHEModel, tiny_config(attention_type, position_embedding_type="relative_bias"), "eager")
    assert uniform.layers[0].attention.relative_position_bias.abs().sum() == 0


def test_neighbour_init_lets_a_masked_token_be_learned_from_its_neighbour():
    """The reason for the option (docs/results/demo.md): with uniform attention at the start, a masked token's
    neighbours reach it averaged over the whole sequence, and a small model learns nothing from them for a long
    time. On sequences where each token determines the next, the same short training learns the masked tokens
    only when each head starts on a neighbour."""

    def masked_accuracy(neighbour_init, steps=100, vocab_size=64, length=16):
        torch.manual_seed(0)
        config = tiny_config(
            "mhe_mul", vocab_size=vocab_size, num_hidden_layers=1, position_embedding_type="relative_bias",
            relative_attention_neighbour_init=neighbour_init,
        )
        model = MHEForMaskedLM(config)
        successor = torch.randperm(vocab_size - 5) + 5  # ids 0..4 are left to special tokens

        def batch(size):
            tokens = torch.empty(size, length, dtype=torch.long)
            tokens[:, 0] = torch.randint(5, vocab_size, (size,))
            for position in range(1, length):
                tokens[:, position] = successor[tokens[:, position - 1] - 5]
            masked = torch.rand(size, length) < 0.15
            masked[:, 0] = False
            return torch.where(masked, 4, tokens), torch.where(masked, tokens, -100)

        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
        for _ in range(steps):
            inputs, labels = batch(32)
            model(inputs, labels=labels).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        inputs, labels = batch(256)
        with torch.no_grad():
            predictions = model.eval()(inputs).logits.argmax(-1)
        masked = labels != -100
        return (predictions[masked] == labels[masked]).float().mean().item()

    uniform_start, neighbour_start = masked_accuracy(0.0), masked_accuracy(8.0)
    assert uniform_start < 0.2 and neighbour_start > 0.5, (uniform_start, neighbour_start)
