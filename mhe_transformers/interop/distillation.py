# Copyright 2026 The mhe-transformers authors. Licensed under the Apache License, Version 2.0.
"""Recovery training after conversion: distil a teacher's hidden states into a student with `Trainer`.

A converted MHE model keeps every weight of the original except the query/key/value projections, which are only
least-squares fits (mhe_transformers.interop.conversion). Training the student to reproduce the original on
unlabelled text brings back what the fit lost, without any labels. The loss has two terms:

- hidden states: mean squared error over real tokens, of the last layer or of every layer;
- the sentence embedding: 1 - cosine similarity between the two models' mean-pooled last hidden states (over real
  tokens, as sentence-transformers pools all-MiniLM-L6-v2; the cosine is that of the normalised embeddings). This is
  the quantity a sentence-embedding model is used for, so matching it teaches the teacher's geometry on any text
  rather than the token states of the training register alone;
- optionally the attention maps (MiniLM's self-attention distillation): KL(teacher || student) between each head's
  attention distribution, head h of the student against head h of the teacher (the conversion keeps the heads'
  order). The fitted query/key projections are what the conversion loses, and this term targets them directly.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import datasets
import torch
from transformers import DataCollatorWithPadding, PreTrainedModel, TrainingArguments

from ..training.optimizer import MHETrainer

logger = logging.getLogger(__name__)

DISTILLED_LAYERS = ("last", "all")


def bfloat16_is_native() -> bool:
    """Whether this machine computes bfloat16 in hardware: a CUDA GPU that supports it, or a CPU with AVX512-BF16 or
    AMX. Elsewhere PyTorch emulates bfloat16 on the CPU, and autocast makes matrix products several times slower than
    float32 (8.5x for a MiniLM feed-forward product, 1,024 x 384 by 384 x 1,536, on an AVX2-only AMD EPYC)."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch.cpu's own probes (private, so guarded)
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


@dataclass
class RecoveryArguments:
    """Options of the recovery training (`--recover_*` on the command line)."""

    recover_steps: int = field(default=0, metadata={"help": "Optimizer steps of hidden-state distillation (0: none)."})
    recover_learning_rate: float = field(default=3e-4, metadata={"help": "Peak learning rate (AdamW, linear decay)."})
    recover_batch_size: int = field(default=32, metadata={"help": "Texts per optimizer step."})
    recover_max_length: int = field(default=64, metadata={"help": "Tokens per text (longer texts are truncated)."})
    recover_warmup_ratio: float = field(default=0.1, metadata={"help": "Share of the steps with linear warm-up."})
    recover_layers: str = field(
        default="last",
        metadata={"help": "Hidden states to match: 'last' layer only, or 'all' layers.", "choices": DISTILLED_LAYERS},
    )
    recover_hidden_weight: float = field(
        default=1.0, metadata={"help": "Weight of the hidden-state mean squared error in the loss (0: left out)."}
    )
    recover_embedding_weight: float = field(
        default=0.0,
        metadata={"help": "Weight of 1 - cosine of the mean-pooled sentence embeddings in the loss (0: left out)."},
    )
    recover_attention_weight: float = field(
        default=0.0,
        metadata={"help": "Weight of the attention-map KL(teacher || student), per head, in the loss (0: left out). "
                  "Both models then run eager attention, which returns the maps."},
    )
    recover_weight_decay: float = field(
        default=0.01, metadata={"help": "AdamW weight decay (never on head embeddings: training.optimizer)."}
    )
    recover_freeze_embeddings: bool = field(
        default=False,
        metadata={"help": "Keep the input embeddings (word, position, token type, their LayerNorm) as converted: the "
                  "original's, so words the training text lacks keep the representation the rest was trained on."},
    )
    recover_dropout: bool = field(
        default=True,
        metadata={"help": "Keep the student's dropout (hidden and attention probabilities) during the recovery; "
                  "false: every dropout off, so the student is trained as the deterministic teacher it copies runs."},
    )
    recover_bf16: bool | None = field(
        default=None,
        metadata={"help": "Train the student under bfloat16 autocast (Trainer's --bf16; weights stay float32): steps "
                  "1.13x faster in the MiniLM recovery on a CPU with AVX512-BF16 (docs/results/minilm.md). The "
                  "teacher's targets stay float32. Default: true where the hardware computes bfloat16 (a CUDA GPU "
                  "that supports it, a CPU with AVX512-BF16 or AMX), false elsewhere, where bfloat16 is emulated and "
                  "several times slower than float32 (true there is honoured with a warning)."},
    )
    recover_logging_steps: int = field(default=25, metadata={"help": "Log the distillation loss every N steps."})

    def __post_init__(self):
        if self.recover_bf16 is None:  # resolved here, so that training_args.json records what the run used
            self.recover_bf16 = bfloat16_is_native()
        if self.recover_layers not in DISTILLED_LAYERS:
            raise ValueError(f"recover_layers must be one of {DISTILLED_LAYERS}, got {self.recover_layers!r}.")
        if self.recover_steps < 0:
            raise ValueError(f"recover_steps must be 0 (no recovery) or positive, got {self.recover_steps}.")
        for name in ("recover_batch_size", "recover_max_length", "recover_logging_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}.")
        if not 0 <= self.recover_warmup_ratio < 1:
            raise ValueError(f"recover_warmup_ratio must be in [0, 1), got {self.recover_warmup_ratio}.")
        if self.recover_learning_rate <= 0:
            raise ValueError(f"recover_learning_rate must be positive, got {self.recover_learning_rate}.")
        for name in ("recover_hidden_weight", "recover_embedding_weight", "recover_attention_weight",
                     "recover_weight_decay"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be 0 or positive, got {getattr(self, name)}.")
        weights = (self.recover_hidden_weight, self.recover_embedding_weight, self.recover_attention_weight)
        if not any(weights):
            raise ValueError("recover_hidden_weight, recover_embedding_weight and recover_attention_weight are all 0: "
                             "the loss would be 0.")


def hidden_state_mse(
    student_states: Sequence[torch.Tensor],
    teacher_states: Sequence[torch.Tensor],
    attention_mask: torch.Tensor,
    layers: str = "last",
) -> torch.Tensor:
    """Mean squared error between hidden states over real (unpadded) tokens, averaged over the chosen layers.

    The state tuples are the models' `hidden_states` outputs: the embedding output, then one entry per layer.
    """
    if len(student_states) != len(teacher_states):
        raise ValueError(f"The student has {len(student_states) - 1} layers, the teacher {len(teacher_states) - 1}.")
    pairs = list(zip(student_states, teacher_states))
    pairs = pairs[-1:] if layers == "last" else pairs[1:]
    mask = attention_mask.unsqueeze(-1).to(student_states[-1].dtype)
    num_values = mask.sum() * student_states[-1].shape[-1]
    losses = [(((student - teacher) ** 2) * mask).sum() / num_values for student, teacher in pairs]
    return torch.stack(losses).mean()


def mean_pool(states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(batch, seq, hidden) -> (batch, hidden): the mean over real tokens (sentence-transformers' mean pooling)."""
    mask = attention_mask.unsqueeze(-1).to(states.dtype)
    return (states * mask).sum(1) / mask.sum(1).clamp(min=1)


def embedding_cosine_loss(
    student_states: torch.Tensor, teacher_states: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """Mean over the batch of 1 - cos(mean-pooled student states, mean-pooled teacher states): 0 when every sentence
    embedding points the teacher's way (the normalised embeddings then agree)."""
    student, teacher = mean_pool(student_states, attention_mask), mean_pool(teacher_states, attention_mask)
    return (1 - torch.nn.functional.cosine_similarity(student, teacher, dim=-1)).mean()


def attention_map_kl(
    student_maps: Sequence[torch.Tensor], teacher_maps: Sequence[torch.Tensor], attention_mask: torch.Tensor
) -> torch.Tensor:
    """KL(teacher || student) between attention distributions, averaged over layers, heads and real query tokens.

    The maps are the models' `attentions` outputs, one (batch, heads, query, key) tensor per layer; padded keys have
    probability 0 in both, so they add nothing, and padded queries are left out by `attention_mask`.
    """
    if len(student_maps) != len(teacher_maps):
        raise ValueError(f"The student has {len(student_maps)} attention maps, the teacher {len(teacher_maps)}.")
    queries = attention_mask[:, None, :].to(student_maps[0].dtype)  # (batch, 1, query): broadcast over heads
    losses = []
    for student, teacher in zip(student_maps, teacher_maps):
        if student.shape != teacher.shape:
            raise ValueError(f"Attention maps differ in shape: student {tuple(student.shape)}, teacher "
                             f"{tuple(teacher.shape)} (the same number of heads is needed).")
        tiny = torch.finfo(student.dtype).tiny  # log(0) guard: a zero probability times any log is 0 here
        per_query = (teacher * (teacher.clamp_min(tiny).log() - student.clamp_min(tiny).log())).sum(-1)
        losses.append((per_query * queries).sum() / (queries.sum() * student.shape[1]))
    return torch.stack(losses).mean()


class HiddenStateDistillationTrainer(MHETrainer):
    """A Trainer whose loss is `hidden_weight * hidden_state_mse + embedding_weight * embedding_cosine_loss +
    attention_weight * attention_map_kl` between the model being trained and a frozen teacher (weight decay as
    MHETrainer: never on head embeddings)."""

    # The loss is a mean over the batch's tokens: Trainer divides it by the gradient accumulation steps.
    loss_is_scaled_for_ga = False

    def __init__(self, *args, teacher: PreTrainedModel, layers: str = "last", hidden_weight: float = 1.0,
                 embedding_weight: float = 0.0, attention_weight: float = 0.0, **kwargs):  # fmt: skip
        super().__init__(*args, **kwargs)
        # Only the student goes through accelerate; the teacher is frozen and just needs the same device.
        self.teacher = teacher.to(self.args.device).eval().requires_grad_(False)
        self.layers, self.hidden_weight, self.embedding_weight = layers, hidden_weight, embedding_weight
        self.attention_weight = attention_weight

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        maps = bool(self.attention_weight)
        with torch.no_grad():
            # The base model skips the teacher's task head, which the loss does not read.
            teacher_outputs = self.teacher.base_model(**inputs, output_hidden_states=True, output_attentions=maps)
        teacher_states = teacher_outputs.hidden_states
        outputs = model(**inputs, output_hidden_states=True, output_attentions=maps)
        mask = inputs["attention_mask"]
        loss = 0.0
        if self.hidden_weight:
            hidden_loss = hidden_state_mse(outputs.hidden_states, teacher_states, mask, self.layers)
            loss = loss + self.hidden_weight * hidden_loss
        if self.embedding_weight:
            embedding_loss = embedding_cosine_loss(outputs.hidden_states[-1], teacher_states[-1], mask)
            loss = loss + self.embedding_weight * embedding_loss
        if self.attention_weight:
            attention_loss = attention_map_kl(outputs.attentions, teacher_outputs.attentions, mask)
            loss = loss + self.attention_weight * attention_loss
        return (loss, outputs) if return_outputs else loss


@contextlib.contextmanager
def recovery_setup(student: PreTrainedModel, teacher: PreTrainedModel, args: RecoveryArguments):
    """The two models as the recovery trains them, given back as they came afterwards (also after an error).

    With `recover_freeze_embeddings` the student's input embeddings are frozen. With the attention-map term the
    teacher computes its attention eagerly (sdpa forms no maps) and the student's attention-probability dropout is
    off: the maps a model returns are the dropped-out ones, and a KL against zeroed entries would measure dropout.
    Without `recover_dropout` every dropout of the student is off (its `nn.Dropout` modules and the attention
    modules' `attention_dropout` probability).
    """
    teacher_attention = teacher.config._attn_implementation
    map_dropout, module_dropout = {}, {}
    if args.recover_freeze_embeddings:
        student.base_model.embeddings.requires_grad_(False)
    if args.recover_attention_weight or not args.recover_dropout:
        map_dropout = {module: module.attention_dropout for module in student.modules()
                       if isinstance(getattr(module, "attention_dropout", None), float)}  # fmt: skip
    if args.recover_attention_weight:
        teacher.set_attn_implementation("eager")
    if not args.recover_dropout:
        module_dropout = {module: module.p for module in student.modules() if isinstance(module, torch.nn.Dropout)}
    for module in map_dropout:
        module.attention_dropout = 0.0
    for module in module_dropout:
        module.p = 0.0
    try:
        yield
    finally:
        if args.recover_freeze_embeddings:
            student.base_model.embeddings.requires_grad_(True)
        if teacher.config._attn_implementation != teacher_attention:
            teacher.set_attn_implementation(teacher_attention)
        for module, probability in map_dropout.items():
            module.attention_dropout = probability
        for module, probability in module_dropout.items():
            module.p = probability


def distill_hidden_states(
    student: PreTrainedModel,
    teacher: PreTrainedModel,
    tokenizer,
    texts: Sequence[str],
    args: RecoveryArguments,
    seed: int = 0,
) -> dict:
    """Train `student` in place to reproduce `teacher`'s hidden states on `texts`; return a summary for reports.

    Runs `args.recover_steps` optimizer steps of `args.recover_batch_size` texts (cycling over `texts` when there
    are fewer). Trainer writes nothing that outlives the call: its output folder is temporary.
    """
    texts = [text for text in texts if text and text.strip()]
    if not texts:
        raise ValueError("Recovery training needs at least one non-empty text.")
    if args.recover_bf16 and not bfloat16_is_native():
        logger.warning("--recover_bf16 true on hardware without bfloat16 arithmetic (no CUDA GPU with it, no "
                       "AVX512-BF16 or AMX on the CPU): bfloat16 is emulated, and the recovery runs several times "
                       "slower than with --recover_bf16 false.")
    # Only the texts the steps will see are tokenised: cheap even for a large corpus.
    dataset = datasets.Dataset.from_dict({"text": texts}).shuffle(seed=seed)
    dataset = dataset.select(range(min(len(dataset), args.recover_steps * args.recover_batch_size)))
    dataset = dataset.map(
        lambda batch: tokenizer(batch["text"], truncation=True, max_length=args.recover_max_length),
        batched=True,
        remove_columns=["text"],
    )
    with tempfile.TemporaryDirectory(prefix="mhe-recovery-") as output_dir, recovery_setup(student, teacher, args):
        training_args = TrainingArguments(
            output_dir=output_dir,
            max_steps=args.recover_steps,
            per_device_train_batch_size=args.recover_batch_size,
            learning_rate=args.recover_learning_rate,
            warmup_steps=args.recover_warmup_ratio,
            weight_decay=args.recover_weight_decay,
            train_sampling_strategy="group_by_length",  # batches of similar lengths: less padding, the same texts
            logging_steps=args.recover_logging_steps,
            bf16=args.recover_bf16,
            # Trainer takes bf16 without a GPU only when told the run is on the CPU.
            use_cpu=args.recover_bf16 and not torch.cuda.is_available(),
            save_strategy="no",
            report_to="none",  # Trainer's progress bar stays (disable_tqdm left to its default): the longest step
            seed=seed,
            label_names=[],
        )
        trainer = HiddenStateDistillationTrainer(
            model=student,
            args=training_args,
            train_dataset=dataset,
            data_collator=DataCollatorWithPadding(tokenizer),  # pads on the right, as RoBERTa's positions need
            teacher=teacher,
            layers=args.recover_layers,
            hidden_weight=args.recover_hidden_weight,
            embedding_weight=args.recover_embedding_weight,
            attention_weight=args.recover_attention_weight,
        )
        start = time.perf_counter()
        result = trainer.train()
        losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return {
        "steps": result.global_step,
        "batch_size": args.recover_batch_size,
        "learning_rate": args.recover_learning_rate,
        "layers": args.recover_layers,
        "hidden_weight": args.recover_hidden_weight,
        "embedding_weight": args.recover_embedding_weight,
        "attention_weight": args.recover_attention_weight,
        "max_length": args.recover_max_length,
        "warmup_ratio": args.recover_warmup_ratio,
        "weight_decay": args.recover_weight_decay,
        "frozen_embeddings": args.recover_freeze_embeddings,
        "dropout": args.recover_dropout,
        "bf16": args.recover_bf16,
        "train_texts": len(texts),
        "first_logged_loss": losses[0] if losses else None,
        "last_logged_loss": losses[-1] if losses else None,
        "train_loss": result.training_loss,
        "seconds": round(time.perf_counter() - start, 1),
    }
