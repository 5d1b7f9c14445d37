"""mhe-transformers: Multiple Head Embeddings (MHE) attention for Hugging Face Transformers.

Importing the package registers the MHE config and every model head with the Auto classes (so
`AutoModel.from_pretrained(folder)` works locally without `trust_remote_code`), and registers each class for its
Auto class so that `save_pretrained` / `push_to_hub` copy `configuration_mhe.py` and `modeling_mhe.py` next to the
weights and write a complete `auto_map`: the checkpoint then loads anywhere with `trust_remote_code=True`.
"""

import transformers
from transformers import AutoConfig

from .models import mhe
from .models.mhe import *  # noqa: F403 - the public names of the model family (models/mhe/__init__.py)

__version__ = "0.1.0"

AutoConfig.register(mhe.MHEConfig.model_type, mhe.MHEConfig, exist_ok=True)
mhe.MHEConfig.register_for_auto_class()
for model_class, head in mhe.HEADS.items():
    getattr(transformers, head.auto_class).register(mhe.MHEConfig, model_class, exist_ok=True)
    model_class.register_for_auto_class(head.auto_class)

__all__ = [name for name in mhe.__all__ if name != "HEADS"]
