"""Saving, reloading, and loading as remote code in a process where mhe_transformers cannot be imported."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import transformers
from conftest import tiny_config
from transformers import AutoModel, AutoModelForSequenceClassification

from mhe_transformers import MHEConfig, MHEForMaskedLM, MHEForSequenceClassification
from mhe_transformers.hub import push as hub
from mhe_transformers.interop import conversion
from mhe_transformers.models.mhe.modeling_mhe import AUTO_MAP, HEADS

INPUT_IDS = [[2, 5, 9, 11, 3, 0], [2, 7, 3, 0, 0, 0]]
ATTENTION_MASK = [[1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0]]

# Run in a fresh interpreter: a meta-path finder refuses `mhe_transformers`, so only the code copied next to the
# weights can define the model.
REMOTE_LOAD = textwrap.dedent(
    """
    import importlib.abc, json, sys
    class BlockMHE(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "mhe_transformers" or name.startswith("mhe_transformers."):
                raise ImportError("mhe_transformers is blocked in this process")
    sys.meta_path.insert(0, BlockMHE())
    import torch
    from transformers import AutoModel, AutoModelForSequenceClassification
    folder, input_ids, attention_mask = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
    inputs = dict(input_ids=torch.tensor(input_ids), attention_mask=torch.tensor(attention_mask))
    base = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    classifier = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True, num_labels=3)
    try:
        import mhe_transformers
        blocked = False
    except ImportError:
        blocked = True
    with torch.no_grad():
        hidden = base(**inputs).last_hidden_state
    print(json.dumps({
        "blocked": blocked,
        "base_class": f"{type(base).__module__}.{type(base).__name__}",
        "classifier_class": f"{type(classifier).__module__}.{type(classifier).__name__}",
        "classifier_logits_shape": list(classifier(**inputs).logits.shape),
        "hidden": hidden.tolist(),
    }))
    """
)


def test_save_and_reload_gives_identical_outputs(tmp_path):
    torch.manual_seed(0)
    model = MHEForSequenceClassification(tiny_config(num_labels=3)).eval()
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert type(reloaded) is MHEForSequenceClassification
    inputs = dict(input_ids=torch.tensor(INPUT_IDS), attention_mask=torch.tensor(ATTENTION_MASK))
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, reloaded(**inputs).logits)


def test_masked_lm_checkpoint_loads_as_remote_code_for_every_head(tmp_path):
    torch.manual_seed(0)
    model = MHEForMaskedLM(tiny_config()).eval()
    model.save_pretrained(tmp_path)

    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["auto_map"] == AUTO_MAP
    assert {"configuration_mhe.py", "modeling_mhe.py", "model.safetensors"} <= set(os.listdir(tmp_path))

    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    result = subprocess.run(
        [sys.executable, "-c", REMOTE_LOAD, str(tmp_path), json.dumps(INPUT_IDS), json.dumps(ATTENTION_MASK)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["blocked"]
    assert report["base_class"].startswith("transformers_modules.") and report["base_class"].endswith(".MHEModel")
    assert report["classifier_class"].endswith(".MHEForSequenceClassification")
    assert report["classifier_logits_shape"] == [2, 3]

    with torch.no_grad():
        expected = AutoModel.from_pretrained(tmp_path).eval()(
            input_ids=torch.tensor(INPUT_IDS), attention_mask=torch.tensor(ATTENTION_MASK)
        ).last_hidden_state
    torch.testing.assert_close(torch.tensor(report["hidden"]), expected)


def test_every_head_is_registered_from_the_one_table():
    # modeling_mhe.HEADS is the one head <-> Auto class <-> task table; the registrations, AUTO_MAP, the converter's
    # tasks and the model card's tasks are derived from it, so a new row is all a new head needs.
    assert set(AUTO_MAP) == {"AutoConfig"} | {head.auto_class for head in HEADS.values()}
    for model_class, head in HEADS.items():
        auto_class = getattr(transformers, head.auto_class)
        assert auto_class._model_mapping[MHEConfig] is model_class
        assert AUTO_MAP[head.auto_class] == f"modeling_mhe.{model_class.__name__}"
        if head.task is not None:  # a head the converter produces
            assert conversion.TASKS[head.task] == (auto_class, model_class)
            assert conversion.task_of("Bert" + model_class.__name__.removeprefix("MHE")) == head.task
    assert set(conversion.TASKS) == {head.task for head in HEADS.values()} - {None}
    assert hub.TASKS == {
        "fill-mask": ("MHEForMaskedLM", "AutoModelForMaskedLM"),
        "text-classification": ("MHEForSequenceClassification", "AutoModelForSequenceClassification"),
        "text-generation": ("MHEForCausalLM", "AutoModelForCausalLM"),
        "question-answering": ("MHEForQuestionAnswering", "AutoModelForQuestionAnswering"),
    }


def test_weights_of_another_attention_type_are_refused(tmp_path):
    # MHE-MUL and MHE-ADD weights have identical names and shapes: a config edited from one type to the other would
    # load them silently and give other logits. The type is stamped into the safetensors metadata and checked.
    config = tiny_config("mhe_mul")
    model = MHEForMaskedLM(config)
    model.save_pretrained(tmp_path)
    reloaded = MHEForMaskedLM.from_pretrained(tmp_path)  # the stamp leaves the file loadable and the weights equal
    for (name, tensor), (_, other) in zip(model.state_dict().items(), reloaded.state_dict().items()):
        assert torch.equal(tensor, other), name
    config_file = tmp_path / "config.json"
    config_file.write_text(config_file.read_text().replace('"mhe_mul"', '"mhe_add"'))
    with pytest.raises(ValueError, match="attention_type='mhe_mul' model, but the config says attention_type='mhe_add'"):
        MHEForMaskedLM.from_pretrained(tmp_path)


# Checkpoints saved by the package at commit e772f1e (a flat module layout): config, weights and that commit's
# remote-code pair. Both the installed classes and the checkpoint's own code must still read them.
OLD_CHECKPOINTS = Path(__file__).parent / "fixtures" / "checkpoints-e772f1e"
OLD_HEADS = {
    "masked-lm-mhe_mul": "AutoModelForMaskedLM",
    "causal-lm-mhe_add": "AutoModelForCausalLM",
    "masked-lm-mha-relative-bias": "AutoModelForMaskedLM",
}


@pytest.mark.parametrize("name", sorted(OLD_HEADS))
def test_checkpoints_saved_by_the_unlayered_package_give_the_same_logits(name):
    expected = json.loads((OLD_CHECKPOINTS / "expected_logits.json").read_text())
    model = getattr(transformers, OLD_HEADS[name]).from_pretrained(OLD_CHECKPOINTS / name).eval()
    assert type(model).__module__ == "mhe_transformers.models.mhe.modeling_mhe"  # the installed classes, not remote
    with torch.no_grad():
        logits = model(torch.tensor(expected["input_ids"])).logits
    assert torch.allclose(logits[0, :, :4].flatten(), torch.tensor(expected[name]), atol=1e-5)


def test_a_checkpoint_saved_by_the_unlayered_package_loads_as_remote_code_without_the_package():
    process = hub.run_without_package(
        """
        import json, sys, torch, transformers
        folder, expected = sys.argv[1], json.loads(open(sys.argv[2]).read())
        model = transformers.AutoModelForMaskedLM.from_pretrained(folder, trust_remote_code=True).eval()
        with torch.no_grad():
            logits = model(torch.tensor(expected["input_ids"])).logits[0, :, :4].flatten()
        print("RESULT", type(model).__module__.startswith("transformers_modules"),
              bool(torch.allclose(logits, torch.tensor(expected["masked-lm-mhe_mul"]), atol=1e-5)))
        """,
        str(OLD_CHECKPOINTS / "masked-lm-mhe_mul"),
        str(OLD_CHECKPOINTS / "expected_logits.json"),
    )
    assert "RESULT True True" in process.stdout, process.stderr[-2000:]


# Fine-tuned classifiers saved by commit 206c59d, whose pooler was the encoder's (`model.pooler.dense`) and whose output
# layer was `classifier`: they load into the head that holds both (`classifier.dense`, `classifier.out_proj`) with the
# same logits, and are saved again in that layout.
CLASSIFIER_CHECKPOINTS = Path(__file__).parent / "fixtures" / "checkpoints-206c59d"
CLASSIFIER_HEADS = {
    "sequence-classification-mhe_mul": ("AutoModelForSequenceClassification", (4, 6)),
    "multiple-choice-gqa": ("AutoModelForMultipleChoice", (2, 2, 6)),
}


@pytest.mark.parametrize("name", sorted(CLASSIFIER_HEADS))
def test_classifiers_saved_with_the_pooler_in_the_encoder_give_the_same_logits(name, tmp_path):
    from safetensors import safe_open

    expected = json.loads((CLASSIFIER_CHECKPOINTS / "expected_logits.json").read_text())
    auto_class, shape = CLASSIFIER_HEADS[name]
    inputs = {key: torch.tensor(expected[key]).view(shape) for key in ("input_ids", "attention_mask")}
    with safe_open(CLASSIFIER_CHECKPOINTS / name / "model.safetensors", "pt") as saved:
        assert {"model.pooler.dense.weight", "classifier.weight"} <= set(saved.keys())  # the pooler in the encoder
    model, info = getattr(transformers, auto_class).from_pretrained(CLASSIFIER_CHECKPOINTS / name, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    with torch.no_grad():
        logits = model.eval()(**inputs).logits.flatten()
    torch.testing.assert_close(logits, torch.tensor(expected[name]), atol=1e-5, rtol=0)

    model.save_pretrained(tmp_path)
    with safe_open(tmp_path / "model.safetensors", "pt") as saved:
        head_keys = {key for key in saved.keys() if not key.startswith("model.")}
        assert head_keys == {f"classifier.{layer}.{p}" for layer in ("dense", "out_proj") for p in ("weight", "bias")}
        assert not any("pooler" in key for key in saved.keys())
    with torch.no_grad():
        reloaded = getattr(transformers, auto_class).from_pretrained(tmp_path).eval()(**inputs).logits.flatten()
    torch.testing.assert_close(reloaded, logits, atol=0, rtol=0)


def test_a_base_checkpoint_pooler_starts_the_classifier_head(tmp_path):
    from mhe_transformers import MHEModel

    torch.manual_seed(0)
    base = MHEModel(tiny_config(), add_pooling_layer=True)
    base.save_pretrained(tmp_path)
    classifier = MHEForSequenceClassification.from_pretrained(tmp_path, num_labels=2)
    assert torch.equal(classifier.classifier.dense.weight, base.pooler.dense.weight)
    assert MHEModel.from_pretrained(tmp_path).pooler is None  # the bare encoder has none unless asked for
