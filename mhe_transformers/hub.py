"""Share MHE checkpoints on the Hugging Face Hub: model card, pre-upload verification, upload.

A shared checkpoint is loaded by people who have Transformers and PyTorch but not this package, through
`trust_remote_code=True`. So before anything is sent, `verify_checkpoint` checks the file set and loads the folder in a
fresh Python process in which `mhe_transformers` cannot be imported, exactly as such a user would.

    write_model_card(checkpoint_dir, task="fill-mask", datasets=["wordnet"])  # README.md from the folder's files
    verify_checkpoint(checkpoint_dir)                                         # raises CheckpointError on problems
    push_checkpoint(checkpoint_dir, "user/mhe-mul-tiny")                      # verify, create repo, one commit
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import logging
import math
import os
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import huggingface_hub
import torch
import transformers
from huggingface_hub import CommitOperationAdd, EvalResult, HfApi, ModelCard, ModelCardData
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from . import modeling_mhe
from .configuration_mhe import DECODER_MIN_TRANSFORMERS, MHE_TYPES, SUPPORTED_TRANSFORMERS, MHEConfig
from .counting import count_config_parameters
from .modeling_mhe import AUTO_MAP

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

REQUIRED_FILES = (
    "config.json",
    "configuration_mhe.py",
    "modeling_mhe.py",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "training_args.json",
    "all_results.json",
    "README.md",
)

# What a push may send, and nothing else: the required files, then the known optional ones the training and conversion
# scripts write. Never Trainer's checkpoint-*/ folders, TensorBoard runs/, resume-only state (optimizer.pt, ...), the
# pickled training_args.bin (training_args.json records the same), logs, hidden files or symlinks.
OPTIONAL_FILES = (
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "generation_config.json",
    "model.safetensors.index.json",
    "train_results.json",
    "eval_results.json",
    "test_results.json",
    "trainer_state.json",
    "predictions.tsv",
    "predictions.jsonl",
    "conversion_report.json",
)
# Weights sharded by save_pretrained (with model.safetensors.index.json instead of model.safetensors).
WEIGHT_SHARD_PATTERN = "model-[0-9][0-9][0-9][0-9][0-9]-of-[0-9][0-9][0-9][0-9][0-9].safetensors"

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


class CheckpointError(ValueError):
    """A checkpoint folder is incomplete or does not load; the message lists every problem found."""


# ---------------------------------------------------------------------------------------------------------------------
# Parameter counts


def parameter_counts(config: MHEConfig, architecture: str | None = None) -> dict[str, int]:
    """Total and attention-only parameters of `config`'s model and of the MHA model of the same size.

    `architecture` is a class name in modeling_mhe (default: `config.architectures[0]`, else `MHEModel`). Counted by
    `counting.count_parameters` on the meta device. Tied weights count once; "attention" is every attention
    module's Q/K/V/O projections (and biases) plus MHE's head embeddings.
    """
    architecture = architecture or (config.architectures or ["MHEModel"])[0]
    model_class = getattr(modeling_mhe, architecture)
    mha_config = MHEConfig.from_dict({**config.to_dict(), "attention_type": "mha", "num_key_value_heads": None})
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
    the training text ("en" for this project's WordNet and GLUE data). `model_name` (default: the folder name) is the card's title and the id in its loading snippet:
    pass the Hub repo id, e.g. "user/mhe-mul-wordnet", to make the snippet copy-pasteable.
    """
    checkpoint_dir = Path(checkpoint_dir)
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
    if training_args is None:
        training_args = _read_json(checkpoint_dir / "training_args.json") or {}
    if metrics is None:
        metrics = _read_json(checkpoint_dir / "all_results.json") or _read_json(checkpoint_dir / "eval_results.json")
        metrics = metrics or {}
    datasets = [datasets] if isinstance(datasets, str) else list(datasets or [])
    model_name = model_name or checkpoint_dir.resolve().name

    hub_datasets = [name for name in datasets if _is_hub_id(name)]
    eval_results = _eval_results(metrics, task, hub_datasets[0]) if hub_datasets else []
    hub_base_model = base_model if base_model and _is_hub_id(base_model) else None
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
    counts = parameter_counts(config, architecture)
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
        versions={
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "huggingface_hub": huggingface_hub.__version__,
        },
        supported_transformers=(
            f">={DECODER_MIN_TRANSFORMERS if task == 'text-generation' else SUPPORTED_TRANSFORMERS[0]},"
            f"<{SUPPORTED_TRANSFORMERS[1]}"
        ),
    )
    _write_text_atomically(checkpoint_dir / "README.md", str(card) + "\n")
    return card


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


def _write_text_atomically(path: Path, text: str) -> None:
    # Same directory, then rename: a reader never sees a half-written README.
    prefix = f".{path.name}."
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent, prefix=prefix, delete=False) as f:
        temporary = Path(f.name)
        try:
            f.write(text)
        except BaseException:
            f.close()
            temporary.unlink()
            raise
    temporary.chmod(0o644)  # NamedTemporaryFile creates it private
    os.replace(temporary, path)


# ---------------------------------------------------------------------------------------------------------------------
# Verification


@dataclass
class VerificationReport:
    checkpoint_dir: Path
    task: str
    files: list[str]  # what push_checkpoint would upload, relative to checkpoint_dir
    warnings: list[str] = field(default_factory=list)  # also logged: nothing that stops a push, but worth reading


def verify_checkpoint(checkpoint_dir: str | os.PathLike, task: str | None = None) -> VerificationReport:
    """Check that `checkpoint_dir` is a complete, loadable MHE checkpoint; raise CheckpointError listing what is wrong.

    Checks the required files, a config whose `auto_map` names every head and whose architecture fits `task` (default:
    the task of `config.architectures[0]`), a model card that says what the model is, and finally loads the folder
    with `trust_remote_code=True` in a fresh process in which `mhe_transformers` cannot be imported, offline.
    """
    checkpoint_dir = Path(checkpoint_dir)
    if task is not None and task not in TASKS:
        raise CheckpointError(f"task must be one of {sorted(TASKS)}, got {task!r}.")
    if not checkpoint_dir.is_dir():
        raise CheckpointError(f"{checkpoint_dir} is not a directory.")
    problems = [f"missing {name}" for name in REQUIRED_FILES if not (checkpoint_dir / name).is_file()]
    try:
        config = _read_json(checkpoint_dir / "config.json") or {}
    except json.JSONDecodeError as error:
        config = {}
        problems.append(f"config.json is not valid JSON: {error}")

    auto_map = config.get("auto_map") or {}
    wrong = sorted(name for name, reference in AUTO_MAP.items() if auto_map.get(name) != reference)
    if config and wrong:
        problems.append(
            f"config.json auto_map lacks or misnames {', '.join(wrong)} "
            "(mhe_transformers' save_pretrained writes them all)"
        )
    if config and config.get("model_type") != MHEConfig.model_type:
        problems.append(f"config.json has model_type {config.get('model_type')!r}, expected 'mhe'")

    architecture = (config.get("architectures") or [None])[0]
    task_of_architecture = next((t for t, (arch, _) in TASKS.items() if arch == architecture), None)
    if config and task_of_architecture is None:
        expected = [arch for arch, _ in TASKS.values()]
        problems.append(f"config.json architectures is {architecture!r}; expected one of {expected}")
    if task is not None and task_of_architecture is not None and task != task_of_architecture:
        problems.append(f"task {task!r} needs {TASKS[task][0]}, but the checkpoint holds {architecture}")
    task = task or task_of_architecture

    if (checkpoint_dir / "README.md").is_file() and config and task:
        problems += _card_problems(checkpoint_dir / "README.md", task, config.get("attention_type"))
    if problems:
        raise CheckpointError(f"{checkpoint_dir} is not ready to share:\n- " + "\n- ".join(problems))

    _load_without_package(checkpoint_dir, TASKS[task][1])
    report = VerificationReport(checkpoint_dir, task, files_to_upload(checkpoint_dir))
    package_dir = Path(__file__).parent
    for name in ("configuration_mhe.py", "modeling_mhe.py"):
        if (checkpoint_dir / name).read_bytes() != (package_dir / name).read_bytes():
            report.warnings.append(
                f"{checkpoint_dir / name} differs from the installed mhe_transformers' (saved by another version?)"
            )
    for warning in report.warnings:
        logger.warning(warning)
    return report


def _card_problems(readme: Path, task: str, attention_type: str | None) -> list[str]:
    try:
        data = ModelCard.load(readme).data
    except Exception as error:  # a card the Hub cannot parse is as bad as none
        return [f"README.md does not parse as a model card: {error}"]
    problems = []
    if data.get("library_name") != "transformers":
        problems.append("README.md metadata lacks library_name: transformers")
    if data.get("pipeline_tag") != task:
        problems.append(f"README.md metadata pipeline_tag is {data.get('pipeline_tag')!r}, expected {task!r}")
    missing_tags = {"mhe", "custom_code", attention_type} - set(data.get("tags") or [])
    if missing_tags:
        problems.append(f"README.md metadata lacks the tags {sorted(missing_tags)}")
    return problems


# Runs in the fresh process. The finder refuses mhe_transformers (an editable or pip install would otherwise make it
# importable, and locally registered classes win over the checkpoint's auto_map).
_BLOCK_PACKAGE = """
import importlib.abc, sys
class _BlockMHETransformers(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "mhe_transformers" or name.startswith("mhe_transformers."):
            raise ImportError("mhe_transformers is blocked: this process checks loading with remote code only")
sys.meta_path.insert(0, _BlockMHETransformers())
"""

_LOAD_SCRIPT = """
import json, sys
import torch, transformers
from transformers.dynamic_module_utils import get_class_from_dynamic_module
folder, auto_class_name = sys.argv[1], sys.argv[2]
config = transformers.AutoConfig.from_pretrained(folder, trust_remote_code=True)
tokenizer = transformers.AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
loaded = {"AutoConfig": f"{type(config).__module__}.{type(config).__name__}"}
for name, reference in config.auto_map.items():  # every head the card and auto_map promise must resolve
    cls = get_class_from_dynamic_module(reference, folder)
    loaded[name] = f"{cls.__module__}.{cls.__name__}"
model, info = getattr(transformers, auto_class_name).from_pretrained(
    folder, trust_remote_code=True, output_loading_info=True
)
loaded[auto_class_name] = f"{type(model).__module__}.{type(model).__name__}"
with torch.no_grad():
    outputs = model.eval()(**tokenizer(["a small test sentence"], return_tensors="pt"))
    logits = outputs.logits if "logits" in outputs else outputs.start_logits  # question answering: start/end
problems = [f"{kind}: {info[kind]}" for kind in ("missing_keys", "unexpected_keys", "mismatched_keys") if info[kind]]
problems += [f"{name} came from {where}, not from the checkpoint's code" for name, where in loaded.items()
             if not where.startswith("transformers_modules")]
if not torch.isfinite(logits).all():
    problems.append("the model's outputs are not finite")
if "mhe_transformers" in sys.modules:
    problems.append("mhe_transformers was imported")
print("RESULT " + json.dumps({"loaded": loaded, "problems": problems}))
"""


def run_without_package(code: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `code` in a fresh, isolated (`python -I`) interpreter where `mhe_transformers` cannot be imported.

    Offline (HF_HUB_OFFLINE=1), in an empty working directory, with a fresh Transformers module cache, so the only
    MHE code it can run is what a checkpoint folder carries.
    """
    with tempfile.TemporaryDirectory(prefix="mhe-clean-") as workdir:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": os.path.join(workdir, "modules")}
        return subprocess.run(
            [sys.executable, "-I", "-c", _BLOCK_PACKAGE + textwrap.dedent(code), *map(str, args)],
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def _load_without_package(checkpoint_dir: Path, auto_class_name: str) -> None:
    process = run_without_package(_LOAD_SCRIPT, str(checkpoint_dir.resolve()), auto_class_name)
    lines = [line for line in process.stdout.splitlines() if line.startswith("RESULT ")]
    if process.returncode != 0 or not lines:
        tail = "\n".join(process.stderr.strip().splitlines()[-15:])
        raise CheckpointError(
            f"{checkpoint_dir} does not load with trust_remote_code=True without mhe_transformers installed "
            f"(exit code {process.returncode}):\n{tail}"
        )
    result = json.loads(lines[-1][len("RESULT ") :])
    if result["problems"]:
        raise CheckpointError(f"{checkpoint_dir} loads, but:\n- " + "\n- ".join(result["problems"]))


# ---------------------------------------------------------------------------------------------------------------------
# Upload


def files_to_upload(checkpoint_dir: str | os.PathLike) -> list[str]:
    """The files of `checkpoint_dir` a push sends, sorted: those of REQUIRED_FILES, OPTIONAL_FILES and weight shards
    that are regular files (not symlinks) at the top of the folder. Everything else stays local."""
    checkpoint_dir = Path(checkpoint_dir)
    known = set(REQUIRED_FILES) | set(OPTIONAL_FILES)
    return sorted(
        path.name
        for path in checkpoint_dir.iterdir()
        if path.is_file()
        and not path.is_symlink()
        and (path.name in known or fnmatch.fnmatchcase(path.name, WEIGHT_SHARD_PATTERN))
    )


def push_checkpoint(
    checkpoint_dir: str | os.PathLike,
    repo_id: str,
    private: bool = False,
    commit_message: str = "Upload MHE checkpoint",
    api: HfApi | None = None,
    token: str | None = None,
):
    """Verify `checkpoint_dir`, then upload the files `files_to_upload` lists (printed first) to the model repo
    `repo_id` (created if needed) in one commit.

    Nothing is sent if verification fails. `token` authenticates (it is kept in memory only); without it,
    huggingface_hub's own: the HF_TOKEN environment variable or the token saved by `hf auth login`. Returns the
    CommitInfo (its `.commit_url` links to the commit).
    """
    report = verify_checkpoint(checkpoint_dir)
    if repo_id not in (Path(checkpoint_dir) / "README.md").read_text(encoding="utf-8"):
        logger.warning(
            "README.md never mentions %s, so its loading snippet names another repo; rewrite it with "
            "write_model_card(..., model_name=%r) before pushing if that is not intended.",
            repo_id,
            repo_id,
        )
    print(f"Uploading {len(report.files)} files of {checkpoint_dir} to {repo_id}: {', '.join(report.files)}")
    api = api or HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    operations = [
        CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(Path(checkpoint_dir) / name)) for name in report.files
    ]
    return api.create_commit(repo_id, operations=operations, commit_message=commit_message)


def main(argv: list[str] | None = None) -> None:
    """`scripts/push_to_hub.py`: verify a final checkpoint folder, then upload it (`push_checkpoint`)."""
    parser = argparse.ArgumentParser(description="Verify an MHE checkpoint folder and upload it to a Hub model repo.")
    parser.add_argument("checkpoint_dir", help="a final checkpoint folder written by the training scripts")
    parser.add_argument("--repo_id", required=True, help="the Hub model repo, e.g. your-name/mhe-mul-tiny")
    parser.add_argument(
        "--private", action="store_true", help="create the repo as private (an existing repo keeps its visibility)"
    )
    parser.add_argument("--commit_message", default="Upload MHE checkpoint")
    args = parser.parse_args(argv)

    try:
        commit = push_checkpoint(
            args.checkpoint_dir, args.repo_id, private=args.private, commit_message=args.commit_message
        )
    except CheckpointError as error:
        raise SystemExit(f"Not uploaded. {error}")
    print(f"Uploaded {args.checkpoint_dir} to {commit.commit_url}")


__all__ = [
    "CheckpointError",
    "VerificationReport",
    "files_to_upload",
    "parameter_counts",
    "push_checkpoint",
    "run_without_package",
    "verify_checkpoint",
    "write_model_card",
]
