"""WordPiece tokenizer training on a tiny in-memory corpus, reloaded offline with AutoTokenizer."""

import runpy
import sys
from pathlib import Path

import datasets
import pytest
from transformers import AutoTokenizer

from mhe_transformers.training.tokenizer import train_wordpiece_tokenizer

REPO = Path(__file__).resolve().parents[1]

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "A lazy dog sleeps in the warm sun all day.",
    "Quick foxes and lazy dogs are old friends.",
    "The brown dog barks at the quick fox.",
] * 10


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    output = tmp_path_factory.mktemp("tok") / "tokenizer"
    train_wordpiece_tokenizer(CORPUS, vocab_size=150, output_dir=output, min_frequency=1, model_max_length=64)
    return output


def test_reloads_offline_with_special_tokens(tokenizer_dir):
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    assert tokenizer.model_max_length == 64
    special = [tokenizer.pad_token, tokenizer.unk_token, tokenizer.cls_token, tokenizer.sep_token, tokenizer.mask_token]
    assert special == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert tokenizer.convert_tokens_to_ids(special) == [0, 1, 2, 3, 4]
    assert tokenizer.pad_token_id == 0
    assert 5 < len(tokenizer) <= 150
    # Only the temporary-directory rename is atomic; nothing must be left beside the output.
    assert [p.name for p in tokenizer_dir.parent.iterdir()] == ["tokenizer"]


def test_single_and_pair_templates(tokenizer_dir):
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    single = tokenizer("the lazy dog")
    assert single["input_ids"][0] == tokenizer.cls_token_id and single["input_ids"][-1] == tokenizer.sep_token_id
    assert set(single["token_type_ids"]) == {0}

    pair = tokenizer("the quick fox", "a lazy dog")
    ids, types = pair["input_ids"], pair["token_type_ids"]
    first_sep = ids.index(tokenizer.sep_token_id)
    assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
    assert types == [0] * (first_sep + 1) + [1] * (len(ids) - first_sep - 1)


def test_round_trip_and_unknown_characters(tokenizer_dir):
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    text = "The Quick brown fox sleeps all day"
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.decode(ids, skip_special_tokens=True) == text.lower()
    assert tokenizer.tokenize("€") == ["[UNK]"]  # never seen in training


def test_trains_from_files_and_dataset_batches(tmp_path):
    corpus_file = tmp_path / "corpus.txt"
    corpus_file.write_text("\n".join(CORPUS) + "\n")
    from_file = train_wordpiece_tokenizer([corpus_file], vocab_size=150, output_dir=tmp_path / "a", min_frequency=1)

    dataset = datasets.Dataset.from_dict({"text": CORPUS})
    batches = (dataset[i : i + 8]["text"] for i in range(0, len(dataset), 8))
    from_batches = train_wordpiece_tokenizer(batches, vocab_size=150, output_dir=tmp_path / "b", min_frequency=1)
    # Ties between equally frequent merges make the exact vocabulary vary from run to run, but
    # below the size cap every corpus word ends up a single token either way.
    for tokenizer in (from_file, from_batches):
        assert len(tokenizer) < 150
        assert tokenizer.tokenize("Quick foxes and lazy dogs") == ["quick", "foxes", "and", "lazy", "dogs"]

    with pytest.raises(FileNotFoundError):
        train_wordpiece_tokenizer(tmp_path / "missing.txt", vocab_size=150, output_dir=tmp_path / "c")


def test_cli_on_local_files(tmp_path, monkeypatch, capsys):
    corpus_file = tmp_path / "corpus.txt"
    corpus_file.write_text("\n".join(CORPUS) + "\n")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    argv = ["train_tokenizer.py", "--train_files", str(corpus_file), "--vocab_size", "150", "--min_frequency", "1"]
    monkeypatch.setattr(sys, "argv", argv + ["--output_dir", str(tmp_path / "tok"), "--model_max_length", "32"])
    runpy.run_path(str(REPO / "scripts" / "train_tokenizer.py"), run_name="__main__")
    assert "WordPiece tokenizer" in capsys.readouterr().out
    assert AutoTokenizer.from_pretrained(tmp_path / "tok").model_max_length == 32


def test_same_vocabulary_gets_the_same_ids(tmp_path):
    # The trainer numbers tokens in hash-map order, different on every call (huggingface/tokenizers#1794); the ids
    # are renumbered canonically, so two trainings that learn the same vocabulary save identical files. At this size
    # the vocabulary itself has no merge ties on CORPUS (identical in 70 of 70 trainings, ids in 50 orders unfixed).
    first = train_wordpiece_tokenizer(CORPUS, vocab_size=60, output_dir=tmp_path / "a", min_frequency=1)
    second = train_wordpiece_tokenizer(CORPUS, vocab_size=60, output_dir=tmp_path / "b", min_frequency=1)
    assert (tmp_path / "a" / "tokenizer.json").read_bytes() == (tmp_path / "b" / "tokenizer.json").read_bytes()

    tokens = first.convert_ids_to_tokens(list(range(len(first))))
    assert tokens[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert tokens[5:] == sorted(tokens[5:])
    # Renumbering leaves the encoding intact: [CLS]/[SEP] ids in the template, tokens round-trip through their ids.
    encoded = second("the lazy fox", "a dog")
    assert encoded.input_ids[0] == second.cls_token_id and encoded.input_ids.count(second.sep_token_id) == 2
    assert second.decode(encoded.input_ids, skip_special_tokens=True) == "the lazy fox a dog"
