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
is the standard deviation of the per-seed ratios (each run divided by MHA's run with the same seeds).
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

from .configuration_mhe import ATTENTION_TYPES
from .fileio import check_output_dir, environment, write_report

logger = logging.getLogger(__name__)

EntryPoint = Callable[[list[str]], dict]
REFERENCE_TYPE = "mha"
FULL_WORDNET_SYNSETS = 117_659  # WordNet 3.0: noun, verb, adjective and adverb synsets
# The top-level keys of a comparison config (configs/compare/*.yaml).
CONFIG_KEYS = ("output_dir", "runs_dir", "attention_types", "seeds", "finetune_seeds", "prepare", "pretrain", "finetune")


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
    runs_dir: str | None = None  # default: <output_dir>-runs
    prepare: dict[str, Any] = dataclasses.field(default_factory=dict)  # offline data to prepare when missing

    def __post_init__(self):
        self.runs_dir = self.runs_dir or f"{self.output_dir.rstrip('/')}-runs"

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
    unknown = sorted(set(pretrain) - {"config", "args", "metrics"})
    if unknown:
        raise ValueError(f"{path}: unknown key(s) in pretrain: {', '.join(unknown)}; allowed: config, args, metrics.")
    if not finetune:
        raise ValueError(f"{path}: `finetune` must map task names to {{config, metric, args}}.")
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
    for name, seeds in (("seeds", config.seeds), ("finetune_seeds", config.finetune_seeds or [0])):
        if not seeds or not all(isinstance(seed, int) for seed in seeds) or len(set(seeds)) != len(seeds):
            raise ValueError(f"{name} must be a non-empty list of distinct integers, got {seeds}.")
    reserved = {"attention_type", "seed", "output_dir", "model_name_or_path"} & (
        set(config.pretrain_args).union(*(task.args for task in config.tasks))
    )
    if reserved:
        raise ValueError(f"{sorted(reserved)} are set by the comparison for each run; remove them from the args.")
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
    from . import finetuning, pretraining

    return Pipeline(pretrain=pretraining.main, finetune=finetuning.main)


def check_arguments(config: CompareConfig) -> None:
    """Parse every run's arguments as the pipelines will, so that a typo in a task's args fails now, not after an
    hour of pretraining."""
    from . import finetuning, pretraining, training_utils

    run_dir = Path(config.runs_dir) / "check"
    training_utils.parse_args(pretraining.ARGUMENT_CLASSES, pretrain_argv(config, REFERENCE_TYPE, config.seeds[0], run_dir))
    for task in config.tasks:
        training_utils.parse_args(finetuning.ARGUMENT_CLASSES, finetune_argv(task, run_dir, config.seeds[0], run_dir))


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
    same recipe file contents. Returns the record: {"argv", "recipe", "metrics", "seconds"}."""
    recipe = Path(argv[argv.index("--config") + 1]).read_text(encoding="utf-8") if "--config" in argv else None
    if record_path.is_file():
        record = json.loads(record_path.read_text(encoding="utf-8"))
        if record.get("argv") == argv and record.get("recipe") == recipe:
            logger.info("Reusing %s", record_path)
            return record
    # A folder without a record is an interrupted or outdated run: start it over.
    overwrite = ["--overwrite_output_dir", "true"] if output_dir.exists() else []
    started = time.time()
    metrics = entry_point(argv + overwrite)
    record = {"argv": argv, "recipe": recipe, "metrics": metrics, "seconds": time.time() - started}
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
        # Data written by prepare_wordnet before the gloss-pair task existed (supersense/ but no gloss-pairs/) is
        # prepared again: it is derived from WordNet alone.
        outdated = (Path(wordnet_dir) / "supersense").is_dir() and not (Path(wordnet_dir) / "gloss-pairs").is_dir()
        if not counts_path.is_file() or outdated:
            from .wordnet import prepare_wordnet

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
            from .tokenization import train_wordpiece_tokenizer

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

    from .counting import count_config_parameters

    return count_config_parameters(AutoModel.from_config, AutoConfig.from_pretrained(model_dir), add_pooling_layer=False)


def run_comparison(config: CompareConfig, pipeline: Pipeline | None = None) -> dict:
    """Pretrain and fine-tune every (attention type, seed), then aggregate; returns the report as a dict."""
    check_arguments(config)
    pipeline = pipeline or default_pipeline()
    data_counts = prepare_data(config.prepare)
    runs_dir = Path(config.runs_dir)
    runs, parameters = [], {}
    # Seed-major: after the first seed, a full comparison of every type exists.
    for seed, fine_seed in config.runs():
        for attention_type in config.attention_types:
            model_dir = runs_dir / f"{attention_type}-seed{seed}" / "pretrain"
            pretrain = run_once(
                pipeline.pretrain,
                pretrain_argv(config, attention_type, seed, model_dir),
                model_dir,
                runs_dir / "records" / f"{attention_type}-seed{seed}-pretrain.json",
            )
            parameters.setdefault(attention_type, parameter_counts(model_dir))
            # Pretraining time is counted once per model, with its first fine-tuning seed.
            first_fine_seed = fine_seed == (config.finetune_seeds or [seed])[0]
            scores, seconds = {}, pretrain["seconds"] if first_fine_seed else 0.0
            for task in config.tasks:
                task_dir = model_dir.parent / f"{task.name}-seed{fine_seed}"
                finetune = run_once(
                    pipeline.finetune,
                    finetune_argv(task, model_dir, fine_seed, task_dir),
                    task_dir,
                    runs_dir / "records" / f"{attention_type}-seed{seed}-{task.name}-seed{fine_seed}.json",
                )
                metrics, seconds = finetune["metrics"], seconds + finetune["seconds"]
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


def summarize(runs: list[dict], config: CompareConfig) -> dict:
    """Per attention type: each task's and the average score (mean, std over seeds), PRR and its per-seed spread,
    and the mean of each reported pretraining metric."""
    task_names = [task.name for task in config.tasks]
    for run in runs:
        run["scores"]["average"] = statistics.fmean(run["scores"][name] for name in task_names)
    reference = {(run["seed"], run["finetune_seed"]): run for run in runs if run["attention_type"] == REFERENCE_TYPE}
    summary = {}
    for attention_type in config.attention_types:
        own = [run for run in runs if run["attention_type"] == attention_type]
        entry = {"tasks": {}, "pretrain": {}}
        for name in task_names + ["average"]:
            scores = _mean_std([run["scores"][name] for run in own])
            reference_mean = statistics.fmean(ref["scores"][name] for ref in reference.values())
            paired = [
                run["scores"][name] / reference[key]["scores"][name]
                for run in own
                if (key := (run["seed"], run["finetune_seed"])) in reference and reference[key]["scores"][name]
            ]
            scores["prr"] = scores["mean"] / reference_mean if reference_mean else math.nan
            scores["prr_std"] = statistics.stdev(paired) if len(paired) > 1 else 0.0
            # 95% interval of the mean per-seed PRR; `significant`: it excludes 1 (the type differs from MHA).
            scores["prr_ci"] = paired_interval(paired) if paired else None
            scores["prr_significant"] = significant(scores["prr_ci"]) if paired else False
            entry["tasks"][name] = scores
        for metric in config.pretrain_metrics:
            values = [run["pretrain"][metric] for run in own if run["pretrain"].get(metric) is not None]
            entry["pretrain"][metric] = _mean_std(values) if values else None
        summary[attention_type] = entry
    return summary


def differences(runs: list[dict], config: CompareConfig, types: Sequence[str] = ("mhe_mul", "mhe_add")) -> dict:
    """For each of `types` against every other type: the paired difference of scores (this type's run minus the
    other's run with the same seeds) per task, with its 95% interval and whether it excludes 0."""
    by_key = {(run["attention_type"], run["seed"], run["finetune_seed"]): run for run in runs}
    result = {}
    for first in [t for t in types if t in config.attention_types]:
        for second in [t for t in config.attention_types if t != first]:
            entry = {}
            for name in list(runs[0]["scores"]) if runs else []:
                paired = [
                    run["scores"][name] - by_key[(second, run["seed"], run["finetune_seed"])]["scores"][name]
                    for run in runs
                    if run["attention_type"] == first and (second, run["seed"], run["finetune_seed"]) in by_key
                ]
                if paired:
                    interval = paired_interval(paired)
                    entry[name] = {**interval, "significant": significant(interval, null=0.0)}
            result[f"{first} - {second}"] = entry
    return result


def _jsonable(values: Any) -> Any:
    return json.loads(json.dumps(values, default=str))


# ---------------------------------------------------------------------------------------------------------------
# Reports
# ---------------------------------------------------------------------------------------------------------------


def _cell(stats: dict | None, digits: int = 4) -> str:
    if stats is None:
        return "-"
    return f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f}" if stats["n"] > 1 else f"{stats['mean']:.{digits}f}"


def markdown_report(report: dict) -> str:
    config, summary, parameters = report["config"], report["summary"], report["parameters"]
    task_names = [task["name"] for task in config["tasks"]]
    runs_per_type = len(report["runs"]) // len(config["attention_types"])
    lines = [
        "# Attention comparison",
        "",
        f"`{report['environment']['command']}` on {report['environment']['cpu']}, torch {report['environment']['torch']}, "
        f"{report['environment']['date']}. Scores: mean ± std over {runs_per_type} run(s) per type "
        f"(seeds {config['seeds']}, fine-tuning seeds {config['finetune_seeds'] or 'same'}); "
        "PRR = mean score / MHA's mean score (± std of the per-seed ratios). "
        f"Compute: {sum(run['seconds'] for run in report['runs']) / 60:.0f} minutes of pretraining and fine-tuning.",
        "",
    ]
    metric_names = {task["name"]: task["metric"] for task in config["tasks"]}
    header = ["attention", "parameters", "attention parameters"]
    header += [f"pretrain {metric}" for metric in config["pretrain_metrics"]]
    header += [f"{name} ({metric_names[name]})" for name in task_names] + ["average", "PRR"]
    lines += ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for attention_type, entry in summary.items():
        counts = parameters[attention_type]
        average = entry["tasks"]["average"]
        cells = [attention_type, f"{counts['total']:,}", f"{counts['attention']:,}"]
        cells += [_cell(entry["pretrain"][metric]) for metric in config["pretrain_metrics"]]
        cells += [_cell(entry["tasks"][name]) for name in task_names]
        cells += [_cell(average), _prr_cell(average)]
        lines.append("| " + " | ".join(cells) + " |")
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
    """Plain sentences: which paired differences (95% t-interval over seeds) are significant, per task."""
    lines = ["Paired differences of scores over seeds (95% t-interval); significant when the interval excludes 0:", ""]
    for pair, tasks in report.get("differences", {}).items():
        for task, interval in tasks.items():
            if math.isnan(interval["low"]):
                verdict = "no interval with one seed"
            else:
                verdict = "significant" if interval["significant"] else "not significant"
            lines.append(
                f"- {pair}, {task}: {interval['mean']:+.4f} [{interval['low']:+.4f}, {interval['high']:+.4f}], {verdict}"
            )
    return lines


def plot(report: dict, path: Path) -> None:
    """Average score per type (error bars: std over seeds) and PRR against attention parameters."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary, parameters = report["summary"], report["parameters"]
    types = list(summary)
    averages = [summary[t]["tasks"]["average"] for t in types]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.bar(types, [a["mean"] for a in averages], yerr=[a["std"] for a in averages], capsize=4, color="tab:blue")
    left.set_ylabel("average score")
    left.set_title("Fine-tuning score (mean ± std over seeds)")
    right.errorbar(
        [parameters[t]["attention"] for t in types],
        [a["prr"] for a in averages],
        yerr=[a["prr_std"] for a in averages],
        fmt="o",
        capsize=4,
    )
    for t, a in zip(types, averages):
        right.annotate(t, (parameters[t]["attention"], a["prr"]), textcoords="offset points", xytext=(5, 5))
    right.axhline(1.0, color="grey", linewidth=0.8)
    right.set_xlabel("attention parameters")
    right.set_ylabel("PRR (score / MHA)")
    right.set_title("Performance Retention Ratio")
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
    args = parser.parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    overrides = {key: value for key, value in vars(args).items() if key != "config"}
    config = load_config(args.config, overrides)
    # A rerun continues the comparison (finished runs are reused), so its own report may be replaced; anything else
    # in output_dir is refused now rather than after hours of training.
    check_output_dir(config.output_dir, overwrite=True, inputs=[args.config])
    report = run_comparison(config, pipeline)
    output_dir = write_outputs(report, config.output_dir)
    print(markdown_report(report))
    print(f"Wrote {output_dir}/comparison.json, comparison.md and comparison.png")
    return report


__all__ = ["CompareConfig", "TaskConfig", "Pipeline", "load_config", "run_comparison", "summarize", "main"]
