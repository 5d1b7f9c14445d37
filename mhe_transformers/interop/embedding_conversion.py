"""A sentence-embedding model (all-MiniLM-L6-v2 and its kind) converted to MHE, recovered by distillation on a
multi-domain corpus, evaluated on domains the distillation never saw, and saved as a sentence-transformers folder
that the verified Hub push accepts (docs/conversion.md, docs/results/minilm.md).

    python scripts/convert_sentence_transformer.py --model_name_or_path path/to/all-MiniLM-L6-v2 \\
        --output_dir outputs/minilm-mhe_mul --recover_steps 1500 --recover_embedding_weight 1

The training sentences come from the training domains of `data.corpora` (fortunes, man pages, package docs,
WordNet); the figures are measured on the held-out domains (the Bible, the Jargon File, the Debian FAQ, the Devil's
Dictionary, the GNU standards), whose sentences never occur in training text, and on the in-domain test split.
`--eval_split validation` scores the held-out domains' validation sentences instead: the split to choose a recipe
on, so that the test sentences are scored once, with the recipe chosen.
"""

from __future__ import annotations

import json
import random
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..data.corpora import HELDOUT_DOMAINS, SPLITS, TRAIN_DOMAINS, corpus_sentences
from ..hub.model_card import write_sentence_embedding_card
from ..models.mhe.configuration_mhe import MHE_TYPES
from ..models.mhe.modeling_mhe import MHEModel
from ..utils import cli
from ..utils.run_folder import atomic_directory, check_output_dir, claim_output_dir, write_json
from .conversion import REPORT_NAME, convert_model, conversion_report, layer_input_moments, load_source
from .distillation import RecoveryArguments, distill_hidden_states
from .embedding_evaluation import evaluate_domains
from .sentence_transformer import write_sentence_transformer


@dataclass
class EmbeddingConversionArguments:
    model_name_or_path: str = field(metadata={"help": "A BERT sentence-transformers model folder (or Hub id)."})
    output_dir: str = field(metadata={"help": "Where to write the MHE sentence-transformers model."})
    attention_type: str = field(default="mhe_mul", metadata={"choices": MHE_TYPES})
    base_model: str | None = field(
        default=None,
        metadata={"help": "The source's Hub id for the model card, e.g. sentence-transformers/all-MiniLM-L6-v2."},
    )
    max_alignment_iterations: int = field(default=100, metadata={"help": "Alignment/fit alternations per layer."})
    fit_sentences: int = field(
        default=0,
        metadata={"help": "Training sentences whose layer inputs weight the least-squares fit (0: every weight counts "
                  "alike; docs/conversion.md)."},
    )
    train_sentences_per_domain: int = field(
        default=10_000, metadata={"help": "Training sentences sampled (seeded) from each training domain."}
    )
    eval_sentences_per_domain: int = field(
        default=400, metadata={"help": "Evaluation sentences sampled from each held-out and each training domain."}
    )
    eval_split: str = field(
        default="test",
        metadata={"help": "'test': the final figures; 'validation': to choose a recipe.", "choices": SPLITS[1:]},
    )
    max_seq_length: int = field(default=256, metadata={"help": "Tokens per sentence at evaluation and in the model."})
    corpus_root: str = field(
        default="/", metadata={"help": "Where the Debian packages' files are (tests: a fake root)."}
    )
    overwrite_output_dir: bool = field(default=False)
    seed: int = field(default=0)

    def __post_init__(self):
        if self.fit_sentences < 0:
            raise ValueError(f"fit_sentences must be 0 (unweighted fit) or positive, got {self.fit_sentences}.")


def read_corpus(args: EmbeddingConversionArguments) -> dict:
    """Training sentences and the evaluation sets, read (and every Debian package checked) before any conversion."""
    train = corpus_sentences(TRAIN_DOMAINS, "train", args.train_sentences_per_domain, args.seed, args.corpus_root)
    per_domain, split = args.eval_sentences_per_domain, args.eval_split
    return {
        "train": train,
        "heldout": corpus_sentences(HELDOUT_DOMAINS, split, per_domain, args.seed, args.corpus_root, TRAIN_DOMAINS),
        "in_domain": corpus_sentences(TRAIN_DOMAINS, split, per_domain, args.seed, args.corpus_root),
    }


def corpus_summary(corpus: dict) -> dict:
    """Per domain: its description, Debian package and the number of sentences of each use."""
    summary = {}
    for domain in TRAIN_DOMAINS + HELDOUT_DOMAINS:
        counts = {use: len(corpus[use][domain.name]) for use in ("train", "heldout", "in_domain")
                  if domain.name in corpus[use]}  # fmt: skip
        summary[domain.name] = {
            "role": "held-out" if domain.heldout else "training", "package": domain.package,
            "description": domain.description,
        } | {f"{use}_sentences": n for use, n in counts.items()}  # fmt: skip
    return summary


def evaluate(model, teacher, tokenizer, corpus: dict, args: EmbeddingConversionArguments) -> dict:
    return {
        use: evaluate_domains(model, teacher, tokenizer, corpus[use], args.seed, args.max_seq_length)
        for use in ("heldout", "in_domain")
    }


def flat_metrics(report: dict, split: str) -> dict:
    """all_results.json: every figure of the report as `<split>_<use>_<domain>_<cosine|spearman>` numbers."""
    metrics = {}
    for stage, prefix in (("converted", f"{split}_converted_"), ("recovered", f"{split}_")):
        for use, domains in report["similarity"][stage].items():
            for domain, figures in domains.items():
                for name in ("cosine", "spearman"):
                    metrics[f"{prefix}{use}_{domain}_{name}"] = figures[name]
    recovery = report.get("recovery") or {}
    metrics |= {"train_loss": recovery.get("train_loss"), "train_runtime": recovery.get("seconds")}
    return {key: value for key, value in metrics.items() if value is not None}


def convert_sentence_embedder(args: EmbeddingConversionArguments, recovery: RecoveryArguments) -> dict:
    """Convert, evaluate, recover, evaluate again; write the sentence-transformers folder atomically. The report."""
    output_dir = Path(args.output_dir)
    with claim_output_dir(output_dir, args.overwrite_output_dir, inputs=[args.model_name_or_path]):
        source = load_source(args.model_name_or_path, args.attention_type, task="base")
        corpus = read_corpus(args)
        texts = [sentence for sentences in corpus["train"].values() for sentence in sentences]
        moments = None
        if args.fit_sentences:
            fit_texts = random.Random(args.seed).sample(texts, min(args.fit_sentences, len(texts)))
            moments = layer_input_moments(source.model, source.tokenizer, fit_texts, recovery.recover_max_length)
        model, layers = convert_model(
            source.model, args.attention_type, MHEModel, args.max_alignment_iterations, input_moments=moments
        )
        report = conversion_report(args.model_name_or_path, source, model, layers, args.attention_type,
                                   args.max_alignment_iterations)  # fmt: skip
        report["fit_sentences"] = args.fit_sentences
        report["corpus"] = corpus_summary(corpus)
        report["eval_split"] = args.eval_split
        report["similarity"] = {"converted": evaluate(model, source.model, source.tokenizer, corpus, args)}
        if recovery.recover_steps > 0:
            report["recovery"] = distill_hidden_states(
                model, source.model, source.tokenizer, texts, recovery, args.seed
            )
            model.eval()
        report["similarity"]["recovered"] = evaluate(model, source.model, source.tokenizer, corpus, args)
        with atomic_directory(output_dir) as tmp_dir, tempfile.TemporaryDirectory(prefix="mhe-encoder-") as encoder:
            model.save_pretrained(encoder)
            source.tokenizer.save_pretrained(encoder)
            write_sentence_transformer(encoder, tmp_dir, "mean", True, args.max_seq_length)
            write_json(tmp_dir / REPORT_NAME, report, indent=1)
            arguments = {"conversion_args": asdict(args), "recovery_args": asdict(recovery)}
            write_json(tmp_dir / "training_args.json", arguments)
            write_json(tmp_dir / "all_results.json", flat_metrics(report, args.eval_split))
            write_sentence_embedding_card(tmp_dir, base_model=args.base_model, model_name=output_dir.name)
        return report


def check_output_folder(args: EmbeddingConversionArguments, recovery: RecoveryArguments) -> None:
    """Before loading anything: a folder that is not ours, or an input, is never replaced (a usage error)."""
    check_output_dir(args.output_dir, args.overwrite_output_dir, inputs=[args.model_name_or_path])


def main(argv: Sequence[str] | None = None) -> dict:
    """`scripts/convert_sentence_transformer.py`."""
    args, recovery = cli.parse_args(
        (EmbeddingConversionArguments, RecoveryArguments),
        argv,
        description="Convert a BERT sentence-transformers model to MHE, recover it by distillation on a multi-domain "
        "corpus, and save it as a sentence-transformers model (docs/conversion.md).",
        validate=check_output_folder,
    )
    report = convert_sentence_embedder(args, recovery)
    print_summary(report, args.output_dir)
    return report


def print_summary(report: dict, output_dir: str) -> None:
    """Parameters, then cosine / Spearman per domain before and after recovery."""
    parameters = report["parameters"]
    print(f"{report['source_class']} -> {report['target_class']} ({report['attention_type']}), "
          f"parameters {parameters['source']:,} -> {parameters['converted']:,}")
    converted, recovered = report["similarity"]["converted"], report["similarity"]["recovered"]
    print(f"{report['eval_split']} sentences: cosine / Spearman with the teacher, converted -> recovered")
    for use in ("heldout", "in_domain"):
        for domain, figures in recovered[use].items():
            before = converted[use][domain]
            print(f"  {use:9s} {domain:18s} {figures['sentences']:5d} sentences {figures['pairs']:5d} pairs  "
                  f"cosine {before['cosine']:.3f} -> {figures['cosine']:.3f}  "
                  f"Spearman {before['spearman']:.3f} -> {figures['spearman']:.3f}")
    if "recovery" in report:
        print(f"recovery: {json.dumps(report['recovery'])}")
    print(f"Wrote {output_dir}")


__all__ = ["EmbeddingConversionArguments", "convert_sentence_embedder", "main"]
