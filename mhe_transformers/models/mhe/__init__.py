"""The MHE model family. `configuration_mhe.py` and `modeling_mhe.py` are the remote-code pair that every saved
checkpoint carries: they import only torch, transformers and each other."""

from .configuration_mhe import ATTENTION_TYPES, MHE_TYPES, MHEConfig
from .modeling_mhe import *  # noqa: F403 - the model classes and HEADS, as modeling_mhe.__all__ lists them
from .modeling_mhe import __all__ as _MODELING_NAMES

__all__ = ["ATTENTION_TYPES", "MHE_TYPES", "MHEConfig", *_MODELING_NAMES]
