"""The attention comparison's runs and records (mhe_transformers/experiments/compare.py), with the pipelines' entry
points faked (the pipelines have their own tests), the held-out scores of experiments/heldout.py on a real tiny
model, and the shipped comparison configs checked against the real argument parsers."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import REPO_ROOT

from mhe_transformers import MHEConfig
from mhe_transformers.experiments import compare, heldout
from mhe_transformers.experiments.compare import load_config, main, run_comparison, run_key
from mhe_transformers.models.mhe.parameter_counts import attention_parameter_formula
from mhe_transformers.training.loop import parse_config_overrides
from mhe_transformers.utils.run_folder import OUTPUT_MARKER

# Share of the held-out items each fake model gets right, before a per-seed offset.
SKILL = {"mha": 0.80, "mhe_add": 0.74, "mhe_mul": 0.76, "mqa": 0.79, "gqa": 0.795, "sha": 0.60}
LM_BLOCKS, LM_PER_BLOCK = 40, 20


def option(argv, name):
    return argv[argv.index(f"--{name}") + 1]


def _correct(attention_type: str, seed: int, index: int) -> bool:
    """A fixed pseudo-random verdict per (type, seed, item), right about SKILL[type] of the time."""
    draw = np.random.default_rng([index, seed]).random()
    return draw < SKILL[attention_type] + (seed - 42) / 100


class FakePipeline(compare.Pipeline):
    """Records its calls; pretraining saves a tiny config (what a record reads from a checkpoint); fine-tuning writes
    the predictions file of the split it was asked to predict."""

    def __init__(self):
        self.calls = []
        super().__init__(pretrain=self.fake_pretrain, finetune=self.fake_finetune, evaluate=self.fake_evaluate)

    def fake_pretrain(self, argv):
        attention_type, seed = option(argv, "attention_type"), int(option(argv, "seed"))
        self.calls.append(("pretrain", attention_type, seed))
        known = set(MHEConfig().to_dict())
        overrides = {k: v for k, v in parse_config_overrides(option(argv, "config_overrides")).items() if k in known}
        overrides.pop("sparse_prediction", None)
        config = MHEConfig(**{"vocab_size": 100, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
                              "intermediate_size": 48, **overrides, "attention_type": attention_type,
                              "num_key_value_heads": 2 if attention_type == "gqa" else None})  # fmt: skip
        config.save_pretrained(option(argv, "output_dir"))
        history = [{"step": 1, "loss": 6.0, "learning_rate": 1e-3}, {"step": 2, "loss": 5.0}, {"train_loss": 5.5}]
        (Path(option(argv, "output_dir")) / "trainer_state.json").write_text(json.dumps({"log_history": history}))
        return {"train_loss": 5.0}

    def fake_evaluate(self, model_dir, text_file, objective, evaluation, split):
        attention_type = json.loads((Path(model_dir) / "config.json").read_text())["attention_type"]
        seed = int(Path(model_dir).parent.name.split("seed")[1].split("-")[0])
        self.calls.append(("evaluate", attention_type, seed, split))
        correct = np.array([sum(_correct(attention_type, seed, 1000 * b + j) for j in range(LM_PER_BLOCK))
                            for b in range(LM_BLOCKS)], dtype=float)  # fmt: skip
        count, loss = np.full(LM_BLOCKS, float(LM_PER_BLOCK)), np.full(LM_BLOCKS, 80.0)
        metrics = {"accuracy": correct.sum() / count.sum(), "loss": 4.0, "positions": int(count.sum())}
        return {"metrics": metrics, "items": heldout.lm_items(correct, count, loss, split)}

    def fake_finetune(self, argv):
        model_dir, seed = Path(option(argv, "model_name_or_path")), int(option(argv, "seed"))
        attention_type = json.loads((model_dir / "config.json").read_text())["attention_type"]
        test_file = option(argv, "test_file")
        self.calls.append(("finetune", attention_type, seed, Path(test_file).name))
        rows = [json.loads(line) for line in Path(test_file).read_text().splitlines()]
        labels = sorted({row["label"] for row in rows})
        predictions = [row["label"] if _correct(attention_type, seed, i) else next(x for x in labels if x != row["label"])
                       for i, row in enumerate(rows)]  # fmt: skip
        output_dir = Path(option(argv, "output_dir"))
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "predictions.jsonl").write_text(
            "".join(json.dumps({"index": i, "prediction": p}) + "\n" for i, p in enumerate(predictions)))
        accuracy = float(np.mean([p == row["label"] for p, row in zip(predictions, rows)]))
        return {"test_accuracy": accuracy, "eval_accuracy": accuracy - 0.01}


def write_comparison(folder: Path, data_dir: Path, tokenizer_dir: Path, **changes) -> Path:
    """A small comparison config in `folder` (records in folder/records, checkpoints in folder/runs)."""
    task_args = {"train_file": str(data_dir / "train.jsonl"), "validation_file": str(data_dir / "validation.jsonl"),
                 "test_file": str(data_dir / "test.jsonl"), "label_list_file": str(data_dir / "labels.json"),
                 "max_train_samples": 8}  # fmt: skip
    values = {
        "name": "toy", "stage": "design", "seeds": [42, 43], "runs_dir": str(folder / "runs"),
        "records_dir": str(folder / "records"), "estimated_minutes_per_run": 1.0,
        "groups": {"base": {"types": ["mha", "mhe_mul", "sha"], "position": "absolute"}},
        "pretrain": {"config": "configs/pretrain/wordnet-tiny.yaml",
                     "args": {"model_config": "configs/model/tiny.json", "tokenizer_name": str(tokenizer_dir),
                              "max_steps": 2}},
        "finetune": {name: {"config": "configs/finetune/wordnet-supersense.yaml", "metric": "accuracy",
                            "args": dict(task_args)} for name in ("first", "second")},
        **changes,
    }  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{values['name']}.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


@pytest.fixture
def toy(tmp_path, tiny_classification_dir, tiny_tokenizer_dir):
    return lambda **changes: write_comparison(tmp_path, tiny_classification_dir, tiny_tokenizer_dir, **changes)


def test_every_run_writes_one_small_whitelisted_record_and_a_rerun_skips_it(toy, tmp_path):
    path = toy()
    pipeline = FakePipeline()
    written = main(["--comparison", str(path)], pipeline=pipeline)
    assert len(written) == 6 and len([c for c in pipeline.calls if c[0] == "pretrain"]) == 6
    records = compare.read_records(tmp_path / "records" / "toy")
    assert sorted(r["run_key"] for r in records) == sorted(Path(p).stem for p in written)
    record = records[0]
    for field in ("comparison", "attention_type", "num_heads", "seed", "position_embedding_type", "per_head_position_bias",
                  "freeze_head_embeddings", "attention_parameters", "total_parameters", "learning_rate", "metrics",
                  "pretraining", "commit", "dirty", "seconds", "run_key", "pretraining_curve"):  # fmt: skip
        assert field in record, field
    assert record["pretraining_curve"] == [[1, 6.0], [2, 5.0]]  # Trainer's logged losses, nothing else
    assert record["metrics"]["first"]["test"] is None and 0 < record["metrics"]["first"]["validation"] <= 1
    assert record["pretraining"]["test"] is None and record["learning_rate"] == 6.0e-3
    assert record["position_embedding_type"] == "absolute" and record["per_head_position_bias"] is False
    # Items decode to the scores they came from; no command line, path or token is in the record.
    items = heldout.decode_items(record["items"]["first"])
    assert items["correct"].mean() == pytest.approx(record["metrics"]["first"]["validation"])
    text = (tmp_path / "records" / "toy" / f"{record['run_key']}.json").read_text()
    assert str(tmp_path) not in text and "argv" not in text and "token" not in text and len(text) < 100_000
    assert [p.name for p in (tmp_path / "runs" / "toy").iterdir()] == [OUTPUT_MARKER]  # checkpoints deleted
    again = FakePipeline()
    assert main(["--comparison", str(path)], pipeline=again) == [] and again.calls == []


def test_a_design_stage_never_reads_test_and_a_final_stage_scores_it_once(toy, tmp_path):
    design = FakePipeline()
    run_comparison(load_config(toy(seeds=[42])), design)
    assert {call[3] for call in design.calls if call[0] == "finetune"} == {"validation.jsonl"}
    assert {call[3] for call in design.calls if call[0] == "evaluate"} == {"validation"}
    final = FakePipeline()
    run_comparison(load_config(toy(seeds=[42], stage="final", name="toy-final")), final)
    assert {call[3] for call in final.calls if call[0] == "finetune"} == {"test.jsonl"}
    assert sorted(call[3] for call in final.calls if call[0] == "evaluate") == ["test"] * 3 + ["validation"] * 3
    record = compare.read_records(tmp_path / "records" / "toy-final")[0]
    assert record["metrics"]["first"]["test"] is not None and record["items"]["first"]["split"] == "test"
    assert record["pretraining"]["test"]["accuracy"] > 0


def test_run_keys_change_with_the_recipe_and_not_with_logging(toy, tmp_path):
    config = load_config(toy())
    arm = config.arms()[1]
    key = run_key(config, arm, 42)
    assert key.startswith("base-mhe_mul-seed42-") and key != run_key(config, arm, 43)
    assert key != run_key(config, config.arms()[0], 42)
    changed = load_config(toy(groups={"base": {"types": ["mha", "mhe_mul", "sha"], "position": "absolute",
                                                "pretrain": {"learning_rate": 3e-3}}}))  # fmt: skip
    assert run_key(changed, changed.arms()[1], 42) != key
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text((REPO_ROOT / "configs/pretrain/wordnet-tiny.yaml").read_text() + "\n# a comment\n")
    toy_args = yaml.safe_load(toy().read_text())["pretrain"]["args"]
    pretrain = {"config": str(recipe), "args": toy_args}
    assert run_key(load_config(toy(pretrain=pretrain)), arm, 42) == key  # same content, other file
    # defaults the comparison always replaces (folder, type, seed, model to fine-tune) are no part of the key
    recipe.write_text(recipe.read_text().replace("output_dir: outputs/pretrain-{attention_type}", "output_dir: o")
                      .replace("attention_type: mhe_mul", "attention_type: mha").replace("seed: 42", "seed: 7"))
    assert run_key(load_config(toy(pretrain=pretrain)), arm, 42) == key
    recipe.write_text(recipe.read_text() + "mlm_probability: 0.15\n")
    assert run_key(load_config(toy(pretrain=pretrain)), arm, 42) != key
    pretrain = {"config": "configs/pretrain/wordnet-tiny.yaml",
                "args": {**toy_args, "logging_steps": 7}}
    assert run_key(load_config(toy(pretrain=pretrain)), arm, 42) == key


def test_max_runs_and_max_minutes_stop_cleanly_and_dry_run_lists_what_is_missing(toy, tmp_path, capsys):
    path = toy()
    pipeline = FakePipeline()
    assert len(main(["--comparison", str(path), "--max_runs", "2"], pipeline=pipeline)) == 2
    assert len([c for c in pipeline.calls if c[0] == "pretrain"]) == 2
    progress = capsys.readouterr().err  # the job's bar: the runs it may start, counted as they finish
    assert "toy runs: 100%" in progress and "2/2" in progress
    text = main(["--comparison", str(path), "--dry_run"])
    assert text.startswith("toy: 2 of 6 runs recorded") and "4 missing" in text and "base-mha-seed42" not in text
    assert "base-sha-seed42-" in text and "base-mhe_mul-seed43-" in text
    # The measured time per run (fake runs: well under a second) decides what fits; an estimate of 10 minutes
    # (no record yet) leaves no room in a 5-minute budget.
    assert main(["--comparison", str(toy(name="other", estimated_minutes_per_run=10.0)), "--max_minutes", "5"],
                pipeline=FakePipeline()) == []  # fmt: skip
    assert len(main(["--comparison", str(path), "--max_minutes", "5"], pipeline=FakePipeline())) == 4


def test_records_of_other_data_stop_the_comparison(toy, tmp_path, monkeypatch):
    path = toy(seeds=[42])
    run_comparison(load_config(path), FakePipeline())
    monkeypatch.setattr(compare, "prepare_data", lambda prepare: {"paths": {}, "hashes": {"wordnet": "other"}, "counts": {}})
    with pytest.raises(ValueError, match="other data"):
        run_comparison(load_config(toy(seeds=[42, 43])), FakePipeline())


def test_jobs_run_side_by_side_in_their_own_processes(toy, tmp_path, capsys):
    written = main(["--comparison", str(toy(jobs=2)), "--max_runs", "3"], pipeline=FakePipeline())
    assert len(written) == 3 and len(compare.read_records(tmp_path / "records" / "toy")) == 3
    assert "3/3" in capsys.readouterr().err


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"stage": "pilot"}, "stage must be one of"),
        ({"groups": {"g": {"types": ["mhe_mul"]}}}, "needs an MHA arm"),
        ({"groups": {"g": {"types": ["mha", "mla"]}}}, "unknown or repeated"),
        ({"groups": {"g": {"types": ["mha"], "position": "rotary"}}}, "position 'rotary'"),
        ({"groups": {"g": {"types": ["mha"], "model": {"position_embedding_type": "absolute"}}}}, "choose a `position`"),
        ({"seeds": []}, "seeds"),
        ({"warmup": 3}, "Unknown key"),
        ({"jobs": 0}, "jobs must be a positive integer"),
        ({"finetune": {"t": {"metric": "accuracy", "args": {"seed": 1}}}}, "set by the comparison"),
    ],
)
def test_bad_configs_fail_before_anything_runs(toy, changes, message):
    pipeline = FakePipeline()
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        main(["--comparison", str(toy(**changes))], pipeline=pipeline)
    assert pipeline.calls == []


def test_an_arm_whose_model_cannot_be_built_fails_before_anything_runs_and_is_named(toy, tiny_tokenizer_dir):
    # The relative bias is implemented for encoders only: a causal comparison asking for it must stop at the check,
    # naming the arm, not fail in each run's pretraining an hour later.
    pipeline = FakePipeline()
    pretrain = {"config": "configs/pretrain/wordnet-clm-tiny.yaml",
                "args": {"model_config": "configs/model/tiny.json", "tokenizer_name": str(tiny_tokenizer_dir)}}
    path = toy(pretrain=pretrain, groups={"base": {"types": ["mha", "mhe_mul"], "position": "shared_bias"}})
    with pytest.raises(ValueError, match=r"arm base/mha: position_embedding_type='relative_bias' is implemented for enc"):
        main(["--comparison", str(path)], pipeline=pipeline)
    assert pipeline.calls == []


def test_the_command_line_takes_the_project_style(toy):
    with pytest.raises(SystemExit) as exit_info:
        main(["--comparison", str(toy()), "--max_runs", "0"])
    assert exit_info.value.code == 2


SHIPPED = ("ablation", "lr-grid", "main", "long", "causal")


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_configs_parse_with_the_pipelines_parsers(name, tmp_path, tiny_tokenizer_dir):
    config = load_config(REPO_ROOT / "configs/compare" / f"{name}.yaml")
    assert config.name == name
    paths = {key: str(tmp_path / key) for key in compare.PLACEHOLDERS} | {"tokenizer_dir": str(tiny_tokenizer_dir)}
    compare.check_arguments(config, paths)
    for arm in config.arms():
        argv = compare.pretrain_argv(config, arm, 42, tmp_path, paths)
        assert "{" not in " ".join(argv)
        options = parse_config_overrides(option(argv, "config_overrides"))
        # Every arm's position options are exactly its setting's: no per-head channel left over from the recipe.
        setting = compare.POSITION_SETTINGS[arm.position]
        assert {k: options.get(k) for k in compare.POSITION_KEYS if k in options} == setting


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_arm_builds_its_model(name, tiny_tokenizer_dir):
    # The model each run pretrains, built as the pretraining builds it (a decoder for the causal track): a position
    # setting the model does not implement fails here, not minutes into a comparison job.
    from transformers import AutoTokenizer

    from mhe_transformers.training import pretrain

    config = load_config(REPO_ROOT / "configs/compare" / f"{name}.yaml")
    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    for arm in config.arms():
        values = compare.pretrain_values(config, arm)
        model_args = pretrain.ModelArguments(model_config=str(REPO_ROOT / values["model_config"]),
                                             attention_type=arm.attention_type,
                                             config_overrides=values["config_overrides"])  # fmt: skip
        data_args = pretrain.DataArguments(objective=config.objective)
        model = pretrain.build_model(model_args, data_args, tokenizer)
        assert model.config.is_decoder == (config.objective == "clm")
        assert model.config.position_embedding_type == compare.POSITION_SETTINGS[arm.position]["position_embedding_type"]


def test_the_shipped_stages_have_the_planned_sizes():
    configs = {name: load_config(REPO_ROOT / "configs/compare" / f"{name}.yaml") for name in SHIPPED}
    ablation = configs["ablation"]
    assert {arm.position for arm in ablation.arms()} == {"absolute", "shared_bias", "per_head_bias"}
    assert len(ablation.runs()) == 3 * 5 * 3 and ablation.stage == "design"
    grid = configs["lr-grid"]
    rates = {arm.attention_type: set() for arm in grid.arms()}
    for arm in grid.arms():
        rates[arm.attention_type].add(dict(arm.pretrain)["learning_rate"])
    assert len(rates) == 6 and all(len(values) >= 3 and values == rates["mha"] for values in rates.values())
    main_config = configs["main"]
    assert main_config.stage == "final" and len(main_config.seeds) >= 8
    assert {arm.name for arm in main_config.arms()} >= {f"main/{t}" for t in SKILL} | {
        "frozen/mhe_mul", "frozen/mhe_add", "matched/mha", "heads2/mha", "heads2/mhe_mul", "heads8/mha", "heads8/mhe_mul"}
    assert set(main_config.learning_rates) == set(SKILL)
    long, causal = configs["long"], configs["causal"]
    assert long.prepare.get("max_synsets") is None and len(long.seeds) >= 3
    assert int(long.pretrain_args["max_steps"]) >= 3000
    assert causal.objective == "clm" and int(causal.pretrain_args["max_steps"]) >= 2400 and len(causal.seeds) >= 3


def test_parameter_matched_mha_has_the_head_size_closest_to_mhe_attention_parameters():
    config = load_config(REPO_ROOT / "configs/compare/main.yaml")
    matched = dict(next(arm for arm in config.arms() if arm.name == "matched/mha").model)
    h, n = 128, 4
    mhe = attention_parameter_formula("mhe_mul", h, n, h // n)
    best = min(range(1, h // n + 1), key=lambda d: abs(attention_parameter_formula("mha", h, n, d) - mhe))
    assert matched == {**compare.POSITION_SETTINGS[config.position], "head_dim": best}
    assert abs(attention_parameter_formula("mha", h, n, best) - mhe) / mhe < 0.02


# ---------------------------------------------------------------------------------------------------------------
# Held-out scores (experiments/heldout.py)
# ---------------------------------------------------------------------------------------------------------------


def test_fixed_masks_cover_at_least_the_asked_positions_and_depend_on_the_seed_only(tiny_corpus, tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    blocks = heldout.heldout_blocks(tiny_corpus, tokenizer, 16)
    order, mask = heldout.fixed_masks(blocks, 0.3, 300, seed=0)
    again = heldout.fixed_masks(blocks, 0.3, 300, seed=0)
    assert mask.sum() >= 300 and mask[:-1].sum() < 300  # just enough blocks
    assert (order == again[0]).all() and (mask == again[1]).all()
    assert not (mask & (blocks["special"][order] == 1)).any()  # never a special token
    other = heldout.fixed_masks(blocks, 0.3, 300, seed=1)
    assert not np.array_equal(other[0], order)
    with pytest.raises(ValueError, match="fewer than"):
        heldout.fixed_masks(blocks, 0.3, 10**6, seed=0)


def test_masked_lm_scores_are_those_of_the_model_on_the_masked_positions(tiny_pretrained_dir, tiny_corpus):
    import torch
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    evaluation = {"positions": 200, "mask_seed": 3, "mlm_probability": 0.3, "block_size": 16}
    result = heldout.evaluate_checkpoint(tiny_pretrained_dir, tiny_corpus, "mlm", evaluation, "validation")
    items = heldout.decode_items(result["items"])
    assert result["metrics"]["positions"] == items["count"].sum() >= 200
    assert result["metrics"]["accuracy"] == pytest.approx(items["correct"].sum() / items["count"].sum())
    # By hand: the same blocks and masks, every masked position shown [MASK], argmax against the original token.
    tokenizer = AutoTokenizer.from_pretrained(tiny_pretrained_dir)
    model = AutoModelForMaskedLM.from_pretrained(tiny_pretrained_dir).eval()
    blocks = heldout.heldout_blocks(tiny_corpus, tokenizer, 16)
    order, mask = heldout.fixed_masks(blocks, 0.3, 200, 3)
    ids = torch.as_tensor(blocks["input_ids"][order])
    shown = torch.where(torch.as_tensor(mask), tokenizer.mask_token_id, ids)
    model.config.sparse_prediction = False
    with torch.no_grad():
        logits = model(input_ids=shown).logits
    hits = (logits.argmax(-1) == ids)[torch.as_tensor(mask)].float()
    assert result["metrics"]["accuracy"] == pytest.approx(hits.mean().item())
    assert heldout.evaluate_checkpoint(tiny_pretrained_dir, tiny_corpus, "mlm", evaluation, "validation") == result


def test_prediction_correctness_follows_the_test_file_order(tmp_path):
    test_file = tmp_path / "test.jsonl"
    test_file.write_text("".join(json.dumps({"label": label}) + "\n" for label in ["a", "b", "a"]))
    predictions = tmp_path / "predictions.jsonl"
    predictions.write_text("".join(json.dumps({"index": i, "prediction": p}) + "\n" for i, p in [(2, "b"), (0, "a"), (1, "b")]))
    assert heldout.prediction_correctness(predictions, test_file, "label").tolist() == [1, 1, 0]
    predictions.write_text(json.dumps({"index": 0, "prediction": "a"}) + "\n")
    with pytest.raises(ValueError, match="every row needs one"):
        heldout.prediction_correctness(predictions, test_file, "label")
    bits = np.array([1, 0, 1, 1, 0, 0, 0, 1, 1], dtype=np.uint8)
    assert heldout.decode_items(heldout.classification_items(bits, "test"))["correct"].tolist() == bits.tolist()


# ---------------------------------------------------------------------------------------------------------------
# Prepared data: rebuilt when what makes it changes
# ---------------------------------------------------------------------------------------------------------------


def test_prepared_data_is_reused_when_fresh_and_rebuilt_when_its_inputs_or_files_change(tmp_path, monkeypatch):
    from test_wordnet import write_fake_wordnet

    from mhe_transformers.data import wordnet

    dictionary = write_fake_wordnet(tmp_path / "dict")
    monkeypatch.setenv("WNSEARCHDIR", str(dictionary))
    prepared = tmp_path / "prepared"
    built = []
    original = wordnet.prepare_wordnet
    monkeypatch.setattr(wordnet, "prepare_wordnet", lambda *a, **k: built.append(1) or original(*a, **k))
    first = wordnet.ensure_wordnet(prepared)
    assert wordnet.ensure_wordnet(prepared) == first and len(built) == 1  # fresh: reused
    (prepared / "corpus.txt").write_text("edited\n")  # a changed file is never used
    assert wordnet.ensure_wordnet(prepared)["content_hash"] == first["content_hash"] and len(built) == 2
    wordnet.ensure_wordnet(prepared, max_synsets=50)  # other parameters
    assert len(built) == 3 and json.loads((prepared / "counts.json").read_text())["synsets"] == 50
    data_file = dictionary / "data.verb"
    data_file.write_text(data_file.read_text().replace("move about quickly", "move about fast"))  # other input
    assert wordnet.ensure_wordnet(prepared, max_synsets=50)["content_hash"] != first["content_hash"]
    assert len(built) == 4
    # The tokenizer, likewise: trained again when its corpus changes, reused otherwise.
    corpus = prepared / "corpus.txt"
    tokenizer = compare.ensure_tokenizer(tmp_path / "tok", corpus, 60)
    assert compare.ensure_tokenizer(tmp_path / "tok", corpus, 60) == tokenizer
    corpus.write_text(corpus.read_text() + "an entirely new line of words\n" * 5)
    assert compare.ensure_tokenizer(tmp_path / "tok", corpus, 60)["inputs_hash"] != tokenizer["inputs_hash"]
    assert os.path.isfile(tmp_path / "tok" / "tokenizer.json")


def test_the_gpu_config_parses_and_scores_glue_validation_without_items(tmp_path, tiny_tokenizer_dir):
    config = load_config(REPO_ROOT / "configs/compare/glue-base.yaml")
    assert len(config.tasks) == 8 and config.stage == "design" and not config.evaluation["text"]
    assert compare.finetune_values(config, config.tasks[0])["do_predict"] is False  # no local files: validation only
    # bf16 is refused by TrainingArguments on a CPU-only machine, and the Hub tokenizer is out of reach: check the
    # rest, the base-size models built with a local tokenizer.
    config.pretrain_args.pop("bf16")
    config.pretrain_args["tokenizer_name"] = str(tiny_tokenizer_dir)
    for task in config.tasks:
        task.args.pop("bf16")
    compare.check_arguments(config, {})


class ShaFailsPipeline(FakePipeline):
    def fake_pretrain(self, argv):
        if option(argv, "attention_type") == "sha":
            raise ValueError("sha diverged")
        return super().fake_pretrain(argv)


def test_a_run_failing_in_its_process_stops_the_comparison_with_its_error(toy, tmp_path):
    with pytest.raises(RuntimeError, match="base/sha, seed 42: ValueError: sha diverged"):
        main(["--comparison", str(toy(jobs=2, seeds=[42]))], pipeline=ShaFailsPipeline())
    records = compare.read_records(tmp_path / "records" / "toy")
    assert {r["attention_type"] for r in records} <= {"mha", "mhe_mul"}  # the others' records are kept


def test_a_second_job_of_the_same_comparison_is_refused_while_the_first_runs(toy, tmp_path):
    import subprocess
    import sys

    from mhe_transformers.utils.run_folder import OutputDirError

    config = load_config(toy(seeds=[42]))
    folder = tmp_path / "runs" / "toy"
    holder = subprocess.Popen(  # another job, holding the comparison's folder
        [sys.executable, "-c", "import sys, time\nfrom mhe_transformers.utils.run_folder import lock_output_dir\n"
         "with lock_output_dir(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(60)", str(folder)],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        pipeline = FakePipeline()
        with pytest.raises(OutputDirError, match="in use by another run"):
            run_comparison(config, pipeline)
        assert pipeline.calls == [] and not (tmp_path / "records" / "toy").exists()
    finally:
        holder.kill()
        holder.wait()
    assert len(run_comparison(config, FakePipeline())) == 3  # a killed holder's lock does not block
