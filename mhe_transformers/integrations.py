"""MHE models with the libraries people combine with Transformers: PEFT and sentence-transformers.

PEFT (`pip install 'mhe-transformers[peft]'`): importing `mhe_transformers` registers default target modules for the
model type `mhe` in PEFT's tables (LoRA on `q_proj` and `v_proj`, as for Llama), so `LoraConfig(task_type=...)`
needs no `target_modules`. A classifier fine-tuned from a masked-LM checkpoint starts with a new, random pooler
([CLS] dense + tanh): PEFT would freeze it and leave it out of the adapter, so a reloaded adapter predicts
differently. `lora_config(model)` adds the pooler to `modules_to_save` (trained and saved with the adapter).

sentence-transformers (`pip install 'mhe-transformers[sentence-transformers]'`): `save_sentence_transformer` writes
an MHE encoder as a sentence-transformers model (modules.json, pooling config, model card with a usage snippet); it
loads with `SentenceTransformer(path, trust_remote_code=True)` where mhe_transformers is not installed.
"""

from __future__ import annotations

import os
from pathlib import Path

MODEL_TYPE = "mhe"
# Every Linear layer name of an MHE layer: PEFT's defaults for Llama, restricted to these, become MHE's defaults.
MHE_LINEAR_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj")


def register_peft() -> bool:
    """Give the model type `mhe` the default target modules PEFT has for Llama (same layer names). Returns False
    when peft is not installed. Idempotent; entries a user registered themselves are kept."""
    try:
        from peft.utils import constants
    except ImportError:
        return False
    for name in dir(constants):
        table = getattr(constants, name)
        if not (name.startswith("TRANSFORMERS_MODELS_TO_") and name.endswith("_MODULES_MAPPING")):
            continue
        if not isinstance(table, dict) or not isinstance(table.get("llama"), list):
            continue
        modules = [module for module in table["llama"] if module in MHE_LINEAR_MODULES]
        if modules:
            table.setdefault(MODEL_TYPE, modules)
    return True


def lora_config(model, **kwargs):
    """A `peft.LoraConfig` for `model` (an MHE head): PEFT's task type for the head, the default target modules, and
    the pooler (if the head has one) in `modules_to_save`, so that it is trained and saved with the adapter.
    Keyword arguments override the defaults (r, lora_alpha, target_modules, ...)."""
    from peft import LoraConfig

    register_peft()
    task_types = {
        "MHEForSequenceClassification": "SEQ_CLS",
        "MHEForTokenClassification": "TOKEN_CLS",
        "MHEForQuestionAnswering": "QUESTION_ANS",
        "MHEForCausalLM": "CAUSAL_LM",
        "MHEModel": "FEATURE_EXTRACTION",
    }
    modules_to_save = list(kwargs.pop("modules_to_save", None) or [])
    if getattr(getattr(model, "model", model), "pooler", None) is not None and "pooler" not in modules_to_save:
        modules_to_save.append("pooler")
    if type(model).__name__ == "MHEForMultipleChoice" and "classifier" not in modules_to_save:
        modules_to_save.append("classifier")  # PEFT has no multiple-choice task type to add it on its own
    kwargs.setdefault("task_type", task_types.get(type(model).__name__))
    return LoraConfig(modules_to_save=modules_to_save or None, **kwargs)


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


__all__ = ["MHE_LINEAR_MODULES", "lora_config", "register_peft", "save_sentence_transformer", "sentence_transformer_main"]
