"""The promises of docs/reliability.md, one failure case per test: run folders (ownership, protected paths, symlinks,
temporaries, one run per folder), validation before anything is touched, and named errors for bad data.

Every case here has its row in docs/reliability.md's table.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT

from mhe_transformers.utils import run_folder
from mhe_transformers.utils.run_folder import (
    OUTPUT_MARKER,
    OutputDirError,
    atomic_directory,
    check_output_dir,
    clean_stale_temporaries,
    lock_output_dir,
)

TOKEN = "hf_SeCrEtTokenForReliabilityTests0123"


def foreign_folder(path: Path) -> Path:
    """A folder of the user's own: nothing this tool wrote."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "notes.txt").write_text("my notes")
    return path


def own_folder(path: Path, content: str = "1") -> Path:
    with atomic_directory(path) as folder:
        (folder / "result.txt").write_text(content)
    return path


# --- run folders --------------------------------------------------------------------------------------------------


def test_protected_folders_are_never_output_folders(tmp_path, monkeypatch):
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir(), work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    cases = [(work, "the working directory"), (home, "your home folder"), (tmp_path, "your home folder"),
             (Path("/"), "the root folder")]  # fmt: skip
    for folder, what in cases:  # tmp_path: a parent of both
        with pytest.raises(OutputDirError, match=f"is {what} or one of its parents"):
            check_output_dir(folder, overwrite=True)
        with pytest.raises(OutputDirError, match=f"is {what} or one of its parents"):
            run_folder.remove_own_folder(folder)
    check_output_dir(work / "new")  # inside them is fine
    assert home.is_dir() and work.is_dir()


def test_a_symlinked_output_folder_is_refused_and_its_target_kept(tmp_path):
    target = own_folder(tmp_path / "real")
    link = tmp_path / "link"
    link.symlink_to(target, target_is_directory=True)
    for attempt in (lambda: check_output_dir(link, overwrite=True), lambda: atomic_directory(link).__enter__(),
                    lambda: run_folder.remove_own_folder(link)):  # fmt: skip
        with pytest.raises(OutputDirError, match="symbolic link"):
            attempt()
    assert link.is_symlink() and (target / "result.txt").read_text() == "1"
    # A link among the PARENTS is followed: the folder is written where the link resolves.
    (tmp_path / "parent-link").symlink_to(tmp_path / "real", target_is_directory=True)
    check_output_dir(tmp_path / "parent-link" / "sub")
    own_folder(tmp_path / "parent-link" / "sub")
    assert (target / "sub" / "result.txt").is_file()


def test_cleaning_temporaries_deletes_only_ours(tmp_path):
    output_dir = own_folder(tmp_path / "run")
    # Look-alikes that this tool did not write: a user's folders that merely match the naming.
    lookalike_tmp = foreign_folder(tmp_path / ".run.tmp-mine")
    lookalike_old = foreign_folder(tmp_path / ".run.old-mine" / "run")
    # Ours, left by a killed run: a half-written result, and the previous folder moved aside with a checkpoint.
    ours_tmp = run_folder._make_temporary(output_dir.resolve(), "tmp")
    ours_old = run_folder._make_temporary(output_dir.resolve(), "old")
    (ours_old / "run" / "checkpoint-3").mkdir(parents=True)
    removed = clean_stale_temporaries(output_dir, keep=["checkpoint-*"])
    assert sorted(removed) == sorted([ours_tmp, ours_old])
    assert (lookalike_tmp / "notes.txt").exists() and (lookalike_old / "notes.txt").exists()
    assert (output_dir / "checkpoint-3").is_dir()  # carried into the folder it belonged to


def test_every_temporary_carries_the_marker_from_its_creation(tmp_path):
    own_folder(tmp_path / "run")
    with atomic_directory(tmp_path / "run") as folder:
        assert (folder / OUTPUT_MARKER).is_file() and folder.name.startswith(".run.tmp-")


# A process that holds an output folder's lock, as a run does from its checks to its final rename.
HOLD_LOCK = """
import sys, time
from mhe_transformers.utils.run_folder import lock_output_dir
with lock_output_dir(sys.argv[1]):
    print("HOLDING", flush=True)
    time.sleep(600)
"""


def hold_lock(folder: Path) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(folder), "--hub_token", TOKEN],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )  # fmt: skip
    assert process.stdout.readline().startswith("HOLDING")
    return process


def kill(process: subprocess.Popen) -> None:
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=60)


def test_a_second_writer_is_refused_naming_the_first(tmp_path):
    output_dir = tmp_path / "run"
    holder = hold_lock(output_dir)
    try:
        with pytest.raises(OutputDirError, match=f"in use by another run \\(pid {holder.pid} on ") as error:
            with lock_output_dir(output_dir):
                pass
        assert "--hub_token <redacted>" in str(error.value) and TOKEN not in str(error.value)
        info = (tmp_path / ".run.lock").read_text()
        assert TOKEN not in info and json.loads(info)["pid"] == holder.pid
    finally:
        kill(holder)
    with lock_output_dir(output_dir):  # a killed holder leaves no lock behind (the OS releases it)
        with lock_output_dir(output_dir):  # re-entrant within one process
            pass
    assert [path.name for path in tmp_path.iterdir()] == []  # the lock file goes with the run


def test_scripts_refuse_a_folder_another_run_is_writing(tmp_path, tiny_corpus):
    from mhe_transformers.training.tokenizer import main as train_tokenizer

    output_dir = tmp_path / "tok"
    holder = hold_lock(output_dir)
    try:
        with pytest.raises(OutputDirError, match=f"pid {holder.pid}"):
            train_tokenizer(["--train_files", str(tiny_corpus), "--vocab_size", "100", "--output_dir", str(output_dir)])
    finally:
        kill(holder)
    assert not output_dir.exists()


def test_exports_never_write_over_their_input(tiny_pretrained_dir, tmp_path):
    from mhe_transformers.interop.onnx import export_onnx
    from mhe_transformers.interop.sentence_transformer import save_sentence_transformer

    before = {path.name: path.read_bytes() for path in tiny_pretrained_dir.iterdir() if path.is_file()}
    for output_dir in (tiny_pretrained_dir, tiny_pretrained_dir.parent):  # the checkpoint (ours), or its parent
        with pytest.raises(OutputDirError, match="input of this run"):
            save_sentence_transformer(tiny_pretrained_dir, output_dir, overwrite_output_dir=True)
    with pytest.raises(OutputDirError, match="input of this run"):
        export_onnx(tiny_pretrained_dir, output_path=tiny_pretrained_dir / "model.onnx", overwrite_output_dir=True)
    foreign = foreign_folder(tmp_path / "exports")
    with pytest.raises(OutputDirError, match="did not write"):
        export_onnx(tiny_pretrained_dir, output_path=foreign / "model.onnx", overwrite_output_dir=True)
    assert {path.name: path.read_bytes() for path in tiny_pretrained_dir.iterdir() if path.is_file()} == before
    assert [path.name for path in foreign.iterdir()] == ["notes.txt"]


# --- secrets ------------------------------------------------------------------------------------------------------


def test_redact_hides_every_kind_of_secret(monkeypatch):
    from mhe_transformers.utils.secrets import REDACTED, redact

    monkeypatch.setenv("WANDB_API_KEY", "wandb-secret-value")
    argv = ["train.py", "--hub_token", "plain-secret", "--tokenizer_name", "tok", "--hub_token=other-secret",
            "--note", f"see {TOKEN}", "--run_name", "wandb-secret-value"]  # fmt: skip
    assert redact(argv) == ["train.py", "--hub_token", REDACTED, "--tokenizer_name", "tok", f"--hub_token={REDACTED}",
                            "--note", f"see {REDACTED}", "--run_name", REDACTED]  # fmt: skip
    record = {"hub_token": "x", "max_tokens": 5, "nested": [{"api_key": "k", "text": "hub_token: abc\nlr: 0.1"}]}
    assert redact(record) == {"hub_token": REDACTED, "max_tokens": 5,
                              "nested": [{"api_key": REDACTED, "text": f"hub_token: {REDACTED}\nlr: 0.1"}]}  # fmt: skip


def test_comparison_records_never_hold_a_token(tmp_path, tiny_classification_dir, tiny_tokenizer_dir):
    from test_compare import FakePipeline, write_comparison

    from mhe_transformers.experiments import compare

    recipe = {"config": "configs/pretrain/wordnet-tiny.yaml",
              "args": {"model_config": "configs/model/tiny.json", "tokenizer_name": str(tiny_tokenizer_dir),
                       "max_steps": 2, "hub_token": TOKEN}}  # fmt: skip
    path = write_comparison(tmp_path, tiny_classification_dir, tiny_tokenizer_dir, seeds=[42], pretrain=recipe)
    written = compare.main(["--comparison", str(path), "--max_runs", "1", "--keep_checkpoints", "true"],
                           pipeline=FakePipeline())  # fmt: skip
    assert len(written) == 1
    assert [str(p) for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".yaml" and TOKEN in p.read_text(
        errors="replace")] == []  # fmt: skip
    # The token is no part of what defines a run: another token, the same run key.
    other = write_comparison(tmp_path / "other", tiny_classification_dir, tiny_tokenizer_dir, seeds=[42],
                             pretrain={**recipe, "args": {**recipe["args"], "hub_token": "hf_another"}})  # fmt: skip
    config, other_config = compare.load_config(path), compare.load_config(other)
    assert compare.run_key(config, config.arms()[0], 42) == compare.run_key(other_config, other_config.arms()[0], 42)


# --- bad data gets a named error ----------------------------------------------------------------------------------


def finetune_argv(model_dir, output_dir, train_file, *extra) -> list[str]:
    from conftest import QUICK_TRAINING_ARGS

    return [*QUICK_TRAINING_ARGS, "--model_name_or_path", str(model_dir), "--output_dir", str(output_dir),
            "--train_file", str(train_file), "--do_train", "true", "--max_steps", "1", "--max_seq_length", "32",
            *extra]  # fmt: skip


def test_non_finite_regression_labels_are_named(tiny_pretrained_dir, tmp_path):
    from mhe_transformers.training import finetune as finetuning

    train = tmp_path / "train.csv"
    for bad in ("inf", "-inf"):
        train.write_text(f"text,label\na small cat,0.5\na quick dog,{bad}\nthe old boat,1.0\n")
        with pytest.raises(ValueError, match=f"Row 2 of the train \\({train}\\) split has the label {bad} in column "
                                             "'label'.*finite"):  # fmt: skip
            finetuning.main(finetune_argv(tiny_pretrained_dir, tmp_path / "out", train))
    assert not (tmp_path / "out").exists()


def test_label_names_with_control_characters_are_named(tiny_pretrained_dir, tiny_classification_dir, tmp_path):
    from mhe_transformers.training import finetune as finetuning

    train = tiny_classification_dir / "train.jsonl"
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps(["verb.motion", "noun.animal", "noun\tartifact"]))
    with pytest.raises(ValueError, match=f"Label name 'noun\\\\tartifact' in {labels} holds a control character"):
        finetuning.main(finetune_argv(tiny_pretrained_dir, tmp_path / "out", train, "--label_list_file", str(labels)))
    rows = [{"text": "a small cat", "label": "noun.animal"}, {"text": "a dog", "label": "noun.animal\n"}]
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(ValueError, match=f"Label name 'noun.animal\\\\n' in the train \\({data}\\) split holds a "
                                         "control character"):  # fmt: skip
        finetuning.main(finetune_argv(tiny_pretrained_dir, tmp_path / "out", data))
    assert not (tmp_path / "out").exists()


def test_an_unrelated_tokenizer_is_refused_naming_both(tiny_pretrained_dir, tiny_classification_dir, tmp_path):
    from mhe_transformers.training import finetune as finetuning
    from mhe_transformers.training.tokenizer import train_wordpiece_tokenizer

    other = tmp_path / "other-tokenizer"
    texts = ["completely different words about planets and stars", "orbits moons comets galaxies"] * 20
    train_wordpiece_tokenizer(texts, vocab_size=120, output_dir=other, min_frequency=1)
    argv = finetune_argv(tiny_pretrained_dir, tmp_path / "out", tiny_classification_dir / "train.jsonl",
                         "--label_list_file", str(tiny_classification_dir / "labels.json"))  # fmt: skip
    with pytest.raises(ValueError, match=f"(?s)tokenizer {other} does not match.*{tiny_pretrained_dir}"):
        finetuning.main(argv + ["--tokenizer_name", str(other)])
    assert not (tmp_path / "out").exists()
    finetuning.main(argv + ["--tokenizer_name", str(tiny_pretrained_dir)])  # its own tokenizer, named: accepted


# --- training runs: their folders --------------------------------------------------------------------------------


def pretrain_argv(output_dir, tiny_corpus, tiny_tokenizer_dir, *extra) -> list[str]:
    from conftest import QUICK_TRAINING_ARGS, TINY_MODEL_ARGS

    return [*TINY_MODEL_ARGS, *QUICK_TRAINING_ARGS, "--tokenizer_name", str(tiny_tokenizer_dir), "--train_files",
            str(tiny_corpus), "--output_dir", str(output_dir), "--max_seq_length", "32", "--do_train", "true",
            "--max_steps", "2", "--per_device_train_batch_size", "8", *extra]  # fmt: skip


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def test_resuming_into_a_folder_of_the_users_own_is_refused_before_anything_is_deleted(
    tmp_path, tiny_corpus, tiny_tokenizer_dir, tiny_pretrained_dir, tiny_classification_dir
):
    import shutil

    from mhe_transformers.training import finetune as finetuning
    from mhe_transformers.training import pretrain as pretraining

    users = foreign_folder(tmp_path / "mine")
    shutil.copytree(tiny_pretrained_dir / "checkpoint-4", users / "checkpoint-4")  # a checkpoint they copied in
    before = folder_bytes(users)
    checkpoint = str(tiny_pretrained_dir / "checkpoint-2")
    finetune = finetune_argv(tiny_pretrained_dir, users, tiny_classification_dir / "train.jsonl",
                             "--label_list_file", str(tiny_classification_dir / "labels.json"))  # fmt: skip
    for main, argv in [(pretraining.main, pretrain_argv(users, tiny_corpus, tiny_tokenizer_dir)),
                       (finetuning.main, finetune)]:  # fmt: skip
        for resume in ("true", checkpoint):
            with pytest.raises(OutputDirError, match="did not write"):
                main(argv + ["--resume_from_checkpoint", resume])
            assert folder_bytes(users) == before


def test_a_second_training_run_into_a_folder_is_refused_naming_the_first(tmp_path, tiny_corpus, tiny_tokenizer_dir):
    from mhe_transformers.training import pretrain as pretraining

    output_dir = tmp_path / "run"
    holder = hold_lock(output_dir)
    try:
        for extra in ([], ["--overwrite_output_dir", "true"], ["--resume_from_checkpoint", "true"]):
            with pytest.raises(OutputDirError, match=f"in use by another run \\(pid {holder.pid} on "):
                pretraining.main(pretrain_argv(output_dir, tiny_corpus, tiny_tokenizer_dir, *extra))
    finally:
        kill(holder)
    assert not output_dir.exists()


def test_an_earlier_run_is_replaced_only_once_the_new_one_has_succeeded(tmp_path, tiny_corpus, tiny_tokenizer_dir):
    from mhe_transformers.training import pretrain as pretraining

    output_dir = tmp_path / "run"
    pretraining.main(pretrain_argv(output_dir, tiny_corpus, tiny_tokenizer_dir, "--save_strategy", "no"))
    earlier = folder_bytes(output_dir)
    replace = ["--overwrite_output_dir", "true"]
    # Checked by the Trainer alone (its integrations): refused before the run touches anything.
    with pytest.raises(RuntimeError, match="WandbCallback requires wandb"):
        pretraining.main(pretrain_argv(output_dir, tiny_corpus, tiny_tokenizer_dir, *replace, "--report_to", "wandb"))
    assert folder_bytes(output_dir) == earlier and sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    # Revealed only by the first evaluation: the new run fails beside the earlier one, which stays whole.
    evaluate = ["--do_eval", "true", "--eval_strategy", "steps", "--eval_steps", "1", "--save_strategy", "steps",
                "--save_steps", "1", "--load_best_model_at_end", "true"]  # fmt: skip
    with pytest.raises(KeyError, match="acuracy"):
        pretraining.main(pretrain_argv(output_dir, tiny_corpus, tiny_tokenizer_dir, *replace, *evaluate,
                                       "--metric_for_best_model", "acuracy"))  # fmt: skip
    assert folder_bytes(output_dir) == earlier
    # A successful run replaces it, with its own checkpoints only, and leaves nothing beside it.
    pretraining.main(pretrain_argv(output_dir, tiny_corpus, tiny_tokenizer_dir, *replace, *evaluate,
                                   "--metric_for_best_model", "accuracy"))  # fmt: skip
    assert folder_bytes(output_dir) != earlier
    assert sorted(p.name for p in output_dir.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    state = json.loads((output_dir / "trainer_state.json").read_text())
    assert Path(state["best_model_checkpoint"]).parent == output_dir.resolve()  # where the checkpoint now is
    for checkpoint in output_dir.glob("checkpoint-*"):  # and so do the checkpoints' own states (a resume reads them)
        best = json.loads((checkpoint / "trainer_state.json").read_text())["best_model_checkpoint"]
        assert Path(best).parent == output_dir.resolve() and Path(best).is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    recorded = json.loads((output_dir / "training_args.json").read_text())["MHETrainingArguments"]["output_dir"]
    assert recorded == str(output_dir.resolve())


def test_a_symlinked_output_folder_with_overwrite_gives_a_clear_error(tmp_path, tiny_corpus, tiny_tokenizer_dir):
    from mhe_transformers.training import pretrain as pretraining

    target = own_folder(tmp_path / "real")
    (tmp_path / "link").symlink_to(target, target_is_directory=True)
    with pytest.raises(OutputDirError, match="is a symbolic link"):
        pretraining.main(pretrain_argv(tmp_path / "link", tiny_corpus, tiny_tokenizer_dir, "--overwrite_output_dir",
                                       "true"))  # fmt: skip
    assert (target / "result.txt").read_text() == "1"


def test_a_comparison_never_writes_into_or_deletes_a_run_folder_of_the_users_own(
    tmp_path, tiny_classification_dir, tiny_tokenizer_dir
):
    from test_compare import FakePipeline, write_comparison

    from mhe_transformers.experiments import compare

    config = compare.load_config(write_comparison(tmp_path, tiny_classification_dir, tiny_tokenizer_dir, seeds=[42]))
    arm, seed = compare.missing_runs(config)[0]
    users = foreign_folder(Path(config.runs_dir) / config.name / compare.run_key(config, arm, seed))
    with pytest.raises(OutputDirError, match="did not write"):
        compare.run_and_record(config, FakePipeline(), arm, seed, compare.prepare_data(config.prepare))
    assert [path.name for path in users.iterdir()] == ["notes.txt"]


# --- no secret in any file a run writes --------------------------------------------------------------------------


def test_no_file_or_log_of_a_run_holds_the_token(
    tmp_path, monkeypatch, capfd, caplog, tiny_corpus, tiny_tokenizer_dir, tiny_classification_dir
):
    from mhe_transformers.training import finetune as finetuning
    from mhe_transformers.training import pretrain as pretraining

    environment_token = "hf_FromTheEnvironment0123456789abcdef"
    monkeypatch.setenv("HF_TOKEN", environment_token)
    monkeypatch.setattr(sys, "argv", ["pretrain_mlm.py", "--hub_token", TOKEN])  # what the lock file records
    secret = ["--hub_token", TOKEN, "--log_level", "info", "--logging_steps", "1", "--save_strategy", "steps",
              "--save_steps", "1"]  # fmt: skip
    pretrained = tmp_path / "pretrained"
    pretraining.main(pretrain_argv(pretrained, tiny_corpus, tiny_tokenizer_dir, *secret, "--do_eval", "true"))
    finetuned = tmp_path / "finetuned"
    finetuning.main(finetune_argv(pretrained, finetuned, tiny_classification_dir / "train.jsonl", *secret,
                                  "--label_list_file", str(tiny_classification_dir / "labels.json")))  # fmt: skip
    written = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert len(written) > 40  # final folders, checkpoints (training_args.bin, trainer_state.json), cards
    for token in (TOKEN, environment_token):
        assert [str(path) for path in written if token.encode() in path.read_bytes()] == []
        captured = capfd.readouterr()
        assert token not in captured.out + captured.err + caplog.text
    recorded = json.loads((finetuned / "training_args.json").read_text())["MHETrainingArguments"]
    assert recorded["hub_token"] in (None, "<redacted>")


def test_a_token_typed_into_another_option_is_refused_before_anything_is_written(
    tmp_path, capsys, monkeypatch, tiny_corpus, tiny_tokenizer_dir
):
    from mhe_transformers.training import pretrain as pretraining

    # Trainer pickles every argument into training_args.bin, where no redaction reaches: refuse, naming the option.
    environment_secret = "not-shaped-like-a-hub-token-0123"
    monkeypatch.setenv("WANDB_API_KEY", environment_secret)
    for option, secret in (("--run_name", TOKEN), ("--hub_model_id", TOKEN), ("--run_name", environment_secret)):
        with pytest.raises(SystemExit) as stopped:
            pretraining.main(pretrain_argv(tmp_path / "run", tiny_corpus, tiny_tokenizer_dir, option, f"x-{secret}"))
        message = capsys.readouterr().err
        assert stopped.value.code == 2 and f"{option} holds a secret" in message and secret not in message
    assert not (tmp_path / "run").exists()
    # A mistyped option quoting the token: the usage error says which, without the token.
    with pytest.raises(SystemExit):
        pretraining.main(pretrain_argv(tmp_path / "run", tiny_corpus, tiny_tokenizer_dir, "--hub_tokn", TOKEN))
    message = capsys.readouterr().err
    assert "unrecognized arguments: --hub_tokn <redacted>" in message and TOKEN not in message


def test_report_command_lines_and_cards_hold_no_token(tiny_pretrained_dir, tmp_path, monkeypatch):
    import shutil

    from mhe_transformers.experiments.environment import environment
    from mhe_transformers.hub.model_card import write_model_card

    monkeypatch.setattr(sys, "argv", ["benchmark.py", "--output_dir", "x", "--hub_token", TOKEN])
    assert environment()["command"] == "benchmark.py --output_dir x --hub_token <redacted>"
    folder = shutil.copytree(tiny_pretrained_dir, tmp_path / "card", ignore=shutil.ignore_patterns("checkpoint-*"))
    write_model_card(folder, task="fill-mask", training_args={"MHETrainingArguments": {"lr_scheduler_type": TOKEN}})
    card = (folder / "README.md").read_text()
    assert TOKEN not in card and "| lr_scheduler_type | <redacted> |" in card


# --- docs/reliability.md stays current ----------------------------------------------------------------------------


def test_the_reliability_table_names_every_case_and_only_existing_tests():
    import ast
    import re

    table = (REPO_ROOT / "docs" / "reliability.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`(test_\w+)::(test_\w+)`", table))
    defined = {}
    for path in (REPO_ROOT / "tests").glob("test_*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        defined[path.stem] = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    assert [(module, test) for module, test in named if test not in defined.get(module, ())] == []
    for module in ("test_reliability", "test_resume", "test_safety"):  # every case of these files has its row
        tests = {name for name in defined[module] if name.startswith("test_")}
        tests.discard("test_the_reliability_table_names_every_case_and_only_existing_tests")
        assert sorted(tests - {test for m, test in named if m == module}) == []
