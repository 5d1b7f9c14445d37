"""Export an MHE checkpoint to ONNX with PyTorch's dynamo exporter, and check it in ONNX Runtime.

    python scripts/export_onnx.py --model_name_or_path outputs/pretrain-mhe_mul [--task fill-mask] [--output_dir DIR]

Optimum cannot export on Transformers 5, so this uses `torch.onnx.export(..., dynamo=True)` directly: inputs
`input_ids`, `attention_mask`, `token_type_ids` with dynamic batch and sequence axes (and a choices axis for
multiple choice), the head's outputs by name (`logits`, or `start_logits`/`end_logits`, or `last_hidden_state`/
`pooler_output`). The graph is run in ONNX Runtime on inputs of another shape than the export's, with padding, and
compared with PyTorch; the file is written only if they agree, to `<checkpoint>/onnx/model.onnx` (the layout
transformers.js and the Hub use), or `--output_dir`. That folder is an output folder like every script's
(`run_folder.check_output_dir`): new or empty, or an earlier export with `--overwrite_output_dir`; it is written
beside and renamed into place, and never holds the checkpoint. Needs `pip install 'mhe-transformers[onnx]'` (onnx,
onnxscript, onnxruntime).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoConfig

from ..models.mhe.heads import head_for
from ..models.mhe.modeling_mhe import HEADS
from ..utils import cli
from ..utils.run_folder import atomic_directory, check_output_dir, claim_output_dir

# Task -> the head exported: the heads' Hub pipeline tags (multiple choice has none: its converter name), from the
# one head table.
TASK_TO_MODEL_CLASS = {head.pipeline_tag or head.task: model_class for model_class, head in HEADS.items()}
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


@dataclass
class ExportReport:
    path: Path
    task: str
    output_names: tuple[str, ...]
    max_abs_diff: float


class _TupleOutputs(torch.nn.Module):
    """The head with positional tensor inputs and a tuple of its named outputs, as the ONNX graph has them."""

    def __init__(self, model, output_names, **extra_inputs):
        super().__init__()
        self.model, self.output_names, self.extra_inputs = model, output_names, extra_inputs

    def forward(self, input_ids, attention_mask, token_type_ids):
        outputs = self.model(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, **self.extra_inputs
        )
        return tuple(outputs[name] for name in self.output_names)


def _task_of(config) -> str:
    """The task of the checkpoint's own head (feature-extraction for a bare or unknown one)."""
    head = head_for((config.architectures or ["MHEModel"])[0])
    return (head.pipeline_tag or head.task) if head is not None else "feature-extraction"


def _example_inputs(config, batch: int, seq_len: int, choices: int | None, seed: int) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(seed)
    shape = (batch, choices, seq_len) if choices else (batch, seq_len)
    input_ids = torch.randint(0, config.vocab_size, shape, generator=generator)
    attention_mask = torch.ones(shape, dtype=torch.long)
    attention_mask[-1, ..., seq_len // 2 :] = 0  # the last example is padded: the mask must reach the graph
    token_type_ids = torch.zeros(shape, dtype=torch.long)
    token_type_ids[..., seq_len // 3 :] = 1
    return input_ids, attention_mask, token_type_ids


def export_onnx(
    model_name_or_path: str | os.PathLike,
    task: str | None = None,
    output_path: str | os.PathLike | None = None,
    opset_version: int | None = None,
    atol: float = 1e-4,
    overwrite_output_dir: bool = False,
) -> ExportReport:
    """Export the checkpoint's head for `task` (default: the checkpoint's own head) and check it in ONNX Runtime.

    Raises ValueError if ONNX Runtime's outputs differ from PyTorch's by more than `atol`; nothing is written then.
    `overwrite_output_dir` replaces an earlier export in the .onnx file's folder (default `<checkpoint>/onnx/`).
    """
    model_dir = Path(model_name_or_path)
    output_path = Path(output_path) if output_path else model_dir / "onnx" / "model.onnx"
    with claim_output_dir(output_path.parent, overwrite_output_dir, inputs=[model_dir]):  # held to the end
        return _export_and_check(model_dir, task, output_path, opset_version, atol)


def _export_and_check(model_dir: Path, task: str | None, output_path: Path, opset_version, atol) -> ExportReport:
    import onnxruntime

    config = AutoConfig.from_pretrained(model_dir)
    task = task or _task_of(config)
    if task not in TASK_TO_MODEL_CLASS:
        raise ValueError(f"Unknown task {task!r}; choose one of {', '.join(TASK_TO_MODEL_CLASS)}.")
    # sdpa exports as plain matmul/softmax ops; eager would too, but sdpa is what the model runs by default.
    model = TASK_TO_MODEL_CLASS[task].from_pretrained(model_dir, attn_implementation="sdpa").eval()
    output_names = {
        "feature-extraction": ("last_hidden_state", "pooler_output")
        if getattr(model, "pooler", None) is not None
        else ("last_hidden_state",),
        "question-answering": ("start_logits", "end_logits"),
    }.get(task, ("logits",))
    wrapper = _TupleOutputs(model, output_names, **({"use_cache": False} if task == "text-generation" else {}))

    choices = 3 if task == "multiple-choice" else None
    batch_dim = torch.export.Dim("batch", min=1, max=1024)
    sequence_dim = torch.export.Dim("sequence", min=2, max=config.max_position_embeddings)
    axes = {0: batch_dim, 2: sequence_dim} if choices else {0: batch_dim, 1: sequence_dim}
    if choices:
        axes[1] = torch.export.Dim("choices", min=2, max=64)
    example = _example_inputs(config, batch=2, seq_len=min(8, config.max_position_embeddings), choices=choices, seed=0)

    # The graph's weights may sit in a side file (<name>.data) next to it: the whole folder is renamed into place.
    with atomic_directory(output_path.parent) as tmp:
        tmp_path = tmp / output_path.name
        with torch.no_grad():
            program = torch.onnx.export(
                wrapper,
                example,
                input_names=list(INPUT_NAMES),
                output_names=list(output_names),
                dynamic_shapes={name: axes for name in INPUT_NAMES},
                opset_version=opset_version,
                dynamo=True,
            )
        program.save(str(tmp_path))

        # Check on another shape than the export's, so that the dynamic axes are exercised.
        check = _example_inputs(
            config, batch=3, seq_len=min(13, config.max_position_embeddings), choices=choices and 4, seed=1
        )
        session = onnxruntime.InferenceSession(str(tmp_path), providers=["CPUExecutionProvider"])
        actual = session.run(list(output_names), {name: t.numpy() for name, t in zip(INPUT_NAMES, check)})
        with torch.no_grad():
            expected = wrapper(*check)
        max_abs_diff = max(float((torch.from_numpy(a) - e).abs().max()) for a, e in zip(actual, expected))
        if not max_abs_diff <= atol:
            raise ValueError(
                f"ONNX Runtime's outputs differ from PyTorch's by {max_abs_diff:.3g} (> {atol}); nothing written."
            )
    return ExportReport(output_path, task, output_names, max_abs_diff)


@dataclass
class ExportArguments:
    model_name_or_path: str = field(metadata={"help": "An MHE checkpoint folder."})
    task: str | None = field(
        default=None,
        metadata={"help": "Head to export (default: the checkpoint's own).", "choices": list(TASK_TO_MODEL_CLASS)},
    )
    output_dir: str | None = field(
        default=None, metadata={"help": "Folder for model.onnx (and its weights file); default <checkpoint>/onnx."}
    )
    opset_version: int | None = field(default=None, metadata={"help": "ONNX opset (default: the exporter's)."})
    atol: float = field(default=1e-4, metadata={"help": "Largest difference to PyTorch accepted."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Replace this script's earlier export."})


def check_output_folder(args: ExportArguments) -> None:
    """Before loading anything: a folder that is not ours, or that holds the checkpoint, is never written (a usage
    error)."""
    output_dir = args.output_dir or Path(args.model_name_or_path) / "onnx"
    check_output_dir(output_dir, args.overwrite_output_dir, inputs=[args.model_name_or_path])


def main(argv: Sequence[str] | None = None) -> ExportReport:
    """`scripts/export_onnx.py`: export, check in ONNX Runtime, write model.onnx."""
    (args,) = cli.parse_args(
        (ExportArguments,), argv, description=__doc__.split("\n\n")[0], validate=check_output_folder
    )
    output_path = Path(args.output_dir) / "model.onnx" if args.output_dir else None
    report = export_onnx(
        args.model_name_or_path, args.task, output_path, args.opset_version, args.atol, args.overwrite_output_dir
    )
    print(
        f"Wrote {report.path} ({report.task}; outputs {', '.join(report.output_names)}); ONNX Runtime vs PyTorch: "
        f"max abs diff {report.max_abs_diff:.2g}"
    )
    return report


__all__ = ["TASK_TO_MODEL_CLASS", "ExportReport", "export_onnx", "main"]
