"""The fine-tuning pipeline (mhe_transformers.training.finetune): local files with a label list, GLUE-shaped data, the GLUE
task table, errors, and the checkpoints loading with remote code only, all offline."""

import csv
import json

import pytest
import torch
from conftest import FILLERS, QUICK_TRAINING_ARGS, REPO_ROOT
from transformers import AutoModelForMaskedLM, AutoModelForSequenceClassification, AutoTokenizer

from mhe_transformers.hub.push import run_without_package
from mhe_transformers.training import finetune as finetuning
from mhe_transformers.training.finetune import GLUE_DATASET, GLUE_TASKS, DataArguments, resolve_task
from mhe_transformers.utils.cli import UsageError


def local_files_argv(data_dir, model_dir, output_dir) -> list[str]:
    return [
        "--config", str(REPO_ROOT / "configs/finetune/wordnet-supersense.yaml"), *QUICK_TRAINING_ARGS,
        "--model_name_or_path", str(model_dir), "--output_dir", str(output_dir),
        "--train_file", str(data_dir / "train.jsonl"), "--validation_file", str(data_dir / "validation.jsonl"),
        "--test_file", str(data_dir / "test.jsonl"), "--label_list_file", str(data_dir / "labels.json"),
        "--max_seq_length", "32", "--per_device_train_batch_size", "16", "--per_device_eval_batch_size", "32",
        "--num_train_epochs", "2", "--learning_rate", "5e-3",
        # Evaluate every epoch and keep the best model, so that early stopping is wired in for real.
        "--eval_strategy", "epoch", "--save_strategy", "epoch", "--load_best_model_at_end", "true",
        "--metric_for_best_model", "accuracy", "--early_stopping_patience", "2",
        "--max_predict_samples", "20",  # of 24: the predictions must still name their rows of the test file
    ]  # fmt: skip


@pytest.fixture(scope="module")
def finetuned_dir(tmp_path_factory, tiny_classification_dir, tiny_pretrained_dir):
    output_dir = tmp_path_factory.mktemp("finetune") / "supersense"
    metrics = finetuning.main(local_files_argv(tiny_classification_dir, tiny_pretrained_dir, output_dir))
    (output_dir.parent / "returned_metrics.json").write_text(json.dumps(metrics))
    return output_dir


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_local_files_with_a_label_list(finetuned_dir, tiny_classification_dir):
    labels = json.loads((tiny_classification_dir / "labels.json").read_text())
    config = json.loads((finetuned_dir / "config.json").read_text())
    assert [config["id2label"][str(i)] for i in range(len(labels))] == labels
    assert "AutoModelForMaskedLM" in config["auto_map"]  # the full auto_map survives fine-tuning

    results = json.loads((finetuned_dir / "all_results.json").read_text())
    assert results == json.loads((finetuned_dir.parent / "returned_metrics.json").read_text())
    for name in (
        "train_results.json",
        "eval_results.json",
        "test_results.json",
        "training_args.json",
        "model.safetensors",
    ):
        assert (finetuned_dir / name).is_file(), name
    assert {"train_loss", "eval_accuracy", "test_accuracy"} <= set(results)

    # The predictions name labels, one per predicted row of the test file, and agree with the test accuracy.
    test_rows = read_jsonl(tiny_classification_dir / "test.jsonl")
    predictions = read_jsonl(finetuned_dir / "predictions.jsonl")
    indices = [row["index"] for row in predictions]
    assert len(indices) == results["test_samples"] == 20 and indices == sorted(set(indices))
    assert {row["prediction"] for row in predictions} <= set(labels)
    correct = sum(row["prediction"] == test_rows[row["index"]]["label"] for row in predictions)
    assert results["test_accuracy"] == pytest.approx(correct / 20)

    recorded = json.loads((finetuned_dir / "training_args.json").read_text())
    assert recorded["DataArguments"]["label_list_file"].endswith("labels.json")
    assert recorded["ModelArguments"]["model_name_or_path"].endswith("mhe_mul-tiny")
    assert [path.name for path in finetuned_dir.parent.iterdir() if path.name.startswith(".")] == []


def test_labels_listed_in_another_order_are_mapped_by_name(finetuned_dir, tiny_classification_dir, tmp_path):
    """Evaluating a fine-tuned classifier with the label list in another order gives the same accuracy and the
    same predicted names (run_glue maps by label2id); another label set is refused, naming both orders."""
    data, labels = tiny_classification_dir, json.loads((tiny_classification_dir / "labels.json").read_text())

    def evaluate(label_list, name):
        (tmp_path / f"{name}.json").write_text(json.dumps(label_list))
        output_dir = tmp_path / name
        metrics = finetuning.main([
            *QUICK_TRAINING_ARGS, "--model_name_or_path", str(finetuned_dir), "--output_dir", str(output_dir),
            "--validation_file", str(data / "validation.jsonl"), "--test_file", str(data / "test.jsonl"),
            "--label_list_file", str(tmp_path / f"{name}.json"), "--do_eval", "true", "--do_predict", "true",
            "--max_seq_length", "32", "--predictions_format", "jsonl",
        ])  # fmt: skip
        config = json.loads((output_dir / "config.json").read_text())
        return metrics, read_jsonl(output_dir / "predictions.jsonl"), config["id2label"]

    same_metrics, same_predictions, same_labels = evaluate(labels, "same")
    rotated_metrics, rotated_predictions, rotated_labels = evaluate(labels[1:] + labels[:1], "rotated")  # no fixed point
    assert rotated_metrics["eval_accuracy"] == same_metrics["eval_accuracy"]
    assert rotated_metrics["test_accuracy"] == same_metrics["test_accuracy"]
    assert rotated_predictions == same_predictions
    assert rotated_labels == same_labels == {str(i): label for i, label in enumerate(labels)}
    other = ["noun.animal", "noun.artifact", "noun.food"]
    with pytest.raises(ValueError, match=r"trained on the labels \['verb.motion', .*this run's labels are \['noun.animal'"):
        evaluate(other, "other")
    assert not (tmp_path / "other").exists()


def test_checkpoints_load_with_remote_code_only(tiny_pretrained_dir, finetuned_dir):
    """Both pipelines' checkpoints load with trust_remote_code=True in a process where mhe_transformers cannot be
    imported, from their own code files (transformers_modules), and compute what the package's classes compute."""
    code = """
import json, sys
import torch
from transformers import AutoModelForMaskedLM, AutoModelForSequenceClassification, AutoTokenizer
pretrained, finetuned, text = sys.argv[1:4]
result = {}
for name, folder, auto_class in [("mlm", pretrained, AutoModelForMaskedLM),
                                 ("mlm_as_classifier", pretrained, AutoModelForSequenceClassification),
                                 ("classifier", finetuned, AutoModelForSequenceClassification)]:
    model = auto_class.from_pretrained(folder, trust_remote_code=True)
    inputs = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)(text, return_tensors="pt")
    with torch.no_grad():
        result[name] = {"module": type(model).__module__, "logits": model(**inputs).logits.tolist()}
result["imported"] = [name for name in sys.modules if name.startswith("mhe_transformers")]
print(json.dumps(result))
"""
    text = "a quiet dog seen near the river"
    process = run_without_package(code, tiny_pretrained_dir, finetuned_dir, text)
    assert process.returncode == 0, process.stderr[-3000:]
    remote = json.loads(process.stdout.splitlines()[-1])
    assert remote["imported"] == []
    assert all(
        remote[name]["module"].startswith("transformers_modules") for name in ("mlm", "mlm_as_classifier", "classifier")
    )
    for name, folder, auto_class in [
        ("mlm", tiny_pretrained_dir, AutoModelForMaskedLM),
        ("classifier", finetuned_dir, AutoModelForSequenceClassification),
    ]:
        model = auto_class.from_pretrained(folder)  # the package's own classes
        assert type(model).__module__ == "mhe_transformers.models.mhe.modeling_mhe"
        with torch.no_grad():
            local = model(**AutoTokenizer.from_pretrained(folder)(text, return_tensors="pt")).logits
        torch.testing.assert_close(torch.tensor(remote[name]["logits"]), local, rtol=1e-5, atol=1e-5)


# --- GLUE --------------------------------------------------------------------------------------------------------

# From the GLUE paper (Wang et al., 2019) and the nyu-mll/glue dataset card: text columns, classes, metric.
GLUE_FACTS = {
    "cola": (("sentence", None), 2, "matthews_correlation"),
    "sst2": (("sentence", None), 2, "accuracy"),
    "mrpc": (("sentence1", "sentence2"), 2, "f1"),
    "qqp": (("question1", "question2"), 2, "f1"),
    "stsb": (("sentence1", "sentence2"), None, "pearsonr"),
    "mnli": (("premise", "hypothesis"), 3, "accuracy"),
    "qnli": (("question", "sentence"), 2, "accuracy"),
    "rte": (("sentence1", "sentence2"), 2, "accuracy"),
    "wnli": (("sentence1", "sentence2"), 2, "accuracy"),
}


@pytest.mark.parametrize("task_name", sorted(GLUE_FACTS))
def test_glue_task_resolution(task_name):
    columns, num_labels, metric = GLUE_FACTS[task_name]
    setup = resolve_task(DataArguments(task_name=task_name.upper()))  # names are case-insensitive
    assert (setup.dataset_name, setup.dataset_config_name) == (GLUE_DATASET, task_name)
    assert (setup.text_column, setup.text_pair_column, setup.label_column) == (*columns, "label")
    assert (len(setup.label_names) if setup.label_names else None) == num_labels
    assert metric in setup.metrics
    assert setup.splits["test"] == (["test_matched"] if task_name == "mnli" else ["test"])
    # The same task from local files: the task's columns and labels, the files' split names.
    local = resolve_task(DataArguments(task_name=task_name, train_file="train.csv", validation_file="dev.csv"))
    assert local.dataset_name is None and local.data_files == {"train": "train.csv", "validation": "dev.csv"}
    assert local.splits == {"train": ["train"], "validation": ["validation"], "test": ["test"]}
    assert (local.text_column, local.label_names) == (setup.text_column, setup.label_names)


def test_mnli_evaluates_matched_and_mismatched():
    assert GLUE_TASKS["mnli"].validation_splits == ("validation_matched", "validation_mismatched")


def write_csv(path, rows):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_glue_shaped_local_files_end_to_end(tmp_path, tiny_pretrained_dir):
    """MRPC from local files shaped like nyu-mll/glue (integer labels, an idx column, test labels hidden as -1)."""
    pairs = [("a dog ran across the field", "a dog crossed the field", 1), ("a cat sat", "the boat sank", 0)]

    def rows(n, hidden=False):
        return [
            {
                "sentence1": pairs[i % 2][0],
                "sentence2": pairs[i % 2][1],
                "label": -1 if hidden else pairs[i % 2][2],
                "idx": i,
            }
            for i in range(n)
        ]

    output_dir = tmp_path / "mrpc"
    metrics = finetuning.main([
        "--config", str(REPO_ROOT / "configs/finetune/mrpc.yaml"), *QUICK_TRAINING_ARGS,
        "--model_name_or_path", str(tiny_pretrained_dir), "--output_dir", str(output_dir),
        "--train_file", str(write_csv(tmp_path / "train.csv", rows(16))),
        "--validation_file", str(write_csv(tmp_path / "validation.csv", rows(6))),
        "--test_file", str(write_csv(tmp_path / "test.csv", rows(5, hidden=True))),
        "--max_steps", "2", "--per_device_train_batch_size", "8", "--max_seq_length", "32", "--do_predict", "true",
        "--eval_strategy", "no", "--save_strategy", "no",
    ])  # fmt: skip
    assert {"eval_accuracy", "eval_f1", "eval_combined_score"} <= set(metrics)
    assert metrics["eval_combined_score"] == pytest.approx((metrics["eval_accuracy"] + metrics["eval_f1"]) / 2)
    assert not any(key.startswith("test_") for key in metrics)  # hidden labels: predictions, no score
    lines = (output_dir / "predictions.tsv").read_text().splitlines()
    assert lines[0] == "index\tprediction" and len(lines) == 6
    assert {line.split("\t")[1] for line in lines[1:]} <= {"equivalent", "not_equivalent"}
    config = json.loads((output_dir / "config.json").read_text())
    assert config["id2label"] == {"0": "not_equivalent", "1": "equivalent"}


def test_regression_task_evaluates_correlations(tmp_path, tiny_pretrained_dir):
    rows = [
        {"sentence1": f"a {word} dog", "sentence2": f"the {word} cat", "label": i / 2, "idx": i}
        for i, word in enumerate(FILLERS[:6])
    ]
    metrics = finetuning.main([
        *QUICK_TRAINING_ARGS, "--task_name", "stsb", "--model_name_or_path", str(tiny_pretrained_dir),
        "--validation_file", str(write_csv(tmp_path / "validation.csv", rows)), "--do_eval", "true",
        "--output_dir", str(tmp_path / "stsb"), "--max_seq_length", "32",  # the tiny model has 64 positions
    ])  # fmt: skip
    assert {"eval_pearsonr", "eval_spearmanr", "eval_combined_score"} <= set(metrics)
    assert len(json.loads((tmp_path / "stsb" / "config.json").read_text())["id2label"]) == 1  # one output: a score


# --- bad input fails before any training --------------------------------------------------------------------------


def test_bad_input_fails_before_training(tmp_path, tiny_classification_dir, tiny_pretrained_dir):
    base = local_files_argv(tiny_classification_dir, tiny_pretrained_dir, tmp_path / "out")

    def with_file(option, name, text):
        (tmp_path / name).write_text(text)
        return base + [option, str(tmp_path / name)]

    cases = [
        (base + ["--task_name", "sst3"], UsageError, "Unknown task_name 'sst3'; known GLUE tasks: cola, sst2, mrpc"),
        (base + ["--text_column", "sentence"], ValueError, r"'sentence' \(--text_column\).*\['id', 'text', 'label'\]"),
        (
            with_file("--train_file", "bad.jsonl", '{"text": "a cat", "label": "noun.plant"}\n'),
            ValueError,
            "'noun.plant'.*not in the label list",
        ),
        (
            with_file("--label_list_file", "labels.json", '["noun.animal"]'),
            ValueError,
            "'noun.artifact'.*not in the label list",
        ),
        (with_file("--label_list_file", "not_a_list.json", '"noun.animal"'), ValueError, "JSON list of label names"),
        (with_file("--train_file", "empty.jsonl", ""), ValueError, "empty: .*empty.jsonl"),
        (base + ["--train_file", str(tmp_path / "missing.jsonl")], FileNotFoundError, "missing.jsonl"),
        (base + ["--model_name_or_path", ""], UsageError, "Pass --model_name_or_path"),
        (
            base + ["--load_best_model_at_end", "false"],
            UsageError,
            "--early_stopping_patience needs --load_best_model_at_end",
        ),
        (base + ["--predictions_format", "xml"], UsageError, "predictions_format"),
        (base + ["--train_file", str(tiny_classification_dir / "train.csv")], FileNotFoundError, "train.csv"),
    ]
    for argv, error, message in cases:
        with pytest.raises(error, match=message):
            finetuning.main(argv)
        assert not (tmp_path / "out").exists(), argv


def test_bad_data_is_named_before_training(tmp_path, tiny_classification_dir, tiny_pretrained_dir):
    """Each problem is reported with its file, row and column, before anything is trained or written."""
    base = local_files_argv(tiny_classification_dir, tiny_pretrained_dir, tmp_path / "out")

    def with_file(option, name, content):
        path = tmp_path / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return base + [option, str(path)]

    good = '{"text": "a cat", "label": "noun.animal"}\n'
    cases = [
        (with_file("--train_file", "null.jsonl", good + '{"text": "a dog", "label": null}\n'),
         r"Row 2 of the train \(.*null.jsonl\) split has the label None in column 'label'"),
        (with_file("--train_file", "bool.jsonl", '{"text": "a cat", "label": true}\n'),
         r"Row 1 of the train \(.*bool.jsonl\) split has the label True"),
        (with_file("--train_file", "mixed.jsonl", good + '{"text": "a dog", "label": 1}\n'),
         r"Row 2 of the train \(.*mixed.jsonl\) split has the label 1 in column"),
        (with_file("--train_file", "blank.csv", "text,label\na cat,noun.animal\n,noun.animal\n"),
         r"Row 2 of the train \(.*blank.csv\) split has no text in column 'text'"),
        (with_file("--train_file", "latin1.jsonl", good.encode() + '{"text": "caf\u00e9", "label": "noun.animal"}\n'
                   .encode("latin-1")), r"latin1.jsonl, line 2, is not UTF-8"),
        (with_file("--train_file", "header.csv", "text,label\n"), r"The train file\(s\) .*header.csv hold no rows"),
        (with_file("--config", "broken.yaml", "learning_rate: [1e-3\n"), r"broken.yaml is not valid YAML"),
        (base + ["--model_name_or_path", str(tmp_path / "typo" / "model")], r"--model_name_or_path .*typo/model: no such"),
        (base + ["--max_seq_length", "65"], "exceeds the model's max_position_embeddings"),
        (with_file("--validation_file", "hidden.jsonl", '{"text": "a cat", "label": -1}\n'),
         r"validation \(.*hidden.jsonl\) split has no labels"),
    ]  # fmt: skip
    tokenizer = AutoTokenizer.from_pretrained(tiny_pretrained_dir)
    tokenizer.add_tokens([f"newword{i}" for i in range(8)])  # more tokens than the model has embeddings
    tokenizer.save_pretrained(tmp_path / "bigger-tokenizer")
    cases.append((base + ["--tokenizer_name", str(tmp_path / "bigger-tokenizer")], "tokenizer has .* tokens but"))
    for argv, message in cases:
        with pytest.raises((ValueError, FileNotFoundError, UsageError), match=message):
            finetuning.main(argv)
        assert not (tmp_path / "out").exists(), argv
