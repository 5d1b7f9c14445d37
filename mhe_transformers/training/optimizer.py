"""The one place that decides which parameters get weight decay in the project's training pipelines.

Trainer decays every weight except biases and LayerNorm parameters. MHE's per-head embeddings are not weights of a
linear map: decay would pull MHE-MUL's towards 0 (heads that output nothing) and MHE-ADD's towards 0 (identical
heads), a bias towards the very thing the comparison measures. A relative position bias table is a bias. Neither is
decayed, for every attention type alike (MHA has no head embeddings; every type with a relative bias has its table).
"""

from __future__ import annotations

from transformers import Trainer

# Parameter-name parts that never get weight decay, besides Trainer's own (biases, LayerNorm).
NO_DECAY_NAME_PARTS = ("head_embeddings", "position_bias")


class MHETrainer(Trainer):
    """Trainer whose optimizer leaves head embeddings and position-bias tables out of weight decay."""

    def get_decay_parameter_names(self, model) -> list[str]:
        names = super().get_decay_parameter_names(model)
        return [name for name in names if not any(part in name for part in NO_DECAY_NAME_PARTS)]


__all__ = ["MHETrainer", "NO_DECAY_NAME_PARTS"]
