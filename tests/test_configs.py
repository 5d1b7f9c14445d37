"""The versioned configs (configs/) and the YAML + `--key value` argument parsing shared by both pipelines."""

import json
from pathlib import Path

import pytest
from conftest import REPO_ROOT
from transformers import AutoTokenizer

from mhe_transformers import ATTENTION_TYPES, MHEConfig
from mhe_transformers.data import text
from mhe_transformers.models.mhe.configuration_mhe import default_num_key_value_heads
from mhe_transformers.training import finetune as finetuning
from mhe_transformers.training import loop
from mhe_transformers.training import pretrain as pretraining
from mhe_transformers.training.finetune import GLUE_TASKS
from mhe_transformers.utils.cli import UsageError

CONFIGS = REPO_ROOT / "configs"
SIZES = {  # layers, hidden, heads, FFN
    "base": (12, 768, 12, 3072),  # BERT-base
    "small": (4, 512, 8, 2048),
    "tiny": (2, 128, 4, 512),
}


def test_one_model_config_per_size():
    assert {path.name for path in (CONFIGS / "model").glob("*.json")} == {f"{size}.json" for size in SIZES}
    for size in SIZES:  # dimensions only: the tokenizer gives the vocabulary, --attention_type the attention
        values = json.loads((CONFIGS / "model" / f"{size}.json").read_text())
        assert not {"vocab_size", "pad_token_id", "attention_type", "num_key_value_heads"} & set(values)


@pytest.mark.parametrize("size", sorted(SIZES))
@pytest.mark.parametrize("attention_type", ATTENTION_TYPES)
def test_model_config_builds_with_the_tokenizer_vocabulary(size, attention_type, tiny_tokenizer_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    config = loop.build_config(CONFIGS / "model" / f"{size}.json", tokenizer, attention_type)
    assert isinstance(config, MHEConfig) and config.attention_type == attention_type
    assert (
        config.num_hidden_layers,
        config.hidden_size,
        config.num_attention_heads,
        config.intermediate_size,
    ) == SIZES[size]
    assert (config.vocab_size, config.pad_token_id) == (len(tokenizer), tokenizer.pad_token_id)
    if attention_type == "gqa":
        assert config.num_key_value_heads == default_num_key_value_heads(config.num_attention_heads)


def test_attention_type_override_and_config_overrides(tiny_tokenizer_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    base = CONFIGS / "model" / "base.json"
    assert loop.build_config(base, tokenizer).attention_type == MHEConfig().attention_type == "mhe_mul"
    gqa = loop.build_config(base, tokenizer, attention_type="gqa")
    assert (gqa.attention_type, gqa.num_key_value_heads) == ("gqa", 3)  # a quarter of BERT-base's 12 heads
    custom = loop.build_config(
        base, tokenizer, "gqa", "num_key_value_heads=6,num_hidden_layers=2,attention_bias=false"
    )
    assert (custom.num_key_value_heads, custom.num_hidden_layers, custom.attention_bias) == (6, 2, False)
    with pytest.raises(ValueError, match="key=value"):
        loop.build_config(base, tokenizer, config_overrides="num_hidden_layers")


def test_subsample_is_a_fixed_random_subset_in_file_order():
    kept = text.subsample_indices(1000, 100)
    assert kept == text.subsample_indices(1000, 100) == sorted(set(kept)) and len(kept) == 100
    assert kept != list(range(100)) and max(kept) > 900  # spread over the file, not its first rows
    assert text.subsample_indices(5, 10) == list(range(5))


@pytest.mark.parametrize("heads, expected", [(1, 1), (4, 2), (8, 2), (12, 3), (16, 4), (6, 2)])
def test_default_num_key_value_heads(heads, expected):
    assert default_num_key_value_heads(heads) == expected


# --- YAML configs and overrides --------------------------------------------------------------------------------


def parse(module, config: Path, *overrides: str):
    return loop.parse_args(module.ARGUMENT_CLASSES, ["--config", str(config), *overrides])


@pytest.mark.parametrize("path", sorted((CONFIGS / "pretrain").glob("*.yaml")), ids=lambda path: path.stem)
def test_pretrain_configs_parse(path):
    model_args, data_args, training_args = parse(pretraining, path, "--bf16", "false")  # bf16 needs a GPU here
    assert Path(REPO_ROOT / model_args.model_config).is_file()
    assert training_args.do_train and training_args.do_eval and training_args.weight_decay == 0.01
    if path.stem == "bert-base-hub":  # BERT's recipe on a Hub corpus
        assert data_args.dataset_name and data_args.max_seq_length == 128
        assert (training_args.learning_rate, training_args.lr_scheduler_type) == (1e-4, "linear")
        assert training_args.warmup_steps > 0
        assert training_args.per_device_train_batch_size * 8 == 256  # on 8 GPUs, as the file says


@pytest.mark.parametrize("task_name", sorted(GLUE_TASKS))
def test_glue_configs_follow_the_bert_recipe(task_name):
    _, data_args, training_args = parse(finetuning, CONFIGS / "finetune" / f"{task_name}.yaml")
    assert data_args.task_name == task_name and data_args.max_seq_length == 128
    assert (training_args.learning_rate, training_args.num_train_epochs, training_args.per_device_train_batch_size) == (
        2e-5,
        3,
        32,
    )
    assert training_args.metric_for_best_model in GLUE_TASKS[task_name].metrics


def test_supersense_config_parses():
    _, data_args, training_args = parse(finetuning, CONFIGS / "finetune" / "wordnet-supersense.yaml")
    assert data_args.label_list_file.endswith("supersense/labels.json") and training_args.do_predict


def test_command_line_overrides_the_yaml(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(
        "learning_rate: 1.0e-3\nmax_steps: 10\ntrain_files: [a.txt]\ndo_train: true\nmodel_config: m.json\n"
    )
    model_args, data_args, training_args = parse(
        pretraining, config, "--max_steps", "20", "--train_files", "b.txt", "c.txt"
    )
    assert (training_args.learning_rate, training_args.max_steps) == (1e-3, 20)  # YAML value kept, CLI value wins
    assert data_args.train_files == ["b.txt", "c.txt"] and model_args.model_config == "m.json"
    assert training_args.do_train is True
    # YAML 1.1 reads "1e-4" as a string: it is still converted, by the field's own type.
    config.write_text("learning_rate: 1e-4\n")
    assert parse(pretraining, config)[2].learning_rate == 1e-4


def test_unknown_yaml_keys_and_options_are_errors(tmp_path):
    config = tmp_path / "typo.yaml"
    config.write_text("max_step: 10\n")
    with pytest.raises(UsageError, match="Unknown argument.*max_step"):
        parse(pretraining, config)
    config.write_text("max_steps: 10\n")
    with pytest.raises(UsageError, match="--max_step"):
        parse(pretraining, config, "--max_step", "3")
