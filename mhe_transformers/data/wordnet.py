"""Offline text data from the WordNet 3.0 database.

WordNet is read at run time from its installed data files (Debian/Ubuntu package
`wordnet-base`, files in /usr/share/wordnet, format in `man 5 wndb`); none of its text is
stored in this repository. It gives two things:

* a small pretraining corpus: the gloss definitions and example sentences, and
* a real 45-class text classification task, "gloss -> supersense": predict the
  lexicographer file of a synset (e.g. `noun.animal`, `verb.motion`) from its definition.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

from ..utils import cli
from ..utils.run_folder import OUTPUT_MARKER, atomic_directory, check_output_dir, claim_output_dir

DEFAULT_WORDNET_DIR = Path("/usr/share/wordnet")

# The 45 lexicographer file names in lex_filenum order (lexnames(5WN)). A synset's data
# line stores the number; the name is its supersense, used here as the class label.
SUPERSENSES: tuple[str, ...] = (
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal",
    "noun.artifact", "noun.attribute", "noun.body", "noun.cognition", "noun.communication",
    "noun.event", "noun.feeling", "noun.food", "noun.group", "noun.location", "noun.motive",
    "noun.object", "noun.person", "noun.phenomenon", "noun.plant", "noun.possession",
    "noun.process", "noun.quantity", "noun.relation", "noun.shape", "noun.state",
    "noun.substance", "noun.time", "verb.body", "verb.change", "verb.cognition",
    "verb.communication", "verb.competition", "verb.consumption", "verb.contact",
    "verb.creation", "verb.emotion", "verb.motion", "verb.perception", "verb.possession",
    "verb.social", "verb.stative", "verb.weather", "adj.ppl",
)  # fmt: skip

# data.<file suffix> -> part-of-speech letter used in synset ids. Adjective satellites
# ('s' in the data line) live in data.adj and get "a" like other adjectives.
DATA_FILES = {"noun": "n", "verb": "v", "adj": "a", "adv": "r"}

SPLITS = ("train", "validation", "test")

# Adjectives may carry a syntactic marker such as "(p)" or "(ip)" glued to the word.
_ADJECTIVE_MARKER = re.compile(r"\([a-z]+\)$")


@dataclass(frozen=True)
class Synset:
    synset_id: str  # part-of-speech letter + 8-digit byte offset, e.g. "n00001740"
    lexname: str  # supersense, e.g. "noun.Tops"
    words: tuple[str, ...]  # lemmas with spaces instead of underscores
    definition: str
    examples: tuple[str, ...]


def find_wordnet_dir(wordnet_dir: str | os.PathLike | None = None) -> Path:
    """Return the WordNet dictionary directory: `wordnet_dir`, else $WNSEARCHDIR, else /usr/share/wordnet."""
    directory = Path(wordnet_dir or os.environ.get("WNSEARCHDIR") or DEFAULT_WORDNET_DIR)
    missing = [f"data.{suffix}" for suffix in DATA_FILES if not (directory / f"data.{suffix}").is_file()]
    if missing:
        raise FileNotFoundError(
            f"WordNet 3.0 data files not found in {directory} (missing: {', '.join(missing)}). "
            "Install them with `apt-get install -y wordnet-base` (Debian/Ubuntu), or point to a "
            "directory holding data.noun/data.verb/data.adj/data.adv with the WNSEARCHDIR "
            "environment variable or --wordnet_dir."
        )
    return directory


def iter_synsets(wordnet_dir: str | os.PathLike | None = None) -> Iterator[Synset]:
    """Yield every synset of data.noun, data.verb, data.adj and data.adv, in file order."""
    directory = find_wordnet_dir(wordnet_dir)
    for suffix, pos in DATA_FILES.items():
        with open(directory / f"data.{suffix}", encoding="utf-8") as f:
            for line in f:
                if line.startswith("  "):  # license header
                    continue
                if line.strip():
                    yield parse_data_line(line, pos)


def parse_data_line(line: str, pos: str) -> Synset:
    """Parse one wndb data line:
    `offset lex_filenum ss_type w_cnt word lex_id [word lex_id...] p_cnt [ptr...] [frames...] | gloss`.
    Only the fields before the pointers and the gloss are needed."""
    fields, _, gloss = line.partition("|")
    offset, lex_filenum, _ss_type, w_cnt, *rest = fields.split()
    word_fields = rest[: 2 * int(w_cnt, 16)]  # w_cnt is hexadecimal
    words = tuple(_ADJECTIVE_MARKER.sub("", word).replace("_", " ") for word in word_fields[::2])
    definition, examples = split_gloss(gloss)
    return Synset(f"{pos}{offset}", SUPERSENSES[int(lex_filenum)], words, definition, examples)


def split_gloss(gloss: str) -> tuple[str, tuple[str, ...]]:
    """Split a gloss into its definition and its double-quoted example sentences.

    Glosses look like `definition; "example one"; "example two"`. Splitting on semicolons
    outside quotes and treating the parts that start with a quote as examples keeps quotes
    that belong to the definition (`as in the expression "on the job"`) in the definition.
    Attributions after an example (`"..."- Shakespeare`) are dropped.
    """
    definition_parts, examples = [], []
    for part in _split_outside_quotes(gloss.strip(), ";"):
        if part.startswith('"'):
            closing = part.rfind('"')
            example = part[1:closing] if closing > 0 else part[1:]  # a few quotes are unbalanced
            if example.strip():
                examples.append(example.strip())
        else:
            definition_parts.append(part)
    return "; ".join(definition_parts), tuple(examples)


def _split_outside_quotes(text: str, separator: str) -> list[str]:
    parts, current, in_quote = [], [], False
    for char in text:
        if char == '"':
            in_quote = not in_quote
        if char == separator and not in_quote:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [part.strip() for part in parts if part.strip()]


def _hash_fraction(text: str) -> float:
    """A number in [0, 1) fixed by `text` alone; unlike hash(), stable across processes."""
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_of(synset_id: str) -> str:
    """The split a synset belongs to: "train" (80%), "validation" (10%) or "test" (10%).

    Fixed by the id alone, so it does not change with subsampling, file order or WordNet
    directory, and a synset can never move between train and test.
    """
    fraction = _hash_fraction(synset_id)
    if fraction < 0.8:
        return "train"
    return "validation" if fraction < 0.9 else "test"


def wordnet_texts(split: str, include_examples: bool = False, wordnet_dir=None) -> list[str]:
    """Gloss definitions (and, if asked, example sentences) of one split, read at run time from the installed
    WordNet database. The splits are fixed by synset id, so "train" texts never include a "test" gloss."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}.")
    texts = []
    for synset in iter_synsets(wordnet_dir):
        if split_of(synset.synset_id) == split:
            texts += [synset.definition] if synset.definition else []
            texts += list(synset.examples) if include_examples else []
    return texts


PAIR_LABELS = ("different", "same")  # do the two glosses have the same supersense?
PAIRS_DIR = "supersense-pairs"  # the pair task's folder in prepare_wordnet's output


def supersense_pairs(synsets: Sequence[Synset]) -> list[dict[str, str]]:
    """The sentence-pair task "do these two glosses define the same kind of thing?" (the same supersense, e.g. both
    noun.animal), built from ONE split's synsets only.

    Each synset with a definition is the first text of two pairs: one labelled "same", with the next synset of its
    supersense in a fixed pseudo-random order, and one labelled "different", with a hard negative: another sense of
    one of its words in another supersense when there is one ("bank": noun.group vs noun.object), else the next
    synset of its part of speech in another supersense. As every first gloss is labelled once each way, neither text
    alone tells the label: the model has to compare the two, across the segments. A synset alone in its supersense
    gives no pair. Rows: {"id", "gloss", "other_id", "other_gloss", "label"}.
    """
    synsets = [synset for synset in synsets if synset.definition]
    pos_of = {synset.synset_id: synset.lexname.split(".")[0] for synset in synsets}  # "noun.animal" -> "noun"
    order = {synset.synset_id: _hash_fraction("pair:" + synset.synset_id) for synset in synsets}  # one hash each
    # Rings of synsets in that fixed order: one per supersense, one per part of speech, one of all.
    rings, by_word = collections.defaultdict(list), collections.defaultdict(list)
    for synset in sorted(synsets, key=lambda synset: order[synset.synset_id]):
        for ring in (synset.lexname, pos_of[synset.synset_id], "all"):
            rings[ring].append(synset)
        for word in set(word.lower() for word in synset.words):
            by_word[word].append(synset)
    index = {(ring, synset.synset_id): i for ring, members in rings.items() for i, synset in enumerate(members)}
    # A part of speech with a single supersense (adv.all) draws its negatives from every synset.
    negative_ring = {
        pos: pos if len({other.lexname for other in rings[pos]}) > 1 else "all" for pos in set(pos_of.values())
    }

    def next_in(ring: str, synset: Synset, accept) -> Synset | None:
        members, start = rings[ring], index[ring, synset.synset_id]
        following = (members[(start + k) % len(members)] for k in range(1, len(members)))
        return next((other for other in following if accept(other)), None)

    pairs = []
    for synset in synsets:
        same = next_in(synset.lexname, synset, lambda other: other.definition != synset.definition)
        other_kind = lambda other: other.lexname != synset.lexname  # noqa: E731
        words = set(word.lower() for word in synset.words)
        senses = [other for word in words for other in by_word[word] if other_kind(other)]
        different = min(senses, key=lambda other: order[other.synset_id]) if senses else None
        different = different or next_in(negative_ring[pos_of[synset.synset_id]], synset, other_kind)
        if same is None or different is None:
            continue
        for other, label in ((same, "same"), (different, "different")):
            pairs.append({"id": synset.synset_id, "gloss": synset.definition, "other_id": other.synset_id,
                          "other_gloss": other.definition, "label": label})  # fmt: skip
    return pairs


# The files prepare_wordnet writes besides the task folders: a manifest that says what made them (checked on use).
MANIFEST = "manifest.json"
HELDOUT_DIR = "heldout"  # heldout/{validation,test}.txt: the texts of the held-out synsets, for language-model scores


def prepare_wordnet(
    output_dir: str | os.PathLike,
    wordnet_dir: str | os.PathLike | None = None,
    *,
    max_synsets: int | None = None,
    corpus_splits: Sequence[str] = ("train",),
    include_examples: bool = True,
) -> dict[str, int | float | str | None]:
    """Write the WordNet pretraining corpus and supersense classification data to `output_dir`.

    Output (the directory is replaced atomically, so an interrupted run leaves nothing half-written):

    * `corpus.txt`: one gloss definition or example sentence per line. By default only synsets
      of the train split contribute, so a model pretrained on it has not seen the glosses it
      is later evaluated on (validation/test) — the held-out numbers stay honest. Pass
      `corpus_splits=SPLITS` to pretrain on every gloss.
    * `heldout/{validation,test}.txt`: the same kind of lines from the validation and test synsets, for held-out
      language-model scores.
    * `supersense/{train,validation,test}.jsonl`: `{"id", "text" (definition), "label" (lexname)}`.
    * `supersense/labels.json`: the 45 lexnames (`SUPERSENSES`), in lexfile-number order.
    * `supersense-pairs/{train,validation,test}.jsonl` and `labels.json`: the sentence-pair task of
      `supersense_pairs` ("do these two glosses define the same kind of thing?", hard negatives), each split built
      from its own synsets only.
    * `counts.json`: the counts returned, with the most frequent train label and its share of test.
    * `manifest.json`: `inputs_hash` (this module's source, the parameters and the WordNet files: what made the
      folder) and `content_hash` (of every file written: what a result computed from them depends on).

    `max_synsets` keeps a deterministic pseudo-random subset of that many synsets (the ones
    with the smallest hash of their id), for fast tests and demos; each split keeps its share.
    """
    if max_synsets is not None and max_synsets < 1:
        raise ValueError(f"max_synsets must be positive, got {max_synsets}.")
    unknown = set(corpus_splits) - set(SPLITS)
    if unknown:
        raise ValueError(f"Unknown corpus split(s) {sorted(unknown)}; choose from {SPLITS}.")
    parameters = {"max_synsets": max_synsets, "corpus_splits": list(corpus_splits), "include_examples": include_examples}
    synsets = select_synsets(list(iter_synsets(wordnet_dir)), max_synsets)
    synsets_by_split = {split: [s for s in synsets if split_of(s.synset_id) == split] for split in SPLITS}
    examples_by_split = {
        split: [{"id": s.synset_id, "text": s.definition, "label": s.lexname} for s in members if s.definition]
        for split, members in synsets_by_split.items()
    }
    texts_by_split = {split: synset_texts(members, include_examples) for split, members in synsets_by_split.items()}
    corpus_lines = [line for split in SPLITS if split in corpus_splits for line in texts_by_split[split]]
    pairs_by_split = {split: supersense_pairs(members) for split, members in synsets_by_split.items()}
    counts = {
        "synsets": len(synsets),
        "corpus_lines": len(corpus_lines),
        **{split: len(examples) for split, examples in examples_by_split.items()},
        "labels": len(SUPERSENSES),
        **majority_baseline(examples_by_split),
        **{f"pairs_{split}": len(pairs) for split, pairs in pairs_by_split.items()},
        **{f"heldout_lines_{split}": len(texts_by_split[split]) for split in ("validation", "test")},
    }
    files = {"corpus.txt": _lines(corpus_lines), "counts.json": json.dumps(counts, indent=1) + "\n"}
    files.update({f"{HELDOUT_DIR}/{split}.txt": _lines(texts_by_split[split]) for split in ("validation", "test")})
    for folder, rows_by_split, labels in (
        ("supersense", examples_by_split, SUPERSENSES),
        (PAIRS_DIR, pairs_by_split, PAIR_LABELS),
    ):
        files.update({f"{folder}/{split}.jsonl": _lines(map(json.dumps, rows)) for split, rows in rows_by_split.items()})
        files[f"{folder}/labels.json"] = json.dumps(list(labels), indent=1 if folder == "supersense" else None) + "\n"
    manifest = {"inputs_hash": wordnet_inputs_hash(wordnet_dir, parameters), "parameters": parameters,
                "content_hash": files_hash(files)}  # fmt: skip
    files[MANIFEST] = json.dumps(manifest, indent=1) + "\n"
    with atomic_directory(output_dir) as tmp_dir:
        for name, content in files.items():
            (tmp_dir / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_dir / name).write_text(content, encoding="utf-8")
    return counts


def select_synsets(synsets: list[Synset], max_synsets: int | None) -> list[Synset]:
    """All synsets, or the `max_synsets` with the smallest hash of their id (back in file order)."""
    if max_synsets is None or max_synsets >= len(synsets):
        return synsets
    # A second salt keeps the sample independent of the split assignment.
    ranked = sorted(synsets, key=lambda synset: _hash_fraction("sample:" + synset.synset_id))
    keep = {synset.synset_id for synset in ranked[:max_synsets]}
    return [synset for synset in synsets if synset.synset_id in keep]


def synset_texts(synsets: Sequence[Synset], include_examples: bool = True) -> list[str]:
    """Each synset's definition and (if asked) example sentences, one per line, in the given order."""
    lines = []
    for synset in synsets:
        lines += [synset.definition] if synset.definition else []
        lines += list(synset.examples) if include_examples else []
    return lines


def majority_baseline(examples_by_split: dict[str, list[dict]]) -> dict[str, str | float | None]:
    """The most frequent train label and its share of test: the accuracy of always predicting it, the floor."""
    train_labels = collections.Counter(example["label"] for example in examples_by_split["train"])
    majority_label = train_labels.most_common(1)[0][0] if train_labels else None
    test = examples_by_split["test"]
    share = sum(example["label"] == majority_label for example in test) / len(test) if test else 0.0
    return {"majority_label": majority_label, "test_majority_share": share}


def _lines(items) -> str:
    return "".join(item + "\n" for item in items)


def files_hash(files: dict[str, str | bytes]) -> str:
    """sha256 over the sorted relative names and contents of a folder's files."""
    digest = hashlib.sha256()
    for name in sorted(files):
        content = files[name]
        digest.update(name.encode() + b"\0" + (content.encode("utf-8") if isinstance(content, str) else content) + b"\0")
    return digest.hexdigest()


def folder_hash(folder: str | os.PathLike, skip: Sequence[str] = (MANIFEST,)) -> str:
    """`files_hash` of the files under `folder` as they are on disk, without `skip` and the output marker."""
    folder = Path(folder)
    files = {
        path.relative_to(folder).as_posix(): path.read_bytes()
        for path in folder.rglob("*")
        if path.is_file() and path.name not in (*skip, OUTPUT_MARKER)
    }
    return files_hash(files)


def wordnet_inputs_hash(wordnet_dir: str | os.PathLike | None, parameters: dict) -> str:
    """What a prepared folder is made from: this module's source, the parameters and WordNet's data files."""
    directory = find_wordnet_dir(wordnet_dir)
    digest = hashlib.sha256(Path(__file__).read_bytes())
    digest.update(json.dumps(parameters, sort_keys=True).encode())
    for suffix in DATA_FILES:
        digest.update((directory / f"data.{suffix}").read_bytes())
    return digest.hexdigest()


def ensure_wordnet(
    output_dir: str | os.PathLike, wordnet_dir: str | os.PathLike | None = None, *, max_synsets: int | None = None
) -> dict:
    """The folder `prepare_wordnet(output_dir, wordnet_dir, max_synsets=...)` would write, prepared again unless its
    manifest shows it was made from the same code, parameters and WordNet files and its files are unchanged since.
    Never silently reuses a stale folder. Returns the manifest, with the counts under "counts"."""
    output_dir = Path(output_dir)
    parameters = {"max_synsets": max_synsets, "corpus_splits": ["train"], "include_examples": True}
    manifest_path = output_dir / MANIFEST
    manifest = json.loads(manifest_path.read_text(encoding="utf-8")) if manifest_path.is_file() else {}
    fresh = manifest.get("inputs_hash") == wordnet_inputs_hash(wordnet_dir, parameters)
    if not (fresh and manifest.get("content_hash") == folder_hash(output_dir)):
        prepare_wordnet(output_dir, wordnet_dir, max_synsets=max_synsets)
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    counts = json.loads((output_dir / "counts.json").read_text(encoding="utf-8"))
    return {**manifest, "counts": counts}


@dataclass
class PrepareArguments:
    output_dir: str = field(default="data/wordnet", metadata={"help": "A new or empty folder (or this script's output)."})
    wordnet_dir: str | None = field(
        default=None, metadata={"help": "WordNet 3.0 dict directory (default: $WNSEARCHDIR or /usr/share/wordnet)."}
    )
    max_synsets: int | None = field(default=None, metadata={"help": "Keep a deterministic subset (tests, demos)."})
    corpus_splits: list[str] = field(
        default_factory=lambda: ["train"],
        metadata={
            "help": "Splits whose glosses go into corpus.txt (default: train only, so held-out glosses stay unseen).",
            "choices": SPLITS,
        },
    )
    include_examples: bool = field(default=True, metadata={"help": "Put the example sentences into corpus.txt too."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Replace an earlier output of this script."})

    def __post_init__(self):
        if self.max_synsets is not None and self.max_synsets < 1:
            raise ValueError(f"--max_synsets must be positive, got {self.max_synsets}.")


def check_output_folder(args: PrepareArguments) -> None:
    """Before reading anything: a folder that is not ours, or an input, is never replaced (a usage error)."""
    check_output_dir(args.output_dir, args.overwrite_output_dir, inputs=[args.wordnet_dir])


def main(argv: Sequence[str] | None = None) -> dict[str, int | float | str | None]:
    """`scripts/prepare_wordnet.py`: write the corpus and the supersense task (`prepare_wordnet`), print the counts."""
    (args,) = cli.parse_args(
        (PrepareArguments,),
        argv,
        description="Write the offline WordNet corpus and gloss -> supersense task.",
        validate=check_output_folder,
    )
    with claim_output_dir(args.output_dir, args.overwrite_output_dir, inputs=[args.wordnet_dir]):
        counts = prepare_wordnet(
            args.output_dir,
            args.wordnet_dir,
            max_synsets=args.max_synsets,
            corpus_splits=args.corpus_splits,
            include_examples=args.include_examples,
        )
    print(json.dumps(counts, indent=1))
    print(f"Wrote {args.output_dir}")
    return counts
