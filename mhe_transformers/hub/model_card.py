"""Model cards for MHE checkpoints: a README.md written from the folder's own files (config, training arguments,
metrics), with the metadata the Hub reads (pipeline_tag, tags, datasets, model-index) and a loading snippet.

    write_model_card(checkpoint_dir, task="fill-mask", datasets=["wordnet"])
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

import huggingface_hub
import torch
import transformers
from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from ..models.mhe import modeling_mhe
from ..models.mhe.configuration_mhe import DECODER_MIN_TRANSFORMERS, MHE_TYPES, SUPPORTED_TRANSFORMERS, MHEConfig
from ..models.mhe.parameter_counts import count_config_parameters
from ..utils.run_folder import write_text_atomically
from ..utils.secrets import redact

logger = logging.getLogger(__name__)

# Shipped inside the package (pyproject's package-data takes *.jinja), so pip-installed users have it too.
TEMPLATE_PATH = Path(__file__).with_name("model_card_template.md.jinja")

# The pipeline tasks a model card is written for (the template's texts and example inputs cover these).
CARD_TASKS = ("fill-mask", "text-classification", "text-generation", "question-answering")
# Pipeline task -> (model class written in config.architectures, the Auto class that loads it), from modeling_mhe.HEADS.
TASKS = {
    head.pipeline_tag: (model_class.__name__, head.auto_class)
    for model_class, head in modeling_mhe.HEADS.items()
    if head.pipeline_tag in CARD_TASKS
}


# A sentence-transformers folder (mhe_transformers.interop.embedding_conversion): the bare encoder, pooled by
# sentence-transformers; its card is written by `write_sentence_embedding_card` from the conversion report.
SENTENCE_TASK = "sentence-similarity"
SENTENCE_TASKS = {SENTENCE_TASK: ("MHEModel", "AutoModel")}
SENTENCE_TEMPLATE_PATH = Path(__file__).with_name("sentence_embedding_card_template.md.jinja")
CONVERSION_REPORT = "conversion_report.json"

# Trainer.save_metrics keys that describe the run's speed or size rather than the model's quality.
NON_QUALITY_METRICS = {
    "runtime",
    "samples_per_second",
    "steps_per_second",
    "samples",
    "epoch",
    "jit_compilation_time",
    "model_preparation_time",
    "total_flos",
    "num_tokens",
}
# Metric-key prefix written by Trainer -> the split it was measured on.
METRIC_SPLITS = {"eval_": "validation", "test_": "test", "predict_": "test"}

# Hyperparameters shown in the card, in this order, when training_args.json records them.
HYPERPARAMETERS = (
    "learning_rate",
    "per_device_train_batch_size",
    "per_device_eval_batch_size",
    "gradient_accumulation_steps",
    "num_train_epochs",
    "max_steps",
    "lr_scheduler_type",
    "warmup_ratio",
    "warmup_steps",
    "weight_decay",
    "optim",
    "max_grad_norm",
    "mlm_probability",
    "max_seq_length",
    "seed",
    "mixed_precision",  # what the run used (accelerate's state), not the --fp16/--bf16 flags (accelerate launch)
)

# Local data files named in `datasets` (never Hub ids, although "data/corpus.txt" would pass as "user/name").
DATA_FILE_SUFFIXES = {".txt", ".text", ".csv", ".tsv", ".json", ".jsonl", ".parquet", ".arrow"}

SMALL_MODEL_PARAMETERS = 10_000_000  # below this the card says the model is a demonstration, not a usable model




# ---------------------------------------------------------------------------------------------------------------------
# Parameter counts


def parameter_counts(config: MHEConfig, architecture: str | None = None) -> dict[str, int]:
    """Total and attention-only parameters of `config`'s model and of the MHA model of the same size.

    `architecture` is a class name in modeling_mhe (default: `config.architectures[0]`, else `MHEModel`). Counted by
    `parameter_counts.count_parameters` on the meta device. Tied weights count once; "attention" is every attention
    module's Q/K/V/O projections (and biases) plus MHE's head embeddings.
    """
    architecture = architecture or (config.architectures or ["MHEModel"])[0]
    model_class = getattr(modeling_mhe, architecture)
    mha_config = MHEConfig.from_dict(
        {**config.to_dict(), "attention_type": "mha", "num_key_value_heads": None, "freeze_head_embeddings": False}
    )  # frozen head embeddings are MHE-only: the MHA of the same size has none
    counts = count_config_parameters(model_class, config)
    mha_counts = count_config_parameters(model_class, mha_config)
    return {
        "total": counts["total"],
        "attention": counts["attention"],
        "mha_total": mha_counts["total"],
        "mha_attention": mha_counts["attention"],
    }


# ---------------------------------------------------------------------------------------------------------------------
# Model card


def write_model_card(
    checkpoint_dir: str | os.PathLike,
    *,
    task: str,
    datasets: str | list[str] | None = None,
    base_model: str | None = None,
    license: str = "apache-2.0",
    language: str | list[str] | None = "en",
    training_args: dict | None = None,
    metrics: dict | None = None,
    model_name: str | None = None,
) -> ModelCard:
    """Render README.md for the checkpoint in `checkpoint_dir` from what the folder holds, and write it atomically.

    `training_args` and `metrics` default to the folder's training_args.json and all_results.json (else
    eval_results.json). Every number in the card comes from these or from the config; a field without a value is left
    out. The `model-index` holds the evaluation metrics (eval_* on the validation split, test_* on the test split),
    filed under the first Hub dataset of `datasets`; without one (local files only) there is no model-index, as the
    Hub reads its dataset fields as Hub ids, and the metrics are in the card's text only. Local paths given as
    `datasets` or `base_model` are named in the text but kept out of the metadata. `language`: ISO 639-1 code(s) of
    the training text ("en" for this project's WordNet and GLUE data). `model_name` (default: the folder name) is the
    card's title and the id in its loading snippet: pass the Hub repo id, e.g. "user/mhe-mul-wordnet", to make the
    snippet copy-pasteable.
    """
    checkpoint_dir = Path(checkpoint_dir)
    config = _checkpoint_config(checkpoint_dir, task)
    if training_args is None:
        training_args = _read_json(checkpoint_dir / "training_args.json") or {}
    training_args = redact(training_args)  # the card shows some of them: never a secret
    if metrics is None:
        metrics = _read_json(checkpoint_dir / "all_results.json") or _read_json(checkpoint_dir / "eval_results.json")
        metrics = metrics or {}
    datasets = [datasets] if isinstance(datasets, str) else list(datasets or [])
    model_name = model_name or checkpoint_dir.resolve().name
    hub_datasets = [name for name in datasets if _is_hub_id(name)]
    hub_base_model = base_model if base_model and _is_hub_id(base_model) else None
    eval_results = _eval_results(metrics, task, hub_datasets[0]) if hub_datasets else []
    card_data = ModelCardData(
        language=language,
        library_name="transformers",
        license=license,
        tags=["mhe", config.attention_type, "custom_code"],
        pipeline_tag=task,
        datasets=hub_datasets or None,
        base_model=hub_base_model,
        eval_results=eval_results or None,
        model_name=model_name if eval_results else None,
    )
    counts = parameter_counts(config, TASKS[task][0])
    card = ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATE_PATH),
        model_name=model_name,
        task=task,
        auto_class=TASKS[task][1],
        config=config,
        is_mhe=config.attention_type in MHE_TYPES,
        counts=counts,
        small_model=counts["total"] < SMALL_MODEL_PARAMETERS,
        training_datasets=datasets,
        hub_datasets=hub_datasets,
        base_model=base_model,
        hub_base_model=hub_base_model,
        hyperparameters=_hyperparameters(training_args),
        results=_results_table(metrics),
        labels=_labels(config) if task == "text-classification" else [],
        example_input=_example_input(checkpoint_dir, task),
        **_versions(task),
    )
    write_text_atomically(checkpoint_dir / "README.md", str(card) + "\n")  # a reader never sees half a card
    return card


def _checkpoint_config(checkpoint_dir: Path, task: str) -> MHEConfig:
    """The folder's configuration, checked to hold the head of `task` (a card task)."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {sorted(TASKS)}, got {task!r}.")
    if not (checkpoint_dir / "config.json").is_file():
        raise FileNotFoundError(f"{checkpoint_dir} has no config.json; save the model there first.")
    config = MHEConfig.from_pretrained(checkpoint_dir)
    architecture = TASKS[task][0]
    if config.architectures and config.architectures[0] != architecture:
        raise ValueError(
            f"task={task!r} needs a {architecture} checkpoint, but {checkpoint_dir} holds {config.architectures[0]}."
        )
    return config


def _versions(task: str) -> dict:
    """The library versions the card was written with, and the transformers range the task's code supports."""
    return {
        "versions": {
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "huggingface_hub": huggingface_hub.__version__,
        },
        "supported_transformers": (
            f">={DECODER_MIN_TRANSFORMERS if task == 'text-generation' else SUPPORTED_TRANSFORMERS[0]},"
            f"<{SUPPORTED_TRANSFORMERS[1]}"
        ),
    }


def _eval_results(metrics: dict, task: str, dataset: str) -> list[EvalResult]:
    """The model-quality numbers among Trainer's metrics (eval_*, test_*, predict_*, perplexity) as EvalResults."""
    results = []
    for key, value in metrics.items():
        if not _is_number(value):
            continue
        split, metric = next(((s, key[len(p) :]) for p, s in METRIC_SPLITS.items() if key.startswith(p)), (None, key))
        if split is None and key != "perplexity":  # run_mlm.py stores the evaluation perplexity without a prefix
            continue
        if metric in NON_QUALITY_METRICS:
            continue
        results.append(
            EvalResult(
                task_type=task,
                dataset_type=dataset,
                dataset_name=dataset,
                dataset_split=split or "validation",
                metric_type=metric,
                metric_value=value,
            )
        )
    return results


def _results_table(metrics: dict) -> list[tuple[str, str]]:
    """Every number in the metrics file (training and evaluation), formatted for the card."""
    return [(key, _format_number(value)) for key, value in metrics.items() if _is_number(value)]


def _hyperparameters(training_args: dict) -> list[tuple[str, str]]:
    # Scripts may record their argument groups nested ({"training_args": {...}, "data_args": {...}}): flatten them.
    flat = {}
    for key, value in training_args.items():
        flat.update(value if isinstance(value, dict) else {key: value})
    max_steps = flat.get("max_steps")
    ignored = {"max_steps"} if not (_is_number(max_steps) and max_steps > 0) else {"num_train_epochs"}
    if flat.get("objective") == "clm":
        ignored.add("mlm_probability")  # recorded with the data arguments, but a causal LM masks nothing
    rows = []
    for name in HYPERPARAMETERS:
        value = flat.get(name)
        # max_steps=-1 means "train by epochs"; a positive max_steps overrides num_train_epochs (Trainer's rule).
        if value is None or value == "" or name in ignored:
            continue
        rows.append((name, _format_number(value) if _is_number(value) else str(value)))
    return rows


def _labels(config: MHEConfig) -> list[str]:
    return [config.id2label[i] for i in sorted(config.id2label)]


def _example_input(checkpoint_dir: Path, task: str) -> str:
    if task == "question-answering":
        return "a small domesticated carnivorous mammal with soft fur"  # the context; the card asks about it
    if task == "text-classification":
        return "a small domesticated carnivorous mammal with soft fur"
    if task == "text-generation":
        return "a small domesticated carnivorous"
    mask_token = (_read_json(checkpoint_dir / "tokenizer_config.json") or {}).get("mask_token") or "[MASK]"
    return f"a small domesticated carnivorous {mask_token} with soft fur"


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _format_number(value) -> str:
    return str(value) if isinstance(value, int) else f"{value:.4g}"


def _is_hub_id(name: str) -> bool:
    """Whether `name` reads as a Hub repo id ("user/name" or "name") rather than a local file or folder."""
    if os.path.exists(name) or Path(name).suffix in DATA_FILE_SUFFIXES:
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


# ---------------------------------------------------------------------------------------------------------------------
# Sentence-embedding model card (a converted sentence-transformers model)


def write_sentence_embedding_card(
    checkpoint_dir: str | os.PathLike, *, base_model: str | None = None, model_name: str | None = None,
    license: str = "apache-2.0",
) -> ModelCard:  # fmt: skip
    """README.md for a sentence-transformers folder written by the sentence-embedding conversion, from its
    conversion_report.json (every figure: agreement with the original per domain, the corpus, the recovery) and its
    config (parameter counts); written atomically. `base_model`: the source's Hub id, named in the metadata."""
    checkpoint_dir = Path(checkpoint_dir)
    report = _read_json(checkpoint_dir / CONVERSION_REPORT)
    if report is None or "similarity" not in report:
        raise FileNotFoundError(f"{checkpoint_dir} has no {CONVERSION_REPORT} with similarity figures.")
    config = MHEConfig.from_pretrained(checkpoint_dir)
    model_name = model_name or checkpoint_dir.resolve().name
    hub_base_model = base_model if base_model and _is_hub_id(base_model) else None
    tags = ["mhe", config.attention_type, "custom_code", "sentence-transformers", "feature-extraction"]
    card_data = ModelCardData(
        language="en", library_name="sentence-transformers", license=license, tags=tags,
        pipeline_tag=SENTENCE_TASK, base_model=hub_base_model,
    )  # fmt: skip
    counts = parameter_counts(config, "MHEModel")
    card = ModelCard.from_template(
        card_data,
        template_path=str(SENTENCE_TEMPLATE_PATH),
        model_name=model_name,
        config=config,
        counts=counts,
        saved=counts["mha_total"] - counts["total"],
        base_model=base_model or report.get("source"),
        hub_base_model=hub_base_model,
        report=report,
        # the truncation sentence-transformers applies: the tokenizer's model_max_length, as the folder was saved
        max_seq_length=(_read_json(checkpoint_dir / "tokenizer_config.json") or {}).get("model_max_length"),
        **_versions("feature-extraction"),
    )
    write_text_atomically(checkpoint_dir / "README.md", str(card) + "\n")
    return card
