"""The paper's experiment at any scale, as runs that accumulate: one model per (arm, seed), pretrained with the
comparison's recipe, scored on held-out text, fine-tuned on each task; every finished run writes ONE small JSON
record, `<records_dir>/<name>/<run_key>.json`, committed to git. A comparison skips the runs whose record exists,
so a long one runs as short jobs, each continuing the last; `make report` (experiments/report.py) turns the
records alone into the tables, intervals and figure of docs/results/.

    python scripts/compare_attention.py --comparison configs/compare/ablation.yaml --max_minutes 40
    python scripts/compare_attention.py --comparison configs/compare/main.yaml --dry_run

A comparison config (configs/compare/*.yaml; `CONFIG_KEYS`) names the arms: each group of `groups` is a set of
attention types with the same model options (`position`: one of `POSITION_SETTINGS`; `model`: other MHEConfig
fields) and pretraining arguments (`pretrain`: e.g. a learning rate); an arm is (group, type); its PRR reference is
the MHA arm of the group named by `reference` (default: its own group, else the first). `stage: design` scores
validation only (test is never computed: the fine-tuning's prediction split is the validation file); `stage: final`
scores validation and test, test once per run. Every task is scored per item (held-out rows of the task's file;
blocks of held-out text for the language model, on a fixed masking: experiments/heldout.py), so that intervals can
resample items as well as seeds (experiments/statistics.py).

The run key is `<group>-<type>-seed<seed>-<hash>`, the hash of everything that defines the run: comparison name,
stage, type, seed, the effective pretraining and fine-tuning arguments (recipe files read, model options merged),
the held-out evaluation. A changed recipe therefore gets new keys (its old records stay, unused). The prepared data's
content hashes are recorded in each record instead; a comparison whose records were made from other data stops
with an error rather than mixing them.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import logging
import os
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml
from tqdm.auto import tqdm

from ..models.mhe.configuration_mhe import ATTENTION_TYPES
from ..utils.run_folder import (
    check_own,
    claim_output_dir,
    lock_output_dir,
    remove_own_folder,
    write_marker,
    write_text_atomically,
)
from . import heldout

logger = logging.getLogger(__name__)

REFERENCE_TYPE = "mha"
STAGES = ("design", "final")
# The position settings of the comparison, by name: the model options each sets (`position` of a group).
POSITION_SETTINGS: dict[str, dict[str, Any]] = {
    "absolute": {"position_embedding_type": "absolute"},
    "shared_bias": {"position_embedding_type": "relative_bias", "relative_attention_per_head": False,
                    "relative_attention_neighbour_init": 3.0},
    "per_head_bias": {"position_embedding_type": "relative_bias", "relative_attention_per_head": True,
                      "relative_attention_neighbour_init": 3.0},
}  # fmt: skip
# Model options a position setting decides; a recipe's values for them are replaced by the setting's.
POSITION_KEYS = ("position_embedding_type", "relative_attention_per_head", "relative_attention_neighbour_init")
CONFIG_KEYS = (
    "name", "stage", "seeds", "jobs", "runs_dir", "records_dir", "prepare", "attention_types", "position", "groups",
    "learning_rates", "pretrain", "finetune", "evaluation", "estimated_minutes_per_run", "chosen_on_validation",
)  # fmt: skip
GROUP_KEYS = ("types", "position", "model", "pretrain", "reference", "seeds")
# Arguments the comparison sets for every run (a config may not).
RESERVED_ARGS = ("attention_type", "seed", "output_dir", "model_name_or_path", "do_eval", "do_predict",
                 "predictions_format", "overwrite_output_dir")  # fmt: skip
# Arguments that do not change what a run computes: left out of the run key.
NON_DEFINING_ARGS = (
    "output_dir", "logging_steps", "disable_tqdm", "report_to", "save_strategy", "save_steps", "save_total_limit",
    "per_device_eval_batch_size", "eval_strategy", "dataloader_num_workers", "preprocessing_num_workers",
    "log_level", "max_eval_samples", "validation_split_percentage", "use_cpu", "hub_token", "hub_model_id",
    "hub_private_repo", "push_to_hub",
    # set by the comparison for every run (type and seed are keyed on their own; model = the run's own checkpoint):
    # a recipe file's default for them never reaches a run
    "attention_type", "seed", "model_name_or_path",
)  # fmt: skip
PLACEHOLDERS = ("wordnet_dir", "eval_wordnet_dir", "tokenizer_dir")
DEFAULT_EVALUATION = {"positions": 20_000, "mask_seed": 0, "text": "{eval_wordnet_dir}/heldout/{split}.txt"}


@dataclasses.dataclass
class TaskConfig:
    name: str
    metric: str = "accuracy"  # the score: eval_<metric> on validation, test_<metric> on test
    config: str | None = None  # a configs/finetune/*.yaml recipe
    args: dict[str, Any] = dataclasses.field(default_factory=dict)  # overrides of the recipe
    label_column: str = "label"


@dataclasses.dataclass(frozen=True)
class Arm:
    group: str
    attention_type: str
    position: str | None
    model: tuple  # sorted (option, value) pairs: every model option the comparison sets
    pretrain: tuple  # sorted (argument, value) pairs: the group's pretraining arguments
    reference: str  # the group whose MHA arm is this arm's PRR reference

    @property
    def name(self) -> str:
        return f"{self.group}/{self.attention_type}"


@dataclasses.dataclass
class CompareConfig:
    name: str
    stage: str
    groups: dict[str, dict[str, Any]]
    tasks: list[TaskConfig]
    pretrain_config: str | None = None
    pretrain_args: dict[str, Any] = dataclasses.field(default_factory=dict)
    seeds: list[int] = dataclasses.field(default_factory=lambda: [42])
    jobs: int = 1
    runs_dir: str = "outputs/compare"
    records_dir: str = "docs/results/records"
    prepare: dict[str, Any] = dataclasses.field(default_factory=dict)
    attention_types: list[str] = dataclasses.field(default_factory=lambda: list(ATTENTION_TYPES))
    position: str | None = None
    learning_rates: dict[str, float] = dataclasses.field(default_factory=dict)
    evaluation: dict[str, Any] = dataclasses.field(default_factory=dict)
    estimated_minutes_per_run: float = 5.0
    chosen_on_validation: dict[str, Any] = dataclasses.field(default_factory=dict)
    source: str | None = None  # the config file: design comparisons named by `chosen_on_validation` sit beside it

    @property
    def records_path(self) -> Path:
        return Path(self.records_dir) / self.name

    @property
    def objective(self) -> str:
        return str(self.recipe_args().get("objective", "mlm"))

    def recipe_args(self) -> dict[str, Any]:
        """The pretraining recipe file's arguments overridden by the config's `pretrain.args`."""
        recipe = yaml.safe_load(Path(self.pretrain_config).read_text(encoding="utf-8")) if self.pretrain_config else {}
        return {**(recipe or {}), **self.pretrain_args}

    def arms(self) -> list[Arm]:
        arms = []
        first = next(iter(self.groups))
        for group, spec in self.groups.items():
            position = spec.get("position", self.position)
            reference = spec.get("reference") or (group if REFERENCE_TYPE in spec["types"] else first)
            for attention_type in spec["types"]:
                model = {**(POSITION_SETTINGS[position] if position else {}), **(spec.get("model") or {})}
                pretrain = {**({"learning_rate": self.learning_rates[attention_type]}
                               if attention_type in self.learning_rates else {}), **(spec.get("pretrain") or {})}
                arms.append(Arm(group, attention_type, position, tuple(sorted(model.items())),
                                tuple(sorted(pretrain.items())), reference))  # fmt: skip
        return arms

    def runs(self) -> list[tuple[Arm, int]]:
        """Every (arm, seed), seed-major: after the first seed, one run of every arm exists. A group's `seeds`
        (a subset of the config's) limits its arms to those."""
        return [(arm, seed) for seed in self.seeds for arm in self.arms()
                if seed in (self.groups[arm.group].get("seeds") or self.seeds)]  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------
# Configs
# ---------------------------------------------------------------------------------------------------------------


def load_config(path: str | os.PathLike, overrides: dict[str, Any] | None = None) -> CompareConfig:
    """Read and check a comparison config (YAML); `overrides` replace top-level fields (from the command line).
    Every problem that needs no training to find is raised here, before anything runs."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Comparison config not found: {path}")
    values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(values, dict):
        raise ValueError(f"{path} must hold a mapping, got {type(values).__name__}.")
    values.update({key: value for key, value in (overrides or {}).items() if value is not None})
    unknown = sorted(set(values) - set(CONFIG_KEYS))
    if unknown:
        raise ValueError(f"Unknown key(s) in {path}: {', '.join(unknown)}; allowed: {', '.join(CONFIG_KEYS)}.")
    for key in ("name", "stage", "groups", "pretrain"):
        if not values.get(key):
            raise ValueError(f"{path}: `{key}` is required.")
    pretrain, finetune = values.pop("pretrain"), values.pop("finetune", None) or {}
    unknown = sorted(set(pretrain) - {"config", "args"})
    if unknown:
        raise ValueError(f"{path}: unknown key(s) in pretrain: {', '.join(unknown)}; allowed: config, args.")
    if not isinstance(finetune, dict):
        raise ValueError(f"{path}: `finetune` must map task names to {{config, metric, args, label_column}}.")
    tasks = []
    for name, task in finetune.items():
        unknown = sorted(set(task or {}) - {"config", "metric", "args", "label_column"})
        if unknown:
            raise ValueError(f"{path}: unknown key(s) in task {name!r}: {', '.join(unknown)}.")
        tasks.append(TaskConfig(name=name, **(task or {})))
    config = CompareConfig(
        pretrain_config=pretrain.get("config"), pretrain_args=pretrain.get("args") or {}, tasks=tasks, source=str(path),
        **values,
    )
    config.evaluation = {**DEFAULT_EVALUATION, **(config.evaluation or {})}
    check_config(config, path)
    return config


def check_config(config: CompareConfig, path: Path) -> None:
    if config.stage not in STAGES:
        raise ValueError(f"{path}: stage must be one of {STAGES}, got {config.stage!r}.")
    for name, spec in config.groups.items():
        unknown = sorted(set(spec or {}) - set(GROUP_KEYS))
        if unknown:
            raise ValueError(f"{path}: unknown key(s) in group {name!r}: {', '.join(unknown)}; allowed: {GROUP_KEYS}.")
        spec.setdefault("types", list(config.attention_types))
        bad = [t for t in spec["types"] if t not in ATTENTION_TYPES]
        if bad or len(set(spec["types"])) != len(spec["types"]):
            raise ValueError(f"{path}: group {name!r} types {spec['types']}: unknown or repeated (from {ATTENTION_TYPES}).")
        position = spec.get("position", config.position)
        if position is not None and position not in POSITION_SETTINGS:
            raise ValueError(f"{path}: group {name!r}: position {position!r} is not one of {list(POSITION_SETTINGS)}.")
        if not set(spec.get("seeds") or []) <= set(config.seeds):
            raise ValueError(f"{path}: group {name!r} seeds {spec['seeds']} must be among the config's {config.seeds}.")
        clash = sorted(set(spec.get("model") or {}) & set(POSITION_KEYS))
        if clash:
            raise ValueError(f"{path}: group {name!r} sets {clash} in `model`: choose a `position` instead.")
    for arm in config.arms():
        reference = config.groups.get(arm.reference)
        if reference is None or REFERENCE_TYPE not in reference["types"]:
            raise ValueError(f"{path}: arm {arm.name} needs an MHA arm in group {arm.reference!r} as its reference.")
    if not config.seeds or len(set(config.seeds)) != len(config.seeds) or not all(isinstance(s, int) for s in config.seeds):
        raise ValueError(f"{path}: seeds must be a non-empty list of distinct integers, got {config.seeds}.")
    if not isinstance(config.jobs, int) or config.jobs < 1:
        raise ValueError(f"{path}: jobs must be a positive integer (runs at once), got {config.jobs!r}.")
    reserved = set(RESERVED_ARGS) & set(config.pretrain_args).union(*(task.args for task in config.tasks))
    if reserved:
        raise ValueError(f"{path}: {sorted(reserved)} are set by the comparison for each run; remove them from the args.")
    for recipe in [config.pretrain_config] + [task.config for task in config.tasks]:
        if recipe is not None and not Path(recipe).is_file():
            raise FileNotFoundError(f"{path}: recipe not found: {recipe}")
    unknown = sorted(set(config.prepare) - {"wordnet_dir", "max_synsets", "eval_wordnet_dir", "tokenizer_dir", "vocab_size"})
    if unknown:
        raise ValueError(f"{path}: unknown key(s) in prepare: {unknown}.")


def to_argv(values: dict[str, Any]) -> list[str]:
    """{"max_steps": 10, "train_files": ["a", "b"], "do_train": True} -> ["--max_steps", "10", "--train_files", "a",
    "b", "--do_train", "true"], as HfArgumentParser reads them."""
    argv = []
    for key, value in values.items():
        if value is None:
            continue
        argv.append(f"--{key}")
        if isinstance(value, (list, tuple)):
            argv += [str(item) for item in value]
        elif isinstance(value, dict):
            argv.append(json.dumps(value))
        elif isinstance(value, bool):
            argv.append(str(value).lower())
        else:
            argv.append(str(value))
    return argv


def substitute(value: Any, paths: dict[str, str]) -> Any:
    """Replace `{wordnet_dir}`, `{eval_wordnet_dir}`, `{tokenizer_dir}` (and `{split}`) in strings, lists, dicts."""
    if isinstance(value, str):
        for name, path in paths.items():
            value = value.replace("{" + name + "}", str(path))
        return value
    if isinstance(value, list):
        return [substitute(item, paths) for item in value]
    if isinstance(value, dict):
        return {key: substitute(item, paths) for key, item in value.items()}
    return value


def model_overrides(config: CompareConfig, arm: Arm) -> dict[str, Any]:
    """The arm's model options: the recipe's `config_overrides` without the position options, then the arm's."""
    from ..training.loop import parse_config_overrides

    recipe = parse_config_overrides(config.recipe_args().get("config_overrides"))
    base = {key: value for key, value in recipe.items() if not (arm.position and key in POSITION_KEYS)}
    return {**base, **dict(arm.model)}


def pretrain_values(config: CompareConfig, arm: Arm) -> dict[str, Any]:
    """The arm's pretraining arguments on top of the recipe file (attention type, seed and folders come later)."""
    overrides = model_overrides(config, arm)
    config_overrides = ",".join(f"{key}={json.dumps(value)}" for key, value in overrides.items())
    return {**config.pretrain_args, **dict(arm.pretrain), "config_overrides": config_overrides or None}


def finetune_values(config: CompareConfig, task: TaskConfig) -> dict[str, Any]:
    """A task's fine-tuning arguments for this stage. Design: the validation file is the prediction split (test is
    never read) and scored per item; final: validation scored as a whole, test per item. A task without local files
    (a Hub task such as GLUE's) is scored on its validation split as a whole, without items."""
    values = {**task.args, "predictions_format": "jsonl", "do_train": True}
    if "validation_file" not in task.args:
        return {**values, "do_eval": True, "do_predict": False}
    if config.stage == "design":
        return {**values, "test_file": task.args["validation_file"], "do_eval": False, "do_predict": True}
    return {**values, "do_eval": True, "do_predict": True}


def run_key(config: CompareConfig, arm: Arm, seed: int) -> str:
    """`<group>-<type>-seed<seed>-<12 hex>`: the hash covers everything that defines the run (module docstring)."""

    def recipe(path: str | None, args: dict) -> dict:
        values = {**((yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}) if path else {}), **args}
        return {key: values[key] for key in sorted(values) if key not in NON_DEFINING_ARGS}

    defining = {
        "comparison": config.name, "stage": config.stage, "attention_type": arm.attention_type, "seed": seed,
        "pretrain": recipe(config.pretrain_config, pretrain_values(config, arm)),
        "finetune": {task.name: {"metric": task.metric, **recipe(task.config, finetune_values(config, task))}
                     for task in config.tasks},
        "evaluation": config.evaluation, "prepare": {k: v for k, v in config.prepare.items() if not k.endswith("_dir")},
    }  # fmt: skip
    digest = hashlib.sha256(json.dumps(defining, sort_keys=True, default=str).encode()).hexdigest()
    return f"{arm.group}-{arm.attention_type}-seed{seed}-{digest[:12]}"


# ---------------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------------


def prepare_data(prepare: dict[str, Any]) -> dict[str, Any]:
    """The comparison's offline data, each folder prepared again unless its manifest matches what would make it now
    (`mhe_transformers.data.wordnet.ensure_wordnet`, `ensure_tokenizer`): `wordnet_dir` (the training share,
    `max_synsets` synsets or all), `eval_wordnet_dir` (all of WordNet: the validation and test sets; default:
    `wordnet_dir`), `tokenizer_dir` (WordPiece, `vocab_size` tokens, trained on `<wordnet_dir>/corpus.txt`).
    Returns {"paths": placeholder -> folder, "hashes": folder role -> content hash, "counts": ...}."""
    from ..data.wordnet import ensure_wordnet

    paths, hashes, counts = {}, {}, {}
    if prepare.get("wordnet_dir"):
        manifest = ensure_wordnet(prepare["wordnet_dir"], max_synsets=prepare.get("max_synsets"))
        paths["wordnet_dir"], hashes["wordnet"] = prepare["wordnet_dir"], manifest["content_hash"]
        counts["train"] = {key: manifest["counts"][key] for key in ("synsets", "corpus_lines", "train", "pairs_train")}
        eval_dir = prepare.get("eval_wordnet_dir") or prepare["wordnet_dir"]
        manifest = manifest if eval_dir == prepare["wordnet_dir"] else ensure_wordnet(eval_dir)
        paths["eval_wordnet_dir"], hashes["eval_wordnet"] = eval_dir, manifest["content_hash"]
        counts["evaluation"] = {key: manifest["counts"][key] for key in
                                ("validation", "test", "pairs_validation", "pairs_test")}  # fmt: skip
    if prepare.get("tokenizer_dir"):
        if "wordnet_dir" not in paths:
            raise ValueError("prepare.tokenizer_dir is trained on <wordnet_dir>/corpus.txt: set prepare.wordnet_dir.")
        manifest = ensure_tokenizer(prepare["tokenizer_dir"], Path(paths["wordnet_dir"]) / "corpus.txt",
                                    prepare.get("vocab_size", 4000))  # fmt: skip
        paths["tokenizer_dir"], hashes["tokenizer"] = prepare["tokenizer_dir"], manifest["content_hash"]
    return {"paths": paths, "hashes": hashes, "counts": counts}


def ensure_tokenizer(tokenizer_dir: str | os.PathLike, corpus: Path, vocab_size: int) -> dict[str, Any]:
    """A WordPiece tokenizer trained on `corpus`, trained again unless the folder's manifest shows the same corpus
    content, vocabulary size and training code, and its files are unchanged since."""
    from ..data.wordnet import MANIFEST, folder_hash
    from ..training import tokenizer as tokenizer_module

    digest = hashlib.sha256(Path(tokenizer_module.__file__).read_bytes())
    digest.update(corpus.read_bytes() + f"\0{vocab_size}".encode())
    inputs_hash = digest.hexdigest()
    manifest_path = Path(tokenizer_dir) / MANIFEST
    manifest = json.loads(manifest_path.read_text(encoding="utf-8")) if manifest_path.is_file() else {}
    if manifest.get("inputs_hash") != inputs_hash or manifest.get("content_hash") != folder_hash(tokenizer_dir):
        logger.info("Training the tokenizer in %s", tokenizer_dir)
        tokenizer_module.train_wordpiece_tokenizer(corpus, vocab_size, tokenizer_dir)
        manifest = {"inputs_hash": inputs_hash, "vocab_size": vocab_size, "content_hash": folder_hash(tokenizer_dir)}
        manifest_path.write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return manifest


# ---------------------------------------------------------------------------------------------------------------
# One run
# ---------------------------------------------------------------------------------------------------------------

EntryPoint = Callable[[list[str]], dict]


@dataclasses.dataclass
class Pipeline:
    """The entry points a run calls (replaced by fakes in tests): pretraining and fine-tuning take an argv;
    `evaluate(model_dir, text_file, objective, evaluation, split)` scores held-out text (heldout.evaluate_checkpoint)."""

    pretrain: EntryPoint
    finetune: EntryPoint
    evaluate: Callable[..., dict] = heldout.evaluate_checkpoint


def default_pipeline() -> Pipeline:
    from ..training import finetune as finetuning
    from ..training import pretrain as pretraining

    return Pipeline(pretrain=pretraining.main, finetune=finetuning.main)


def pretrain_argv(config: CompareConfig, arm: Arm, seed: int, output_dir: Path, paths: dict[str, str]) -> list[str]:
    values = {**pretrain_values(config, arm), "attention_type": arm.attention_type, "seed": seed,
              "output_dir": str(output_dir), "do_train": True, "do_eval": False}  # fmt: skip
    recipe = ["--config", config.pretrain_config] if config.pretrain_config else []
    return recipe + to_argv(substitute(values, paths))


def finetune_argv(config: CompareConfig, task: TaskConfig, model_dir: Path, seed: int, output_dir: Path,
                  paths: dict[str, str]) -> list[str]:  # fmt: skip
    values = {**finetune_values(config, task), "model_name_or_path": str(model_dir), "seed": seed,
              "output_dir": str(output_dir)}  # fmt: skip
    recipe = ["--config", task.config] if task.config else []
    return recipe + to_argv(substitute(values, paths))


def check_arguments(config: CompareConfig, paths: dict[str, str]) -> None:
    """Parse every arm's arguments as the pipelines will, and build every new arm's model as the pretraining does
    (on the meta device: no memory, no weights), so that a typo or a setting the model does not implement fails now,
    naming the arm, not after an hour."""
    import torch

    from ..training import finetune as finetuning
    from ..training import loop
    from ..training import pretrain as pretraining

    check_dir = Path(config.runs_dir) / "check"
    for arm in config.arms():
        argv = pretrain_argv(config, arm, config.seeds[0], check_dir, paths)
        model_args, data_args, _ = loop.parse_args(pretraining.ARGUMENT_CLASSES, argv)
        if model_args.model_config:
            try:
                with torch.device("meta"):
                    pretraining.build_model(model_args, data_args, loop.load_tokenizer(model_args))
            except ValueError as error:
                raise ValueError(f"Comparison {config.name}, arm {arm.name}: {error}") from error
    for task in config.tasks:
        loop.parse_args(finetuning.ARGUMENT_CLASSES, finetune_argv(config, task, check_dir, 0, check_dir, paths))


def _stage(folder: Path, name: str, compute: Callable[[], dict]) -> dict:
    """`compute()` once per run folder: its result is kept in `<folder>/<name>.json`, so that a run interrupted
    between stages continues where it stopped (on the same machine; the folder is not committed)."""
    path = folder / f"{name}.json"
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    result = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, default=float) + "\n", encoding="utf-8")
    return result


def _fresh(output_dir: Path) -> list[str]:
    # A folder without its stage result is an interrupted attempt: start it over.
    return ["--overwrite_output_dir", "true"] if output_dir.exists() else []


def execute_run(config: CompareConfig, pipeline: Pipeline, arm: Arm, seed: int, data: dict) -> dict:
    """Pretrain, score held-out text, fine-tune every task; returns the run's results (not yet a record)."""
    paths = data["paths"]
    folder = run_dir(config, arm, seed)
    model_dir = folder / "pretrain"
    argv = pretrain_argv(config, arm, seed, model_dir, paths)
    pretrain = _stage(folder, "pretrain", lambda: pipeline.pretrain(argv + _fresh(model_dir)))
    splits = ["validation"] + ["test"] * (config.stage == "final") if config.evaluation.get("text") else []
    language_model = {}
    for split in splits:
        text = substitute(config.evaluation["text"], {**paths, "split": split})
        evaluation = {**config.evaluation, **_lm_settings(config, arm)}
        language_model[split] = _stage(folder, f"lm-{split}", lambda: pipeline.evaluate(
            model_dir, text, config.objective, evaluation, split))  # fmt: skip
    tasks = {}
    for task in config.tasks:
        task_dir = folder / task.name
        argv = finetune_argv(config, task, model_dir, seed, task_dir, paths)
        tasks[task.name] = _stage(folder, f"task-{task.name}", lambda: _finetune(config, pipeline, task, argv, task_dir,
                                                                                 paths))  # fmt: skip
    return {"folder": folder, "model_dir": model_dir, "pretrain": pretrain, "language_model": language_model,
            "tasks": tasks}  # fmt: skip


def run_dir(config: CompareConfig, arm: Arm, seed: int) -> Path:
    """Where a run keeps its checkpoints and stage results until its record is written."""
    return Path(config.runs_dir) / config.name / run_key(config, arm, seed)


def _lm_settings(config: CompareConfig, arm: Arm) -> dict[str, Any]:
    values = {**config.recipe_args(), **dict(arm.pretrain)}
    return {"block_size": int(values.get("max_seq_length", 128)), "mlm_probability": float(values.get("mlm_probability", 0.15))}


def _finetune(config: CompareConfig, pipeline: Pipeline, task: TaskConfig, argv: list[str], task_dir: Path,
              paths: dict[str, str]) -> dict:  # fmt: skip
    """Fine-tune one task; returns {"validation", "test" (None in a design stage), "items"}."""
    metrics = pipeline.finetune(argv + _fresh(task_dir))
    values = finetune_values(config, task)
    if not values["do_predict"]:  # a Hub task: its validation score only
        return {"validation": float(metrics[f"eval_{task.metric}"]), "test": None, "items": None}
    scored_file = substitute(values["test_file"], paths)
    correct = heldout.prediction_correctness(task_dir / "predictions.jsonl", scored_file, task.label_column)
    if config.stage == "design":
        # The prediction split is the validation file: test_<metric> is the validation score.
        validation, test, split = metrics[f"test_{task.metric}"], None, "validation"
    else:
        validation, test, split = metrics[f"eval_{task.metric}"], metrics[f"test_{task.metric}"], "test"
    return {"validation": float(validation), "test": None if test is None else float(test),
            "items": heldout.classification_items(correct, split)}  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------------------------------------------


def code_version() -> dict[str, Any]:
    """The commit the code ran at, and whether the package, configs or scripts had uncommitted changes."""

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], capture_output=True, text=True, check=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    commit = git("rev-parse", "HEAD") or None
    dirty = bool(git("status", "--porcelain", "--untracked-files=no", "--", "mhe_transformers", "configs", "scripts"))
    return {"commit": commit, "dirty": dirty if commit else None}


def _recipe_value(path: str | None, args: dict, key: str) -> Any:
    values = {**((yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}) if path else {}), **args}
    return values.get(key)


def pretraining_curve(model_dir: str | os.PathLike) -> list[list[float]] | None:
    """[[step, training loss], ...] as Trainer logged it (`trainer_state.json` of the final checkpoint, every
    `logging_steps`); None for a checkpoint without that file."""
    state = Path(model_dir) / "trainer_state.json"
    if not state.is_file():
        return None
    history = json.loads(state.read_text(encoding="utf-8")).get("log_history", [])
    return [[entry["step"], round(float(entry["loss"]), 4)] for entry in history if "loss" in entry and "step" in entry]


def build_record(config: CompareConfig, arm: Arm, seed: int, result: dict, data: dict, seconds: float) -> dict:
    """The run's record: whitelisted fields only (no command line, no path, no token)."""
    from transformers import AutoConfig

    from ..models.mhe.parameter_counts import count_config_parameters

    model_config = AutoConfig.from_pretrained(result["model_dir"])
    auto = "AutoModelForCausalLM" if config.objective == "clm" else "AutoModel"
    import transformers

    kwargs = {} if config.objective == "clm" else {"add_pooling_layer": False}
    counts = count_config_parameters(getattr(transformers, auto).from_config, model_config, **kwargs)
    lm = result["language_model"]
    model = dict(arm.model)
    return {
        "comparison": config.name, "run_key": run_key(config, arm, seed), "stage": config.stage,
        "group": arm.group, "arm": arm.name, "reference": f"{arm.reference}/{REFERENCE_TYPE}",
        "attention_type": arm.attention_type, "seed": seed,
        "num_heads": model_config.num_attention_heads, "head_dim": model_config.head_dim,
        "num_key_value_heads": model_config.num_key_value_heads, "hidden_size": model_config.hidden_size,
        "num_hidden_layers": model_config.num_hidden_layers, "position": arm.position,
        "position_embedding_type": model_config.position_embedding_type,
        "per_head_position_bias": model_config.position_embedding_type == "relative_bias"
        and bool(getattr(model_config, "relative_attention_per_head", True)),
        "freeze_head_embeddings": bool(getattr(model_config, "freeze_head_embeddings", model.get("freeze_head_embeddings", False))),
        "model_options": model,
        "attention_parameters": counts["attention"], "total_parameters": counts["total"],
        "objective": config.objective,
        "learning_rate": _recipe_value(config.pretrain_config, pretrain_values(config, arm), "learning_rate"),
        "pretrain_steps": _recipe_value(config.pretrain_config, pretrain_values(config, arm), "max_steps"),
        "finetune_learning_rate": {task.name: _recipe_value(task.config, task.args, "learning_rate") for task in config.tasks},
        "metrics": {name: {"validation": task["validation"], "test": task["test"]} for name, task in result["tasks"].items()},
        "pretraining": {split: (lm[split]["metrics"] if split in lm else None) for split in ("validation", "test")},
        "train_loss": result["pretrain"].get("train_loss"), "pretraining_curve": pretraining_curve(result["model_dir"]),
        "items": {**{name: task["items"] for name, task in result["tasks"].items() if task["items"]},
                  **{f"lm_{split}": lm[split]["items"] for split in lm}},
        "data": data["hashes"], "counts": data["counts"],
        **code_version(), "seconds": round(seconds, 1), "environment": _environment(config),
    }  # fmt: skip


def _environment(config: CompareConfig) -> dict[str, Any]:
    import platform

    import torch
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "torch_threads": torch.get_num_threads(), "jobs": config.jobs}  # fmt: skip


def write_record(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(path, json.dumps(record, indent=1) + "\n")


def read_records(folder: str | os.PathLike) -> list[dict]:
    """Every record in `folder`, by file name."""
    return [json.loads(path.read_text(encoding="utf-8")) for path in sorted(Path(folder).glob("*.json"))]


def missing_runs(config: CompareConfig) -> list[tuple[Arm, int]]:
    return [(arm, seed) for arm, seed in config.runs() if not (config.records_path / f"{run_key(config, arm, seed)}.json").is_file()]


def check_record_data(config: CompareConfig, data: dict) -> None:
    """Stop when the comparison's records were made from other prepared data than this job's."""
    for record in read_records(config.records_path):
        if record.get("data") != data["hashes"]:
            raise ValueError(
                f"{config.records_path}/{record.get('run_key')}.json was made from other data ({record.get('data')}) "
                f"than this job prepared ({data['hashes']}): the data code or WordNet changed. Move the old "
                "records away (or rename the comparison) before running more."
            )


def run_and_record(config: CompareConfig, pipeline: Pipeline, arm: Arm, seed: int, data: dict,
                   keep_checkpoints: bool = False, threads: int | None = None) -> str:  # fmt: skip
    """One run, start to record; its checkpoints are deleted once the record is written unless `keep_checkpoints`.
    Returns the record's path."""
    if threads:
        import torch

        torch.set_num_threads(threads)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    started = time.time()
    folder = run_dir(config, arm, seed)
    # The run's folder is this tool's (utils.run_folder): one job runs it at a time, a folder of the user's own
    # is neither written into nor deleted, and one left by an interrupted job is continued.
    with lock_output_dir(folder):
        if folder.is_dir() and any(folder.iterdir()):
            check_own(folder)
        folder.mkdir(parents=True, exist_ok=True)
        write_marker(folder)
        result = execute_run(config, pipeline, arm, seed, data)
        record = build_record(config, arm, seed, result, data, time.time() - started)
        path = config.records_path / f"{record['run_key']}.json"
        write_record(path, record)
        if not keep_checkpoints:
            remove_own_folder(folder)
    return str(path)


# ---------------------------------------------------------------------------------------------------------------
# Scheduling: jobs at once, within a run count and a time budget
# ---------------------------------------------------------------------------------------------------------------


def design_problems(config: CompareConfig) -> list[str]:
    """Where the config's `chosen_on_validation` values (position, per-type learning rates) disagree with what the
    named design comparison's records choose (statistics.best_on_validation), or those records are incomplete."""
    from .statistics import best_on_validation

    problems = []
    for option, spec in config.chosen_on_validation.items():
        design = load_config(Path(config.source).parent / f"{spec['comparison']}.yaml", {"records_dir": config.records_dir})
        keys = {run_key(design, arm, seed) for arm, seed in design.runs()}
        records = [r for r in read_records(design.records_path) if r.get("run_key") in keys]
        if len(records) < len(keys):
            problems.append(f"{option}: {design.name} has {len(records)} of {len(keys)} runs recorded; run it first.")
        elif option == "position":
            best, means = best_on_validation(records, "position", spec.get("among"))
            if best != config.position:
                problems.append(f"position: {design.name}'s records choose {best!r} ({means}), the config says "
                                f"{config.position!r}.")  # fmt: skip
        elif option == "learning_rates":
            for attention_type, rate in config.learning_rates.items():
                typed = [r for r in records if r["attention_type"] == attention_type]
                best, means = best_on_validation(typed, "learning_rate")
                if best != rate:
                    problems.append(f"learning_rates.{attention_type}: {design.name}'s records choose {best:g} "
                                    f"({means}), the config says {rate:g}.")  # fmt: skip
        else:
            raise ValueError(f"chosen_on_validation: unknown option {option!r} (position, learning_rates).")
    return problems


def estimated_seconds_per_run(config: CompareConfig) -> float:
    """The mean time of the comparison's finished runs, else the config's `estimated_minutes_per_run`."""
    seconds = [record["seconds"] for record in read_records(config.records_path) if record.get("seconds")]
    return sum(seconds) / len(seconds) if seconds else 60.0 * config.estimated_minutes_per_run


def run_comparison(config: CompareConfig, pipeline: Pipeline | None = None, *, max_runs: int | None = None,
                   max_minutes: float | None = None, keep_checkpoints: bool = False) -> list[str]:  # fmt: skip
    """Run the missing runs, `config.jobs` at a time, seed-major; start no run beyond `max_runs`, and none that
    would end after `max_minutes` (at the estimated time per run). Returns the records written."""
    started = time.time()
    problems = design_problems(config)
    if problems:
        raise ValueError(f"{config.name}: the design choices are not those of the validation records:\n  "
                         + "\n  ".join(problems))  # fmt: skip
    pipeline = pipeline or default_pipeline()
    data = prepare_data(config.prepare)
    check_record_data(config, data)
    check_arguments(config, data["paths"])
    estimate = estimated_seconds_per_run(config)
    pending = missing_runs(config)

    def may_start(count: int) -> bool:
        if max_runs is not None and count >= max_runs:
            return False
        return max_minutes is None or (time.time() - started + estimate) / 60 <= max_minutes

    written, count = [], 0
    # One bar over the job's runs (Trainer's own bars are off in the comparison's recipes): its total is what the run
    # count allows; a time budget may end the job earlier.
    total = len(pending) if max_runs is None else min(max_runs, len(pending))
    progress = tqdm(total=total, desc=f"{config.name} runs", unit="run", dynamic_ncols=True)
    # Held to the end: a second job of the same comparison (another session) is refused, naming this one.
    with progress, claim_output_dir(Path(config.runs_dir) / config.name, overwrite=True) as runs_folder:
        runs_folder.mkdir(parents=True, exist_ok=True)
        write_marker(runs_folder)  # the per-run folders inside are the pipelines' own run folders
        if config.jobs == 1:
            while pending and may_start(count):
                arm, seed = pending.pop(0)
                count += 1
                written.append(run_and_record(config, pipeline, arm, seed, data, keep_checkpoints))
                progress.update()
        else:
            written = _run_in_processes(config, pipeline, pending, data, may_start, keep_checkpoints, progress)
    left = len(missing_runs(config))
    logger.info("%d run(s) recorded in %s; %d still missing.", len(written), config.records_path, left)
    return written


def _run_in_processes(config, pipeline, pending, data, may_start, keep_checkpoints, progress) -> list[str]:
    """`config.jobs` runs side by side, each in its own process with an equal share of the CPU threads (small
    models use several cores poorly); a new run starts when one ends and the budget allows. The first failure stops
    new starts, waits for the runs under way and is raised."""
    import multiprocessing

    threads = max(1, (os.cpu_count() or 1) // config.jobs)
    context = multiprocessing.get_context("spawn")  # torch's thread pools are not fork-safe
    written, running, count = [], set(), 0
    with concurrent.futures.ProcessPoolExecutor(config.jobs, mp_context=context) as pool:
        while pending or running:
            while pending and len(running) < config.jobs and may_start(count):
                arm, seed = pending.pop(0)
                count += 1
                running.add(pool.submit(_run_in_child, config, pipeline, arm, seed, data, keep_checkpoints, threads))
            if not running:
                break
            done, running = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
            for future in done:
                try:
                    written.append(future.result())
                    progress.update()
                except BaseException:
                    pending.clear()
                    concurrent.futures.wait(running)
                    raise
    return written


def _run_in_child(config, pipeline, arm, seed, data, keep_checkpoints, threads) -> str:
    """run_and_record in a pool process; any error comes back as a RuntimeError naming the run (some exceptions,
    such as huggingface_hub's validation errors, do not survive pickling and would break the pool instead)."""
    try:
        return run_and_record(config, pipeline, arm, seed, data, keep_checkpoints, threads)
    except Exception as error:
        raise RuntimeError(f"{arm.name}, seed {seed}: {type(error).__name__}: {error}") from None


def dry_run(config: CompareConfig) -> str:
    """The runs still missing, with the estimated time (no data prepared, nothing run)."""
    missing = missing_runs(config)
    estimate = estimated_seconds_per_run(config)
    hours = len(missing) * estimate / config.jobs / 3600
    lines = [f"{config.name}: {len(config.runs()) - len(missing)} of {len(config.runs())} runs recorded in "
             f"{config.records_path}; {len(missing)} missing, about {estimate / 60:.1f} min each, {config.jobs} at "
             f"once: about {hours:.1f} h."]  # fmt: skip
    lines += [f"  {run_key(config, arm, seed)}" for arm, seed in missing]
    lines += [f"Not ready: {problem}" for problem in design_problems(config)]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class CompareArguments:
    comparison: str = dataclasses.field(metadata={"help": "The comparison config, configs/compare/<name>.yaml."})
    seeds: list[int] | None = dataclasses.field(default=None, metadata={"help": "Override the config's seeds."})
    jobs: int | None = dataclasses.field(default=None, metadata={"help": "Override the config's jobs (runs at once)."})
    runs_dir: str | None = dataclasses.field(default=None, metadata={"help": "Override where checkpoints go."})
    records_dir: str | None = dataclasses.field(default=None, metadata={"help": "Override where records go."})
    max_runs: int | None = dataclasses.field(default=None, metadata={"help": "Start at most this many runs."})
    max_minutes: float | None = dataclasses.field(
        default=None, metadata={"help": "Start no run that would end after this many minutes (estimated)."}
    )
    dry_run: bool = dataclasses.field(default=False, metadata={"help": "List the missing runs and the estimated time."})
    keep_checkpoints: bool = dataclasses.field(
        default=False, metadata={"help": "Keep each run's checkpoints (runs_dir) after its record is written."}
    )

    def __post_init__(self):
        for name in ("max_runs", "max_minutes", "jobs"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"--{name} must be positive, got {value}.")


def main(argv: Sequence[str] | None = None, pipeline: Pipeline | None = None) -> list[str] | str:
    from ..utils.cli import parse_args

    (args,) = parse_args((CompareArguments,), argv, description="Run a comparison's missing runs; one record each.")
    overrides = {key: getattr(args, key) for key in ("seeds", "jobs", "runs_dir", "records_dir")}
    config = load_config(args.comparison, overrides)
    if args.dry_run:
        text = dry_run(config)
        print(text)
        return text
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    written = run_comparison(config, pipeline, max_runs=args.max_runs, max_minutes=args.max_minutes,
                             keep_checkpoints=args.keep_checkpoints)  # fmt: skip
    print(f"Wrote {len(written)} record(s) to {config.records_path}; {len(missing_runs(config))} run(s) still missing.")
    return written


__all__ = ["Arm", "CompareConfig", "Pipeline", "TaskConfig", "load_config", "main", "run_comparison", "run_key"]
