"""Lookups derived from the one head table, `modeling_mhe.HEADS`: which MHE head an architecture name stands for,
whether MHE's own ("MHEForMaskedLM") or another BERT-style family's ("BertForMaskedLM"). The model card, the Hub
check, the converter, the ONNX exporter, PEFT and fine-tuning all ask here instead of keeping tables of their own."""

from __future__ import annotations

from .modeling_mhe import HEADS, Head

# "ForMaskedLM" -> MHEForMaskedLM: the suffix an architecture name shares with the MHE head of the same task.
_SUFFIXES = {model_class.__name__.removeprefix("MHE"): model_class for model_class in HEADS}


def head_class_for(architecture: str | None) -> type | None:
    """The MHE head class of `architecture` ("BertForMaskedLM" or "MHEForMaskedLM" -> MHEForMaskedLM): the head whose
    name, less "MHE", is the longest suffix of it, so that "...Model" matches only bare models; None if none does."""
    for suffix in sorted(_SUFFIXES, key=len, reverse=True):
        if architecture and architecture.endswith(suffix):
            return _SUFFIXES[suffix]
    return None


def head_for(architecture: str | None) -> Head | None:
    """The `Head` row (Auto class, converter task, pipeline tag) of `architecture`, as `head_class_for` finds it."""
    model_class = head_class_for(architecture)
    return HEADS[model_class] if model_class is not None else None


__all__ = ["head_class_for", "head_for"]
