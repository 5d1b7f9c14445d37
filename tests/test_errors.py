"""Bad configuration values and bad inputs fail early with errors that name the problem."""

import pytest
import torch
from conftest import TINY_CONFIG, tiny_config
from huggingface_hub.errors import StrictDataclassError

from mhe_transformers import MHEConfig, MHEForMaskedLM, MHEModel

VOCAB, HIDDEN, POSITIONS = TINY_CONFIG["vocab_size"], TINY_CONFIG["hidden_size"], TINY_CONFIG["max_position_embeddings"]


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"attention_type": "mhx"}, "attention_type"),
        ({"head_embedding_init": "xavier"}, "head_embedding_init"),
        ({"hidden_size": 30, "num_attention_heads": 4}, "hidden_size"),
        ({"attention_type": "gqa", "num_attention_heads": 4, "num_key_value_heads": 3}, "num_key_value_heads"),
        ({"attention_type": "gqa", "num_key_value_heads": None}, "num_key_value_heads"),
        ({"vocab_size": 0}, "vocab_size"),
        ({"num_hidden_layers": -1}, "num_hidden_layers"),
        ({"num_attention_heads": 0}, "num_attention_heads"),
        ({"intermediate_size": 0}, "intermediate_size"),
        ({"head_dim": 0}, "head_dim"),
        ({"hidden_dropout_prob": 1.0}, "hidden_dropout_prob"),
        ({"attention_probs_dropout_prob": -0.1}, "attention_probs_dropout_prob"),
        ({"classifier_dropout": 1.5}, "classifier_dropout"),
        ({"layer_norm_eps": 0.0}, "layer_norm_eps"),
        ({"initializer_range": -0.02}, "initializer_range"),
        ({"pad_token_id": VOCAB}, "pad_token_id"),
        ({"relative_attention_neighbour_init": 8.0}, "relative_attention_neighbour_init"),  # absolute positions
        (
            {"position_embedding_type": "relative_bias", "relative_attention_neighbour_init": -1.0},
            "relative_attention_neighbour_init",
        ),
    ],
)
def test_bad_config_values_raise_an_error_naming_the_field(overrides, field):
    # `@strict` checks each field (types, Literal choices) and runs the cross-field checks (`validate_mhe`) once.
    with pytest.raises(StrictDataclassError, match=field):
        tiny_config(**overrides)


def test_explicit_head_dim_allows_any_hidden_size():
    config = tiny_config(hidden_size=30, num_attention_heads=4, head_dim=8)
    model = MHEModel(config)
    assert model.layers[0].attention.o_proj.in_features == 32
    assert model(torch.randint(0, VOCAB, (1, 5))).last_hidden_state.shape == (1, 5, 30)


def test_config_edited_after_construction_is_checked():
    config = tiny_config()
    with pytest.raises(StrictDataclassError, match="attention_type"):
        config.attention_type = "unknown"  # refused at once: a bad value never reaches a model


def test_changing_the_attention_type_of_a_built_config_gives_that_type_and_reloads(tmp_path):
    config = tiny_config("mqa")
    config.attention_type = "mha"  # MQA's single key/value head must not stay: an unreloadable "mha"
    assert config.num_key_value_heads == config.num_attention_heads
    MHEModel(config).save_pretrained(tmp_path)
    reloaded = MHEModel.from_pretrained(tmp_path)
    assert reloaded.config.num_key_value_heads == config.num_attention_heads


def test_config_validation_runs_once_per_config(monkeypatch):
    calls = []
    original = MHEConfig.validate_mhe
    monkeypatch.setattr(MHEConfig, "validate_mhe", lambda self: calls.append(1) or original(self))
    monkeypatch.setattr(MHEConfig, "__class_validators__", [MHEConfig.validate_mhe])
    MHEModel(tiny_config())
    assert len(calls) == 1


@pytest.fixture(scope="module")
def model():
    return MHEForMaskedLM(tiny_config()).eval()


@pytest.mark.parametrize(
    "inputs, message",
    [
        ({"input_ids": torch.tensor([[1, 2, VOCAB]])}, rf"input_ids must lie in \[0, {VOCAB}\)"),
        ({"input_ids": torch.tensor([[1, -2, 3]])}, "input_ids must lie in"),
        ({"input_ids": torch.tensor([[1, 2, 3]]), "attention_mask": torch.ones(1, 4)}, "attention_mask has shape"),
        ({"input_ids": torch.tensor([[1, 2, 3]]), "attention_mask": torch.ones(1, 1, 3)}, "2D .* or 4D"),
        ({"input_ids": torch.tensor([[1, 2, 3]]), "attention_mask": torch.ones(1, 1, 3, 4)}, "4D attention_mask"),
        ({"input_ids": torch.tensor([[1, 2, 3]]), "token_type_ids": torch.tensor([[0, 2, 0]])}, "token_type_ids"),
        ({"input_ids": torch.tensor([[1, 2, 3]]), "token_type_ids": torch.tensor([[0, 1]])}, "token_type_ids has shape"),
        ({"input_ids": torch.ones(1, POSITIONS + 1, dtype=torch.long)}, f"max_position_embeddings={POSITIONS}"),
        ({"input_ids": torch.tensor([1, 2, 3])}, r"shape \(batch, seq_len\)"),
        ({}, "exactly one of input_ids or inputs_embeds"),
        ({"inputs_embeds": torch.randn(1, 3, 8)}, f"hidden_size={HIDDEN}"),
        ({"input_ids": torch.zeros(0, 3, dtype=torch.long)}, r"inputs are empty .* shape \(0, 3\)"),
        ({"input_ids": torch.zeros(2, 0, dtype=torch.long)}, r"inputs are empty .* shape \(2, 0\)"),
        ({"inputs_embeds": torch.randn(0, 3, HIDDEN)}, "inputs are empty"),
        ({"input_ids": torch.tensor([[1, 2, 3]]), "position_ids": torch.tensor([[0, 1, POSITIONS]])}, "position_ids must lie"),
    ],
)
def test_bad_inputs_raise_clear_errors(model, inputs, message):
    with pytest.raises(ValueError, match=message):
        model(**inputs)


def test_output_attentions_needs_eager_or_sdpa(model):
    # sdpa falls back to eager for that call (tests/test_outputs.py); kernels that cannot are refused by name.
    flex = MHEModel._from_config(tiny_config(), attn_implementation="flex_attention")
    with pytest.raises(ValueError, match="attn_implementation='eager'.*'flex_attention'"):
        flex(torch.tensor([[1, 2, 3]]), output_attentions=True)


def test_unsupported_transformers_version_is_refused_with_the_supported_range(monkeypatch):
    import importlib.util
    from pathlib import Path

    import transformers

    import mhe_transformers

    monkeypatch.setattr(transformers, "__version__", "5.3.0")
    path = Path(mhe_transformers.__file__).parent / "models/mhe/configuration_mhe.py"
    spec = importlib.util.spec_from_file_location("configuration_mhe_copy", path)
    with pytest.raises(ImportError, match=r"supports transformers>=5\.4\.0,<6\.0\.0; transformers 5\.3\.0 is installed"):
        spec.loader.exec_module(importlib.util.module_from_spec(spec))
