"""sentence-transformers (`pip install 'mhe-transformers[sentence-transformers]'`) for MHE encoders.

`save_sentence_transformer` writes an MHE encoder as a sentence-transformers model (modules.json, pooling config,
model card with a usage snippet); it loads with `SentenceTransformer(path, trust_remote_code=True)` where
mhe_transformers is not installed.
"""

from __future__ import annotations

import os
from pathlib import Path


def save_sentence_transformer(
    model_name_or_path: str | os.PathLike,
    output_dir: str | os.PathLike,
    pooling: str = "mean",
    normalize: bool = True,
    max_seq_length: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Save an MHE encoder checkpoint (any head: the encoder is what is kept) as a sentence-transformers model.

    `pooling`: "mean" (default, as all-MiniLM-L6-v2), "cls", "max", ... (sentence-transformers' Pooling modes).
    `normalize`: L2-normalise the embeddings (so dot product = cosine similarity), as all-MiniLM-L6-v2 does.
    The folder gets the encoder's weights and remote code, modules.json, 1_Pooling/config.json (2_Normalize),
    sentence_bert_config.json and a README.md model card with a usage snippet.
    """
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules.normalize import Normalize
    from sentence_transformers.base.modules.transformer import Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    output_dir = Path(output_dir)
    if output_dir.exists() and any(output_dir.iterdir()) and not overwrite:
        raise FileExistsError(f"{output_dir} is not empty; choose another folder or pass overwrite=True.")
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
    model = SentenceTransformer(modules=modules)
    model.save(str(output_dir))
    return output_dir


def sentence_transformer_main(argv=None) -> Path:
    """Command line of scripts/export_sentence_transformer.py."""
    import argparse

    parser = argparse.ArgumentParser(description="Save an MHE encoder as a sentence-transformers model.")
    parser.add_argument("--model_name_or_path", required=True, help="An MHE checkpoint folder (any head).")
    parser.add_argument("--output_dir", required=True, help="A new or empty folder.")
    parser.add_argument("--pooling", default="mean", help="sentence-transformers pooling mode: mean, cls, max, ...")
    parser.add_argument("--normalize", type=lambda v: v.lower() in ("1", "true", "yes"), default=True)
    parser.add_argument("--max_seq_length", type=int, default=None)
    parser.add_argument("--overwrite_output_dir", action="store_true")
    args = parser.parse_args(argv)
    output_dir = save_sentence_transformer(
        args.model_name_or_path, args.output_dir, args.pooling, args.normalize, args.max_seq_length,
        overwrite=args.overwrite_output_dir,
    )  # fmt: skip
    print(f"Wrote {output_dir}: load it with SentenceTransformer({str(output_dir)!r}, trust_remote_code=True)")
    return output_dir


__all__ = ["save_sentence_transformer", "sentence_transformer_main"]
