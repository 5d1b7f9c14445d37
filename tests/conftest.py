"""Shared fixtures: a tiny text corpus, a WordPiece tokenizer trained on it, a tiny 3-class classification task
and a tiny pretrained MHE checkpoint. Everything is generated here, offline, in seconds."""

import json
import os
import random
import shutil
import tempfile
from pathlib import Path

# Before anything imports huggingface_hub or datasets, which read these at import time: never reach the Hub, and
# keep the datasets cache (and the map() caches written next to it) out of the user's home.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
DATASETS_CACHE = None  # created here, removed when the session ends
if "HF_DATASETS_CACHE" not in os.environ:
    DATASETS_CACHE = os.environ["HF_DATASETS_CACHE"] = tempfile.mkdtemp(prefix="mhe-tests-datasets-")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tiny models gain nothing from several threads, and on a busy machine OpenMP threads spinning against other
# processes make them several times slower. Subprocesses (accelerate launch, remote-code checks) inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402


def pytest_sessionfinish(session, exitstatus):
    if DATASETS_CACHE is not None:
        shutil.rmtree(DATASETS_CACHE, ignore_errors=True)


REPO_ROOT = Path(__file__).resolve().parents[1]

# Words that decide the label of a sentence of the classification task (and fill the corpus).
CLASS_WORDS = {
    "noun.animal": ["cat", "dog", "horse", "bird", "fish", "sheep", "goat", "mouse"],
    "noun.artifact": ["hammer", "chair", "knife", "table", "car", "boat", "lamp", "spoon"],
    "verb.motion": ["run", "walk", "swim", "fly", "jump", "crawl", "glide", "climb"],
}
FILLERS = ["small", "large", "old", "young", "quick", "quiet", "bright", "dark", "soft", "heavy"]
TEMPLATES = [
    "a {filler} {word} seen near the river",
    "the {word} that is {filler} and common",
    "to {word} in a {filler} way across the field",
    "any {filler} kind of {word} used by people",
]

# The tests' one tiny MHE model: 2 layers of 4 heads of 8 dimensions; dropout off, so that outputs are deterministic.
TINY_CONFIG = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                   max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)  # fmt: skip
TINY_KV_HEADS_GQA = 2


def tiny_config(attention_type: str = "mhe_mul", **overrides):
    """TINY_CONFIG as an MHEConfig of `attention_type` (GQA with TINY_KV_HEADS_GQA key/value heads), `overrides`
    applied."""
    from mhe_transformers import MHEConfig

    kv_heads = TINY_KV_HEADS_GQA if attention_type == "gqa" else None
    return MHEConfig(**{**TINY_CONFIG, "attention_type": attention_type, "num_key_value_heads": kv_heads, **overrides})


# The pipelines' new model, small enough to train for a few steps in a second: the shipped tiny config, shrunk further.
TINY_MODEL_ARGS = [
    "--model_config", str(REPO_ROOT / "configs/model/tiny.json"), "--attention_type", "mhe_mul",
    "--config_overrides", "hidden_size=32,intermediate_size=64,num_hidden_layers=1,max_position_embeddings=64",
]  # fmt: skip

# TrainingArguments for quick, quiet, deterministic CPU runs.
QUICK_TRAINING_ARGS = [
    "--report_to", "none", "--disable_tqdm", "true", "--dataloader_pin_memory", "false", "--use_cpu", "true",
    "--log_level", "warning", "--seed", "0", "--learning_rate", "1e-3", "--warmup_steps", "0",
]  # fmt: skip


def make_sentence(rng: random.Random, label: str) -> str:
    return rng.choice(TEMPLATES).format(word=rng.choice(CLASS_WORDS[label]), filler=rng.choice(FILLERS))


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    """A 400-line text file (one text a line) made of the classification task's vocabulary."""
    rng = random.Random(0)
    lines = [make_sentence(rng, rng.choice(list(CLASS_WORDS))) for _ in range(400)]
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory, tiny_corpus) -> Path:
    """A BERT-style WordPiece tokenizer ([PAD]=0, [MASK], ...) trained on tiny_corpus, saved for AutoTokenizer."""
    from mhe_transformers.training.tokenizer import train_wordpiece_tokenizer

    output_dir = tmp_path_factory.mktemp("tokenizer")
    train_wordpiece_tokenizer(tiny_corpus, vocab_size=300, output_dir=output_dir, min_frequency=1, model_max_length=64)
    return output_dir


@pytest.fixture(scope="session")
def tiny_classification_dir(tmp_path_factory) -> Path:
    """train/validation/test.jsonl ({"id", "text", "label"}, label = the class of the sentence's key word) and
    labels.json, shaped like the WordNet supersense data."""
    rng = random.Random(1)
    directory = tmp_path_factory.mktemp("classification")
    labels = list(CLASS_WORDS)
    for split, size in (("train", 96), ("validation", 24), ("test", 24)):
        rows = []
        for i in range(size):
            label = labels[i % len(labels)]
            rows.append({"id": f"{split}-{i}", "text": make_sentence(rng, label), "label": label})
        (directory / f"{split}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    # Deliberately not sorted: the file's order, not an alphabetical one, must become the model's label ids.
    (directory / "labels.json").write_text(
        json.dumps(["verb.motion", "noun.animal", "noun.artifact"]), encoding="utf-8"
    )
    return directory


@pytest.fixture(scope="session")
def tiny_pretrained_dir(tmp_path_factory, tiny_corpus, tiny_tokenizer_dir) -> Path:
    """A tiny MHE-MUL checkpoint from pretraining.main: configs/pretrain/wordnet-tiny.yaml with 4 steps on
    tiny_corpus. The dict main returned is saved beside it, in returned_metrics.json."""
    from mhe_transformers.training import pretrain as pretraining

    output_dir = tmp_path_factory.mktemp("pretrain") / "mhe_mul-tiny"
    argv = [
        "--config", str(REPO_ROOT / "configs/pretrain/wordnet-tiny.yaml"), *TINY_MODEL_ARGS, *QUICK_TRAINING_ARGS,
        "--tokenizer_name", str(tiny_tokenizer_dir), "--train_files", str(tiny_corpus), "--output_dir", str(output_dir),
        "--max_seq_length", "32", "--validation_split_percentage", "10", "--max_steps", "4", "--save_steps", "2",
        "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "16",
        "--hub_token", "hf_not_a_real_token_123",  # must not end up in training_args.json
    ]  # fmt: skip
    metrics = pretraining.main(argv)
    (output_dir.parent / "returned_metrics.json").write_text(json.dumps(metrics))
    return output_dir
