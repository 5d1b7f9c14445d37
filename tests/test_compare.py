"""The attention comparison's orchestration, aggregation and reports, with the pipelines' entry points faked (the
pipelines have their own tests); the shipped configs are checked against the real argument parsers."""

import json
import math
import os
from pathlib import Path

import pytest
import yaml
from conftest import REPO_ROOT

from mhe_transformers import ATTENTION_TYPES, MHEConfig
from mhe_transformers.experiments.compare import (
    Pipeline,
    check_arguments,
    choose_wordnet_dir,
    finetune_argv,
    load_config,
    lower_is_better,
    main,
    paired_interval,
    prepare_data,
    pretrain_argv,
    retention,
    run_comparison,
    to_argv,
)
from mhe_transformers.training.finetune import ARGUMENT_CLASSES as FINETUNE_ARGUMENTS
from mhe_transformers.training.loop import parse_args, parse_config_overrides
from mhe_transformers.training.pretrain import ARGUMENT_CLASSES as PRETRAIN_ARGUMENTS
from mhe_transformers.utils.cli import UsageError
from mhe_transformers.utils.run_folder import OUTPUT_MARKER

# Fine-tuning score each fake model gets, before a per-seed offset.
SCORES = {"mha": 0.80, "mhe_add": 0.76, "mhe_mul": 0.78, "mqa": 0.79, "gqa": 0.795, "sha": 0.60}


def option(argv, name):
    return argv[argv.index(f"--{name}") + 1]


class FakePipeline(Pipeline):
    """Records its calls; pretraining saves a tiny config (all the comparison reads from a checkpoint)."""

    def __init__(self):
        self.calls = []
        super().__init__(pretrain=self.fake_pretrain, finetune=self.fake_finetune)

    def fake_pretrain(self, argv):
        attention_type, seed = option(argv, "attention_type"), int(option(argv, "seed"))
        self.calls.append(("pretrain", attention_type, seed))
        config = MHEConfig(
            vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
            attention_type=attention_type, num_key_value_heads=2 if attention_type == "gqa" else None,
        )
        config.save_pretrained(option(argv, "output_dir"))
        return {"eval_accuracy": 0.3 + seed / 1000, "perplexity": 50.0}

    def fake_finetune(self, argv):
        model_dir, seed = Path(option(argv, "model_name_or_path")), int(option(argv, "seed"))
        attention_type = json.loads((model_dir / "config.json").read_text())["attention_type"]
        self.calls.append(("finetune", attention_type, seed))
        offset = {"rte": 0.0, "sst2": 0.05}[option(argv, "task_name")]
        return {"eval_accuracy": SCORES[attention_type] + offset + (seed - 42) / 100, "eval_loss": 1.0}


def write_config(tmp_path, **changes):
    values = {
        "output_dir": str(tmp_path / "report"),
        "runs_dir": str(tmp_path / "runs"),
        "attention_types": list(ATTENTION_TYPES),
        "seeds": [42, 43],
        "pretrain": {
            "config": "configs/pretrain/wordnet-tiny.yaml",
            "args": {"model_config": "configs/model/tiny.json", "max_steps": 2},
            "metrics": ["eval_accuracy"],
        },
        "finetune": {
            task: {"config": "configs/finetune/wordnet-supersense.yaml", "metric": "eval_accuracy",
                   "args": {"task_name": task, "max_train_samples": 8}}
            for task in ("rte", "sst2")
        },
        **changes,
    }
    path = tmp_path / "compare.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def test_comparison_reports_scores_spread_and_prr(tmp_path):
    pipeline = FakePipeline()
    report = main(["--config", str(write_config(tmp_path))], pipeline=pipeline)

    # Every type pretrained once per seed, and each model fine-tuned on every task with its own seed.
    assert sorted(c for c in pipeline.calls if c[0] == "pretrain") == sorted(
        ("pretrain", t, s) for t in ATTENTION_TYPES for s in (42, 43)
    )
    assert len([c for c in pipeline.calls if c[0] == "finetune"]) == len(ATTENTION_TYPES) * 2 * 2

    output_dir = tmp_path / "report"
    names = sorted(p.name for p in output_dir.iterdir())
    assert names == [OUTPUT_MARKER, "comparison.json", "comparison.md", "comparison.png"]
    saved = json.loads((output_dir / "comparison.json").read_text())
    assert set(saved) == {"config", "environment", "data", "parameters", "runs", "objective", "summary", "differences"}
    assert saved["summary"] == report["summary"]

    summary = report["summary"]
    for attention_type, expected in SCORES.items():
        rte = summary[attention_type]["tasks"]["rte"]
        assert rte["mean"] == pytest.approx(expected + 0.005)  # seeds 42 and 43 add 0.00 and 0.01
        assert rte["std"] == pytest.approx(0.01 / 2**0.5)
        assert rte["prr"] == pytest.approx((expected + 0.005) / (SCORES["mha"] + 0.005))
        average = summary[attention_type]["tasks"]["average"]
        assert average["mean"] == pytest.approx(expected + 0.025 + 0.005)
        assert average["prr"] == pytest.approx((expected + 0.03) / (SCORES["mha"] + 0.03))
        assert summary[attention_type]["pretrain"]["eval_accuracy"]["mean"] == pytest.approx(0.3425)
    assert summary["mha"]["tasks"]["average"]["prr"] == 1.0 and summary["mha"]["tasks"]["average"]["prr_std"] == 0.0

    # Parameter counts come from the saved checkpoints: MHE's attention is much smaller than MHA's.
    parameters = report["parameters"]
    assert parameters["mhe_mul"]["attention"] < parameters["mqa"]["attention"] < parameters["mha"]["attention"]

    markdown = (output_dir / "comparison.md").read_text()
    for attention_type in ATTENTION_TYPES:
        assert f"| {attention_type} | {parameters[attention_type]['total']:,} |" in markdown
    assert (output_dir / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rerun_skips_finished_runs_and_reruns_changed_ones(tmp_path):
    config = load_config(write_config(tmp_path, attention_types=["mha", "mhe_mul"], seeds=[42]))
    recipe = tmp_path / "rte.yaml"
    recipe.write_text(Path(config.tasks[0].config).read_text())
    config.tasks[0].config = str(recipe)
    first = run_comparison(config, FakePipeline())
    again = FakePipeline()
    assert run_comparison(config, again)["summary"] == first["summary"]
    assert again.calls == []

    config.seeds = [42, 43]
    config.tasks[1].args["max_train_samples"] = 16  # sst2's args changed: its runs are redone
    again = FakePipeline()
    run_comparison(config, again)
    assert sorted(again.calls) == sorted(
        [("pretrain", t, 43) for t in ("mha", "mhe_mul")]
        + [("finetune", t, s) for t in ("mha", "mhe_mul") for s in (42, 43)]  # sst2 for both seeds
        + [("finetune", t, 43) for t in ("mha", "mhe_mul")]  # rte for the new seed
    )

    recipe.write_text(recipe.read_text() + "learning_rate: 5.0e-4\n")  # rte's recipe file changed
    again = FakePipeline()
    run_comparison(config, again)
    assert sorted(again.calls) == sorted(("finetune", t, s) for t in ("mha", "mhe_mul") for s in (42, 43))


class ProcessRecordingPipeline(FakePipeline):
    """FakePipeline whose every run also reports the process that ran it."""

    def fake_pretrain(self, argv):
        return {**super().fake_pretrain(argv), "pid": os.getpid()}

    def fake_finetune(self, argv):
        return {**super().fake_finetune(argv), "pid": os.getpid()}


def test_jobs_train_the_models_side_by_side_in_their_own_processes_with_the_same_report(tmp_path):
    types = ["mha", "mhe_mul", "sha"]
    (tmp_path / "one").mkdir(), (tmp_path / "two").mkdir()
    sequential = run_comparison(load_config(write_config(tmp_path / "one", attention_types=types)), FakePipeline())
    config = load_config(write_config(tmp_path / "two", attention_types=types, jobs=2))
    parallel = run_comparison(config, ProcessRecordingPipeline())
    assert parallel["summary"] == sequential["summary"]
    records = [json.loads(path.read_text()) for path in (Path(config.runs_dir) / "records").glob("*.json")]
    assert len(records) == len(types) * 2 * 3  # every (type, seed): pretraining and two tasks
    by_model = {}
    for record in records:
        model = Path(option(record["argv"], "output_dir")).parent.name
        by_model.setdefault(model, set()).add(record["metrics"]["pid"])
    # Each model (pretraining, then its fine-tunings) ran in one child process; the models ran in two of them.
    assert all(len(pids) == 1 for pids in by_model.values()) and len(by_model) == len(types) * 2
    pids = set().union(*by_model.values())
    assert len(pids) == 2 and os.getpid() not in pids


class ShaFailsPipeline(FakePipeline):
    def fake_pretrain(self, argv):
        if option(argv, "attention_type") == "sha":
            raise RuntimeError("sha diverged")
        return super().fake_pretrain(argv)


def test_a_model_failing_in_its_process_stops_the_comparison_with_its_error(tmp_path):
    config = load_config(write_config(tmp_path, attention_types=["mha", "sha"], seeds=[42], jobs=2))
    with pytest.raises(RuntimeError, match="sha diverged"):
        run_comparison(config, ShaFailsPipeline())
    assert not (Path(config.runs_dir) / "records" / "sha-seed42-pretrain.json").exists()


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"attention_types": ["mhe_mul", "mqa"]}, "must include 'mha'"),
        ({"attention_types": ["mha", "mla"]}, "unknown"),
        ({"seeds": []}, "seeds"),
        ({"finetune": {"rte": {"config": "configs/finetune/wordnet-supersense.yaml"}}}, "needs a `metric`"),
        ({"finetune": {"rte": {"config": "configs/finetune/nope.yaml", "metric": "eval_accuracy"}}}, "not found"),
        ({"finetune": {"rte": {"metric": "eval_accuracy", "args": {"seed": 1}}}}, "set by the comparison"),
        ({"warmup": 3}, "Unknown key"),
        ({"jobs": 0}, "jobs must be a positive integer"),
    ],
)
def test_bad_configs_fail_before_anything_runs(tmp_path, changes, message):
    pipeline = FakePipeline()
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        main(["--config", str(write_config(tmp_path, **changes))], pipeline=pipeline)
    assert pipeline.calls == []


def test_a_typo_in_a_task_argument_fails_before_pretraining(tmp_path):
    finetune = {"rte": {"config": "configs/finetune/wordnet-supersense.yaml", "metric": "eval_accuracy",
                        "args": {"max_train_smaples": 8}}}
    pipeline = FakePipeline()
    with pytest.raises(UsageError, match="max_train_smaples"):
        main(["--config", str(write_config(tmp_path, finetune=finetune))], pipeline=pipeline)
    assert pipeline.calls == []


def test_a_missing_metric_names_the_available_ones(tmp_path):
    finetune = {"rte": {"config": "configs/finetune/wordnet-supersense.yaml", "metric": "eval_f1",
                        "args": {"task_name": "rte"}}}
    with pytest.raises(KeyError, match="eval_accuracy"):
        main(["--config", str(write_config(tmp_path, finetune=finetune, seeds=[42]))], pipeline=FakePipeline())
    assert not (tmp_path / "report").exists()  # no report from a failed comparison


def test_shipped_configs_parse_with_the_pipelines_parsers(tmp_path):
    offline = load_config("configs/compare/wordnet-tiny.yaml")
    assert sorted(offline.attention_types) == sorted(ATTENTION_TYPES) and len(offline.seeds) >= 3
    check_arguments(offline)
    assert "{" not in " ".join(pretrain_argv(offline, "mha", 42, tmp_path))  # every placeholder resolved
    # Both WordNet comparisons soften the recipe's neighbour start and change no other model option of the recipe.
    for comparison in (offline, load_config("configs/compare/wordnet-tiny-long.yaml")):
        recipe = parse_config_overrides(yaml.safe_load(Path(comparison.pretrain_config).read_text())["config_overrides"])
        ours = parse_config_overrides(comparison.pretrain_args["config_overrides"])
        assert ours.pop("relative_attention_neighbour_init") == 3.0 != recipe.pop("relative_attention_neighbour_init")
        assert ours == recipe

    # The GPU config asks for bf16, which TrainingArguments refuses on a CPU-only machine: check the rest.
    full = load_config("configs/compare/glue-base.yaml")
    assert len(full.tasks) == 8 and full.finetune_seeds == [42, 43, 44]
    full.pretrain_args.pop("bf16")
    parse_args(PRETRAIN_ARGUMENTS, pretrain_argv(full, "mhe_mul", 42, tmp_path))
    for task in full.tasks:
        task.args.pop("bf16")
        parse_args(FINETUNE_ARGUMENTS, finetune_argv(task, tmp_path, 42, tmp_path))


def test_to_argv_writes_what_hf_argument_parser_reads():
    assert to_argv({"max_steps": 10, "train_files": ["a", "b"], "do_train": True, "skip": None}) == [
        "--max_steps", "10", "--train_files", "a", "b", "--do_train", "true"
    ]


def test_prepared_wordnet_is_reused_and_a_missing_tokenizer_trained(tmp_path):
    subset, full = tmp_path / "subset", tmp_path / "full"
    for folder, synsets in ((subset, 500), (full, 117_659)):
        folder.mkdir()
        (folder / "counts.json").write_text(json.dumps({"synsets": synsets}))
    assert choose_wordnet_dir([str(subset), str(full), "x"], None) == str(full)
    assert choose_wordnet_dir([str(subset), str(full), "x"], 500) == str(subset)
    assert choose_wordnet_dir([str(tmp_path / "missing"), "x"], None) == "x"

    (full / "corpus.txt").write_text("the cat sat on the mat\na dog ran in the park\n" * 20)
    tokenizer_dir = tmp_path / "tokenizer"
    counts = prepare_data({"wordnet_dir": str(full), "tokenizer_dir": str(tokenizer_dir), "vocab_size": 60})
    assert counts == {"synsets": 117_659}
    assert (tokenizer_dir / "tokenizer.json").is_file()


def test_prepared_data_of_another_size_is_an_error(tmp_path):
    wordnet_dir = tmp_path / "wordnet"
    wordnet_dir.mkdir()
    (wordnet_dir / "counts.json").write_text(json.dumps({"synsets": 500}))
    with pytest.raises(ValueError, match="holds 500 WordNet synsets"):
        prepare_data({"wordnet_dir": str(wordnet_dir), "max_synsets": 1000})
    (wordnet_dir / "corpus.txt").write_text("the cat sat on the mat\na dog ran in the park\n" * 20)
    prepare_data({"wordnet_dir": str(wordnet_dir), "max_synsets": 500, "tokenizer_dir": str(tmp_path / "tok"), "vocab_size": 60})
    with pytest.raises(ValueError, match="tokenizer"):
        prepare_data({"wordnet_dir": str(wordnet_dir), "max_synsets": 500, "tokenizer_dir": str(tmp_path / "tok"), "vocab_size": 10})


def test_paired_interval_is_the_student_t_interval_of_the_mean():
    # Values 1, 2, 3: mean 2, std 1; t(0.975, 2 degrees of freedom) = 4.302653 (statistical tables).
    interval = paired_interval([1.0, 2.0, 3.0])
    half = 4.302653 / 3**0.5
    assert (interval["mean"], interval["n"]) == (2.0, 3)
    assert (interval["low"], interval["high"]) == (pytest.approx(2 - half), pytest.approx(2 + half))
    # t(0.95, 2) = 2.919986 for a 90% interval; more values with the same spread give a narrower one.
    assert paired_interval([1.0, 2.0, 3.0], confidence=0.9)["high"] == pytest.approx(2 + 2.919986 / 3**0.5)
    assert paired_interval([1.0, 2.0, 3.0] * 3)["high"] - 2 < half
    single = paired_interval([0.9])
    assert single["mean"] == 0.9 and single["low"] != single["low"]  # NaN: no interval from one value
    with pytest.raises(ValueError, match="at least one value"):
        paired_interval([])


def test_report_states_which_differences_are_significant(tmp_path):
    report = main(["--config", str(write_config(tmp_path, seeds=[42, 43, 44]))], pipeline=FakePipeline())
    # Every run of a type is its MHA run times a constant-ish ratio: SHA (0.60 vs 0.80) is far below MHA on every
    # seed, so its PRR interval excludes 1; MHA's own PRR is exactly 1 and not significant.
    rte = report["summary"]["sha"]["tasks"]["rte"]
    assert rte["prr_ci"]["high"] < 1 and rte["prr_significant"] is True
    assert report["summary"]["mha"]["tasks"]["rte"]["prr_significant"] is False
    # Paired differences: MHE-MUL - SHA = 0.18 on every seed (significant), with an interval of zero width.
    difference = report["differences"]["mhe_mul - sha"]["rte"]
    assert difference["mean"] == pytest.approx(0.18) and difference["significant"] is True
    assert set(report["differences"]) == {f"{first} - {second}" for first in ("mhe_mul", "mhe_add")
                                          for second in ATTENTION_TYPES if second != first}
    markdown = (tmp_path / "report" / "comparison.md").read_text()
    assert "- mhe_mul - sha, rte: +0.1800" in markdown and "significant" in markdown


def test_wordnet_data_prepared_before_the_pair_task_is_prepared_again(tmp_path, monkeypatch):
    import shutil

    from test_wordnet import write_fake_wordnet

    from mhe_transformers.data.wordnet import prepare_wordnet

    monkeypatch.setenv("WNSEARCHDIR", str(write_fake_wordnet(tmp_path / "dict")))
    prepared = tmp_path / "wordnet"
    synsets = prepare_wordnet(prepared)["synsets"]
    shutil.rmtree(prepared / "supersense-pairs")  # as an older prepare_wordnet left it
    counts = prepare_data({"wordnet_dir": str(prepared), "max_synsets": synsets})
    assert (prepared / "supersense-pairs" / "train.jsonl").is_file() and counts["pairs_train"] > 0


# ---------------------------------------------------------------------------------------------------------------
# PRR of the pretraining metrics, and the causal track (a pretraining-only comparison)
# ---------------------------------------------------------------------------------------------------------------

# Held-out perplexity and accuracy per (type, seed): MHE-MUL is worse than MHA on every seed, by a ratio that moves.
PERPLEXITY = {"mha": {42: 100.0, 43: 110.0, 44: 90.0}, "mhe_mul": {42: 125.0, 43: 135.0, 44: 110.0}}
ACCURACY = {"mha": {42: 0.40, 43: 0.42, 44: 0.38}, "mhe_mul": {42: 0.36, 43: 0.40, 44: 0.38}}


class FakeCausalPipeline(FakePipeline):
    """Pretraining returns the metrics above (and a unigram baseline); fine-tuning is never called."""

    def fake_pretrain(self, argv):
        super().fake_pretrain(argv)
        attention_type, seed = option(argv, "attention_type"), int(option(argv, "seed"))
        ppl = PERPLEXITY[attention_type][seed]
        return {"eval_loss": math.log(ppl), "perplexity": ppl, "eval_accuracy": ACCURACY[attention_type][seed],
                "eval_unigram_loss": 6.0 + seed / 100}


def causal_config(tmp_path, metrics=("perplexity", "eval_loss", "eval_accuracy", "eval_unigram_loss"), **changes):
    pretrain = {"config": "configs/pretrain/wordnet-clm-tiny.yaml", "args": {"model_config": "configs/model/tiny.json"},
                "metrics": list(metrics)}
    return write_config(tmp_path, attention_types=["mha", "mhe_mul"], seeds=[42, 43, 44], pretrain=pretrain,
                        finetune=None, **changes)


def test_lower_is_better_metrics_divide_mha_by_the_type():
    assert [lower_is_better(m) for m in ("eval_loss", "test_loss", "perplexity", "eval_unigram_loss")] == [True] * 4
    assert [lower_is_better(m) for m in ("eval_accuracy", "test_f1", "average", "eval_matthews_correlation")] == [False] * 4
    # A perplexity of 125 against MHA's 100 keeps 0.8 of MHA's quality; an accuracy of 0.3 against 0.4, 0.75.
    assert retention(125.0, 100.0, "perplexity") == pytest.approx(0.8)
    assert retention(80.0, 100.0, "perplexity") == pytest.approx(1.25)
    assert retention(0.3, 0.4, "eval_accuracy") == pytest.approx(0.75)
    assert math.isnan(retention(1.0, 0.0, "eval_accuracy")) and math.isnan(retention(0.0, 1.0, "eval_loss"))


def test_pretraining_prr_is_paired_by_seed_and_inverted_for_perplexity(tmp_path):
    pipeline = FakeCausalPipeline()
    report = main(["--config", str(causal_config(tmp_path))], pipeline=pipeline)
    assert [call[0] for call in pipeline.calls] == ["pretrain"] * 6  # no tasks: nothing fine-tuned

    # By hand: per-seed PRR = MHA's perplexity / MHE-MUL's = 100/125, 110/135, 90/110; mean ± t(0.975, 2) s / sqrt(3).
    ratios = [0.8, 110 / 135, 90 / 110]
    mean = sum(ratios) / 3
    std = (sum((r - mean) ** 2 for r in ratios) / 2) ** 0.5
    half = 4.302653 * std / 3**0.5
    ppl = report["summary"]["mhe_mul"]["pretrain"]["perplexity"]
    assert ppl["mean"] == pytest.approx(370 / 3) and ppl["n"] == 3
    assert ppl["prr"] == pytest.approx(100.0 / (370 / 3))  # MHA's mean over the type's, not the other way round
    assert ppl["prr"] < 1 and ppl["prr_ci"]["high"] < 1  # worse than MHA on every seed: PRR below 1
    assert ppl["prr_std"] == pytest.approx(std)
    assert (ppl["prr_ci"]["mean"], ppl["prr_ci"]["low"], ppl["prr_ci"]["high"]) == (
        pytest.approx(mean), pytest.approx(mean - half), pytest.approx(mean + half))
    assert ppl["prr_significant"] is True
    # The loss is lower-is-better too; accuracy divides the type by MHA: 0.36/0.40, 0.40/0.42, 0.38/0.38.
    loss = report["summary"]["mhe_mul"]["pretrain"]["eval_loss"]
    assert loss["prr_ci"]["mean"] == pytest.approx(sum(
        math.log(PERPLEXITY["mha"][s]) / math.log(PERPLEXITY["mhe_mul"][s]) for s in (42, 43, 44)) / 3)
    accuracy = report["summary"]["mhe_mul"]["pretrain"]["eval_accuracy"]
    assert accuracy["prr_ci"]["mean"] == pytest.approx((0.9 + 0.40 / 0.42 + 1.0) / 3)
    assert accuracy["prr"] == pytest.approx(1.14 / 1.20)
    # The unigram baseline measures the data: reported, no PRR. MHA against itself: PRR exactly 1, not significant.
    assert set(report["summary"]["mhe_mul"]["pretrain"]["eval_unigram_loss"]) == {"mean", "std", "n"}
    assert report["summary"]["mha"]["pretrain"]["perplexity"]["prr"] == 1.0
    assert report["summary"]["mha"]["pretrain"]["perplexity"]["prr_significant"] is False
    # Paired differences of the pretraining metrics, by seed: MHE-MUL's perplexity is 25, 25, 20 above MHA's.
    assert report["differences"]["mhe_mul - mha"]["perplexity"]["mean"] == pytest.approx(70 / 3)
    assert "eval_unigram_loss" not in report["differences"]["mhe_mul - mha"]

    markdown = (tmp_path / "report" / "comparison.md").read_text()
    assert "| CLM perplexity PRR [95% CI] |" in markdown and "CLM unigram loss PRR" not in markdown
    assert f"| {ppl['prr']:.3f} [{mean - half:.3f}, {mean + half:.3f}]* |" in markdown
    assert f"- mhe_mul, CLM perplexity: PRR {mean:.3f} [{mean - half:.3f}, {mean + half:.3f}], significantly worse than MHA" in markdown
    assert "Fine-tuning" not in markdown
    assert (tmp_path / "report" / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_prr_metrics_choose_which_pretraining_metrics_get_a_prr(tmp_path):
    config = load_config(causal_config(tmp_path))
    assert config.prr_metrics == ["perplexity", "eval_loss", "eval_accuracy"]  # default: all but the unigram's
    pretrain = {"config": "configs/pretrain/wordnet-clm-tiny.yaml", "metrics": ["perplexity", "eval_loss"],
                "prr_metrics": ["perplexity"]}
    config = load_config(write_config(tmp_path, pretrain=pretrain, finetune=None, attention_types=["mha", "mhe_mul"]))
    report = run_comparison(config, FakeCausalPipeline())
    assert "prr" in report["summary"]["mha"]["pretrain"]["perplexity"]
    assert "prr" not in report["summary"]["mha"]["pretrain"]["eval_loss"]
    with pytest.raises(ValueError, match="not among pretrain.metrics"):
        load_config(write_config(tmp_path, pretrain={**pretrain, "prr_metrics": ["eval_accuracy"]}))


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"finetune": None, "pretrain": {"config": "configs/pretrain/wordnet-clm-tiny.yaml"}}, "pretrain.metrics"),
        ({"finetune": None, "finetune_seeds": [1, 2]}, "finetune_seeds needs"),
        ({"finetune": ["rte"]}, "must map task names"),
    ],
)
def test_bad_pretraining_only_configs_fail_before_anything_runs(tmp_path, changes, message):
    with pytest.raises(ValueError, match=message):
        main(["--config", str(write_config(tmp_path, **changes))], pipeline=FakePipeline())


def test_shipped_causal_config_is_a_pretraining_only_comparison_sharing_the_mlm_data(tmp_path):
    causal, masked = load_config("configs/compare/wordnet-clm-tiny.yaml"), load_config("configs/compare/wordnet-tiny.yaml")
    assert causal.tasks == [] and "perplexity" in causal.prr_metrics
    assert sorted(causal.attention_types) == sorted(ATTENTION_TYPES) and causal.seeds == [42, 43, 44]
    assert causal.prepare == masked.prepare  # the same data share and tokenizer folder
    assert causal.runs_dir != masked.runs_dir and causal.output_dir != masked.output_dir
    check_arguments(causal)
    argv = pretrain_argv(causal, "mha", 42, tmp_path)
    args = parse_args(PRETRAIN_ARGUMENTS, argv)
    assert args[1].objective == "clm" and "{" not in " ".join(argv)


def test_micro_causal_comparison_through_the_real_pipeline(tmp_path, tiny_corpus, tiny_tokenizer_dir):
    args = {
        "model_config": str(REPO_ROOT / "configs/model/tiny.json"),
        "config_overrides": "hidden_size=32,intermediate_size=64,num_hidden_layers=1,max_position_embeddings=64",
        "tokenizer_name": str(tiny_tokenizer_dir), "train_files": [str(tiny_corpus)], "max_seq_length": 32,
        "validation_split_percentage": 10, "max_steps": 3, "per_device_train_batch_size": 8,
        "per_device_eval_batch_size": 16, "save_strategy": "no", "report_to": "none", "disable_tqdm": True,
        "use_cpu": True, "log_level": "warning",
    }
    pretrain = {"config": str(REPO_ROOT / "configs/pretrain/wordnet-clm-tiny.yaml"), "args": args,
                "metrics": ["perplexity", "eval_loss", "eval_accuracy"]}
    report = main(["--config", str(write_config(tmp_path, attention_types=["mha", "mhe_mul"], pretrain=pretrain,
                                                finetune=None))])
    saved = json.loads((tmp_path / "report" / "comparison.json").read_text())
    assert saved["objective"] == "clm" and saved["summary"] == report["summary"]
    values = {(run["attention_type"], run["seed"]): run["pretrain"] for run in saved["runs"]}
    for run in values.values():  # the pipeline's perplexity reaches the record: exp(held-out loss)
        assert run["perplexity"] == pytest.approx(math.exp(run["eval_loss"])) and 0 <= run["eval_accuracy"] <= 1
    expected = [values[("mha", s)]["perplexity"] / values[("mhe_mul", s)]["perplexity"] for s in (42, 43)]
    ppl = saved["summary"]["mhe_mul"]["pretrain"]["perplexity"]
    assert ppl["prr_ci"]["mean"] == pytest.approx(sum(expected) / 2) and ppl["prr_ci"]["n"] == 2
    markdown = (tmp_path / "report" / "comparison.md").read_text()
    assert "| CLM perplexity PRR [95% CI] |" in markdown and f"- mhe_mul, CLM perplexity: PRR {ppl['prr_ci']['mean']:.3f}" in markdown
