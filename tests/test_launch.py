"""What a run checks about how it was started, before it reads anything (mhe_transformers.training.launch): launches
that would not give the processes asked for, the effective batch, local paths that do not exist, Hub datasets that
cannot be reached; and output folders that follow the command line. Fast: no process is launched here
(tests/test_distributed.py launches them)."""

import logging
import types

import huggingface_hub
import pytest
from conftest import QUICK_TRAINING_ARGS, REPO_ROOT, TINY_MODEL_ARGS

from mhe_transformers.training import finetune as finetuning
from mhe_transformers.training import finetune_qa, launch, loop
from mhe_transformers.training import pretrain as pretraining
from mhe_transformers.utils.cli import UsageError, fill_placeholders

CONFIGS = REPO_ROOT / "configs"


@pytest.fixture
def clean_launch_env(monkeypatch):
    for name in ("ACCELERATE_USE_CPU", "MASTER_ADDR", "MASTER_PORT", *launch.MPI_WORLD_SIZE_VARIABLES):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_accelerate_starting_one_of_several_processes_is_refused(clean_launch_env):
    one_process = types.SimpleNamespace(world_size=1)
    launch.check_launch(one_process)  # a plain `python scripts/...` run
    # What `accelerate launch --cpu --num_processes 2` gives its one process: MASTER_ADDR for several, no world size.
    clean_launch_env.setenv("ACCELERATE_USE_CPU", "True")
    launch.check_launch(one_process)  # `accelerate launch --cpu` with one process sets no MASTER_ADDR
    clean_launch_env.setenv("MASTER_ADDR", "127.0.0.1")
    with pytest.raises(ValueError, match="started this script once.*torchrun --nproc_per_node N .*--use_cpu true"):
        launch.check_launch(one_process)
    clean_launch_env.setenv("OMPI_COMM_WORLD_SIZE", "2")  # mpirun did start several
    launch.check_launch(types.SimpleNamespace(world_size=2))


def test_processes_that_would_train_apart_are_refused(clean_launch_env):
    clean_launch_env.setenv("WORLD_SIZE", "2")
    launch.check_launch(types.SimpleNamespace(world_size=2))
    with pytest.raises(ValueError, match="2 processes were launched but they would train independently"):
        launch.check_launch(types.SimpleNamespace(world_size=1))  # e.g. torchrun without --use_cpu on CPUs


def test_effective_batch_is_stated_once(caplog):
    def arguments(**values):
        defaults = dict(do_train=True, process_index=0, world_size=2, per_device_train_batch_size=4,
                        gradient_accumulation_steps=3)  # fmt: skip
        return types.SimpleNamespace(**{**defaults, **values})

    with caplog.at_level(logging.INFO, logger=launch.__name__):
        launch.log_effective_batch(arguments())
        launch.log_effective_batch(arguments(process_index=1))  # another process: silent
        launch.log_effective_batch(arguments(do_train=False))  # nothing trained: silent
        launch.log_effective_batch(arguments(world_size=1, gradient_accumulation_steps=1))
    assert [(record.levelno, record.getMessage()) for record in caplog.records] == [
        (logging.WARNING, "Effective batch: 24 sequences per optimizer step = 4 per device x 2 processes x 3 gradient "
                          "accumulation steps."),
        (logging.INFO, "Effective batch: 4 sequences per optimizer step = 4 per device x 1 process x 1 gradient "
                       "accumulation step."),
    ]  # fmt: skip


# --- a local folder that does not exist is reported as such ------------------------------------------------------


def test_missing_local_folder_is_not_taken_for_a_hub_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for value in ("./nothing", str(tmp_path / "nothing"), "a/b/c", "~/nothing-here-at-all"):
        with pytest.raises(FileNotFoundError, match="--model_name_or_path .*: no such file or folder"):
            launch.check_local_path(value, "--model_name_or_path")
    # One '/' is also a Hub id's shape: a missing folder under an existing local one is still a missing folder.
    (tmp_path / "outputs" / "pretrain-mhe_mul").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"outputs/pretrain-mha: no such folder \(outputs/ holds pretrain-mhe_mul\)"):
        launch.check_local_path("outputs/pretrain-mha", "--model_name_or_path")
    launch.check_local_path("outputs/pretrain-mhe_mul", "--model_name_or_path")
    launch.check_local_path(None, "--tokenizer_name")
    # Not local, not in the Hub cache, and the Hub offline (conftest sets HF_HUB_OFFLINE=1): missing either way.
    with pytest.raises(FileNotFoundError, match=r"someone/model: no such local folder, and not in the Hub cache \(the "
                                                "Hub is offline"):  # fmt: skip
        launch.check_local_path("someone/model", "--tokenizer_name")


def test_hub_ids_pass_when_cached_or_found(tmp_path, monkeypatch):
    snapshot = tmp_path / "models--someone--model" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (tmp_path / "models--someone--model" / "refs").mkdir()
    (tmp_path / "models--someone--model" / "refs" / "main").write_text("abc123")
    launch.check_local_path("someone/model", "--model_name_or_path", cache_dir=str(tmp_path))  # offline, cached

    # Online: the Hub is asked; a model it has passes, and one it has not or cannot be asked about is missing.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    answers = {"someone/found": True, "someone/absent": False}

    def repo_exists(repo_id, **kwargs):
        if repo_id not in answers:
            raise ConnectionError("Name or service not known")
        return answers[repo_id]

    monkeypatch.setattr(huggingface_hub, "repo_exists", repo_exists)
    launch.check_local_path("someone/found", "--model_name_or_path")
    with pytest.raises(FileNotFoundError, match="no such local folder, and the Hub has no model of that name"):
        launch.check_local_path("someone/absent", "--model_name_or_path")
    with pytest.raises(FileNotFoundError, match=r"the Hub could not be reached .*\(ConnectionError: Name or service"):
        launch.check_local_path("someone/unreachable", "--model_name_or_path")


def test_pipelines_report_a_missing_model_folder_before_reading_data(tmp_path, monkeypatch, tiny_classification_dir):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "outputs").mkdir()
    data = tiny_classification_dir
    with pytest.raises((FileNotFoundError, UsageError), match="outputs/pretrain-mha: no such folder"):
        finetuning.main([
            "--config", str(CONFIGS / "finetune/wordnet-supersense.yaml"), *QUICK_TRAINING_ARGS,
            "--model_name_or_path", "outputs/pretrain-mha", "--train_file", str(data / "train.jsonl"),
            "--validation_file", str(data / "validation.jsonl"), "--test_file", str(data / "test.jsonl"),
            "--label_list_file", str(data / "labels.json"),
        ])  # fmt: skip
    with pytest.raises((FileNotFoundError, UsageError), match="--tokenizer_name outputs/tokenizer: no such folder"):
        pretraining.main([
            "--config", str(CONFIGS / "pretrain/wordnet-tiny.yaml"), *TINY_MODEL_ARGS, *QUICK_TRAINING_ARGS,
            "--train_files", str(data / "train.jsonl"),
        ])  # fmt: skip
    assert sorted(path.name for path in tmp_path.iterdir()) == ["outputs"]  # nothing written


# --- Hub datasets offline ------------------------------------------------------------------------------------------


def test_hub_datasets_offline_give_one_line_naming_what_is_missing(tmp_path, tiny_pretrained_dir, tiny_tokenizer_dir):
    model = ["--model_name_or_path", str(tiny_pretrained_dir)]
    cases = [
        (finetuning.main, ["--config", str(CONFIGS / "finetune/sst2.yaml"), *model],
         "'nyu-mll/glue' (configuration 'sst2')"),
        (finetune_qa.main, ["--config", str(CONFIGS / "finetune/squad.yaml"), *model], "'rajpurkar/squad'"),
        (pretraining.main, ["--config", str(CONFIGS / "pretrain/bert-base-hub.yaml"), *TINY_MODEL_ARGS,
                            "--tokenizer_name", str(tiny_tokenizer_dir), "--bf16", "false"],
         "'Salesforce/wikitext' (configuration 'wikitext-103-raw-v1')"),
    ]  # fmt: skip
    for main, argv, named in cases:
        with pytest.raises(ConnectionError) as error:
            main([*argv, *QUICK_TRAINING_ARGS, "--output_dir", str(tmp_path / "out")])
        message = str(error.value)
        assert f"Cannot load the Hub dataset {named}: it is not in the datasets cache" in message
        assert "the Hub is offline (HF_HUB_OFFLINE=1 or HF_DATASETS_OFFLINE=1)" in message and "\n" not in message
        assert not (tmp_path / "out").exists()


# --- checkpoints written under FSDP can be resumed --------------------------------------------------------------------


def test_sharded_fsdp_checkpoints_are_complete(tmp_path):
    checkpoint = tmp_path / "checkpoint-3"
    checkpoint.mkdir()
    (checkpoint / "trainer_state.json").write_text('{"global_step": 3}')
    assert loop.checkpoint_problem(checkpoint) == "no model weights"
    (checkpoint / "pytorch_model_fsdp_0").mkdir()  # accelerate's SHARDED_STATE_DICT checkpoint
    assert loop.checkpoint_problem(checkpoint) is None


# --- output folders follow the command line ----------------------------------------------------------------------


def test_output_dir_placeholders_take_the_arguments_values():
    arguments = {"attention_type": "mha", "model_name_or_path": "outputs/pretrain-mha/", "seed": 7, "train_files": None}
    assert fill_placeholders("output_dir", "outputs/pretrain-{attention_type}", arguments) == "outputs/pretrain-mha"
    assert fill_placeholders("output_dir", "out/{model_name_or_path}-{seed}", arguments) == "out/pretrain-mha-7"
    assert fill_placeholders("output_dir", "outputs/plain", arguments) == "outputs/plain"
    with pytest.raises(ValueError, match=r"no argument --attention to fill \{attention\}"):
        fill_placeholders("output_dir", "outputs/{attention}", arguments)
    with pytest.raises(ValueError, match=r"\{train_files\} needs one value of --train_files"):
        fill_placeholders("output_dir", "outputs/{train_files}", arguments)


def test_recipes_output_folders_follow_the_command_line():
    def output_dir(module, config, *overrides):
        return loop.parse_args(module.ARGUMENT_CLASSES, ["--config", str(CONFIGS / config), *overrides])[-1].output_dir

    assert output_dir(pretraining, "pretrain/wordnet-tiny.yaml") == "outputs/pretrain-mhe_mul"
    assert output_dir(pretraining, "pretrain/wordnet-tiny.yaml", "--attention_type", "mha") == "outputs/pretrain-mha"
    assert output_dir(pretraining, "pretrain/wordnet-clm-tiny.yaml", "--attention_type", "gqa") == (
        "outputs/pretrain-clm-gqa"
    )
    assert output_dir(pretraining, "pretrain/wordnet-tiny.yaml", "--output_dir", "mine") == "mine"
    # Fine-tuning reads what pretraining writes by default, and names its folder for the model it starts from.
    assert output_dir(finetuning, "finetune/wordnet-supersense.yaml") == "outputs/supersense-pretrain-mhe_mul"
    assert output_dir(finetuning, "finetune/sst2.yaml", "--model_name_or_path", "outputs/pretrain-mha") == (
        "outputs/glue/sst2-pretrain-mha"
    )
    for config in sorted((CONFIGS / "finetune").glob("*.yaml")):
        module = finetune_qa if config.stem == "squad" else finetuning
        model_args = loop.parse_args(module.ARGUMENT_CLASSES, ["--config", str(config)])[0]
        assert model_args.model_name_or_path == "outputs/pretrain-mhe_mul", config.name
    with pytest.raises(UsageError, match=r"no argument --attention to fill"):
        output_dir(pretraining, "pretrain/wordnet-tiny.yaml", "--output_dir", "outputs/{attention}")
