"""A multi-domain English sentence corpus read at run time from Debian packages (none of their text is stored here).

Each `Domain` reads paragraphs from the files (or the program) one Debian package installs, and every domain goes
through the same pipeline: sentence splitting, length and letter filters, case-insensitive de-duplication, and a
split by a hash of the sentence (so a sentence's split never depends on what else was read or sampled). Training
domains give `train`, `validation` and an in-domain `test` split; held-out domains are never used for training and
give `validation` (for choosing the recipe) and `test` (the final figures) only.

    sentences = corpus_sentences(TRAIN_DOMAINS, "train", per_domain=20_000, seed=0)   # {domain name: [sentence, ...]}
    check_packages(TRAIN_DOMAINS + HELDOUT_DOMAINS)  # CorpusError naming the missing package and its apt command

`root` ("/" by default) is where the package files are looked for: tests build tiny fake corpora under tmp_path.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import random
import re
import subprocess
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from .wordnet import iter_synsets

SPLITS = ("train", "validation", "test")
MIN_WORDS, MAX_WORDS, MAX_CHARS = 5, 48, 320
MIN_LETTER_RATIO = 0.8  # letters among the non-space characters: keeps prose, drops code, tables and paths
# Held-out domains: half validation, half test. Training domains: 5% in-domain test, 5% validation, the rest train.
HELDOUT_VALIDATION_SHARE = 0.5
TRAIN_TEST_SHARE, TRAIN_VALIDATION_SHARE = 0.05, 0.05


class CorpusError(FileNotFoundError):
    """A domain's Debian package is not installed (the message names it and the apt command), or it gave no text."""


@dataclass(frozen=True)
class Domain:
    """One register of English text. `reader(root)` yields paragraphs; `marker` (relative to root) must exist."""

    name: str
    package: str  # the Debian package to install: `apt-get install -y <package>`
    marker: str
    reader: Callable[[Path], Iterable[str]]
    heldout: bool = False
    description: str = ""


# -------------------------------------------------------------------------------------------------------------------
# Readers: each yields paragraphs (one text unit, before sentence splitting) from the package's files under `root`.


def _open_text(path: Path) -> str:
    """A text file, gzip-compressed or not (dictd's .dz files are gzip-compatible), decoded leniently."""
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return data.decode("utf-8", errors="replace")


def _paragraphs(text: str) -> list[str]:
    return [block for block in re.split(r"\n\s*\n", text) if block.strip()]


def read_fortunes(root: Path) -> Iterator[str]:
    """Fortune cookies (`%`-separated), without their attribution lines (`-- Mark Twain`)."""
    folder = root / "usr/share/games/fortunes"
    for path in sorted(folder.iterdir()):
        if path.suffix in (".dat", ".u8") or not path.is_file() or path.is_symlink():
            continue
        for cookie in re.split(r"(?m)^%\s*$", _open_text(path)):
            lines = [line for line in cookie.splitlines() if not line.strip().startswith("--")]
            yield from _paragraphs("\n".join(lines))


_ROFF_JOINED = {"BR", "RB", "IR", "RI", "BI", "IB"}  # alternating fonts: arguments written without spaces
_ROFF_TEXT = {"B", "I", "SM", "SB"}
_ROFF_ESCAPES = [
    (re.compile(r"\\f(\[[^\]]*\]|\(..|.)"), ""),  # font changes
    (re.compile(r"\\\((em|en)"), " - "),
    (re.compile(r"\\\(..|\\\[[^\]]*\]|\\\*(\(..|.)"), ""),  # special characters, strings
    (re.compile(r"\\[-e]"), lambda match: "-" if match.group(0) == r"\-" else "\\"),
    (re.compile(r"\\[&|^%:]"), ""),
    (re.compile(r"\\ "), " "),
]


def strip_roff(source: str) -> str:
    """Man-page roff to plain paragraphs, simply: comments, tables and unknown requests dropped; font macros keep
    their text; section headings and paragraph macros start a new paragraph."""
    out, in_table = [], False
    for line in source.splitlines():
        if line.startswith((".TS", ".EQ")):
            in_table = True
        if in_table:
            in_table = not line.startswith((".TE", ".EN"))
            continue
        if line.startswith((".\\\"", "'\\\"", "\\\"")):
            continue
        if line.startswith((".", "'")):
            request, _, rest = line[1:].strip().partition(" ")
            arguments = re.findall(r'"([^"]*)"|(\S+)', rest)
            words = [quoted or bare for quoted, bare in arguments]
            if request in _ROFF_JOINED:
                out.append("".join(words))
            elif request in _ROFF_TEXT:
                out.append(" ".join(words))
            else:
                out.append("")  # .SH, .PP, .TP, .IP, .RS, .nf, ...: a paragraph break
            continue
        out.append(line)
    text = "\n".join(out)
    for pattern, replacement in _ROFF_ESCAPES:
        text = pattern.sub(replacement, text)
    return text


def read_man_pages(root: Path) -> Iterator[str]:
    """The pages the `manpages` package installs (its dpkg file list), roff stripped."""
    listing = root / "var/lib/dpkg/info/manpages.list"
    for name in sorted(_open_text(listing).splitlines()):
        path = root / name.lstrip("/")
        if re.search(r"/man/man\d/[^/]+$", name) and path.is_file() and not path.is_symlink():
            yield from _paragraphs(strip_roff(_open_text(path)))


# Folders of /usr/share/doc that belong to held-out domains' packages: never training text.
_HELDOUT_DOC_FOLDERS = {"debian", "jargon-text", "gnu-standards", "dict-devil", "bible-kjv", "bible-kjv-text",
                        "debian-faq"}  # fmt: skip


def read_package_docs(root: Path) -> Iterator[str]:
    """README and .txt/.md files in /usr/share/doc (whatever is installed; never changelogs or copyright files, nor
    the folders of held-out domains' packages)."""
    folder = root / "usr/share/doc"
    for package in sorted(folder.iterdir()):
        if package.name in _HELDOUT_DOC_FOLDERS or not package.is_dir() or package.is_symlink():
            continue
        for path in sorted(package.rglob("*")):
            name = path.name.lower().removesuffix(".gz")
            wanted = name.startswith("readme") or name.endswith((".txt", ".md"))
            if wanted and path.is_file() and not path.is_symlink() and path.stat().st_size < 2_000_000:
                yield from _paragraphs(_open_text(path))


def read_wordnet(root: Path) -> Iterator[str]:
    """WordNet's glosses and example sentences, each a paragraph (the domain is split again by sentence here)."""
    for synset in iter_synsets(root / "usr/share/wordnet"):
        yield from ([synset.definition] if synset.definition else []) + list(synset.examples)


def read_bible(root: Path) -> Iterator[str]:
    """The King James Bible, verse by verse, from the `bible` program of Debian's bible-kjv."""
    program = root / "usr/bin/bible"
    output = subprocess.run(
        [str(program), "-l", "10000", "Gen1:1-Rev22:21"], capture_output=True, text=True, check=True,
        stdin=subprocess.DEVNULL,
    ).stdout  # fmt: skip
    for line in output.splitlines():
        match = re.match(r"\s*\d+\s+(.*)", line)  # "  3 And God said, Let there be light: and there was light."
        if match:
            yield match.group(1)


def _text_files(*paths: str) -> Callable[[Path], Iterator[str]]:
    def read(root: Path) -> Iterator[str]:
        for path in paths:
            yield from _paragraphs(_open_text(root / path))

    return read


TRAIN_DOMAINS = (
    Domain("fortunes", "fortunes", "usr/share/games/fortunes", read_fortunes,
           description="fortune cookies: quotations, literature, jokes, verse"),
    Domain("man-pages", "manpages", "var/lib/dpkg/info/manpages.list", read_man_pages,
           description="Linux manual pages (sections 1, 4, 5, 7, 8)"),
    Domain("package-docs", "base-files", "usr/share/doc", read_package_docs,
           description="README and text files of the installed packages' documentation"),
    Domain("wordnet", "wordnet-base", "usr/share/wordnet", read_wordnet,
           description="WordNet 3.0 glosses and example sentences"),
)  # fmt: skip
HELDOUT_DOMAINS = (
    Domain("bible", "bible-kjv", "usr/bin/bible", read_bible, heldout=True,
           description="the King James Bible"),
    Domain("jargon", "jargon-text", "usr/share/doc/jargon-text/jargon.txt.gz",
           _text_files("usr/share/doc/jargon-text/jargon.txt.gz"), heldout=True,
           description="the Jargon File (hacker slang lexicon)"),
    Domain("debian-faq", "debian-faq", "usr/share/doc/debian/FAQ/debian-faq.en.txt.gz",
           _text_files("usr/share/doc/debian/FAQ/debian-faq.en.txt.gz"), heldout=True,
           description="the Debian FAQ"),
    Domain("devils-dictionary", "dict-devil", "usr/share/dictd/devil.dict.dz",
           _text_files("usr/share/dictd/devil.dict.dz"), heldout=True,
           description="Ambrose Bierce's The Devil's Dictionary (satire, 1911)"),
    Domain("gnu-standards", "gnu-standards", "usr/share/doc/gnu-standards/standards.text.gz",
           _text_files("usr/share/doc/gnu-standards/standards.text.gz",
                       "usr/share/doc/gnu-standards/maintain.text.gz"), heldout=True,
           description="the GNU Coding Standards and Information for Maintainers of GNU Software"),
)  # fmt: skip
DOMAINS = {domain.name: domain for domain in TRAIN_DOMAINS + HELDOUT_DOMAINS}


# -------------------------------------------------------------------------------------------------------------------
# Sentences.

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z])|(?<=[.!?][\"')\]])\s+(?=[\"'(\[]?[A-Z])")
_ABBREVIATIONS = ("e.g.", "i.e.", "etc.", "Mr.", "Mrs.", "Dr.", "St.", "vs.", "cf.", "No.", "Fig.")


def split_sentences(paragraph: str) -> list[str]:
    """A paragraph (any line breaks) -> sentences: split after . ! ? (and a closing quote or bracket) before a capital,
    except after common abbreviations."""
    pieces = _SENTENCE_END.split(" ".join(paragraph.split()))
    sentences = []
    for piece in pieces:
        if sentences and sentences[-1].endswith(_ABBREVIATIONS):
            sentences[-1] += " " + piece
        else:
            sentences.append(piece)
    return sentences


def is_sentence(text: str) -> bool:
    """Prose of MIN_WORDS to MAX_WORDS words (at most MAX_CHARS characters), mostly letters, with lower case."""
    words = text.split()
    if not MIN_WORDS <= len(words) <= MAX_WORDS or len(text) > MAX_CHARS or not re.search("[a-z]", text):
        return False
    visible = [char for char in text if not char.isspace()]
    return sum(char.isalpha() for char in visible) >= MIN_LETTER_RATIO * len(visible)


def split_of(sentence: str, heldout: bool) -> str:
    """The split of a sentence, from a hash of its lower-cased text: independent of everything else read."""
    digest = hashlib.sha1(("corpus:" + sentence.lower()).encode("utf-8")).digest()
    fraction = int.from_bytes(digest[:8], "big") / 2**64
    if heldout:
        return "validation" if fraction < HELDOUT_VALIDATION_SHARE else "test"
    if fraction < TRAIN_TEST_SHARE:
        return "test"
    return "validation" if fraction < TRAIN_TEST_SHARE + TRAIN_VALIDATION_SHARE else "train"


def missing_packages(
    domains: Sequence[Domain] = TRAIN_DOMAINS + HELDOUT_DOMAINS, root: str | os.PathLike = "/"
) -> list[str]:
    """The Debian packages of `domains` that are not installed under `root` (`make convert-minilm` installs them)."""
    return list(dict.fromkeys(domain.package for domain in domains if not (Path(root) / domain.marker).exists()))


def check_packages(domains: Sequence[Domain], root: str | os.PathLike = "/") -> None:
    """Raise CorpusError naming every missing package, and the one apt command that installs them."""
    missing = [domain for domain in domains if not (Path(root) / domain.marker).exists()]
    if missing:
        names = " ".join(missing_packages(missing, root))
        details = ", ".join(f"{domain.name} (/{domain.marker})" for domain in missing)
        raise CorpusError(f"Missing Debian package(s) for the corpus domains {details}: apt-get install -y {names}")


@functools.lru_cache(maxsize=32)
def _read_domain(domain: Domain, root: str) -> dict[str, tuple[str, ...]]:
    """Every sentence of `domain` by split (read once per process), de-duplicated case-insensitively, sorted."""
    check_packages([domain], root)
    seen: dict[str, dict[str, str]] = {split: {} for split in SPLITS}
    for paragraph in domain.reader(Path(root)):
        for sentence in split_sentences(paragraph):
            if is_sentence(sentence):
                seen[split_of(sentence, domain.heldout)].setdefault(sentence.lower(), sentence)
    return {split: tuple(sorted(sentences.values())) for split, sentences in seen.items()}


def domain_sentences(domain: Domain, split: str, root: str | os.PathLike = "/") -> list[str]:
    """Every sentence of `domain` in `split`, de-duplicated (case-insensitively, first spelling kept), sorted."""
    if split not in SPLITS or (domain.heldout and split == "train"):
        allowed = SPLITS[1:] if domain.heldout else SPLITS
        raise ValueError(f"split of the {domain.name} domain must be one of {allowed}, got {split!r}.")
    return list(_read_domain(domain, str(root))[split])


def corpus_sentences(
    domains: Sequence[Domain],
    split: str,
    per_domain: int | None = None,
    seed: int = 0,
    root: str | os.PathLike = "/",
    exclude: Sequence[Domain] = (),
) -> dict[str, list[str]]:
    """{domain name: sentences of `split`}, at most `per_domain` each (a seeded sample), every package checked first.
    A sentence that any domain of `exclude` holds (in any split, case-insensitively) is left out: held-out text that
    also occurs in training text (a licence, a quotation) is not held out."""
    check_packages(list(domains) + list(exclude), root)
    excluded = {
        sentence.lower() for domain in exclude for sentences in _read_domain(domain, str(root)).values()
        for sentence in sentences
    }  # fmt: skip
    result = {}
    for domain in domains:
        sentences = [sentence for sentence in domain_sentences(domain, split, root) if sentence.lower() not in excluded]
        if not sentences:
            raise CorpusError(f"The {domain.name} domain gave no {split} sentences (package {domain.package}).")
        if per_domain is not None and len(sentences) > per_domain:
            sentences = random.Random(f"{seed}:{domain.name}:{split}").sample(sentences, per_domain)
        result[domain.name] = sentences
    return result


def packages(domains: Sequence[Domain] = TRAIN_DOMAINS + HELDOUT_DOMAINS) -> list[str]:
    """The Debian packages the domains read, in order, once each."""
    return list(dict.fromkeys(domain.package for domain in domains))
