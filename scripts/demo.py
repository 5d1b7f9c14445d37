"""The README's main command (`make demo`): the whole pipeline on offline WordNet data, in minutes on a CPU.

    python scripts/demo.py [--output_dir outputs/demo] [--pretrain_args "--max_steps 100"] ...

WordNet data -> WordPiece tokenizer -> MLM pretraining of a tiny MHE-MUL encoder -> fine-tuning on
"gloss -> supersense" (45 classes) -> test (and the same fine-tuning from a random init, to show what pretraining
brings) -> the final checkpoint reloaded in a fresh process that cannot import
mhe_transformers (so the model comes from the checkpoint's own code, as it would from the Hub) -> a results table.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForMaskedLM, AutoTokenizer

from mhe_transformers.data.wordnet import find_wordnet_dir, prepare_wordnet
from mhe_transformers.hub.push import run_without_package
from mhe_transformers.training import finetune as finetuning
from mhe_transformers.training import pretrain as pretraining
from mhe_transformers.training.tokenizer import train_wordpiece_tokenizer
from mhe_transformers.utils.cli import parse_args, run_script
from mhe_transformers.utils.run_folder import check_output_dir, write_marker

REPO = Path(__file__).resolve().parents[1]
PRETRAIN_CONFIG = REPO / "configs" / "pretrain" / "wordnet-tiny.yaml"
FINETUNE_CONFIG = REPO / "configs" / "finetune" / "wordnet-supersense.yaml"

# Run by hub.run_without_package (a fresh `python -I` where mhe_transformers cannot be imported): reload the
# fine-tuned checkpoint from its folder alone and score it on the test file.
RELOAD_AND_TEST = """
import json, sys
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

checkpoint, test_file, max_length = sys.argv[1], sys.argv[2], int(sys.argv[3])
model = AutoModelForSequenceClassification.from_pretrained(checkpoint, trust_remote_code=True)
tokenizer = AutoTokenizer.from_pretrained(checkpoint, trust_remote_code=True)
assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
assert not [name for name in sys.modules if name.startswith("mhe_transformers")]
rows = [json.loads(line) for line in open(test_file, encoding="utf-8")]
correct = 0
with torch.inference_mode():
    for start in range(0, len(rows), 256):
        batch = rows[start : start + 256]
        texts = [row["text"] for row in batch]
        inputs = tokenizer(texts, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
        predicted = model(**inputs).logits.argmax(-1).tolist()
        correct += sum(model.config.id2label[p] == row["label"] for p, row in zip(predicted, batch))
print(json.dumps({"model_class": f"{type(model).__module__}.{type(model).__name__}", "accuracy": correct / len(rows)}))
"""


def ensure_wordnet(wordnet_dir: str | None) -> Path:
    """The WordNet 3.0 folder; installs Debian's wordnet-base when it is missing and we may (root, apt-get)."""
    try:
        return find_wordnet_dir(wordnet_dir)
    except FileNotFoundError as error:
        if wordnet_dir is not None or os.geteuid() != 0 or shutil.which("apt-get") is None:
            raise FileNotFoundError(f"{error} The demo needs WordNet 3.0; install it and run `make demo` again.") from None
    print("WordNet not found: installing wordnet-base with apt-get", flush=True)
    if subprocess.run(["apt-get", "install", "-y", "wordnet-base"]).returncode != 0:
        subprocess.run(["apt-get", "update"], check=True)  # a fresh container has no package lists yet
        subprocess.run(["apt-get", "install", "-y", "wordnet-base"], check=True)
    return find_wordnet_dir(wordnet_dir)


@dataclass
class DemoArguments:
    data_dir: str = field(default="data/wordnet", metadata={"help": "Where the prepared WordNet data goes."})
    output_dir: str = field(default="outputs/demo", metadata={"help": "Tokenizer, checkpoints and results."})
    wordnet_dir: str | None = field(
        default=None, metadata={"help": "WordNet 3.0 dict folder (default: /usr/share/wordnet)."}
    )
    max_synsets: int | None = field(default=None, metadata={"help": "Use a deterministic subset of WordNet."})
    vocab_size: int = field(default=4096, metadata={"help": "WordPiece vocabulary size."})
    pretrain_args: str = field(
        default="", metadata={"help": f"Extra arguments for pretraining (over {PRETRAIN_CONFIG.relative_to(REPO)})."}
    )
    finetune_args: str = field(
        default="", metadata={"help": f"Extra arguments for fine-tuning (over {FINETUNE_CONFIG.relative_to(REPO)})."}
    )


def check_folders(args: DemoArguments) -> None:
    """A rerun replaces the demo's own earlier outputs; a folder holding anything else is refused before any work."""
    check_output_dir(args.output_dir, overwrite=True, inputs=[args.data_dir, args.wordnet_dir])
    check_output_dir(args.data_dir, overwrite=True, inputs=[args.wordnet_dir])


class Stopwatch:
    """Prints each stage's name as it starts and records its wall time (`seconds`)."""

    def __init__(self):
        self.start, self.seconds = time.perf_counter(), {}

    @contextlib.contextmanager
    def stage(self, name: str):
        print(f"\n=== {name} ===", flush=True)
        stage_start = time.perf_counter()
        yield
        self.seconds[name] = time.perf_counter() - stage_start

    def totals(self) -> dict[str, float]:
        return {**self.seconds, "total": time.perf_counter() - self.start}


def main(argv: Sequence[str] | None = None) -> dict:
    (args,) = parse_args((DemoArguments,), argv, description=__doc__, validate=check_folders)
    data_dir, output_dir = Path(args.data_dir), Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    write_marker(output_dir)
    pretrained_dir, finetuned_dir = output_dir / "pretrain-mhe_mul", output_dir / "supersense-mhe_mul"
    clock = Stopwatch()
    with clock.stage("WordNet data"):
        counts = prepare_wordnet(data_dir, ensure_wordnet(args.wordnet_dir), max_synsets=args.max_synsets)
        print(json.dumps(counts))
    with clock.stage("tokenizer"):
        train_wordpiece_tokenizer(data_dir / "corpus.txt", vocab_size=args.vocab_size, output_dir=output_dir / "tokenizer")
    with clock.stage("MLM pretraining"):
        pretrain_metrics = pretraining.main([
            "--config", str(PRETRAIN_CONFIG), "--train_files", str(data_dir / "corpus.txt"),
            "--tokenizer_name", str(output_dir / "tokenizer"),
            "--output_dir", str(pretrained_dir), "--overwrite_output_dir", "true", *shlex.split(args.pretrain_args),
        ])  # fmt: skip
    with clock.stage("fine-tuning + test"):
        finetune_metrics = finetune(pretrained_dir, finetuned_dir, data_dir / "supersense", args.finetune_args)
    with clock.stage("same fine-tuning from a random init"):
        # What pretraining is worth: the same model, tokenizer and fine-tuning recipe, without pretraining.
        random_dir = output_dir / "random-init-mhe_mul"
        save_random_init(pretrained_dir, random_dir)
        random_metrics = finetune(
            random_dir, output_dir / "supersense-random-init-mhe_mul", data_dir / "supersense", args.finetune_args
        )
    with clock.stage("reload in a fresh process"):
        reloaded = reload_and_test(finetuned_dir, data_dir / "supersense" / "test.jsonl")
    results = {
        "test_accuracy": finetune_metrics["test_accuracy"],
        "reloaded_test_accuracy": reloaded["accuracy"],
        "reloaded_model_class": reloaded["model_class"],
        "majority_label": counts["majority_label"],
        "majority_baseline_accuracy": counts["test_majority_share"],
        "test_examples": counts["test"],
        "pretraining_eval_loss": pretrain_metrics.get("eval_loss"),
        "pretraining_masked_accuracy": pretrain_metrics.get("eval_accuracy"),
        "pretraining_unigram_loss": pretrain_metrics.get("eval_unigram_loss"),
        "pretraining_unigram_accuracy": pretrain_metrics.get("eval_unigram_accuracy"),
        "random_init_test_accuracy": random_metrics["test_accuracy"],
        "checkpoint": str(finetuned_dir),
        "seconds": clock.totals(),
    }
    (output_dir / "demo_results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print_table(results)
    if results["test_accuracy"] <= results["majority_baseline_accuracy"]:
        raise RuntimeError("The fine-tuned model does not beat the majority-class baseline: something is wrong.")
    return results


def finetune(model_dir: Path, output: Path, supersense: Path, extra_args: str) -> dict:
    """The supersense fine-tuning recipe (FINETUNE_CONFIG) of `model_dir` into `output`, tested on the test split."""
    return finetuning.main([
        "--config", str(FINETUNE_CONFIG), "--model_name_or_path", str(model_dir),
        "--train_file", str(supersense / "train.jsonl"), "--validation_file", str(supersense / "validation.jsonl"),
        "--test_file", str(supersense / "test.jsonl"), "--label_list_file", str(supersense / "labels.json"),
        "--output_dir", str(output), "--overwrite_output_dir", "true", *shlex.split(extra_args),
    ])  # fmt: skip


def reload_and_test(finetuned_dir: Path, test_file: Path) -> dict:
    """Score the checkpoint on `test_file` in a fresh process that cannot import mhe_transformers, with the same
    truncation as in fine-tuning (read from the checkpoint's record of its arguments)."""
    recorded = json.loads((finetuned_dir / "training_args.json").read_text())
    max_seq_length = recorded["DataArguments"]["max_seq_length"]
    process = run_without_package(
        RELOAD_AND_TEST, finetuned_dir.resolve(), test_file.resolve(), max_seq_length, timeout=900
    )
    if process.returncode != 0:
        raise RuntimeError(f"Reloading {finetuned_dir} in a fresh process failed:\n{process.stderr}")
    reloaded = json.loads(process.stdout.splitlines()[-1])
    print(json.dumps(reloaded))
    return reloaded


def save_random_init(pretrained_dir: Path, output: Path) -> None:
    """A randomly initialised masked-LM model with the pretrained one's configuration and tokenizer."""
    torch.manual_seed(0)
    config = AutoConfig.from_pretrained(pretrained_dir)
    AutoModelForMaskedLM.from_config(config).save_pretrained(output)
    AutoTokenizer.from_pretrained(pretrained_dir).save_pretrained(output)


def print_table(results: dict) -> None:
    rows = [
        ("WordNet supersense test accuracy (MHE-MUL tiny)", f"{results['test_accuracy']:.4f}"),
        ("  same checkpoint, reloaded in a fresh process", f"{results['reloaded_test_accuracy']:.4f}"),
        ("  same fine-tuning from a random init (no pretraining)", f"{results['random_init_test_accuracy']:.4f}"),
        (f"majority-class baseline ({results['majority_label']})", f"{results['majority_baseline_accuracy']:.4f}"),
        ("test examples", str(results["test_examples"])),
        ("pretraining held-out masked-token accuracy", f"{results['pretraining_masked_accuracy']:.4f}"),
        ("  unigram baseline (most frequent token) on the same positions", f"{results['pretraining_unigram_accuracy']:.4f}"),
        ("pretraining held-out masked-LM loss", f"{results['pretraining_eval_loss']:.4f}"),
        ("  unigram baseline cross-entropy on the same positions", f"{results['pretraining_unigram_loss']:.4f}"),
    ] + [(f"wall time: {name}", f"{value:.0f} s") for name, value in results["seconds"].items()]
    width = max(len(name) for name, _ in rows)
    print("\n" + "\n".join(f"{name:<{width}}  {value:>8}" for name, value in rows))
    print(f"\nHub-ready checkpoint: {results['checkpoint']} (loaded by {results['reloaded_model_class']})")


if __name__ == "__main__":
    run_script(main)
