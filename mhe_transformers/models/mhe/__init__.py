"""The MHE model family. `configuration_mhe.py` and `modeling_mhe.py` are the remote-code pair that every saved
checkpoint carries: they import only torch, transformers and each other."""

from .configuration_mhe import ATTENTION_TYPES, MHE_TYPES, MHEConfig
from .modeling_mhe import (
    HEADS,
    MHEForCausalLM,
    MHEForMaskedLM,
    MHEForMultipleChoice,
    MHEForQuestionAnswering,
    MHEForSequenceClassification,
    MHEForTokenClassification,
    MHEModel,
    MHEPreTrainedModel,
)

__all__ = [
    "ATTENTION_TYPES",
    "HEADS",
    "MHE_TYPES",
    "MHEConfig",
    "MHEPreTrainedModel",
    "MHEModel",
    "MHEForMaskedLM",
    "MHEForCausalLM",
    "MHEForSequenceClassification",
    "MHEForTokenClassification",
    "MHEForQuestionAnswering",
    "MHEForMultipleChoice",
]
