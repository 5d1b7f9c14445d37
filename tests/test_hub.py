"""Sharing on the Hub: parameter counts, the model card, verification, the upload, and loading without the package.

Everything is offline: the upload goes to a recording stand-in for HfApi, and "a machine with only Transformers and
PyTorch" is a fresh `python -I` process in which `mhe_transformers` cannot be imported.
"""

import json
import re
import runpy
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from conftest import tiny_config
from huggingface_hub import ModelCard, ModelCardData
from transformers import AutoTokenizer, pipeline

from mhe_transformers import ATTENTION_TYPES, MHEConfig, MHEForMaskedLM, MHEForSequenceClassification, MHEModel
from mhe_transformers.hub import push as hub
from mhe_transformers.hub.model_card import parameter_counts, write_model_card
from mhe_transformers.hub.push import CheckpointError, push_checkpoint, run_without_package
from mhe_transformers.models.mhe.modeling_mhe import AUTO_MAP, MHEAttention
from mhe_transformers.training.tokenizer import train_wordpiece_tokenizer

REPO_ROOT = Path(__file__).resolve().parents[1]
TEXTS = [
    "the cat sat on the mat",
    "a dog ran across the park",
    "the bird flew over the tall tree",
    "a small domesticated carnivorous mammal with soft fur",
] * 4
FILL_MASK_INPUT = "the cat sat on the [MASK]"
CLASSIFY_INPUT = "a dog ran across the park"
LABELS = ["noun.animal", "noun.artifact", "verb.motion"]
TRAINING_ARGS = {  # shaped like loop.record_args: one dict per argument dataclass
    "MHETrainingArguments": {"learning_rate": 0.001, "per_device_train_batch_size": 8, "max_steps": -1,
                             "num_train_epochs": 2.0, "seed": 42, "warmup_ratio": None, "lr_scheduler_type": "linear"},
    "DataArguments": {"max_seq_length": 32, "mlm_probability": 0.15},
}  # fmt: skip
PRETRAIN_METRICS = {"epoch": 2.0, "train_loss": 4.25, "train_runtime": 1.5, "train_samples": 16,
                    "eval_loss": 4.125, "eval_accuracy": 0.0625, "eval_runtime": 0.25, "eval_samples": 4,
                    "perplexity": 61.87}  # fmt: skip
FINETUNE_METRICS = {"train_loss": 1.0986, "eval_accuracy": 0.5, "eval_loss": 1.09, "test_accuracy": 0.25,
                    "test_runtime": 0.1}  # fmt: skip
EXPECTED_UPLOAD = [
    "README.md", "all_results.json", "config.json", "configuration_mhe.py", "model.safetensors", "modeling_mhe.py",
    "tokenizer.json", "tokenizer_config.json", "train_results.json", "trainer_state.json", "training_args.json",
]  # fmt: skip


def save_checkpoint(folder: Path, model, tokenizer, metrics: dict) -> Path:
    """A folder shaped like loop.save_final_checkpoint's, plus the Trainer leftovers a push must skip."""
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "training_args.json").write_text(json.dumps(TRAINING_ARGS))
    (folder / "all_results.json").write_text(json.dumps(metrics))
    (folder / "train_results.json").write_text(json.dumps({"train_loss": metrics["train_loss"]}))
    (folder / "trainer_state.json").write_text("{}")
    (folder / "training_args.bin").write_bytes(b"pickle")
    (folder / "checkpoint-2").mkdir()
    (folder / "checkpoint-2" / "optimizer.pt").write_bytes(b"state")
    (folder / "runs" / "Jan01").mkdir(parents=True)
    (folder / "runs" / "Jan01" / "events.out.tfevents").write_bytes(b"log")
    return folder


@pytest.fixture(scope="session")
def tokenizer(tmp_path_factory):
    return train_wordpiece_tokenizer(TEXTS, vocab_size=80, output_dir=tmp_path_factory.mktemp("tok"), min_frequency=1)


@pytest.fixture(scope="session")
def pretrained_dir(tmp_path_factory, tokenizer):
    torch.manual_seed(0)
    model = MHEForMaskedLM(tiny_config(attention_type="mhe_mul", vocab_size=len(tokenizer)))
    folder = save_checkpoint(tmp_path_factory.mktemp("ckpt") / "mhe-mul-tiny", model, tokenizer, PRETRAIN_METRICS)
    write_model_card(folder, task="fill-mask", datasets=["someone/wordnet-glosses"], model_name="someone/mhe-mul-tiny")
    return folder


@pytest.fixture(scope="session")
def finetuned_dir(tmp_path_factory, tokenizer):
    data_dir = tmp_path_factory.mktemp("data") / "supersense"
    data_dir.mkdir()
    data_files = [str(data_dir / f"{split}.jsonl") for split in ("train", "validation")]
    for file in data_files:
        Path(file).write_text('{"text": "a dog", "label": "noun.animal"}\n')
    torch.manual_seed(1)
    config = tiny_config(attention_type="mhe_add", vocab_size=len(tokenizer), num_labels=len(LABELS),
                         id2label=dict(enumerate(LABELS)), label2id={l: i for i, l in enumerate(LABELS)})  # fmt: skip
    model = MHEForSequenceClassification(config)
    folder = save_checkpoint(tmp_path_factory.mktemp("ckpt") / "mhe-add-cls", model, tokenizer, FINETUNE_METRICS)
    write_model_card(folder, task="text-classification", datasets=data_files, base_model="someone/mhe-add-tiny")
    return folder


class RecordingApi:
    """Stands in for HfApi: records what would be sent."""

    def __init__(self):
        self.calls = []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))

    def create_commit(self, repo_id, operations, commit_message, **kwargs):
        self.calls.append(("create_commit", repo_id, list(operations), commit_message))
        return "commit-info"


# Run by run_without_package: loads both checkpoints as a user without mhe_transformers would.
CLEAN_LOAD = """
import json, sys
import torch
from transformers import (AutoConfig, AutoModel, AutoModelForMaskedLM, AutoModelForSequenceClassification,
                          AutoTokenizer, pipeline)
pretrained, finetuned, fill_text, classify_text, out = sys.argv[1:6]
try:
    import mhe_transformers
    package_importable = True
except ImportError:
    package_importable = False
modules, outputs = {}, {}
with torch.no_grad():
    for name, folder, auto_class, text in [
        ("encoder", pretrained, AutoModel, fill_text),
        ("mlm", pretrained, AutoModelForMaskedLM, fill_text),
        ("classifier", finetuned, AutoModelForSequenceClassification, classify_text),
    ]:
        config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
        model = auto_class.from_pretrained(folder, trust_remote_code=True).eval()
        result = model(**tokenizer([text], return_tensors="pt"))
        outputs[name] = result.last_hidden_state if name == "encoder" else result.logits
        modules[name] = [type(config).__module__, type(model).__module__]
fill = pipeline("fill-mask", model=pretrained, trust_remote_code=True)(fill_text, top_k=3)
classify = pipeline("text-classification", model=finetuned, trust_remote_code=True)(classify_text)
torch.save(outputs, out + ".pt")
json.dump({"package_importable": package_importable, "modules": modules, "fill": fill, "classify": classify,
           "loaded": sorted(m for m in sys.modules if m.startswith("mhe_transformers"))}, open(out + ".json", "w"))
"""


@pytest.fixture(scope="session")
def fresh_process_checks(pretrained_dir, finetuned_dir, tmp_path_factory):
    """The three checks that start a fresh Python process, started at once in threads: each spends several seconds
    importing torch and transformers, so running them side by side keeps the file fast. Each test asserts on its own.
    """
    corrupted = shutil.copytree(pretrained_dir, tmp_path_factory.mktemp("corrupted") / "mhe-mul-tiny")
    weights = (corrupted / "model.safetensors").read_bytes()
    (corrupted / "model.safetensors").write_bytes(weights[: len(weights) // 2])  # cut short: does not load
    clean_out = tmp_path_factory.mktemp("clean") / "outputs"
    good_api, corrupted_api = RecordingApi(), RecordingApi()
    with ThreadPoolExecutor(max_workers=3) as pool:
        yield {
            "push": (good_api, pool.submit(push_checkpoint, pretrained_dir, "someone/mhe-mul-tiny", private=True,
                                           commit_message="v1", api=good_api)),
            "corrupted": (corrupted_api, pool.submit(push_checkpoint, corrupted, "someone/corrupted",
                                                     api=corrupted_api)),
            "clean": (clean_out, pool.submit(run_without_package, CLEAN_LOAD, pretrained_dir, finetuned_dir,
                                             FILL_MASK_INPUT, CLASSIFY_INPUT, clean_out)),
        }  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------------
# Parameter counts


@pytest.mark.parametrize("attention_type", ATTENTION_TYPES)
@pytest.mark.parametrize("model_class", [MHEModel, MHEForMaskedLM])
def test_parameter_counts_match_instantiated_models(attention_type, model_class):
    config = tiny_config(attention_type)

    def real_counts(cfg):
        model = model_class(cfg)
        attention = sum(p.numel() for m in model.modules() if isinstance(m, MHEAttention) for p in m.parameters())
        return sum(p.numel() for p in model.parameters()), attention

    counts = parameter_counts(config, model_class.__name__)
    mha = MHEConfig(**{**config.to_dict(), "attention_type": "mha", "num_key_value_heads": None})
    assert (counts["total"], counts["attention"]) == real_counts(config)
    assert (counts["mha_total"], counts["mha_attention"]) == real_counts(mha)


def test_parameter_counts_follow_the_papers_formula():
    # Per layer, h = n*d with biases: MHA's Q/K/V/O are 4(h^2 + h); MHE's Q/K/V are 3(hd + d) plus 3nd head embeddings.
    config = tiny_config("mhe_mul")
    h, n, layers = config.hidden_size, config.num_attention_heads, config.num_hidden_layers
    d = h // n
    counts = parameter_counts(config, "MHEModel")
    assert counts["mha_attention"] == layers * 4 * (h * h + h)
    assert counts["attention"] == layers * (3 * (h * d + d) + 3 * n * d + (h * h + h))
    assert counts["mha_total"] - counts["total"] == counts["mha_attention"] - counts["attention"]



@pytest.mark.parametrize("attention_type", ["mhe_mul", "mhe_add"])
def test_parameter_counts_of_frozen_head_embeddings_compare_with_plain_mha(attention_type):
    counts = parameter_counts(tiny_config(attention_type=attention_type, freeze_head_embeddings=True), "MHEModel")
    assert counts == parameter_counts(tiny_config(attention_type=attention_type), "MHEModel")


# ---------------------------------------------------------------------------------------------------------------------
# Model card


def test_card_metadata_round_trips_and_model_index_equals_the_metrics_file(pretrained_dir):
    card = ModelCard.load(pretrained_dir / "README.md")
    metadata = card.data.to_dict()
    assert ModelCardData(**metadata).to_dict() == metadata
    assert metadata["library_name"] == "transformers"
    assert metadata["pipeline_tag"] == "fill-mask"
    assert metadata["license"] == "apache-2.0"
    assert metadata["language"] == "en"
    assert metadata["datasets"] == ["someone/wordnet-glosses"]
    assert set(metadata["tags"]) == {"mhe", "mhe_mul", "custom_code"}
    assert "base_model" not in metadata

    recorded = json.loads((pretrained_dir / "all_results.json").read_text())
    in_card = {result.metric_type: result.metric_value for result in card.data.eval_results}
    assert in_card == {"loss": recorded["eval_loss"], "accuracy": recorded["eval_accuracy"],
                       "perplexity": recorded["perplexity"]}  # fmt: skip
    assert {r.dataset_split for r in card.data.eval_results} == {"validation"}
    assert {r.dataset_type for r in card.data.eval_results} == {"someone/wordnet-glosses"}


def test_card_describes_the_checkpoint(pretrained_dir):
    text = ModelCard.load(pretrained_dir / "README.md").text
    config = MHEConfig.from_pretrained(pretrained_dir)
    counts = parameter_counts(config)
    assert "| Attention type | `mhe_mul` |" in text
    assert f"| Total | {counts['total']:,} | {counts['mha_total']:,} |" in text
    assert "| learning_rate | 0.001 |" in text and "| mlm_probability | 0.15 |" in text  # nested args flattened
    assert 'AutoModelForMaskedLM.from_pretrained("someone/mhe-mul-tiny", trust_remote_code=True)' in text
    assert 'pipeline("fill-mask"' in text and "arXiv" in text and "2310.07911" in text
    assert "e^K` have no effect" not in text  # an MHE-ADD limitation, not this model's


def test_card_lists_only_the_hyperparameters_the_run_used():
    from mhe_transformers.hub.model_card import _hyperparameters

    by_epochs = dict(_hyperparameters(TRAINING_ARGS))
    assert by_epochs["num_train_epochs"] == "2" and "max_steps" not in by_epochs
    by_steps = {**TRAINING_ARGS, "MHETrainingArguments": {**TRAINING_ARGS["MHETrainingArguments"], "max_steps": 240}}
    rows = dict(_hyperparameters(by_steps))
    assert rows["max_steps"] == "240" and "num_train_epochs" not in rows  # max_steps wins in Trainer
    assert rows["mlm_probability"] == "0.15"
    causal = {**by_steps, "DataArguments": {**by_steps["DataArguments"], "objective": "clm"}}
    assert "mlm_probability" not in dict(_hyperparameters(causal))  # a causal LM masks nothing


def test_finetuned_card_names_base_model_labels_and_keeps_local_paths_out_of_metadata(finetuned_dir):
    card = ModelCard.load(finetuned_dir / "README.md")
    metadata = card.data.to_dict()
    assert metadata["pipeline_tag"] == "text-classification"
    assert metadata["base_model"] == "someone/mhe-add-tiny"
    assert "datasets" not in metadata  # local files are not Hub dataset ids
    assert "mhe_add" in metadata["tags"]
    # Local files only: no model-index (the Hub reads its dataset fields as Hub ids; a folder name is not one), and
    # the metrics stay in the card's text.
    assert card.data.eval_results is None and "model-index" not in metadata
    for row in ("| eval_accuracy | 0.5 |", "| eval_loss | 1.09 |", "| test_accuracy | 0.25 |"):
        assert row in card.text
    assert "`noun.animal`, `noun.artifact`, `verb.motion`" in card.text
    assert "e^K` have no effect" in card.text and "attention dropout" in card.text
    assert "AutoModelForSequenceClassification" in card.text


def test_card_records_the_precision_the_run_used(pretrained_dir, tmp_path):
    # `accelerate launch --mixed_precision bf16` leaves --bf16 False; save_final_checkpoint records accelerate's state.
    folder = shutil.copytree(pretrained_dir, tmp_path / "bf16")
    args = {**TRAINING_ARGS, "MHETrainingArguments": {**TRAINING_ARGS["MHETrainingArguments"], "bf16": False}}
    card = write_model_card(folder, task="fill-mask", training_args={**args, "mixed_precision": "bf16"})
    assert "| mixed_precision | bf16 |" in card.text and "bf16 | False" not in card.text


def test_card_leaves_out_fields_without_values(pretrained_dir, tmp_path):
    folder = shutil.copytree(pretrained_dir, tmp_path / "bare")
    (folder / "training_args.json").unlink()
    card = write_model_card(folder, task="fill-mask", metrics={"train_loss": 4.0, "eval_runtime": 1.0}, license="mit")
    text = (folder / "README.md").read_text()
    assert text == str(card) + "\n"
    assert "model-index" not in text and "datasets" not in card.data.to_dict()  # no dataset: nothing to file it under
    assert "## Training" not in text and "Hyperparameter" not in text
    assert "| train_loss | 4 |" in text
    assert not re.search(r"\b(None|nan|null)\b", text, re.I)
    assert not re.search(r"\|[ \t]*\|", text), "a table row with an empty cell"
    assert all(value not in ("", [], {}) for value in card.data.to_dict().values()), "an empty metadata value"


def test_write_model_card_rejects_a_task_the_checkpoint_is_not_for(pretrained_dir):
    with pytest.raises(ValueError, match="text-classification.*MHEForSequenceClassification.*MHEForMaskedLM"):
        write_model_card(pretrained_dir, task="text-classification")
    with pytest.raises(ValueError, match="task must be one of"):
        write_model_card(pretrained_dir, task="translation")


# ---------------------------------------------------------------------------------------------------------------------
# Verification and upload


def test_push_uploads_exactly_the_checkpoint_files(pretrained_dir, fresh_process_checks):
    api, push = fresh_process_checks["push"]  # push_checkpoint(pretrained_dir, "someone/mhe-mul-tiny", ...)
    assert push.result() == "commit-info"
    (create, repo_id, kwargs), (commit, commit_repo, operations, message) = api.calls
    assert (create, repo_id, kwargs) == ("create_repo", "someone/mhe-mul-tiny", {"private": True, "exist_ok": True})
    assert (commit, commit_repo, message) == ("create_commit", "someone/mhe-mul-tiny", "v1")
    assert sorted(op.path_in_repo for op in operations) == EXPECTED_UPLOAD
    for op in operations:  # each operation sends that very file
        assert Path(op.path_or_fileobj).read_bytes() == (pretrained_dir / op.path_in_repo).read_bytes()


def _drop(name):
    return lambda folder: (folder / name).unlink()


def _edit_json(name, edit):
    def apply(folder):
        values = json.loads((folder / name).read_text())
        edit(values)
        (folder / name).write_text(json.dumps(values))

    return apply


def _mislabel_card(folder):
    (folder / "README.md").write_text((folder / "README.md").read_text().replace("- mhe_mul", "- mha"))


@pytest.mark.parametrize(
    "damage, message",
    [
        (_drop("tokenizer.json"), "missing tokenizer.json"),
        (_drop("modeling_mhe.py"), "missing modeling_mhe.py"),
        (_drop("README.md"), "missing README.md"),
        (_edit_json("config.json", lambda c: c["auto_map"].pop("AutoModelForSequenceClassification")),
         "auto_map lacks or misnames AutoModelForSequenceClassification"),
        (_mislabel_card, r"lacks the tags \['mhe_mul'\]"),
    ],
    ids=["tokenizer", "modeling-file", "card", "auto_map", "card-tags"],
)  # fmt: skip
def test_push_refuses_an_incomplete_folder_before_sending_anything(pretrained_dir, tmp_path, damage, message):
    folder = shutil.copytree(pretrained_dir, tmp_path / "broken")
    damage(folder)
    api = RecordingApi()
    with pytest.raises(CheckpointError, match=message):
        push_checkpoint(folder, "someone/broken", api=api)
    assert api.calls == []


def test_push_refuses_a_folder_that_does_not_load_without_the_package(fresh_process_checks):
    api, push = fresh_process_checks["corrupted"]  # its model.safetensors is cut short
    with pytest.raises(CheckpointError, match="does not load with trust_remote_code=True") as error:
        push.result()
    assert "safetensors" in str(error.value).lower()  # the fresh process's own error is shown
    assert api.calls == []


def test_push_never_runs_code_that_differs_from_the_package(pretrained_dir, tmp_path, monkeypatch):
    """Code shipped in a checkpoint is never run by a push, which holds the user's token: a modeling_mhe.py that
    differs from this package's (here: one that would steal the token) is refused before anything runs."""
    folder = shutil.copytree(pretrained_dir, tmp_path / "altered")
    stolen = tmp_path / "stolen.txt"
    with open(folder / "modeling_mhe.py", "a", encoding="utf-8") as f:
        f.write(f"\nimport os\nopen({str(stolen)!r}, 'w').write(os.environ.get('HF_TOKEN', 'none'))\n")
    monkeypatch.setenv("HF_TOKEN", "hf_StolenIfThisCodeRuns0123456789")
    monkeypatch.setattr(hub, "run_without_package", lambda *a, **k: pytest.fail("no checkpoint code may run"))
    api = RecordingApi()
    with pytest.raises(CheckpointError, match="modeling_mhe.py differs from this mhe_transformers version's"):
        push_checkpoint(folder, "someone/altered", api=api)
    assert api.calls == [] and not stolen.exists()


def test_the_fresh_process_sees_no_token(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_TOKEN", "hf_InTheParentOnly0123456789abcdef")
    monkeypatch.setenv("HUGGING_FACE_HUB_TOKEN", "hf_InTheParentOnly0123456789abcdef")
    monkeypatch.setenv("WANDB_API_KEY", "wandb-parent-only")
    process = run_without_package(
        "import os, huggingface_hub\n"
        "print(sorted(os.environ), huggingface_hub.get_token())"
    )
    assert process.returncode == 0, process.stderr[-2000:]
    names, token = process.stdout.rsplit("] ", 1)
    assert "HF_TOKEN" not in names and "HUGGING_FACE_HUB_TOKEN" not in names and "WANDB_API_KEY" not in names
    assert token.strip() == "None" and "InTheParentOnly" not in process.stdout


def test_push_refuses_symlinked_files(pretrained_dir, tmp_path):
    folder = shutil.copytree(pretrained_dir, tmp_path / "linked")
    outside = tmp_path / "elsewhere.safetensors"
    (folder / "model.safetensors").rename(outside)
    (folder / "model.safetensors").symlink_to(outside)  # resolves outside the folder
    (folder / "config.json").rename(folder / "real-config.json")
    (folder / "config.json").symlink_to("real-config.json")  # inside, but still a link the upload would skip
    api = RecordingApi()
    with pytest.raises(CheckpointError) as error:
        push_checkpoint(folder, "someone/linked", api=api)
    assert "config.json is a symbolic link" in str(error.value)
    assert "model.safetensors is a symbolic link" in str(error.value)
    assert api.calls == []


class FailingApi(RecordingApi):
    def __init__(self, error):
        super().__init__()
        self.error = error

    def create_repo(self, repo_id, **kwargs):
        raise self.error


def hub_errors():
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    request = httpx2.Request("POST", "https://huggingface.co/api/repos/create")
    return {
        "refused": (HfHubHTTPError("401 Client Error: Unauthorized\nRequest ID: x\nInvalid credentials",
                                   response=httpx2.Response(401, request=request)), "refused the credentials"),
        "unreachable": (httpx2.ConnectError("[Errno 111] Connection refused", request=request),
                        "cannot be reached \\(ConnectError: \\[Errno 111\\] Connection refused\\)"),
        "offline": (OfflineModeIsEnabled("Cannot reach https://huggingface.co: offline mode is enabled."),
                    "cannot be reached \\(OfflineModeIsEnabled"),
    }  # fmt: skip


@pytest.mark.parametrize("case", ["refused", "unreachable", "offline"])
def test_hub_failures_are_one_line_naming_the_problem(pretrained_dir, monkeypatch, case):
    error, message = hub_errors()[case]
    monkeypatch.setattr(hub, "_load_without_package", lambda *args: None)  # the fresh-process load is tested above
    with pytest.raises(hub.HubError, match=f"^Could not upload to the Hub repo someone/x: .*{message}") as raised:
        push_checkpoint(pretrained_dir, "someone/x", api=FailingApi(error))
    assert "\n" not in str(raised.value)


def test_cli_reports_an_unreachable_hub_in_one_line_and_fails(pretrained_dir, monkeypatch, capsys):
    # The real HfApi, offline (conftest sets HF_HUB_OFFLINE=1): huggingface_hub refuses to connect.
    monkeypatch.setattr(hub, "_load_without_package", lambda *args: None)
    argv = ["push_to_hub.py", "--checkpoint_dir", str(pretrained_dir), "--hub_model_id", "someone/x"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(REPO_ROOT / "scripts" / "push_to_hub.py"), run_name="__main__")
    assert exit_info.value.code == 1
    error = capsys.readouterr().err.splitlines()
    assert error[0].startswith(
        "push_to_hub.py: error: Not uploaded. Could not upload to the Hub repo someone/x: the Hub cannot be reached"
    )
    assert error[1:] == ["(run again with --debug for the traceback)"]


def test_cli_refuses_a_broken_folder_with_the_reason(pretrained_dir, tmp_path, monkeypatch, capsys):
    folder = shutil.copytree(pretrained_dir, tmp_path / "broken")
    (folder / "model.safetensors").unlink()
    monkeypatch.setattr(hub, "HfApi", lambda: pytest.fail("HfApi must not be created for a broken folder"))
    monkeypatch.setattr(sys, "argv", ["push_to_hub.py", "--checkpoint_dir", str(folder), "--hub_model_id", "someone/x"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(REPO_ROOT / "scripts" / "push_to_hub.py"), run_name="__main__")
    assert exit_info.value.code == 1
    assert re.search("(?s)Not uploaded.*missing model.safetensors", capsys.readouterr().err)


# ---------------------------------------------------------------------------------------------------------------------
# A machine with Transformers and PyTorch only


def test_checkpoints_load_without_the_package_and_match_in_process_outputs(
    pretrained_dir, finetuned_dir, fresh_process_checks
):
    out, clean_load = fresh_process_checks["clean"]  # run_without_package(CLEAN_LOAD, pretrained_dir, ...)
    process = clean_load.result()
    assert process.returncode == 0, process.stderr[-3000:]
    remote = json.loads(out.with_suffix(".json").read_text())
    assert remote["package_importable"] is False and remote["loaded"] == []
    for config_module, model_module in remote["modules"].values():
        assert config_module.startswith("transformers_modules.") and config_module.endswith(".configuration_mhe")
        assert model_module.startswith("transformers_modules.") and model_module.endswith(".modeling_mhe")

    remote_outputs = torch.load(out.with_suffix(".pt"))
    with torch.no_grad():
        fill_inputs = AutoTokenizer.from_pretrained(pretrained_dir)([FILL_MASK_INPUT], return_tensors="pt")
        classify_inputs = AutoTokenizer.from_pretrained(finetuned_dir)([CLASSIFY_INPUT], return_tensors="pt")
        local = {
            "encoder": MHEModel.from_pretrained(pretrained_dir).eval()(**fill_inputs).last_hidden_state,
            "mlm": MHEForMaskedLM.from_pretrained(pretrained_dir).eval()(**fill_inputs).logits,
            "classifier": MHEForSequenceClassification.from_pretrained(finetuned_dir).eval()(**classify_inputs).logits,
        }
    for name, expected in local.items():
        torch.testing.assert_close(remote_outputs[name], expected, rtol=0, atol=1e-6)

    local_fill = pipeline("fill-mask", model=str(pretrained_dir))(FILL_MASK_INPUT, top_k=3)
    local_classify = pipeline("text-classification", model=str(finetuned_dir))(CLASSIFY_INPUT)
    assert [r["token"] for r in remote["fill"]] == [r["token"] for r in local_fill]
    assert [r["score"] for r in remote["fill"]] == pytest.approx([r["score"] for r in local_fill], abs=1e-6)
    assert remote["classify"][0]["label"] == local_classify[0]["label"] and remote["classify"][0]["label"] in LABELS
    assert remote["classify"][0]["score"] == pytest.approx(local_classify[0]["score"], abs=1e-6)


def test_auto_map_in_a_saved_checkpoint_names_every_head(pretrained_dir):
    # verify_checkpoint relies on modeling_mhe.AUTO_MAP being what save_pretrained writes.
    assert json.loads((pretrained_dir / "config.json").read_text())["auto_map"] == AUTO_MAP
