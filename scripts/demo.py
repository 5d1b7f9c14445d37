"""The README's main command (`make demo`): the whole pipeline on offline WordNet data, in minutes on a CPU.

    python scripts/demo.py [--output_dir outputs/demo] [--pretrain_args "--max_steps 100"] ...

WordNet data -> WordPiece tokenizer -> MLM pretraining of a tiny MHE-MUL encoder -> fine-tuning on
"gloss -> supersense" (45 classes) -> test (and the same fine-tuning from a random init, to show what pretraining
brings) -> the final checkpoint reloaded in a fresh process that cannot import
mhe_transformers (so the model comes from the checkpoint's own code, as it would from the Hub) -> a results table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForMaskedLM, AutoTokenizer

from mhe_transformers.data.wordnet import find_wordnet_dir, prepare_wordnet
from mhe_transformers.hub.push import run_without_package
from mhe_transformers.training import finetune as finetuning
from mhe_transformers.training import pretrain as pretraining
from mhe_transformers.training.tokenizer import train_wordpiece_tokenizer
from mhe_transformers.utils.cli import run_script
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
            raise SystemExit(f"{error}\nThe demo needs WordNet 3.0; install it and run `make demo` again.") from None
    print("WordNet not found: installing wordnet-base with apt-get", flush=True)
    if subprocess.run(["apt-get", "install", "-y", "wordnet-base"]).returncode != 0:
        subprocess.run(["apt-get", "update"], check=True)  # a fresh container has no package lists yet
        subprocess.run(["apt-get", "install", "-y", "wordnet-base"], check=True)
    return find_wordnet_dir(wordnet_dir)


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", default="data/wordnet", help="where the prepared WordNet data goes")
    parser.add_argument("--output_dir", default="outputs/demo", help="tokenizer, checkpoints and results")
    parser.add_argument("--wordnet_dir", default=None, help="WordNet 3.0 dict folder (default: /usr/share/wordnet)")
    parser.add_argument("--max_synsets", type=int, default=None, help="use a deterministic subset of WordNet")
    parser.add_argument("--vocab_size", type=int, default=4096, help="WordPiece vocabulary size")
    parser.add_argument("--pretrain_args", default="", help=f"extra arguments for pretraining (over {PRETRAIN_CONFIG.relative_to(REPO)})")
    parser.add_argument("--finetune_args", default="", help=f"extra arguments for fine-tuning (over {FINETUNE_CONFIG.relative_to(REPO)})")
    args = parser.parse_args(argv)

    data_dir, output_dir = Path(args.data_dir), Path(args.output_dir)
    # A rerun replaces the demo's own earlier outputs; a folder holding anything else is refused before any work.
    check_output_dir(output_dir, overwrite=True, inputs=[data_dir, args.wordnet_dir])
    check_output_dir(data_dir, overwrite=True, inputs=[args.wordnet_dir])
    output_dir.mkdir(parents=True, exist_ok=True)
    write_marker(output_dir)
    supersense = data_dir / "supersense"
    tokenizer_dir = output_dir / "tokenizer"
    pretrained_dir = output_dir / "pretrain-mhe_mul"
    finetuned_dir = output_dir / "supersense-mhe_mul"
    seconds = {}
    start = time.perf_counter()

    @contextlib.contextmanager
    def stage(name: str):
        print(f"\n=== {name} ===", flush=True)
        stage_start = time.perf_counter()
        yield
        seconds[name] = time.perf_counter() - stage_start

    with stage("WordNet data"):
        counts = prepare_wordnet(data_dir, ensure_wordnet(args.wordnet_dir), max_synsets=args.max_synsets)
        print(json.dumps(counts))

    with stage("tokenizer"):
        train_wordpiece_tokenizer(data_dir / "corpus.txt", vocab_size=args.vocab_size, output_dir=tokenizer_dir)

    with stage("MLM pretraining"):
        pretrain_metrics = pretraining.main([
            "--config", str(PRETRAIN_CONFIG), "--train_files", str(data_dir / "corpus.txt"),
            "--tokenizer_name", str(tokenizer_dir),
            "--output_dir", str(pretrained_dir), "--overwrite_output_dir", "true", *shlex.split(args.pretrain_args),
        ])  # fmt: skip

    def finetune(model_dir: Path, output: Path) -> dict:
        return finetuning.main([
            "--config", str(FINETUNE_CONFIG), "--model_name_or_path", str(model_dir),
            "--train_file", str(supersense / "train.jsonl"), "--validation_file", str(supersense / "validation.jsonl"),
            "--test_file", str(supersense / "test.jsonl"), "--label_list_file", str(supersense / "labels.json"),
            "--output_dir", str(output), "--overwrite_output_dir", "true", *shlex.split(args.finetune_args),
        ])  # fmt: skip

    with stage("fine-tuning + test"):
        finetune_metrics = finetune(pretrained_dir, finetuned_dir)

    with stage("same fine-tuning from a random init"):
        # What pretraining is worth: the same model, tokenizer and fine-tuning recipe, without pretraining.
        random_dir = output_dir / "random-init-mhe_mul"
        save_random_init(pretrained_dir, random_dir)
        random_metrics = finetune(random_dir, output_dir / "supersense-random-init-mhe_mul")

    with stage("reload in a fresh process"):
        # The same truncation as in fine-tuning, read from the checkpoint's record of its arguments.
        recorded = json.loads((finetuned_dir / "training_args.json").read_text())
        max_seq_length = recorded["DataArguments"]["max_seq_length"]
        test_file = (supersense / "test.jsonl").resolve()
        process = run_without_package(RELOAD_AND_TEST, finetuned_dir.resolve(), test_file, max_seq_length, timeout=900)
        if process.returncode != 0:
            raise SystemExit(f"Reloading {finetuned_dir} in a fresh process failed:\n{process.stderr}")
        reloaded = json.loads(process.stdout.splitlines()[-1])
        print(json.dumps(reloaded))

    majority_accuracy = counts["test_majority_share"]
    results = {
        "test_accuracy": finetune_metrics["test_accuracy"],
        "reloaded_test_accuracy": reloaded["accuracy"],
        "reloaded_model_class": reloaded["model_class"],
        "majority_label": counts["majority_label"],
        "majority_baseline_accuracy": majority_accuracy,
        "test_examples": counts["test"],
        "pretraining_eval_loss": pretrain_metrics.get("eval_loss"),
        "pretraining_masked_accuracy": pretrain_metrics.get("eval_accuracy"),
        "pretraining_unigram_loss": pretrain_metrics.get("eval_unigram_loss"),
        "pretraining_unigram_accuracy": pretrain_metrics.get("eval_unigram_accuracy"),
        "random_init_test_accuracy": random_metrics["test_accuracy"],
        "checkpoint": str(finetuned_dir),
        "seconds": {**seconds, "total": time.perf_counter() - start},
    }
    (output_dir / "demo_results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print_table(results)
    if results["test_accuracy"] <= majority_accuracy:
        raise SystemExit("The fine-tuned model does not beat the majority-class baseline: something is wrong.")
    return results


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
