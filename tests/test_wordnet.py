"""WordNet reader and data preparation, on a small synthetic database in the real wndb format.

No WordNet text is needed: the fake data files hold made-up words and glosses. One test reads
the real database when it is installed.
"""

import collections
import json
import runpy
import sys
from pathlib import Path

import pytest

from mhe_transformers.data import wordnet
from mhe_transformers.data.wordnet import (
    SUPERSENSES,
    find_wordnet_dir,
    iter_synsets,
    prepare_wordnet,
    split_gloss,
    split_of,
)

REPO = Path(__file__).resolve().parents[1]

# Made-up license header: like the real one, every line starts with two spaces.
HEADER = "".join(f"  {i} Synthetic header line {i} for tests.  \n" for i in range(1, 4))

# Hand-written lines, format `offset lex_filenum ss_type w_cnt word lex_id ... p_cnt [ptr...] [frames] | gloss`.
SPECIAL_LINES = {
    "noun": [
        '00001740 05 n 02 zorbit 0 glimmer_fish 1 001 @ 00001900 n 0000 | a small made-up marsh creature; "the zorbit hid"; "two zorbits swam"  ',  # noqa: E501
        "00001900 03 n 01 thingamajig 0 001 ~ 00001740 n 0000 | something invented for tests  ",
        '00002000 10 n 01 blurb 0 000 | a made-up word; as in the expression "blurb it"  ',
        '00002100 12 n 01 glee 0 000 | made-up joy; "so much glee; so little time"- A. Writer  ',
        "00002200 06 n 0a " + " ".join(f"w{i} 0" for i in range(10)) + " 000 | ten words in one synset  ",
    ],
    "verb": [
        '00001740 38 v 01 zoom_about 0 001 @ 00002000 v 0000 02 + 02 00 + 08 00 | move about quickly; "they zoom about"  ',
    ],
    "adj": [
        "00001740 00 a 01 florbish 0 000 | having florbs  ",
        "00001850 00 s 01 florby(p) 0 001 & 00001740 a 0000 | somewhat like a florb  ",
        "00001990 44 a 01 zapped 0 000 | having been zapped  ",
    ],
    "adv": ["00001740 02 r 01 zippily 0 000 | in a zippy manner  "],
}
N_GENERATED = 300  # extra noun synsets so that every split gets some


def write_fake_wordnet(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for suffix, lines in SPECIAL_LINES.items():
        if suffix == "noun":
            lexfiles = range(4, 29)  # the noun lexicographer files
            lines = lines + [
                f'{10000000 + i:08d} {lexfiles[i % len(lexfiles)]:02d} n 01 fakeword{i} 0 000 | fake gloss {i}; "fake example {i}"  '  # noqa: E501
                for i in range(N_GENERATED)
            ]
        (directory / f"data.{suffix}").write_text(HEADER + "".join(line + "\n" for line in lines))
    return directory


@pytest.fixture
def fake_wordnet(tmp_path):
    return write_fake_wordnet(tmp_path / "dict")


def test_parses_ids_lexnames_and_words(fake_wordnet):
    synsets = {s.synset_id: s for s in iter_synsets(fake_wordnet)}
    assert len(synsets) == sum(len(lines) for lines in SPECIAL_LINES.values()) + N_GENERATED
    zorbit = synsets["n00001740"]
    assert zorbit.lexname == "noun.animal"
    assert zorbit.words == ("zorbit", "glimmer fish")
    assert synsets["n00001900"].lexname == "noun.Tops"
    assert synsets["n00002200"].words == tuple(f"w{i}" for i in range(10))  # w_cnt "0a" is hexadecimal
    assert synsets["v00001740"].lexname == "verb.motion"
    assert synsets["v00001740"].words == ("zoom about",)
    # Satellites ('s') are adjectives: id letter "a"; the syntactic marker "(p)" is dropped.
    assert synsets["a00001850"].lexname == "adj.all"
    assert synsets["a00001850"].words == ("florby",)
    assert synsets["a00001990"].lexname == "adj.ppl"
    assert synsets["r00001740"].lexname == "adv.all"


def test_definition_and_examples(fake_wordnet):
    synsets = {s.synset_id: s for s in iter_synsets(fake_wordnet)}
    assert synsets["n00001740"].definition == "a small made-up marsh creature"
    assert synsets["n00001740"].examples == ("the zorbit hid", "two zorbits swam")
    assert synsets["n00001900"].examples == ()
    # A quote inside the definition stays there; it is not an example.
    assert synsets["n00002000"].definition == 'a made-up word; as in the expression "blurb it"'
    assert synsets["n00002000"].examples == ()
    # A semicolon inside an example does not split it; the attribution is dropped.
    assert synsets["n00002100"].examples == ("so much glee; so little time",)
    # Verb frames before the "|" are ignored.
    assert synsets["v00001740"].definition == "move about quickly"


def test_split_gloss_edge_cases():
    assert split_gloss(' just a definition  ') == ("just a definition", ())
    assert split_gloss('def; "unbalanced example') == ("def", ("unbalanced example",))
    assert split_gloss('"only an example"') == ("", ("only an example",))


def test_split_is_deterministic_and_80_10_10():
    ids = [f"n{offset:08d}" for offset in range(20000)]
    splits = [split_of(synset_id) for synset_id in ids]
    assert splits == [split_of(synset_id) for synset_id in ids]
    shares = {split: count / len(ids) for split, count in collections.Counter(splits).items()}
    assert shares["train"] == pytest.approx(0.8, abs=0.015)
    assert shares["validation"] == pytest.approx(0.1, abs=0.015)
    assert shares["test"] == pytest.approx(0.1, abs=0.015)


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def supersense_ids(output_dir):
    return {row["id"] for split in wordnet.SPLITS for row in read_jsonl(output_dir / "supersense" / f"{split}.jsonl")}


def test_prepare_wordnet_writes_corpus_and_supersense_task(fake_wordnet, tmp_path):
    output = tmp_path / "out"
    counts = prepare_wordnet(output, fake_wordnet)

    assert json.loads((output / "supersense" / "labels.json").read_text()) == list(SUPERSENSES)
    assert len(SUPERSENSES) == 45
    synsets = list(iter_synsets(fake_wordnet))
    by_id = {s.synset_id: s for s in synsets}
    seen_ids = set()
    for split in ("train", "validation", "test"):
        rows = read_jsonl(output / "supersense" / f"{split}.jsonl")
        assert rows, split
        assert counts[split] == len(rows)
        for row in rows:
            assert set(row) == {"id", "text", "label"}
            assert split_of(row["id"]) == split
            assert row["text"] == by_id[row["id"]].definition
            assert row["label"] == by_id[row["id"]].lexname
            seen_ids.add(row["id"])
    assert seen_ids == {s.synset_id for s in synsets if s.definition}

    # The corpus holds train definitions and examples only: held-out glosses stay unseen.
    corpus = (output / "corpus.txt").read_text().splitlines()
    train = [s for s in synsets if split_of(s.synset_id) == "train"]
    assert corpus == [line for s in train for line in ([s.definition] if s.definition else []) + list(s.examples)]
    held_out = {s.definition for s in synsets if split_of(s.synset_id) != "train"}
    assert not held_out & set(corpus)
    assert counts["corpus_lines"] == len(corpus)
    assert json.loads((output / "counts.json").read_text()) == counts
    train_majority = collections.Counter(s.lexname for s in train).most_common(1)[0][0]
    test_labels = [row["label"] for row in read_jsonl(output / "supersense" / "test.jsonl")]
    assert counts["majority_label"] == train_majority
    assert counts["test_majority_share"] == test_labels.count(train_majority) / len(test_labels)

    everything = prepare_wordnet(tmp_path / "all", fake_wordnet, corpus_splits=("train", "validation", "test"))
    assert everything["corpus_lines"] > counts["corpus_lines"]


def test_max_synsets_is_a_deterministic_subsample(fake_wordnet, tmp_path):
    small = prepare_wordnet(tmp_path / "a", fake_wordnet, max_synsets=50)
    again = prepare_wordnet(tmp_path / "b", fake_wordnet, max_synsets=50)
    assert small["synsets"] == 50
    for name in ("corpus.txt", "supersense/train.jsonl", "supersense/test.jsonl"):
        assert (tmp_path / "a" / name).read_text() == (tmp_path / "b" / name).read_text()
    assert small == again
    larger = prepare_wordnet(tmp_path / "c", fake_wordnet, max_synsets=100)
    assert supersense_ids(tmp_path / "a") < supersense_ids(tmp_path / "c")  # nested: a larger cap only adds
    assert larger["synsets"] == 100


def test_output_is_replaced_atomically(fake_wordnet, tmp_path, monkeypatch):
    output = tmp_path / "out"
    prepare_wordnet(output, fake_wordnet)
    (output / "stale.txt").write_text("from an older run")
    prepare_wordnet(output, fake_wordnet)
    assert not (output / "stale.txt").exists()  # its own earlier output is replaced as a whole, not merged
    before = {p.relative_to(output): p.read_bytes() for p in output.rglob("*") if p.is_file()}

    def fail(*args, **kwargs):
        raise RuntimeError("interrupted")

    monkeypatch.setattr(wordnet.json, "dumps", fail)  # dies halfway through writing
    with pytest.raises(RuntimeError, match="interrupted"):
        prepare_wordnet(output, fake_wordnet)
    after = {p.relative_to(output): p.read_bytes() for p in output.rglob("*") if p.is_file()}
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dict", "out"]  # no temporary directory left


def test_missing_wordnet_gives_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        find_wordnet_dir(tmp_path / "nowhere")
    message = str(error.value)
    assert str(tmp_path / "nowhere") in message
    assert "apt-get install -y wordnet-base" in message
    assert "WNSEARCHDIR" in message and "--wordnet_dir" in message
    with pytest.raises(FileNotFoundError):
        prepare_wordnet(tmp_path / "out", tmp_path / "nowhere")
    assert not (tmp_path / "out").exists()


def test_wnsearchdir_is_honoured(fake_wordnet, monkeypatch):
    monkeypatch.setenv("WNSEARCHDIR", str(fake_wordnet))
    assert find_wordnet_dir() == fake_wordnet
    assert find_wordnet_dir(fake_wordnet) == fake_wordnet


def test_cli(fake_wordnet, tmp_path, monkeypatch, capsys):
    output = tmp_path / "cli_out"
    argv = ["prepare_wordnet.py", "--wordnet_dir", str(fake_wordnet), "--output_dir", str(output), "--max_synsets", "40"]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(REPO / "scripts" / "prepare_wordnet.py"), run_name="__main__")
    assert '"synsets": 40' in capsys.readouterr().out
    assert (output / "supersense" / "labels.json").is_file()


@pytest.mark.skipif(
    not (Path("/usr/share/wordnet") / "data.noun").is_file(), reason="WordNet 3.0 not installed (wordnet-base)"
)
def test_real_wordnet():
    lexnames = collections.Counter(s.lexname for s in iter_synsets("/usr/share/wordnet"))
    assert sum(lexnames.values()) == 117659  # WordNet 3.0
    assert set(lexnames) == set(SUPERSENSES)


def test_wordnet_texts_read_one_split(fake_wordnet):
    synsets = list(iter_synsets(fake_wordnet))
    for split in wordnet.SPLITS:
        in_split = [s for s in synsets if split_of(s.synset_id) == split]
        assert wordnet.wordnet_texts(split, wordnet_dir=fake_wordnet) == [s.definition for s in in_split if s.definition]
    with_examples = wordnet.wordnet_texts("train", include_examples=True, wordnet_dir=fake_wordnet)
    train = [s for s in synsets if split_of(s.synset_id) == "train"]
    assert len(with_examples) == sum(bool(s.definition) + len(s.examples) for s in train)
    with pytest.raises(ValueError, match="split must be one of"):
        wordnet.wordnet_texts("dev", wordnet_dir=fake_wordnet)


def test_supersense_pairs_have_hard_negatives_and_no_synset_in_two_splits(tmp_path):
    from mhe_transformers.data.wordnet import Synset, supersense_pairs

    # "bank" has senses in two supersenses: each one's negative is the other; "lonely rock" and "team" fall back to a
    # noun of another supersense; the adverbs (one supersense) to any synset of another one; "run" is alone.
    synsets = [
        Synset("n1", "noun.group", ("bank",), "a financial institution", ()),
        Synset("n2", "noun.object", ("bank", "riverside"), "sloping land beside a river", ()),
        Synset("n3", "noun.object", ("lonely rock",), "a rock on its own", ()),
        Synset("n4", "noun.group", ("team",), "people who play together", ()),
        Synset("r1", "adv.all", ("quickly",), "with speed", ()),
        Synset("r2", "adv.all", ("slowly",), "without speed", ()),
        Synset("v1", "verb.motion", ("run",), "move fast on foot", ()),
    ]
    by_id = {synset.synset_id: synset for synset in synsets}
    pairs = supersense_pairs(synsets)
    pair_of = {(pair["id"], pair["label"]): pair["other_id"] for pair in pairs}
    assert len(pair_of) == len(pairs) == 12  # one "same" and one "different" per synset except the lone verb
    assert {pair["id"] for pair in pairs} == {"n1", "n2", "n3", "n4", "r1", "r2"}
    assert pair_of["n1", "same"] == "n4" and pair_of["n1", "different"] == "n2"
    assert pair_of["n2", "same"] == "n3" and pair_of["n2", "different"] == "n1"
    assert pair_of["r1", "same"] == "r2" and by_id[pair_of["r1", "different"]].lexname != "adv.all"
    for pair in pairs:
        mine, other = by_id[pair["id"]], by_id[pair["other_id"]]
        assert (pair["gloss"], pair["other_gloss"]) == (mine.definition, other.definition)
        assert (mine.lexname == other.lexname) == (pair["label"] == "same")
        if mine.synset_id.startswith("n"):  # a noun's fallback negative is a noun
            assert other.synset_id.startswith("n")

    # The files written for the real task: both glosses of every pair are synsets of that split.
    output = tmp_path / "prepared"
    counts = prepare_wordnet(output, write_fake_wordnet(tmp_path / "dict"))
    synsets_by_split = {}
    for split in wordnet.SPLITS:
        rows = [json.loads(line) for line in (output / "supersense-pairs" / f"{split}.jsonl").read_text().splitlines()]
        assert len(rows) == counts[f"pairs_{split}"] > 0
        assert sorted(row["label"] for row in rows) == ["different"] * (len(rows) // 2) + ["same"] * (len(rows) // 2)
        assert all(split_of(row["id"]) == split and split_of(row["other_id"]) == split for row in rows)
        synsets_by_split[split] = {row["id"] for row in rows} | {row["other_id"] for row in rows}
    assert not synsets_by_split["train"] & (synsets_by_split["validation"] | synsets_by_split["test"])
    assert not synsets_by_split["validation"] & synsets_by_split["test"]
    assert json.loads((output / "supersense-pairs" / "labels.json").read_text()) == ["different", "same"]


def test_supersense_pairs_do_not_scan_a_whole_supersense_per_synset(monkeypatch):
    # The full WordNet has supersenses of ~10,000 synsets: drawing each partner by hashing the whole supersense
    # would make prepare_wordnet quadratic (minutes to hours). One hash per synset.
    from mhe_transformers.data.wordnet import Synset, supersense_pairs

    calls = []
    original = wordnet._hash_fraction
    monkeypatch.setattr(wordnet, "_hash_fraction", lambda text: calls.append(text) or original(text))
    lexnames = ("noun.artifact", "noun.act")
    synsets = [Synset(f"n{i}", lexnames[i % 2], (f"word{i}",), f"gloss {i}", ()) for i in range(400)]
    pairs = supersense_pairs(synsets)
    assert len(pairs) == 800 and len(calls) == len(synsets)


def test_heldout_texts_are_the_validation_and_test_synsets_and_the_manifest_hashes_the_files(fake_wordnet, tmp_path):
    output = tmp_path / "prepared"
    counts = prepare_wordnet(output, fake_wordnet)
    synsets = list(iter_synsets(fake_wordnet))
    for split in ("validation", "test"):
        lines = (output / "heldout" / f"{split}.txt").read_text().splitlines()
        expected = wordnet.synset_texts([s for s in synsets if split_of(s.synset_id) == split])
        assert lines == expected and counts[f"heldout_lines_{split}"] == len(lines) > 0
        assert not set(lines) & set((output / "corpus.txt").read_text().splitlines())
    manifest = json.loads((output / "manifest.json").read_text())
    assert manifest["content_hash"] == wordnet.folder_hash(output)
    assert manifest["inputs_hash"] == wordnet.wordnet_inputs_hash(fake_wordnet, manifest["parameters"])
