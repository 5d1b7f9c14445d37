"""The multi-domain Debian corpus, on tiny fake package files under tmp_path (never the real packages)."""

import gzip
import os
import stat
from pathlib import Path

import pytest

from mhe_transformers.data import corpora
from mhe_transformers.data.corpora import (
    DOMAINS,
    HELDOUT_DOMAINS,
    TRAIN_DOMAINS,
    CorpusError,
    check_packages,
    corpus_sentences,
    domain_sentences,
    is_sentence,
    packages,
    split_of,
    split_sentences,
    strip_roff,
)
from test_wordnet import write_fake_wordnet


def numbered(template: str, count: int) -> list[str]:
    return [template.format(i=i) for i in range(count)]


FORTUNES = numbered("The wise old owl number {i} hoots softly at the quiet moon tonight.", 60)
MAN_ROFF = """.\\" a comment that is never text
.TH FAKE 7
.SH NAME
fake \\- a page
.SH DESCRIPTION
The
.B frobnicate
call returns the number of widgets that
.BR frob (2)
created for the caller.
.TS
tab;
this table row is never read as text
.TE
.PP
A process may \\fIchange\\fP the state of a widget at any time.
.PP
""" + "\n".join(f"Widget number {i} keeps its own state until the caller frees it." for i in range(60)) + "\n"
MAN_MORE = {f"Widget number {i} keeps its own state until the caller frees it." for i in range(60)}
GLOSSES = numbered("a made up thing number {i} for the tests", 60)
DOCS = numbered("This package document {i} explains how the library reads its configuration files.", 60)
HELDOUT_DOC = "This sentence lives in the jargon package folder and must never be training text."
BIBLE = numbered("And the shepherd number {i} led the flock beside the still waters of the valley.", 60)
JARGON = numbered("A hacker term {i} describes a program that works by accident rather than design.", 60)
FAQ = numbered("Question {i} asks how one installs a package from the archive with the tools.", 60)
DEVIL = numbered("Patience number {i} is a minor form of despair disguised as a virtue by the idle.", 60)
GNU = numbered("Rule {i} of the standards says that programs should handle arbitrary long lines.", 60)
SHARED = "Every copy of this licence text appears in training and held-out files alike."


def write(path: Path, text: str, compress: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress:
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)


def make_fake_root(root: Path) -> Path:
    """Every domain's files, tiny, in the layout the Debian packages install."""
    fortunes = root / "usr/share/games/fortunes"
    write(fortunes / "wisdom", "\n%\n".join(f"{line}\n\t\t-- An Attribution Line Here" for line in FORTUNES))
    write(fortunes / "wisdom.dat", "binary index, never read as text")
    write(root / "usr/share/man/man7/fake.7.gz", MAN_ROFF, compress=True)
    write(root / "usr/share/man/man7/notlisted.7.gz", ".TH X 7\nThis page is not in the package file list.\n", True)
    write(root / "var/lib/dpkg/info/manpages.list", "/.\n/usr/share/man/man7\n/usr/share/man/man7/fake.7.gz\n")
    write(root / "usr/share/doc/libfake/README", "\n\n".join(DOCS + [SHARED]))
    write(root / "usr/share/doc/libfake/changelog", "Changelogs are never read as text by the corpus reader.")
    write(root / "usr/share/doc/jargon-text/README.Debian", HELDOUT_DOC)
    write_fake_wordnet(root / "usr/share/wordnet")
    with open(root / "usr/share/wordnet/data.noun", "a") as data:
        data.writelines(f"{20000000 + i:08d} 05 n 01 madeup{i} 0 000 | {gloss}  \n" for i, gloss in enumerate(GLOSSES))
    bible = root / "usr/bin/bible"
    write(bible, "#!/bin/sh\ncat <<'EOF'\n\nGenesis 1\n\n" + "".join(f"  {i + 1} {v}\n" for i, v in enumerate(BIBLE))
          + "EOF\n")  # fmt: skip
    bible.chmod(bible.stat().st_mode | stat.S_IXUSR)
    write(root / "usr/share/doc/jargon-text/jargon.txt.gz", "\n\n".join(JARGON + [SHARED]), compress=True)
    write(root / "usr/share/doc/debian/FAQ/debian-faq.en.txt.gz", "\n".join(FAQ), compress=True)
    write(root / "usr/share/dictd/devil.dict.dz", " ".join(DEVIL), compress=True)
    write(root / "usr/share/doc/gnu-standards/standards.text.gz", "\n\n".join(GNU[:30]), compress=True)
    write(root / "usr/share/doc/gnu-standards/maintain.text.gz", "\n\n".join(GNU[30:]), compress=True)
    return root


@pytest.fixture
def root(tmp_path):
    return make_fake_root(tmp_path / "root")


def all_sentences(domain, root):
    splits = corpora.SPLITS[1:] if domain.heldout else corpora.SPLITS
    return {sentence for split in splits for sentence in domain_sentences(domain, split, root)}


def test_every_domain_reads_its_own_files(root):
    assert all_sentences(DOMAINS["fortunes"], root) == set(FORTUNES)  # attribution lines and .dat files left out
    assert all_sentences(DOMAINS["man-pages"], root) == {
        "The frobnicate call returns the number of widgets that frob(2) created for the caller.",
        "A process may change the state of a widget at any time.",
    } | MAN_MORE  # only the listed page; comments, tables, fonts stripped
    assert all_sentences(DOMAINS["package-docs"], root) == set(DOCS) | {SHARED}  # no changelog, no held-out folder
    assert all_sentences(DOMAINS["wordnet"], root) == {  # glosses and examples of 5+ words ("fake gloss 7": fewer)
        'a made-up word; as in the expression "blurb it"', "a small made-up marsh creature",
        "so much glee; so little time", "ten words in one synset", *GLOSSES,
    }  # fmt: skip
    assert all_sentences(DOMAINS["bible"], root) == set(BIBLE)  # verse numbers and headings dropped
    assert all_sentences(DOMAINS["jargon"], root) == set(JARGON) | {SHARED}
    assert all_sentences(DOMAINS["debian-faq"], root) == set(FAQ)  # one paragraph, split into sentences
    assert all_sentences(DOMAINS["devils-dictionary"], root) == set(DEVIL)
    assert all_sentences(DOMAINS["gnu-standards"], root) == set(GNU)  # both files


def test_splits_are_disjoint_deterministic_and_heldout_domains_have_no_train_split(root):
    for domain in DOMAINS.values():
        splits = corpora.SPLITS[1:] if domain.heldout else corpora.SPLITS
        parts = [set(domain_sentences(domain, split, root)) for split in splits]
        assert sum(len(part) for part in parts) == len(set().union(*parts))
    with pytest.raises(ValueError, match="must be one of"):
        domain_sentences(DOMAINS["bible"], "train", root)
    sentence = FORTUNES[0]
    assert split_of(sentence, True) == split_of(sentence.upper(), True)  # by text alone, case-insensitive
    assert {split_of(s, True) for s in BIBLE} == {"validation", "test"}
    assert {split_of(s, False) for s in FORTUNES} == {"train", "validation", "test"}


def test_heldout_sentences_never_occur_in_training_text(root):
    heldout = corpus_sentences(HELDOUT_DOMAINS, "test", root=root, exclude=TRAIN_DOMAINS)
    heldout |= {f"{k}:v": v for k, v in corpus_sentences(HELDOUT_DOMAINS, "validation", root=root,
                                                         exclude=TRAIN_DOMAINS).items()}  # fmt: skip
    training = {s.lower() for domain in TRAIN_DOMAINS for s in all_sentences(domain, root)}
    assert SHARED.lower() in training
    assert not {s.lower() for texts in heldout.values() for s in texts} & training
    assert HELDOUT_DOC not in training  # the held-out package's doc folder is not package-docs text
    assert SHARED in domain_sentences(DOMAINS["jargon"], split_of(SHARED, True), root)  # only the exclusion removed it


def test_seeded_sample_is_deterministic_and_bounded(root):
    first = corpus_sentences(HELDOUT_DOMAINS, "test", per_domain=5, seed=3, root=root)
    assert first == corpus_sentences(HELDOUT_DOMAINS, "test", per_domain=5, seed=3, root=root)
    assert all(len(texts) == 5 for texts in first.values())
    assert first != corpus_sentences(HELDOUT_DOMAINS, "test", per_domain=5, seed=4, root=root)


def test_sentence_splitting_and_filters():
    assert split_sentences("It rained all day. Then the sun came out!  Was it over? \"Yes,\" he said.") == [
        "It rained all day.", "Then the sun came out!", "Was it over?", '"Yes," he said.',
    ]  # fmt: skip
    assert split_sentences("Use a tool, e.g. Make to build it. It works well.") == [
        "Use a tool, e.g. Make to build it.", "It works well.",
    ]  # fmt: skip
    assert split_sentences("version 2.5 of the tool\nis out") == ["version 2.5 of the tool is out"]
    assert is_sentence("The quick brown fox jumps over the dog.")
    assert not is_sentence("Too short to count.")
    assert not is_sentence("if (x == 0) { return y[1] + z[2]; } /* c */")  # code: few letters
    assert not is_sentence(" ".join(["word"] * 60))
    assert not is_sentence("ALL CAPITALS HEADING WITHOUT LOWER CASE LETTERS")


def test_strip_roff_keeps_text_and_drops_markup():
    text = strip_roff('.SH "SEE ALSO"\n.IR signal (7),\nuse \\fBkill\\fR \\-9 \\(em now\n.\\" gone\n')
    assert "signal(7)," in text and "use kill -9 - now" in " ".join(text.split()).replace("  ", " ")
    assert "gone" not in text and "SEE ALSO" not in text


def test_a_missing_package_is_one_line_naming_it_and_the_apt_command(root):
    (root / "usr/share/dictd/devil.dict.dz").unlink()
    (root / "usr/bin/bible").unlink()
    with pytest.raises(CorpusError) as error:
        check_packages(HELDOUT_DOMAINS, root)
    message = str(error.value)
    assert "\n" not in message
    assert "apt-get install -y bible-kjv dict-devil" in message and "devils-dictionary" in message
    with pytest.raises(CorpusError, match="apt-get install -y dict-devil"):
        corpus_sentences(TRAIN_DOMAINS, "train", root=root, exclude=[DOMAINS["devils-dictionary"]])
    check_packages(TRAIN_DOMAINS, root)  # the others are there


def test_packages_lists_each_debian_package_once():
    names = packages()
    assert len(names) == len(set(names)) and {"fortunes", "manpages", "wordnet-base", "bible-kjv"} <= set(names)
    assert not {d.name for d in TRAIN_DOMAINS} & {d.name for d in HELDOUT_DOMAINS}
    assert all(domain.heldout for domain in HELDOUT_DOMAINS) and not any(d.heldout for d in TRAIN_DOMAINS)
    assert os.sep not in "".join(domain.name for domain in DOMAINS.values())
