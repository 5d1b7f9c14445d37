"""sentence-transformers (`pip install 'mhe-transformers[sentence-transformers]'`) for MHE encoders.

`save_sentence_transformer` writes an MHE encoder as a sentence-transformers model (modules.json, pooling config,
model card with a usage snippet); it loads with `SentenceTransformer(path, trust_remote_code=True)` where
mhe_transformers is not installed.

    python scripts/export_sentence_transformer.py --model_name_or_path outputs/minilm-mhe_mul \\
        --output_dir outputs/minilm-mhe_mul-st [--pooling mean] [--normalize true]
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..utils import cli
from ..utils.run_folder import atomic_directory, check_output_dir, claim_output_dir


def save_sentence_transformer(
    model_name_or_path: str | os.PathLike,
    output_dir: str | os.PathLike,
    pooling: str = "mean",
    normalize: bool = True,
    max_seq_length: int | None = None,
    overwrite_output_dir: bool = False,
) -> Path:
    """Save an MHE encoder checkpoint (any head: the encoder is what is kept) as a sentence-transformers model.

    `pooling`: "mean" (default, as all-MiniLM-L6-v2), "cls", "max", ... (sentence-transformers' Pooling modes).
    `normalize`: L2-normalise the embeddings (so dot product = cosine similarity), as all-MiniLM-L6-v2 does.
    The folder gets the encoder's weights and remote code, modules.json, 1_Pooling/config.json (2_Normalize),
    sentence_bert_config.json and a README.md model card with a usage snippet. It is written atomically, and an
    existing `output_dir` is replaced only by the run-folder rule (`run_folder.check_output_dir`); never the input
    checkpoint or a folder holding it.
    """
    output_dir = Path(output_dir)
    with claim_output_dir(output_dir, overwrite_output_dir, inputs=[model_name_or_path]):  # held to the end
        with atomic_directory(output_dir) as tmp_dir:
            write_sentence_transformer(model_name_or_path, tmp_dir, pooling, normalize, max_seq_length)
    return output_dir


def write_sentence_transformer(
    model_name_or_path, target_dir: Path, pooling: str = "mean", normalize: bool = True,
    max_seq_length: int | None = None,
) -> None:  # fmt: skip
    """Write the sentence-transformers model of the MHE encoder `model_name_or_path` into the existing folder
    `target_dir` (not the checkpoint's own folder): the encoder's files at the top, modules.json, the pooling
    config and sentence_bert_config.json; sentence-transformers' README.md, which a caller may replace."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules.normalize import Normalize
    from sentence_transformers.base.modules.transformer import Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    # The bare encoder (no pooler: sentence-transformers pools the token embeddings itself).
    transformer = Transformer(
        str(model_name_or_path),
        max_seq_length=max_seq_length,
        model_kwargs={"trust_remote_code": True, "add_pooling_layer": False},
        config_kwargs={"trust_remote_code": True},
        processor_kwargs={"trust_remote_code": True},
    )
    modules = [transformer, Pooling(transformer.get_embedding_dimension(), pooling_mode=pooling)]
    if normalize:
        modules.append(Normalize())
    SentenceTransformer(modules=modules).save(str(target_dir))


@dataclass
class SentenceTransformerArguments:
    model_name_or_path: str = field(metadata={"help": "An MHE checkpoint folder (any head)."})
    output_dir: str = field(metadata={"help": "A new or empty folder (or this script's earlier output)."})
    pooling: str = field(default="mean", metadata={"help": "sentence-transformers pooling mode: mean, cls, max, ..."})
    normalize: bool = field(default=True, metadata={"help": "L2-normalise the embeddings (dot product = cosine)."})
    max_seq_length: int | None = field(default=None, metadata={"help": "Longer inputs are truncated."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Replace this script's earlier output."})


def check_output_folder(args: SentenceTransformerArguments) -> None:
    """Before loading anything: a folder that is not ours, or an input, is never replaced (a usage error)."""
    check_output_dir(args.output_dir, args.overwrite_output_dir, inputs=[args.model_name_or_path])


def main(argv: Sequence[str] | None = None) -> Path:
    """`scripts/export_sentence_transformer.py`."""
    (args,) = cli.parse_args(
        (SentenceTransformerArguments,),
        argv,
        description="Save an MHE encoder as a sentence-transformers model.",
        validate=check_output_folder,
    )
    output_dir = save_sentence_transformer(
        args.model_name_or_path, args.output_dir, args.pooling, args.normalize, args.max_seq_length,
        overwrite_output_dir=args.overwrite_output_dir,
    )  # fmt: skip
    print(f"Wrote {output_dir}: load it with SentenceTransformer({str(output_dir)!r}, trust_remote_code=True)")
    return output_dir


__all__ = ["save_sentence_transformer", "write_sentence_transformer", "main"]
