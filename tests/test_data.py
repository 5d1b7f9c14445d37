"""The one text loader (`text.load_texts`, over `text.load_raw_datasets`) used by conversion and tokenizer training."""

import json

import pytest

from mhe_transformers.data import text


def test_load_texts_reads_text_and_json_lines_files(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    lines = tmp_path / "texts.txt"
    lines.write_text("first text\n\n   \nsecond text\n", encoding="utf-8")
    assert text.load_texts(str(lines)) == ["first text", "second text"]  # blank lines left out
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"gloss": g, "label": 0}) + "\n" for g in ("a b", "", "c d")), encoding="utf-8")
    assert text.load_texts(str(rows), text_column="gloss") == ["a b", "c d"]


def test_load_texts_errors_name_the_problem(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        text.load_texts(str(tmp_path / "nope.txt"))
    odd = tmp_path / "texts.xml"
    odd.write_text("<a/>\n", encoding="utf-8")
    with pytest.raises(ValueError, match="Unsupported data file type.*texts.xml"):
        text.load_texts(str(odd))
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"sentence": "a b"}) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match="Column 'text'.*available columns: \\['sentence'\\]"):
        text.load_texts(str(rows))
    with pytest.raises(ValueError, match="not both"):
        text.load_texts()
