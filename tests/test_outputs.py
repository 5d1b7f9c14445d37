"""Outputs as Transformers users get them: recorded hidden states/attentions, tuples when return_dict=False,
attentions under sdpa, and packed batches (DataCollatorWithFlattening)."""

import pytest
import torch
from conftest import tiny_config
from test_modeling import build, padded_batch, randomise_head_embeddings
from transformers import DataCollatorWithFlattening
from transformers.utils import logging

from mhe_transformers import (
    ATTENTION_TYPES,
    MHEForMaskedLM,
    MHEForMultipleChoice,
    MHEForQuestionAnswering,
    MHEForSequenceClassification,
    MHEForTokenClassification,
    MHEModel,
)

HEADS = [
    MHEModel,
    MHEForMaskedLM,
    MHEForSequenceClassification,
    MHEForTokenClassification,
    MHEForQuestionAnswering,
    MHEForMultipleChoice,
]


def head_inputs(model_class, config):
    input_ids, attention_mask = padded_batch(config.vocab_size, [9, 4])
    inputs = dict(input_ids=input_ids, attention_mask=attention_mask)
    if model_class is MHEForMultipleChoice:
        inputs = {k: v[:, None].expand(-1, 3, -1) for k, v in inputs.items()}
    labels = {
        MHEForMaskedLM: dict(labels=torch.where(attention_mask.bool(), input_ids, -100)),
        MHEForSequenceClassification: dict(labels=torch.tensor([0, 2])),
        MHEForTokenClassification: dict(labels=torch.randint(0, 3, input_ids.shape, generator=torch.Generator().manual_seed(0))),
        MHEForQuestionAnswering: dict(start_positions=torch.tensor([1, 2]), end_positions=torch.tensor([3, 3])),
        MHEForMultipleChoice: dict(labels=torch.tensor([0, 2])),
    }.get(model_class, {})
    return {**inputs, **labels}


@pytest.mark.parametrize("model_class", HEADS, ids=lambda c: c.__name__)
def test_tuple_outputs_equal_dict_outputs_for_every_head(model_class, tmp_path):
    config = tiny_config("mhe_mul", num_labels=3)
    model = build(model_class, config, "eager")
    inputs = head_inputs(model_class, config)
    flags = dict(output_hidden_states=True, output_attentions=True)
    with torch.no_grad():
        as_dict = model(**inputs, **flags)
        as_tuple = model(**inputs, **flags, return_dict=False)
    assert isinstance(as_tuple, tuple)
    expected = as_dict.to_tuple()
    assert len(as_tuple) == len(expected) >= 3  # main output(s), hidden states, attentions
    for actual, wanted in zip(as_tuple, expected):
        torch.testing.assert_close(actual, wanted)
    assert len(as_dict.hidden_states) == config.num_hidden_layers + 1
    assert len(as_dict.attentions) == config.num_hidden_layers

    # return_dict=False in the config (from_pretrained(..., return_dict=False)) gives the same tuple.
    model.save_pretrained(tmp_path)
    reloaded = model_class.from_pretrained(tmp_path, return_dict=False, attn_implementation="eager").eval()
    with torch.no_grad():
        from_config = reloaded(**inputs, **flags)
    assert isinstance(from_config, tuple)
    for actual, wanted in zip(from_config, expected):
        torch.testing.assert_close(actual, wanted)


def test_config_output_flags_are_recorded():
    config = tiny_config("mhe_add", output_hidden_states=True, output_attentions=True)
    model = build(MHEForSequenceClassification, config, "eager")
    input_ids, attention_mask = padded_batch(config.vocab_size, [9, 4])
    out = model(input_ids, attention_mask)
    assert len(out.hidden_states) == config.num_hidden_layers + 1 and len(out.attentions) == config.num_hidden_layers
    plain = model(input_ids, attention_mask, output_hidden_states=False, output_attentions=False)
    assert plain.hidden_states is None and plain.attentions is None
    torch.testing.assert_close(plain.logits, out.logits)


@pytest.mark.parametrize("attention_type", ATTENTION_TYPES)
def test_output_attentions_under_sdpa_falls_back_to_eager_for_that_call(attention_type, caplog):
    config = tiny_config(attention_type)
    eager = build(MHEModel, config, "eager")
    randomise_head_embeddings(eager)
    sdpa = build(MHEModel, config, "sdpa")
    sdpa.load_state_dict(eager.state_dict())
    input_ids, attention_mask = padded_batch(config.vocab_size, [9, 4])
    logging.get_logger("transformers").warning_once.cache_clear()
    with torch.no_grad():
        expected = eager(input_ids, attention_mask, output_attentions=True)
        assert "uses eager attention" not in caplog.text
        actual = sdpa(input_ids, attention_mask, output_attentions=True)
    assert "uses eager attention" in caplog.text
    assert sdpa.config._attn_implementation == "sdpa"  # only that call fell back
    assert len(actual.attentions) == config.num_hidden_layers
    for got, wanted in zip(actual.attentions, expected.attentions):
        torch.testing.assert_close(got, wanted)
    real = attention_mask.bool()
    torch.testing.assert_close(actual.last_hidden_state[real], expected.last_hidden_state[real])


def pack(sequences):
    """Run DataCollatorWithFlattening (what Trainer users pack with) on the sequences."""
    return DataCollatorWithFlattening()([{"input_ids": s} for s in sequences])


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("attention_type", ["mhe_mul", "mhe_add", "mha", "gqa"])
def test_packed_batch_equals_separate_sequences(attention_type, attn_implementation):
    config = tiny_config(attention_type)
    model = build(MHEForMaskedLM, config, attn_implementation)
    randomise_head_embeddings(model)
    generator = torch.Generator().manual_seed(0)
    sequences = [torch.randint(1, config.vocab_size, (n,), generator=generator).tolist() for n in (5, 9, 3)]
    batch = pack(sequences)
    assert "attention_mask" not in batch and batch["position_ids"][0, 5].item() == 0
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits[0]
        start = 0
        for sequence in sequences:
            alone = model(input_ids=torch.tensor([sequence])).logits[0]
            torch.testing.assert_close(packed[start : start + len(sequence)], alone, atol=1e-5, rtol=1e-5)
            start += len(sequence)
    # Without the position_ids the rows would attend across sequences: the check above is not vacuous.
    with torch.no_grad():
        unpacked = model(input_ids=batch["input_ids"]).logits[0]
    assert (unpacked - packed).abs().max() > 1e-3


def test_packed_rows_in_a_batch_of_several_rows_are_masked_per_row():
    config = tiny_config("mhe_mul")
    model = build(MHEModel, config, "sdpa")
    randomise_head_embeddings(model)
    input_ids = torch.randint(1, config.vocab_size, (2, 8), generator=torch.Generator().manual_seed(1))
    position_ids = torch.tensor([[0, 1, 2, 0, 1, 2, 3, 4], [0, 1, 2, 3, 4, 5, 6, 7]])
    with torch.no_grad():
        packed = model(input_ids=input_ids, position_ids=position_ids).last_hidden_state
        first = model(input_ids=input_ids[:1, :3]).last_hidden_state[0]
        second = model(input_ids=input_ids[:1, 3:]).last_hidden_state[0]
        whole = model(input_ids=input_ids[1:]).last_hidden_state[0]
    torch.testing.assert_close(packed[0, :3], first, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(packed[0, 3:], second, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(packed[1], whole, atol=1e-5, rtol=1e-5)


def test_packed_rows_are_refused_by_flash_attention_with_several_rows():
    from mhe_transformers.models.mhe.modeling_mhe import _packed_sequences

    config = tiny_config("mhe_mul")
    config._attn_implementation = "flash_attention_2"  # the check runs before any kernel: no GPU needed
    position_ids = torch.tensor([[0, 1, 0, 1], [0, 1, 2, 3]])
    with pytest.raises(ValueError, match="Packed sequences .* batch of 2 rows .*flash_attention_2"):
        _packed_sequences(config, position_ids, None, batch_size=2)
    # One packed row is fine: flash attention unpacks it from position_ids itself.
    assert _packed_sequences(config, position_ids[:1], None, batch_size=1) is not None
    # An attention_mask means an ordinary padded batch, whatever the positions.
    assert _packed_sequences(config, position_ids, torch.ones(2, 4), batch_size=2) is None

