"""Nothing lost, nothing leaked: Hub tokens, the user's folders and interrupted runs, across every script.

Offline: the Hub is a recording stand-in patched into `huggingface_hub.HfApi` (the class Trainer's `hf_api()` and
`mhe_transformers.hub.push` both instantiate), so any upload, whoever starts it, is recorded instead of sent.
"""

import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from conftest import QUICK_TRAINING_ARGS, TINY_MODEL_ARGS
from huggingface_hub import HfApi

from mhe_transformers.training import loop
from mhe_transformers.training import pretrain as pretraining

TOKEN = "hf_SeCrEt_token_for_tests_0123456789"


class HubRecorder:
    """Replaces HfApi's network methods: every call is recorded with the token it would authenticate with."""

    def __init__(self, monkeypatch):
        self.calls = []
        for name in ("create_repo", "create_commit", "upload_folder", "upload_file",
                     "create_branch", "delete_file", "delete_folder"):  # fmt: skip
            monkeypatch.setattr(HfApi, name, self._recorder(name))

    def _recorder(self, name):
        def record(api, *args, **kwargs):
            token = kwargs.get("token") or api.token
            self.calls.append((name, args, kwargs, token))
            if name == "create_repo":
                from huggingface_hub import RepoUrl

                return RepoUrl(f"https://huggingface.co/{args[0] if args else kwargs['repo_id']}")
            return "commit-info"

        return record


def written_bytes_containing(root: Path, secret: str) -> list[str]:
    """Every file under `root` (hidden ones and checkpoints included) whose bytes contain `secret`."""
    return [str(path) for path in root.rglob("*") if path.is_file() and secret.encode() in path.read_bytes()]


def pretrain_argv(tiny_corpus, tiny_tokenizer_dir, output_dir) -> list[str]:
    return [
        *TINY_MODEL_ARGS, *QUICK_TRAINING_ARGS, "--tokenizer_name", str(tiny_tokenizer_dir),
        "--train_files", str(tiny_corpus), "--output_dir", str(output_dir), "--max_seq_length", "32",
        "--do_train", "true", "--per_device_train_batch_size", "8",
    ]  # fmt: skip


# --- 1. the Hub token ---------------------------------------------------------------------------------------------


def test_push_to_hub_sends_one_verified_commit_with_the_users_token_and_writes_it_nowhere(
    tmp_path, monkeypatch, capfd, caplog, tiny_corpus, tiny_tokenizer_dir
):
    hub = HubRecorder(monkeypatch)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    output_dir = tmp_path / "run"
    argv = pretrain_argv(tiny_corpus, tiny_tokenizer_dir, output_dir) + [
        "--max_steps", "2", "--save_strategy", "steps", "--save_steps", "1", "--log_level", "info",
        "--push_to_hub", "true", "--hub_model_id", "me/x", "--hub_token", TOKEN,
    ]  # fmt: skip
    pretraining.main(argv)

    # One repo creation and one commit, both with the user's token, and nothing else: Trainer pushed nothing.
    assert [(name, token) for name, _, _, token in hub.calls] == [("create_repo", TOKEN), ("create_commit", TOKEN)]
    (_, create_args, create_kwargs, _), (_, commit_args, commit_kwargs, _) = hub.calls
    assert create_args == ("me/x",) and create_kwargs == {"private": False, "exist_ok": True}
    assert commit_args == ("me/x",)
    uploaded = sorted(op.path_in_repo for op in commit_kwargs["operations"])
    assert uploaded == [
        "README.md", "all_results.json", "config.json", "configuration_mhe.py", "model.safetensors", "modeling_mhe.py",
        "tokenizer.json", "tokenizer_config.json", "train_results.json", "trainer_state.json", "training_args.json",
    ]  # fmt: skip
    printed = capfd.readouterr()
    assert ", ".join(uploaded) in printed.out  # the list is shown before it is sent

    # The token is in no byte written: final folder, checkpoints (training_args.bin), hidden files, logs.
    assert written_bytes_containing(tmp_path, TOKEN) == []
    assert TOKEN not in printed.out + printed.err + caplog.text
    assert sorted(p.name for p in output_dir.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    for pickled in [output_dir / "training_args.bin", *output_dir.glob("checkpoint-*/training_args.bin")]:
        args = torch.load(pickled, weights_only=False)
        assert args.hub_token is None and args.push_to_hub is False and args.hub_push.token is None
    assert json.loads((output_dir / "training_args.json").read_text())["MHETrainingArguments"]["push_to_hub"] is True


def test_training_arguments_never_pickle_or_print_the_token():
    args = loop.MHETrainingArguments(
        output_dir="unused", push_to_hub=True, hub_token=TOKEN, hub_model_id="me/x", hub_private_repo=True
    )
    assert (args.push_to_hub, args.hub_token) == (False, None)  # Trainer sees no push and no token
    assert (args.hub_push.repo_id, args.hub_push.private, args.hub_push.token) == ("me/x", True, TOKEN)
    assert TOKEN.encode() not in pickle.dumps(args)
    assert TOKEN not in repr(args) + str(args) + json.dumps(args.to_dict()) + repr(args.hub_push)
    assert loop.MHETrainingArguments(output_dir="unused").hub_push is None


# --- 2. the user's folders ----------------------------------------------------------------------------------------


def foreign_folder(path: Path) -> Path:
    """A folder of the user's own: nothing this tool wrote."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "notes.txt").write_text("my notes")
    return path


def refused(main, argv: list[str], capsys) -> str:
    """Run a script's main(argv), which must refuse (argparse's exit 2); returns its message."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def test_check_output_dir_rule(tmp_path, monkeypatch):
    from mhe_transformers.utils.run_folder import OutputDirError, atomic_directory, check_output_dir

    monkeypatch.chdir(tmp_path)
    check_output_dir(tmp_path / "new")  # missing: fine
    (tmp_path / "empty").mkdir()
    check_output_dir(tmp_path / "empty")  # empty: fine
    foreign = foreign_folder(tmp_path / "foreign")
    for overwrite in (False, True):
        with pytest.raises(OutputDirError, match="did not write"):
            check_output_dir(foreign, overwrite)
    with pytest.raises(OutputDirError, match="working directory"):
        check_output_dir(".", overwrite=True)
    with pytest.raises(OutputDirError, match="input of this run"):
        check_output_dir(foreign, overwrite=True, inputs=[foreign / "notes.txt"])
    with atomic_directory(tmp_path / "own") as folder:
        (folder / "result.txt").write_text("1")
    with pytest.raises(OutputDirError, match="--overwrite_output_dir"):
        check_output_dir(tmp_path / "own")  # ours, but not asked to replace
    check_output_dir(tmp_path / "own", overwrite=True)
    with pytest.raises(OutputDirError, match="did not write"), atomic_directory(foreign):
        pass  # the writer itself never replaces foreign content either
    assert (foreign / "notes.txt").read_text() == "my notes"
    (tmp_path / "a_file").write_text("")
    with pytest.raises(OutputDirError, match="a_file is a file"):
        check_output_dir(tmp_path / "a_file" / "out")
    (tmp_path / "locked").mkdir(mode=0o500)
    if os.geteuid() != 0:  # root writes anywhere
        with pytest.raises(OutputDirError, match="not writable"):
            check_output_dir(tmp_path / "locked" / "out")


def test_train_tokenizer_never_replaces_foreign_folders_or_the_working_directory(
    tmp_path, monkeypatch, capsys, tiny_corpus
):
    from mhe_transformers.training.tokenizer import main

    monkeypatch.chdir(foreign_folder(tmp_path / "cwd"))
    foreign = foreign_folder(tmp_path / "p")
    base = ["--train_files", str(tiny_corpus), "--vocab_size", "100", "--min_frequency", "1"]
    overwrite = ["--overwrite_output_dir"]
    for output, extra in [(foreign, []), (foreign, overwrite), (Path("."), overwrite)]:
        message = refused(main, [*base, "--output_dir", str(output), *extra], capsys)
        assert "did not write" in message or "working directory" in message
    assert (foreign / "notes.txt").exists() and (tmp_path / "cwd" / "notes.txt").exists()
    for size in ("0", "-5"):
        assert "--vocab_size must exceed" in refused(main, [*base, "--vocab_size", size, "--output_dir", "t"], capsys)
    assert "input of this run" in refused(main, [*base, "--output_dir", str(tiny_corpus.parent)], capsys)

    own = tmp_path / "tok"
    main([*base, "--output_dir", str(own)])
    assert "--overwrite_output_dir" in refused(main, [*base, "--output_dir", str(own)], capsys)
    main([*base, "--output_dir", str(own), "--overwrite_output_dir"])
    assert (own / "tokenizer.json").is_file()


def test_prepare_wordnet_never_replaces_foreign_folders(tmp_path, capsys):
    from test_wordnet import write_fake_wordnet

    from mhe_transformers.data.wordnet import main

    wordnet_dir = write_fake_wordnet(tmp_path / "dict")
    foreign = foreign_folder(tmp_path / "data")
    for extra in ([], ["--overwrite_output_dir"]):
        message = refused(main, ["--wordnet_dir", str(wordnet_dir), "--output_dir", str(foreign), *extra], capsys)
        assert "did not write" in message
    assert (foreign / "notes.txt").exists()
    message = refused(
        main, ["--wordnet_dir", str(wordnet_dir), "--output_dir", str(tmp_path), "--overwrite_output_dir"], capsys
    )
    assert "input of this run" in message
    assert (wordnet_dir / "data.noun").is_file()
    for count in ("0", "-5"):
        argv = ["--wordnet_dir", str(wordnet_dir), "--output_dir", str(tmp_path / "w"), "--max_synsets", count]
        assert "--max_synsets must be positive" in refused(main, argv, capsys)


def test_training_overwrite_validates_every_input_before_deleting_and_never_an_input(
    tmp_path, monkeypatch, tiny_corpus, tiny_tokenizer_dir, tiny_pretrained_dir, tiny_classification_dir
):
    from mhe_transformers.training import finetune as finetuning
    from mhe_transformers.utils.run_folder import OutputDirError

    earlier = tmp_path / "run"
    argv = pretrain_argv(tiny_corpus, tiny_tokenizer_dir, earlier) + ["--max_steps", "1", "--save_strategy", "no"]
    pretraining.main(argv)
    before = sorted(p.name for p in earlier.iterdir())
    # A typo'd data file: the command fails, and the earlier run is still there.
    with pytest.raises(FileNotFoundError, match="typo.txt"):
        pretraining.main(argv + ["--overwrite_output_dir", "true", "--train_files", str(tmp_path / "typo.txt")])
    assert sorted(p.name for p in earlier.iterdir()) == before
    # Continuing pretraining of a model into its own folder would delete the model.
    source = tmp_path / "source"
    shutil.copytree(tiny_pretrained_dir, source)
    continued = [a for a in argv if a not in TINY_MODEL_ARGS]
    continued = continued[: continued.index("--output_dir")] + continued[continued.index("--output_dir") + 2 :]
    with pytest.raises(OutputDirError, match="input of this run"):
        pretraining.main(continued + ["--model_name_or_path", str(source), "--output_dir", str(source),
                                      "--overwrite_output_dir", "true"])  # fmt: skip
    assert (source / "model.safetensors").is_file()
    # Someone else's folder is never replaced, overwrite or not.
    foreign = foreign_folder(tmp_path / "foreign")
    with pytest.raises(OutputDirError, match="did not write"):
        pretraining.main(argv[:-4] + ["--output_dir", str(foreign), "--overwrite_output_dir", "true"])
    assert (foreign / "notes.txt").exists()
    # Fine-tuning: the model folder and a folder holding the data are inputs.
    data = tiny_classification_dir
    finetune = [
        *QUICK_TRAINING_ARGS, "--model_name_or_path", str(source), "--train_file", str(data / "train.jsonl"),
        "--label_list_file", str(data / "labels.json"), "--do_train", "true", "--max_steps", "1",
        "--overwrite_output_dir", "true", "--max_seq_length", "32",
    ]  # fmt: skip
    for output in (source, data):  # the data folder is not ours either: refused as such first
        with pytest.raises(OutputDirError, match="input of this run|did not write"):
            finetuning.main(finetune + ["--output_dir", str(output)])
    assert (source / "model.safetensors").is_file() and (data / "train.jsonl").is_file()


def test_report_writers_refuse_foreign_output_folders_before_working(tmp_path):
    from mhe_transformers.experiments import benchmark
    from mhe_transformers.utils.run_folder import OutputDirError

    foreign = foreign_folder(tmp_path / "report")
    with pytest.raises(OutputDirError, match="did not write"):
        benchmark.main(["--micro", "true", "--output_dir", str(foreign), "--overwrite_output_dir", "true"])
    assert (foreign / "notes.txt").exists()


def test_a_failed_atomic_write_leaves_the_old_file_whole(tmp_path):
    from mhe_transformers.utils.run_folder import write_json, write_text_atomically

    path = tmp_path / "README.md"
    write_text_atomically(path, "old card\n")
    with pytest.raises(TypeError):
        write_text_atomically(path, None)  # fails while writing: the old file stays, no temporary file is left
    assert path.read_text() == "old card\n" and [p.name for p in tmp_path.iterdir()] == ["README.md"]
    write_json(tmp_path / "results.json", {"b": 1, "a": 0.5})
    assert (tmp_path / "results.json").read_text() == '{\n    "a": 0.5,\n    "b": 1\n}\n'  # Trainer's layout
    assert oct((tmp_path / "results.json").stat().st_mode & 0o777) == oct(0o644)
