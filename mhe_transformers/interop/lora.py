"""PEFT (`pip install 'mhe-transformers[peft]'`) for MHE models.

`register_peft()` gives the model type `mhe` default target modules in PEFT's tables (LoRA on `q_proj` and `v_proj`,
as for Llama), so `LoraConfig(task_type=...)` needs no `target_modules`; `lora_config(model)` calls it.

Every weight a head adds to a pretrained checkpoint lives in a module PEFT saves with the adapter by default, so an
adapter reloads to the logits it was trained to, in any process and under any seed: the classifier heads' pooler is
part of `classifier` (`classifier.dense`, `classifier.out_proj`; PEFT's `SEQ_CLS` and `TOKEN_CLS` save
["classifier", "score"]), question answering's head is `qa_outputs` (`QUESTION_ANS` saves it), the causal LM's head is
tied to the word embeddings, and the bare `MHEModel` has no pooler. PEFT has no multiple-choice task type: give
`MHEForMultipleChoice` `task_type="SEQ_CLS"`, or use `lora_config`, which puts `classifier` in `modules_to_save`.
"""

from __future__ import annotations

from ..models.mhe.heads import head_class_for, head_for
from ..models.mhe.modeling_mhe import MHEForMultipleChoice

MODEL_TYPE = "mhe"
# A head's Hub pipeline tag (modeling_mhe.HEADS) -> PEFT's task type for it; masked LM and multiple choice have none.
PEFT_TASK_TYPES = {
    "text-classification": "SEQ_CLS",
    "token-classification": "TOKEN_CLS",
    "question-answering": "QUESTION_ANS",
    "text-generation": "CAUSAL_LM",
    "feature-extraction": "FEATURE_EXTRACTION",
}
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
    the weights PEFT would not save on its own in `modules_to_save` (multiple choice's `classifier`; the pooler of
    an `MHEModel(config, add_pooling_layer=True)`). Keyword arguments override the defaults (r, lora_alpha,
    target_modules, ...)."""
    from peft import LoraConfig

    register_peft()
    modules_to_save = list(kwargs.pop("modules_to_save", None) or [])
    if getattr(getattr(model, "model", model), "pooler", None) is not None and "pooler" not in modules_to_save:
        modules_to_save.append("pooler")
    # By class name: a model loaded with trust_remote_code has the checkpoint's own copy of the class.
    if head_class_for(type(model).__name__) is MHEForMultipleChoice and "classifier" not in modules_to_save:
        modules_to_save.append("classifier")  # PEFT has no multiple-choice task type to add it on its own
    head = head_for(type(model).__name__)
    kwargs.setdefault("task_type", PEFT_TASK_TYPES.get(head.pipeline_tag) if head else None)
    return LoraConfig(modules_to_save=modules_to_save or None, **kwargs)


__all__ = ["MHE_LINEAR_MODULES", "PEFT_TASK_TYPES", "lora_config", "register_peft"]
