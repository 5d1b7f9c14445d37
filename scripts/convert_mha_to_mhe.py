"""Convert a pretrained BERT/RoBERTa checkpoint (multi-head attention) into an MHE checkpoint (docs/conversion.md).

    python scripts/convert_mha_to_mhe.py --model_name_or_path bert-base-uncased --output_dir outputs/bert-mhe-mul \\
        --attention_type mhe_mul
    # measure what survived on held-out WordNet glosses, then recover by distilling the original for 300 steps:
    python scripts/convert_mha_to_mhe.py --model_name_or_path path/to/minilm --output_dir outputs/minilm-mhe-mul \\
        --evaluate --recover_steps 300 --recover_learning_rate 1e-3

The output folder holds the MHE weights, the two model code files (it loads with trust_remote_code=True), the
tokenizer and conversion_report.json; it is written atomically (a temporary folder renamed at the end).
"""

import argparse
import json
import random
from dataclasses import dataclass, field

from transformers import HfArgumentParser

from mhe_transformers.conversion import TARGET_ATTENTION_TYPES, TASKS, ConversionError, Evaluation, convert_checkpoint
from mhe_transformers.distillation import RecoveryArguments, load_texts, wordnet_texts


@dataclass
class ConversionArguments:
    model_name_or_path: str = field(metadata={"help": "A BERT or RoBERTa checkpoint: local folder or Hub id."})
    output_dir: str = field(metadata={"help": "Where to write the MHE checkpoint."})
    attention_type: str = field(default="mhe_mul", metadata={"choices": TARGET_ATTENTION_TYPES})
    task: str | None = field(
        default=None,
        metadata={"help": "Head to convert (default: from the checkpoint's architectures).", "choices": sorted(TASKS)},
    )
    tokenizer_name: str | None = field(default=None, metadata={"help": "Tokenizer, if not the checkpoint's own."})
    max_alignment_iterations: int = field(
        default=100, metadata={"help": "Alignment/fit alternations per layer (0: fit without alignment)."}
    )
    random_qkv: bool = field(
        default=False, metadata={"help": "Control experiment: random instead of fitted Q/K/V projections."}
    )
    overwrite_output_dir: bool = field(default=False)
    revision: str = field(default="main", metadata={"help": "Hub revision (branch, tag or commit)."})
    cache_dir: str | None = field(default=None)
    seed: int = field(default=0)


@dataclass
class DataArguments:
    evaluate: bool = field(
        default=False,
        metadata={"help": "Report the mean cosine similarity of mean-pooled sentence embeddings to the original."},
    )
    eval_file: str | None = field(
        default=None,
        metadata={"help": "Held-out texts (.txt lines, .csv/.json(l) `text` column); default: WordNet test glosses."},
    )
    eval_samples: int = field(default=256, metadata={"help": "Texts sampled (seeded) from the evaluation texts."})
    eval_baselines: bool = field(
        default=True, metadata={"help": "Also score a random model and the converted one with random Q/K/V."}
    )
    train_file: str | None = field(
        default=None,
        metadata={"help": "Recovery texts (as --eval_file); default: WordNet train-split glosses and examples."},
    )
    dataset_name: str | None = field(default=None, metadata={"help": "Recovery texts from datasets.load_dataset."})
    dataset_config_name: str | None = field(default=None)
    text_column: str = field(default="text")


def main() -> None:
    parser = HfArgumentParser(
        (ConversionArguments, DataArguments, RecoveryArguments),
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    args, data_args, recovery_args = parser.parse_args_into_dataclasses()

    evaluation, recovery_texts = None, None
    try:  # read every text before converting, so that a bad path fails fast
        if data_args.evaluate:
            texts = load_texts(data_args.eval_file) if data_args.eval_file else wordnet_texts("test")
            texts = random.Random(args.seed).sample(texts, min(data_args.eval_samples, len(texts)))
            evaluation = Evaluation(texts, baselines=data_args.eval_baselines)
        if recovery_args.recover_steps > 0:
            if data_args.train_file or data_args.dataset_name:
                recovery_texts = load_texts(
                    data_args.train_file, data_args.dataset_name, data_args.dataset_config_name,
                    text_column=data_args.text_column,
                )
            else:
                recovery_texts = wordnet_texts("train", include_examples=True)
    except (ValueError, FileNotFoundError) as error:
        parser.error(str(error))

    try:
        result = convert_checkpoint(
            args.model_name_or_path,
            args.output_dir,
            args.attention_type,
            task=args.task,
            tokenizer_name=args.tokenizer_name,
            max_alignment_iterations=args.max_alignment_iterations,
            random_qkv=args.random_qkv,
            overwrite_output_dir=args.overwrite_output_dir,
            evaluation=evaluation,
            recovery=recovery_args,
            recovery_texts=recovery_texts,
            seed=args.seed,
            revision=args.revision,
            cache_dir=args.cache_dir,
        )
    except ConversionError as error:
        raise SystemExit(f"error: {error}") from None

    report = result.report
    print(f"{report['source_class']} -> {report['target_class']} ({report['attention_type']}), "
          f"parameters {report['parameters']['source']:,} -> {report['parameters']['converted']:,}")
    print("relative fit error per layer (query / key / value), aligned [unaligned]:")
    for layer in report["layers"]:
        aligned, unaligned = layer["fit_error"], layer["unaligned_fit_error"]
        print(f"  layer {layer['layer']:2d}: "
              + " / ".join(f"{aligned[name]:.3f} [{unaligned[name]:.3f}]" for name in ("query", "key", "value"))
              + f"  ({layer['alignment_iterations']} alignment steps)")
    for name in ("similarity", "recovery"):
        if name in report:
            print(f"{name}: {json.dumps(report[name])}")
    print(f"Wrote {args.output_dir}")


if __name__ == "__main__":
    main()
