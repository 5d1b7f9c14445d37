"""The paper's experiment at any scale: one model per attention type, pretrained with the same data, budget, seed and
recipe, each fine-tuned on the same tasks; scores, their spread over seeds, and the Performance Retention Ratio
PRR = score / score(MHA) (Xue & Aletras 2023, the paper's measure of how much of MHA's quality a variant keeps).

    python scripts/compare_attention.py --config configs/compare/wordnet-tiny.yaml

Every run goes through the pipelines' own entry points, `mhe_transformers.pretraining.main(argv)` and
`mhe_transformers.finetuning.main(argv)`, with the recipe of the comparison config plus `--attention_type`,
`--seed` and `--output_dir` (see configs/compare/*.yaml for the format). Checkpoints go to `runs_dir`; the report
(comparison.json, comparison.md, comparison.png) to `output_dir`, written to a temporary folder that then replaces
it. A run whose record exists in `runs_dir/records` with the same arguments and recipe file is not run again, so an
interrupted comparison continues where it stopped.

Scores are aggregated over seeds: for each attention type and task, the mean and standard deviation (n-1) of the
score over every (pretraining seed, fine-tuning seed) run. PRR is the ratio of the mean scores to MHA's; its spread
is the standard deviation of the per-seed ratios (each run divided by MHA's run with the same seeds), its 95%
interval the Student-t interval of their mean (`paired_interval`).

The pretraining metrics (`pretrain.metrics`: held-out loss, accuracy, perplexity, ...) get the same, paired by
pretraining seed, for the metrics in `pretrain.prr_metrics` (default: every reported metric except the unigram
baseline's, which measure the data, not the model). For a lower-is-better metric (`lower_is_better`: a loss or a
perplexity) PRR is MHA's value over the type's, so that PRR < 1 always means worse than MHA. `finetune` may be
left out: a pretraining-only comparison (configs/compare/wordnet-clm-tiny.yaml: causal-LM perplexity).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from ..data.wordnet import PAIRS_DIR, prepare_wordnet
from ..models.mhe.configuration_mhe import ATTENTION_TYPES
from ..utils.run_folder import check_output_dir, claim_output_dir, write_marker
from ..utils.secrets import redact
from .environment import environment, write_report

logger = logging.getLogger(__name__)

EntryPoint = Callable[[list[str]], dict]
REFERENCE_TYPE = "mha"
# Metrics whose smaller values are better, by the last part of their name (eval_loss, test_loss, perplexity): the
# one place that decides which way a PRR divides (`retention`).
LOWER_IS_BETTER = ("loss", "perplexity")
# Pretraining metrics of the unigram (frequency) baseline: properties of the data, reported but given no PRR.
DATA_BASELINE_MARKER = "unigram"
FULL_WORDNET_SYNSETS = 117_659  # WordNet 3.0: noun, verb, adjective and adverb synsets
# The top-level keys of a comparison config (configs/compare/*.yaml).
CONFIG_KEYS = (
    "output_dir", "runs_dir", "attention_types", "seeds", "finetune_seeds", "jobs", "prepare", "pretrain", "finetune"
)


@dataclasses.dataclass
class TaskConfig:
    name: str
    metric: str  # key of the fine-tuning metrics that is the task's score, e.g. eval_accuracy
    config: str | None = None  # a configs/finetune/*.yaml recipe; None: `args` are the whole recipe
    args: dict[str, Any] = dataclasses.field(default_factory=dict)  # overrides of the recipe


@dataclasses.dataclass
class CompareConfig:
    output_dir: str
    tasks: list[TaskConfig]
    pretrain_config: str | None = None  # a configs/pretrain/*.yaml recipe; None: `pretrain_args` are the recipe
    attention_types: list[str] = dataclasses.field(default_factory=lambda: list(ATTENTION_TYPES))
    seeds: list[int] = dataclasses.field(default_factory=lambda: [42])
    finetune_seeds: list[int] | None = None  # None: fine-tune each model once, with its pretraining seed
    pretrain_args: dict[str, Any] = dataclasses.field(default_factory=dict)
    pretrain_metrics: list[str] = dataclasses.field(default_factory=list)  # pretraining metrics to report too
    # Pretraining metrics that get a PRR; None: every reported one except the unigram baseline's.
    prr_metrics: list[str] | None = None
    runs_dir: str | None = None  # default: <output_dir>-runs
    prepare: dict[str, Any] = dataclasses.field(default_factory=dict)  # offline data to prepare when missing
    jobs: int = 1  # models trained at once, each in its own process (`run_models_in_processes`)

    def __post_init__(self):
        self.runs_dir = self.runs_dir or f"{self.output_dir.rstrip('/')}-runs"
        if self.prr_metrics is None:
            self.prr_metrics = [m for m in self.pretrain_metrics if DATA_BASELINE_MARKER not in m]

    def runs(self) -> list[tuple[int, int]]:
        """(pretraining seed, fine-tuning seed) of every run of one attention type."""
        return [(seed, fine_seed) for seed in self.seeds for fine_seed in (self.finetune_seeds or [seed])]


def load_config(path: str | os.PathLike, overrides: dict[str, Any] | None = None) -> CompareConfig:
    """Read and check a comparison config (YAML); `overrides` replace top-level fields (e.g. from the command line).
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
    pretrain = values.pop("pretrain", None) or {}
    finetune = values.pop("finetune", None) or {}
    if not pretrain:
        raise ValueError(f"{path}: `pretrain` needs a recipe (`config`, a configs/pretrain/*.yaml file) and/or `args`.")
    unknown = sorted(set(pretrain) - {"config", "args", "metrics", "prr_metrics"})
    if unknown:
        raise ValueError(
            f"{path}: unknown key(s) in pretrain: {', '.join(unknown)}; allowed: config, args, metrics, prr_metrics."
        )
    if not isinstance(finetune, dict):
        raise ValueError(f"{path}: `finetune` must map task names to {{config, metric, args}}.")
    if not finetune and not pretrain.get("metrics"):
        raise ValueError(f"{path}: without `finetune` tasks, `pretrain.metrics` must name what to compare.")
    tasks = []
    for name, task in finetune.items():
        if not isinstance(task, dict) or "metric" not in task:
            raise ValueError(f"{path}: task {name!r} needs a `metric` (the key of its score, e.g. eval_accuracy).")
        unknown = sorted(set(task) - {"config", "metric", "args"})
        if unknown:
            raise ValueError(f"{path}: unknown key(s) in task {name!r}: {', '.join(unknown)}; allowed: config, metric, args.")
        tasks.append(TaskConfig(name=name, **task))
    config = CompareConfig(
        pretrain_config=pretrain.get("config"),
        pretrain_args=pretrain.get("args") or {},
        pretrain_metrics=pretrain.get("metrics") or [],
        prr_metrics=pretrain.get("prr_metrics"),
        tasks=tasks,
        **values,
    )
    resolve_paths(config)
    check_config(config)
    return config


def resolve_paths(config: CompareConfig) -> None:
    """Replace `{runs_dir}`, `{wordnet_dir}` and `{tokenizer_dir}` in the prepare section and in every run's args,
    so that data prepared for the comparison is named once."""
    unknown = set(config.prepare) - {"wordnet_dir", "max_synsets", "tokenizer_dir", "vocab_size"}
    if unknown:
        raise ValueError(f"Unknown key(s) in prepare: {sorted(unknown)}; allowed: wordnet_dir, max_synsets, "
                         "tokenizer_dir, vocab_size.")
    paths = {"runs_dir": config.runs_dir}
    config.prepare = _substitute(config.prepare, paths)
    if isinstance(config.prepare.get("wordnet_dir"), list):
        config.prepare["wordnet_dir"] = choose_wordnet_dir(config.prepare["wordnet_dir"], config.prepare.get("max_synsets"))
    paths.update({key: config.prepare[key] for key in ("wordnet_dir", "tokenizer_dir") if key in config.prepare})
    config.pretrain_args = _substitute(config.pretrain_args, paths)
    for task in config.tasks:
        task.args = _substitute(task.args, paths)


def choose_wordnet_dir(candidates: list[str], max_synsets: int | None) -> str:
    """The first candidate folder that already holds WordNet data of the wanted size (all of WordNet, or
    `max_synsets` synsets), else the last one, where it will be prepared."""
    if not candidates:
        raise ValueError("prepare.wordnet_dir must not be an empty list.")
    for candidate in candidates:
        counts_path = Path(candidate) / "counts.json"
        if counts_path.is_file() and _wordnet_matches(json.loads(counts_path.read_text(encoding="utf-8")), max_synsets):
            return candidate
    return candidates[-1]


def _substitute(value: Any, paths: dict[str, str]) -> Any:
    if isinstance(value, str):
        for name, path in paths.items():
            value = value.replace("{" + name + "}", str(path))
        return value
    if isinstance(value, list):
        return [_substitute(item, paths) for item in value]
    if isinstance(value, dict):
        return {key: _substitute(item, paths) for key, item in value.items()}
    return value


def check_config(config: CompareConfig) -> None:
    unknown = [t for t in config.attention_types if t not in ATTENTION_TYPES]
    if unknown:
        raise ValueError(f"attention_types: unknown {unknown}; choose from {ATTENTION_TYPES}.")
    if REFERENCE_TYPE not in config.attention_types:
        raise ValueError(f"attention_types must include {REFERENCE_TYPE!r}: PRR is relative to it.")
    if len(set(config.attention_types)) != len(config.attention_types):
        raise ValueError(f"attention_types lists a type twice: {config.attention_types}.")
    if config.finetune_seeds is not None and not config.tasks:
        raise ValueError("finetune_seeds needs `finetune` tasks to fine-tune.")
    missing = [metric for metric in config.prr_metrics if metric not in config.pretrain_metrics]
    if missing:
        raise ValueError(f"pretrain.prr_metrics {missing} are not among pretrain.metrics {config.pretrain_metrics}.")
    clashes = sorted({task.name for task in config.tasks} & {"average", *config.pretrain_metrics})
    if clashes:
        raise ValueError(f"Task name(s) {clashes} clash with 'average' or a pretraining metric: rename the task(s).")
    for name, seeds in (("seeds", config.seeds), ("finetune_seeds", config.finetune_seeds or [0])):
        if not seeds or not all(isinstance(seed, int) for seed in seeds) or len(set(seeds)) != len(seeds):
            raise ValueError(f"{name} must be a non-empty list of distinct integers, got {seeds}.")
    reserved = {"attention_type", "seed", "output_dir", "model_name_or_path"} & (
        set(config.pretrain_args).union(*(task.args for task in config.tasks))
    )
    if reserved:
        raise ValueError(f"{sorted(reserved)} are set by the comparison for each run; remove them from the args.")
    if not isinstance(config.jobs, int) or config.jobs < 1:
        raise ValueError(f"jobs must be a positive integer (models trained at once), got {config.jobs!r}.")
    for recipe in [config.pretrain_config] + [task.config for task in config.tasks]:
        if recipe is not None and not Path(recipe).is_file():
            raise FileNotFoundError(f"Recipe not found: {recipe}")
    model_config = config.pretrain_args.get("model_config")
    if model_config is not None and not Path(model_config).is_file():
        raise FileNotFoundError(f"pretrain.args.model_config not found: {model_config}")


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


# ---------------------------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Pipeline:
    """The two entry points a comparison calls (replaced by fakes in tests)."""

    pretrain: EntryPoint
    finetune: EntryPoint


def default_pipeline() -> Pipeline:
    from ..training import finetune as finetuning
    from ..training import pretrain as pretraining

    return Pipeline(pretrain=pretraining.main, finetune=finetuning.main)


def check_arguments(config: CompareConfig) -> None:
    """Parse every run's arguments as the pipelines will, so that a typo in a task's args fails now, not after an
    hour of pretraining."""
    from ..training import finetune as finetuning
    from ..training import loop
    from ..training import pretrain as pretraining

    run_dir = Path(config.runs_dir) / "check"
    loop.parse_args(pretraining.ARGUMENT_CLASSES, pretrain_argv(config, REFERENCE_TYPE, config.seeds[0], run_dir))
    for task in config.tasks:
        loop.parse_args(finetuning.ARGUMENT_CLASSES, finetune_argv(task, run_dir, config.seeds[0], run_dir))


def pretrain_argv(config: CompareConfig, attention_type: str, seed: int, output_dir: Path) -> list[str]:
    run_args = {"attention_type": attention_type, "seed": seed, "output_dir": str(output_dir)}
    recipe = ["--config", config.pretrain_config] if config.pretrain_config else []
    return recipe + to_argv({**config.pretrain_args, **run_args})


def finetune_argv(task: TaskConfig, model_dir: Path, seed: int, output_dir: Path) -> list[str]:
    run_args = {"model_name_or_path": str(model_dir), "seed": seed, "output_dir": str(output_dir)}
    recipe = ["--config", task.config] if task.config else []
    return recipe + to_argv({**task.args, **run_args})


def run_once(entry_point: EntryPoint, argv: list[str], output_dir: Path, record_path: Path) -> dict:
    """Run `entry_point(argv)` unless `record_path` already holds the record of a run with the same argv and the
    same recipe file contents. Returns the record: {"argv", "recipe", "metrics", "seconds"}, secrets redacted
    (`utils.secrets.redact`: a token in the arguments or the recipe is never written)."""
    recipe = Path(argv[argv.index("--config") + 1]).read_text(encoding="utf-8") if "--config" in argv else None
    if record_path.is_file():
        record = json.loads(record_path.read_text(encoding="utf-8"))
        if record.get("argv") == redact(argv) and record.get("recipe") == redact(recipe):
            logger.info("Reusing %s", record_path)
            return record
    # A folder without a record is an interrupted or outdated run: start it over.
    overwrite = ["--overwrite_output_dir", "true"] if output_dir.exists() else []
    started = time.time()
    metrics = entry_point(argv + overwrite)
    record = redact({"argv": argv, "recipe": recipe, "metrics": metrics, "seconds": time.time() - started})
    record_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = record_path.with_suffix(".tmp")
    tmp_path.write_text(json.dumps(record, indent=1, default=float) + "\n", encoding="utf-8")
    os.replace(tmp_path, record_path)
    return record


def prepare_data(prepare: dict[str, Any]) -> dict | None:
    """Offline data named by the config's `prepare` section, made only when missing:
    `wordnet_dir` (mhe_transformers.wordnet.prepare_wordnet, `max_synsets` of them or all) and `tokenizer_dir` (a
    WordPiece tokenizer of `vocab_size` tokens trained on `<wordnet_dir>/corpus.txt`). Existing data of another
    size is an error, not silently reused. Returns the WordNet counts."""
    counts = None
    wordnet_dir, max_synsets = prepare.get("wordnet_dir"), prepare.get("max_synsets")
    if wordnet_dir is not None:
        counts_path = Path(wordnet_dir) / "counts.json"
        # Data written by an older prepare_wordnet (supersense/ but not today's pair task folder) is prepared again:
        # it is derived from WordNet alone.
        outdated = (Path(wordnet_dir) / "supersense").is_dir() and not (Path(wordnet_dir) / PAIRS_DIR).is_dir()
        if not counts_path.is_file() or outdated:
            logger.info("Preparing the WordNet data in %s", wordnet_dir)
            prepare_wordnet(wordnet_dir, max_synsets=max_synsets)
        counts = json.loads(counts_path.read_text(encoding="utf-8"))
        if not _wordnet_matches(counts, max_synsets):
            raise ValueError(
                f"{wordnet_dir} holds {counts.get('synsets')} WordNet synsets, but prepare.max_synsets is {max_synsets}: "
                "delete the folder or name another prepare.wordnet_dir."
            )
    tokenizer_dir, vocab_size = prepare.get("tokenizer_dir"), prepare.get("vocab_size", 8000)
    if tokenizer_dir is not None:
        tokenizer_file = Path(tokenizer_dir) / "tokenizer.json"
        if not tokenizer_file.is_file():
            if wordnet_dir is None:
                raise ValueError("prepare.tokenizer_dir is trained on <wordnet_dir>/corpus.txt: set prepare.wordnet_dir.")
            from ..training.tokenizer import train_wordpiece_tokenizer

            logger.info("Training the tokenizer in %s", tokenizer_dir)
            train_wordpiece_tokenizer(Path(wordnet_dir) / "corpus.txt", vocab_size, tokenizer_dir)
        # A small corpus can give fewer tokens than asked for, never more.
        size = len(json.loads(tokenizer_file.read_text(encoding="utf-8"))["model"]["vocab"])
        if size > vocab_size:
            raise ValueError(
                f"{tokenizer_dir} holds a {size}-token tokenizer, but prepare.vocab_size is {vocab_size}: "
                "delete the folder or name another prepare.tokenizer_dir."
            )
    return counts


def _wordnet_matches(counts: dict, max_synsets: int | None) -> bool:
    synsets = counts.get("synsets", 0)
    return synsets == max_synsets if max_synsets is not None else synsets >= FULL_WORDNET_SYNSETS


def parameter_counts(model_dir: Path) -> dict[str, int]:
    """Total and attention-only parameters of the encoder saved in `model_dir` (shapes only, no weights read)."""
    from transformers import AutoConfig, AutoModel

    from ..models.mhe.parameter_counts import count_config_parameters

    return count_config_parameters(AutoModel.from_config, AutoConfig.from_pretrained(model_dir), add_pooling_layer=False)


def pretrained_dir(config: CompareConfig, attention_type: str, seed: int) -> Path:
    """Where the comparison saves the pretrained model of (attention type, seed)."""
    return Path(config.runs_dir) / f"{attention_type}-seed{seed}" / "pretrain"


def run_model(
    config: CompareConfig, pipeline: Pipeline, attention_type: str, seed: int, fine_seed: int
) -> tuple[dict, dict[str, dict]]:
    """Pretrain one (attention type, seed) and fine-tune it with `fine_seed` on every task, each step skipped when
    its record shows it done. Returns the pretraining record and the fine-tuning records by task name."""
    runs_dir, model_dir = Path(config.runs_dir), pretrained_dir(config, attention_type, seed)
    pretrain = run_once(
        pipeline.pretrain,
        pretrain_argv(config, attention_type, seed, model_dir),
        model_dir,
        runs_dir / "records" / f"{attention_type}-seed{seed}-pretrain.json",
    )
    finetunes = {}
    for task in config.tasks:
        task_dir = model_dir.parent / f"{task.name}-seed{fine_seed}"
        finetunes[task.name] = run_once(
            pipeline.finetune,
            finetune_argv(task, model_dir, fine_seed, task_dir),
            task_dir,
            runs_dir / "records" / f"{attention_type}-seed{seed}-{task.name}-seed{fine_seed}.json",
        )
    return pretrain, finetunes


def run_models_in_processes(config: CompareConfig, pipeline: Pipeline) -> None:
    """Run the comparison's models `config.jobs` at a time, each in its own process with an equal share of the CPU
    threads (small models use several cores poorly, so separate runs side by side finish sooner). A process owns a
    whole model (its pretraining, then every fine-tuning), so no two write the same folder; they save their records,
    and the first failure cancels the models not yet started and is raised."""
    import concurrent.futures
    import multiprocessing

    threads = max(1, (os.cpu_count() or 1) // config.jobs)
    # spawn, not fork: a fresh interpreter per process, as torch's thread pools are not fork-safe.
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(config.jobs, mp_context=context) as pool:
        futures = [
            pool.submit(_run_model_in_process, config, pipeline, attention_type, seed, threads)
            for seed in config.seeds
            for attention_type in config.attention_types
        ]
        try:
            for future in concurrent.futures.as_completed(futures):
                future.result()
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def _run_model_in_process(config: CompareConfig, pipeline: Pipeline, attention_type: str, seed: int, threads: int):
    import torch

    torch.set_num_threads(threads)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    for fine_seed in config.finetune_seeds or [seed]:
        run_model(config, pipeline, attention_type, seed, fine_seed)


def run_comparison(config: CompareConfig, pipeline: Pipeline | None = None) -> dict:
    """Pretrain and fine-tune every (attention type, seed), then aggregate; returns the report as a dict."""
    check_arguments(config)
    pipeline = pipeline or default_pipeline()
    data_counts = prepare_data(config.prepare)
    runs, parameters = [], {}
    if config.jobs > 1:
        run_models_in_processes(config, pipeline)  # saves every record; the pass below reuses them
    # Seed-major: after the first seed, a full comparison of every type exists.
    for seed, fine_seed in config.runs():
        for attention_type in config.attention_types:
            pretrain, finetunes = run_model(config, pipeline, attention_type, seed, fine_seed)
            parameters.setdefault(attention_type, parameter_counts(pretrained_dir(config, attention_type, seed)))
            # Pretraining time is counted once per model, with its first fine-tuning seed.
            first_fine_seed = fine_seed == (config.finetune_seeds or [seed])[0]
            scores, seconds = {}, pretrain["seconds"] if first_fine_seed else 0.0
            for task in config.tasks:
                metrics, seconds = finetunes[task.name]["metrics"], seconds + finetunes[task.name]["seconds"]
                if task.metric not in metrics:
                    raise KeyError(f"Task {task.name!r}: metric {task.metric!r} not among the results {sorted(metrics)}.")
                scores[task.name] = float(metrics[task.metric])
            runs.append(
                {
                    "attention_type": attention_type,
                    "seed": seed,
                    "finetune_seed": fine_seed,
                    "scores": scores,
                    "pretrain": {name: pretrain["metrics"].get(name) for name in config.pretrain_metrics},
                    "seconds": seconds,
                }
            )
    return {
        "config": _jsonable(dataclasses.asdict(config)),
        "environment": environment(),
        "data": data_counts,
        "parameters": parameters,
        "runs": runs,
        "objective": pretrain_objective(config),
        "summary": summarize(runs, config),
        "differences": differences(runs, config),
    }


def _mean_std(values: list[float]) -> dict[str, Any]:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "n": len(values),
    }


def paired_interval(values: Sequence[float], confidence: float = 0.95) -> dict[str, Any]:
    """Mean of paired per-seed values (e.g. PRRs: each run's score over MHA's run with the same seeds) and its
    Student-t confidence interval, `mean ± t_{n-1} * std / sqrt(n)`. Seeds are the only source of variation the
    runs share, so pairing them removes what the two types have in common (data order, masks, fine-tuning seed).
    With one value the interval is undefined (NaN)."""
    from scipy import stats

    n = len(values)
    if n == 0:
        raise ValueError("paired_interval needs at least one value.")
    mean = statistics.fmean(values)
    if n == 1:
        return {"mean": mean, "low": math.nan, "high": math.nan, "n": 1}
    half = stats.t.ppf((1 + confidence) / 2, n - 1) * statistics.stdev(values) / math.sqrt(n)
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": n}


def significant(interval: dict[str, Any], null: float = 1.0) -> bool:
    """Whether the interval excludes `null` (1 for a PRR, 0 for a difference); False when undefined."""
    return not (math.isnan(interval["low"]) or interval["low"] <= null <= interval["high"])


def lower_is_better(metric: str) -> bool:
    """Whether smaller values of `metric` are better: a loss or a perplexity (the last part of its name: eval_loss,
    test_loss, perplexity), not an accuracy or an F1."""
    return metric.rsplit("_", 1)[-1] in LOWER_IS_BETTER


def retention(value: float, reference: float, metric: str) -> float:
    """The Performance Retention Ratio of `value` against MHA's `reference`: value / reference, or reference / value
    for a lower-is-better metric, so that PRR < 1 always means worse than MHA. NaN when the divisor is 0."""
    numerator, denominator = (reference, value) if lower_is_better(metric) else (value, reference)
    return numerator / denominator if denominator else math.nan


def _with_prr(values: dict, reference: dict, metric: str) -> dict[str, Any]:
    """Mean and std of `values` (run key -> value), and their PRR against MHA's `reference` (run key -> value):
    the ratio of the means, the std of the per-key ratios, and the 95% t-interval of their mean; `prr_significant`:
    the interval excludes 1 (the type differs from MHA)."""
    stats = _mean_std(list(values.values()))
    paired = [retention(value, reference[key], metric) for key, value in values.items() if key in reference]
    paired = [ratio for ratio in paired if not math.isnan(ratio)]
    stats["prr"] = retention(stats["mean"], statistics.fmean(reference.values()), metric) if reference else math.nan
    stats["prr_std"] = statistics.stdev(paired) if len(paired) > 1 else 0.0
    stats["prr_ci"] = paired_interval(paired) if paired else None
    stats["prr_significant"] = significant(stats["prr_ci"]) if paired else False
    return stats


def _task_scores(runs: list[dict], attention_type: str, name: str) -> dict:
    """(pretraining seed, fine-tuning seed) -> score of one task (or "average") for one attention type."""
    return {
        (run["seed"], run["finetune_seed"]): run["scores"][name] for run in runs if run["attention_type"] == attention_type
    }


def _pretrain_values(runs: list[dict], attention_type: str, metric: str) -> dict:
    """Pretraining seed -> value of one pretraining metric for one attention type (one model per seed, however
    many times it was fine-tuned)."""
    return {
        run["seed"]: run["pretrain"][metric]
        for run in runs
        if run["attention_type"] == attention_type and run["pretrain"].get(metric) is not None
    }


def summarize(runs: list[dict], config: CompareConfig) -> dict:
    """Per attention type: each task's and the average score (mean, std over seeds) with PRR and its interval, and
    each reported pretraining metric (mean, std over pretraining seeds), with PRR for `config.prr_metrics`."""
    task_names = [task.name for task in config.tasks]
    if task_names:
        for run in runs:
            run["scores"]["average"] = statistics.fmean(run["scores"][name] for name in task_names)
        task_names.append("average")
    summary = {}
    for attention_type in config.attention_types:
        entry = {"tasks": {}, "pretrain": {}}
        for name in task_names:
            reference = _task_scores(runs, REFERENCE_TYPE, name)
            # The task's metric decides the direction (a score named like a loss is lower-is-better).
            metric = next((task.metric for task in config.tasks if task.name == name), name)
            entry["tasks"][name] = _with_prr(_task_scores(runs, attention_type, name), reference, metric)
        for metric in config.pretrain_metrics:
            values = _pretrain_values(runs, attention_type, metric)
            if not values:
                entry["pretrain"][metric] = None
            elif metric in config.prr_metrics:
                entry["pretrain"][metric] = _with_prr(values, _pretrain_values(runs, REFERENCE_TYPE, metric), metric)
            else:
                entry["pretrain"][metric] = _mean_std(list(values.values()))
        summary[attention_type] = entry
    return summary


def differences(runs: list[dict], config: CompareConfig, types: Sequence[str] = ("mhe_mul", "mhe_add")) -> dict:
    """For each of `types` against every other type: the paired difference (this type's run minus the other's run
    with the same seeds) of each task's score and of each pretraining metric in `config.prr_metrics` (paired by
    pretraining seed), with its 95% interval and whether it excludes 0."""
    names = [task.name for task in config.tasks] + ["average"] * bool(config.tasks)
    result = {}
    for first in [t for t in types if t in config.attention_types]:
        for second in [t for t in config.attention_types if t != first]:
            entry = {}
            pairs = [(name, _task_scores(runs, first, name), _task_scores(runs, second, name)) for name in names]
            pairs += [
                (metric, _pretrain_values(runs, first, metric), _pretrain_values(runs, second, metric))
                for metric in config.prr_metrics
            ]
            for name, own, other in pairs:
                paired = [value - other[key] for key, value in own.items() if key in other]
                if paired:
                    interval = paired_interval(paired)
                    entry[name] = {**interval, "significant": significant(interval, null=0.0)}
            result[f"{first} - {second}"] = entry
    return result


def pretrain_objective(config: CompareConfig) -> str:
    """'mlm' or 'clm': the pretraining objective of the comparison's runs (args, else the recipe file)."""
    objective = config.pretrain_args.get("objective")
    if objective is None and config.pretrain_config:
        objective = (yaml.safe_load(Path(config.pretrain_config).read_text(encoding="utf-8")) or {}).get("objective")
    return objective or "mlm"


def _jsonable(values: Any) -> Any:
    return json.loads(json.dumps(values, default=str))


# ---------------------------------------------------------------------------------------------------------------
# Reports
# ---------------------------------------------------------------------------------------------------------------


def _cell(stats: dict | None, digits: int = 4) -> str:
    if stats is None:
        return "-"
    return f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f}" if stats["n"] > 1 else f"{stats['mean']:.{digits}f}"


def metric_label(metric: str, objective: str = "mlm") -> str:
    """A pretraining metric's column name: eval_accuracy -> 'MLM accuracy', perplexity -> 'CLM perplexity'."""
    name = metric.removeprefix("eval_").replace("_", " ")
    return f"{objective.upper()} {name}"


def markdown_report(report: dict) -> str:
    config, summary, parameters = report["config"], report["summary"], report["parameters"]
    objective = report.get("objective", "mlm")
    task_names = [task["name"] for task in config["tasks"]]
    pretrain_metrics, prr_metrics = config["pretrain_metrics"], config["prr_metrics"]
    seeds_text = f"seeds {config['seeds']}" + (f", fine-tuning seeds {config['finetune_seeds'] or 'same'}" if task_names else "")
    lines = [
        "# Attention comparison",
        "",
        f"`{report['environment']['command']}` on {report['environment']['cpu']}, torch {report['environment']['torch']}, "
        f"{report['environment']['date']}. Values: mean ± std over {len(config['seeds'])} pretraining seed(s) "
        f"({seeds_text}). PRR = mean / MHA's mean (MHA's mean / the type's mean for a loss or perplexity, so that "
        "PRR < 1 always means worse than MHA), with the 95% t-interval of the mean per-seed PRR (each run against "
        "MHA's run with the same seeds; * the interval excludes 1). "
        f"Compute: {sum(run['seconds'] for run in report['runs']) / 60:.0f} minutes of "
        + ("pretraining and fine-tuning." if task_names else "pretraining."),
        "",
    ]
    header = ["attention", "parameters", "attention parameters"]
    header += [metric_label(metric, objective) for metric in pretrain_metrics]
    header += [f"{metric_label(metric, objective)} PRR [95% CI]" for metric in prr_metrics]
    lines += ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for attention_type, entry in summary.items():
        counts = parameters[attention_type]
        cells = [attention_type, f"{counts['total']:,}", f"{counts['attention']:,}"]
        cells += [_cell(entry["pretrain"][metric]) for metric in pretrain_metrics]
        cells += [_prr_cell(entry["pretrain"][metric]) if entry["pretrain"][metric] else "-" for metric in prr_metrics]
        lines.append("| " + " | ".join(cells) + " |")
    if task_names:
        metric_names = {task["name"]: task["metric"] for task in config["tasks"]}
        header = ["attention"] + [f"{name} ({metric_names[name]})" for name in task_names] + ["average", "PRR"]
        lines += ["", "Fine-tuning:", "", "| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
        for attention_type, entry in summary.items():
            average = entry["tasks"]["average"]
            cells = [attention_type] + [_cell(entry["tasks"][name]) for name in task_names]
            lines.append("| " + " | ".join(cells + [_cell(average), _prr_cell(average)]) + " |")
        lines += ["", "PRR per task, with the 95% t-interval of the mean per-seed PRR (* the interval excludes 1):", "",
                  "| attention | " + " | ".join(task_names) + " |", "|---|" + "---:|" * len(task_names)]
        for attention_type, entry in summary.items():
            lines.append(f"| {attention_type} | " + " | ".join(_prr_cell(entry["tasks"][n]) for n in task_names) + " |")
    lines += ["", *significance_statements(report)]
    return "\n".join(lines) + "\n"


def _prr_cell(stats: dict) -> str:
    interval = stats.get("prr_ci")
    if not interval or math.isnan(interval["low"]):
        return f"{stats['prr']:.3f}"
    return f"{stats['prr']:.3f} [{interval['low']:.3f}, {interval['high']:.3f}]" + ("*" if stats["prr_significant"] else "")


def significance_statements(report: dict) -> list[str]:
    """Plain sentences: which PRRs of the pretraining metrics differ from 1, and which paired differences (95%
    t-interval over seeds) are significant, per task and pretraining metric."""
    config, objective = report["config"], report.get("objective", "mlm")
    lines = []
    if config["prr_metrics"]:
        lines += ["PRR of the pretraining metrics against MHA (95% t-interval over paired seeds):", ""]
        for attention_type, entry in report["summary"].items():
            for metric in config["prr_metrics"]:
                stats = entry["pretrain"].get(metric)
                if attention_type == REFERENCE_TYPE or not stats or not stats.get("prr_ci"):
                    continue
                interval = stats["prr_ci"]
                if math.isnan(interval["low"]):
                    verdict = "no interval with one seed"
                elif stats["prr_significant"]:
                    verdict = "significantly " + ("worse" if interval["high"] < 1 else "better") + " than MHA"
                else:
                    verdict = "not distinguishable from MHA"
                lines.append(
                    f"- {attention_type}, {metric_label(metric, objective)}: PRR {interval['mean']:.3f} "
                    f"[{interval['low']:.3f}, {interval['high']:.3f}], {verdict}"
                )
        lines.append("")
    lines += ["Paired differences over seeds (95% t-interval; for a loss or perplexity, lower is better); "
              "significant when the interval excludes 0:", ""]
    for pair, tasks in report.get("differences", {}).items():
        for task, interval in tasks.items():
            if math.isnan(interval["low"]):
                verdict = "no interval with one seed"
            else:
                verdict = "significant" if interval["significant"] else "not significant"
            name = metric_label(task, objective) if task in config["pretrain_metrics"] else task
            lines.append(
                f"- {pair}, {name}: {interval['mean']:+.4f} [{interval['low']:+.4f}, {interval['high']:+.4f}], {verdict}"
            )
    return lines


def _headline(report: dict) -> tuple[str, dict]:
    """What the plot shows: the average fine-tuning score, or without tasks the first pretraining metric with a PRR."""
    summary, config = report["summary"], report["config"]
    if config["tasks"]:
        return "average score", {t: entry["tasks"]["average"] for t, entry in summary.items()}
    metric = config["prr_metrics"][0]
    return metric_label(metric, report.get("objective", "mlm")), {t: entry["pretrain"][metric] for t, entry in summary.items()}


def plot(report: dict, path: Path) -> None:
    """The headline value per type (error bars: std over seeds) and its PRR (error bars: the 95% interval) against
    attention parameters."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parameters = report["parameters"]
    label, stats = _headline(report)
    types = [t for t, value in stats.items() if value]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.bar(types, [stats[t]["mean"] for t in types], yerr=[stats[t]["std"] for t in types], capsize=4, color="tab:blue")
    left.set_ylabel(label)
    left.set_title(f"{label} (mean ± std over seeds)")
    intervals = [stats[t].get("prr_ci") or {} for t in types]
    errors = [
        [stats[t]["prr"] - ci["low"], ci["high"] - stats[t]["prr"]] if ci and not math.isnan(ci["low"]) else [0.0, 0.0]
        for t, ci in zip(types, intervals)
    ]
    right.errorbar(
        [parameters[t]["attention"] for t in types],
        [stats[t]["prr"] for t in types],
        yerr=[[max(e[0], 0.0) for e in errors], [max(e[1], 0.0) for e in errors]],
        fmt="o",
        capsize=4,
    )
    for t in types:
        right.annotate(t, (parameters[t]["attention"], stats[t]["prr"]), textcoords="offset points", xytext=(5, 5))
    right.axhline(1.0, color="grey", linewidth=0.8)
    right.set_xlabel("attention parameters")
    right.set_ylabel(f"PRR ({label} vs MHA)")
    right.set_title("Performance Retention Ratio (95% interval)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(report: dict, output_dir: str | os.PathLike) -> Path:
    return write_report(output_dir, "comparison", report, markdown_report(report), plot)


def main(argv: Sequence[str] | None = None, pipeline: Pipeline | None = None) -> dict:
    import argparse

    parser = argparse.ArgumentParser(description="Compare attention types: pretrain, fine-tune, PRR.")
    parser.add_argument("--config", required=True, help="configs/compare/*.yaml")
    parser.add_argument("--output_dir", help="override the config's output_dir")
    parser.add_argument("--runs_dir", help="override the config's runs_dir")
    parser.add_argument("--seeds", type=int, nargs="+", help="override the config's seeds")
    parser.add_argument("--attention_types", nargs="+", help="override the config's attention_types")
    parser.add_argument("--jobs", type=int, help="override the config's jobs (models trained at once)")
    args = parser.parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    overrides = {key: value for key, value in vars(args).items() if key != "config"}
    config = load_config(args.config, overrides)
    # A rerun continues the comparison (finished runs are reused), so its own report may be replaced; anything else
    # in output_dir is refused now rather than after hours of training.
    check_output_dir(config.output_dir, overwrite=True, inputs=[args.config])
    check_output_dir(config.runs_dir, overwrite=True, inputs=[args.config])
    # Held to the end: a second comparison into the same folders is refused, naming this one.
    with claim_output_dir(config.output_dir, overwrite=True, inputs=[args.config]), claim_output_dir(
        config.runs_dir, overwrite=True, inputs=[args.config]
    ) as runs_dir:
        runs_dir.mkdir(parents=True, exist_ok=True)
        write_marker(runs_dir)  # the per-model folders inside are the pipelines' own run folders
        report = run_comparison(config, pipeline)
        output_dir = write_outputs(report, config.output_dir)
    print(markdown_report(report))
    print(f"Wrote {output_dir}/comparison.json, comparison.md and comparison.png")
    return report


__all__ = ["CompareConfig", "TaskConfig", "Pipeline", "load_config", "run_comparison", "summarize", "lower_is_better", "retention", "main"]
