"""Every script in scripts/ has the one command-line style (mhe_transformers/utils/cli.py): `--help` exits 0; an
unknown flag, or a boolean given anything but `true`/`false`, exits 2 with a usage message naming it and no
traceback; a boolean given bare, `true` or `false` parses; a runtime error is one line and exit 1, with the
traceback only under `--debug`.

Each check stops before any data is read: the "runtime error" command lines name a file or folder that does not
exist. The scripts are run as files (runpy, as `python scripts/X.py` runs them); the unknown-flag check also runs
each one in a fresh process, and the `--debug` check once, so that exit status and stderr are the real ones.
"""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REPO_ROOT

SCRIPTS_DIR = REPO_ROOT / "scripts"
MISSING = "/nonexistent-mhe-test-path"  # absolute, so no Hub id: every loader refuses it at once


@dataclass(frozen=True)
class Case:
    boolean: str  # a boolean option of the script
    fails: tuple[str, ...]  # a command line that parses and then fails at run time, before reading any data
    # ({file} stands for a model or tokenizer that exists: one that does not is refused while parsing)


TINY_MODEL_CONFIG = str(REPO_ROOT / "configs/model/tiny.json")
PRETRAIN_FAILS = ("--model_config", TINY_MODEL_CONFIG, "--tokenizer_name", "{file}", "--train_files",
                  f"{MISSING}/corpus.txt", "--do_train", "true", "--max_steps", "1", "--output_dir", "{out}")  # fmt: skip
CASES = {
    "benchmark.py": Case("--memory", ("--micro", "--output_dir", "{file}/out")),
    "benchmark_decode.py": Case("--compare_kernels", ("--micro", "--output_dir", "{file}/out")),
    "compare_attention.py": Case("--keep_checkpoints", ("--comparison", f"{MISSING}/compare.yaml")),
    "convert_mha_to_mhe.py": Case("--random_qkv", ("--model_name_or_path", MISSING, "--output_dir", "{out}")),
    "convert_sentence_transformer.py": Case("--overwrite_output_dir", ("--model_name_or_path", MISSING,
                                                                      "--output_dir", "{out}")),
    "demo.py": Case("--debug", ("--wordnet_dir", MISSING, "--data_dir", "{out}/data", "--output_dir", "{out}/demo")),
    "export_onnx.py": Case("--debug", ("--model_name_or_path", MISSING)),
    "export_sentence_transformer.py": Case("--normalize", ("--model_name_or_path", MISSING, "--output_dir", "{out}")),
    "make_report.py": Case("--debug", ("--configs_dir", MISSING, "--page", "{out}/page.md", "--figure", "{out}/f.png")),
    "finetune.py": Case("--trust_remote_code", ("--model_name_or_path", "{file}", "--train_file",
                                                f"{MISSING}/train.jsonl", "--do_train", "true", "--output_dir", "{out}")),
    "finetune_qa.py": Case("--trust_remote_code", ("--model_name_or_path", "{file}", "--train_file",
                                                   f"{MISSING}/train.json", "--do_train", "true", "--output_dir", "{out}")),
    "prepare_wordnet.py": Case("--include_examples", ("--wordnet_dir", MISSING, "--output_dir", "{out}")),
    "pretrain_clm.py": Case("--trust_remote_code", PRETRAIN_FAILS),
    "pretrain_mlm.py": Case("--trust_remote_code", PRETRAIN_FAILS),
    "push_to_hub.py": Case("--hub_private_repo", ("--checkpoint_dir", MISSING, "--hub_model_id", "someone/x")),
    "train_tokenizer.py": Case("--lowercase", ("--train_files", f"{MISSING}/corpus.txt", "--output_dir", "{out}")),
}  # fmt: skip
def test_every_script_has_a_case():
    assert sorted(CASES) == sorted(path.name for path in SCRIPTS_DIR.glob("*.py"))


def failing_argv(script: str, tmp_path: Path) -> list[str]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    return [arg.format(out=tmp_path / "out", file=a_file) for arg in CASES[script].fails]


def run_script_file(script: str, argv: list[str], monkeypatch) -> SystemExit:
    """Run scripts/<script> as `python scripts/<script> argv` does, in this process; returns how it exited. An
    exception other than SystemExit (what --debug lets through) propagates."""
    monkeypatch.setattr(sys, "argv", [str(SCRIPTS_DIR / script), *argv])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(SCRIPTS_DIR / script), run_name="__main__")
    return exit_info.value


def exit_status(exit: SystemExit) -> int:
    return exit.code if isinstance(exit.code, int) else 1  # SystemExit("message") exits 1


@pytest.mark.parametrize("script", sorted(CASES))
def test_help_exits_0(script, monkeypatch, capsys):
    assert run_script_file(script, ["--help"], monkeypatch).code == 0
    assert "usage:" in capsys.readouterr().out


def test_an_unknown_flag_is_a_usage_error_naming_it(tmp_path):
    """In a fresh process per script (started side by side: each spends seconds importing torch and transformers):
    the exit status and stderr a user sees."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1"}
    processes = {
        script: subprocess.Popen(
            [sys.executable, str(SCRIPTS_DIR / script), *failing_argv(script, tmp_path / script), "--learning_rat", "0.1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO_ROOT,
        )  # fmt: skip
        for script in sorted(CASES)
    }
    for script, process in processes.items():
        _, err = process.communicate(timeout=600)
        assert process.returncode == 2, (script, err)
        assert "usage:" in err and "unrecognized arguments: --learning_rat 0.1" in err, (script, err)
        assert "Traceback" not in err, (script, err)


@pytest.mark.parametrize("script", sorted(CASES))
def test_a_boolean_refuses_anything_but_true_or_false(script, tmp_path, monkeypatch, capsys):
    boolean = CASES[script].boolean
    for value in ("ture", "1", "yes"):
        exit = run_script_file(script, [*failing_argv(script, tmp_path), boolean, value], monkeypatch)
        err = capsys.readouterr().err
        assert exit.code == 2, (value, err)
        assert "usage:" in err and boolean in err and repr(value) in err
        assert "Traceback" not in err


@pytest.mark.parametrize("script", sorted(CASES))
def test_a_boolean_given_bare_true_or_false_parses(script, tmp_path, monkeypatch, capsys):
    """Each spelling gets past parsing to the run-time error of the missing input (not a usage error)."""
    boolean = CASES[script].boolean
    for spelling in ([boolean], [boolean, "true"], [boolean, "FALSE"], [f"{boolean}=false"]):
        argv = [*failing_argv(script, tmp_path), *spelling]
        try:
            status = exit_status(run_script_file(script, argv, monkeypatch))
        except Exception:  # `--debug` itself is the boolean: the run-time error propagates, which is parsing too
            status = None
        err = capsys.readouterr().err
        assert status != 2 and "usage:" not in err, (spelling, err)


@pytest.mark.parametrize("script", sorted(CASES))
def test_a_runtime_error_is_one_line_and_debug_shows_the_traceback(script, tmp_path, monkeypatch, capsys):
    argv = failing_argv(script, tmp_path)
    exit = run_script_file(script, argv, monkeypatch)
    err = capsys.readouterr().err
    assert exit_status(exit) == 1 and "usage:" not in err, err
    assert "Traceback" not in err and "--debug" in err  # one line, and how to see more
    assert f"{script}: error:" in err and ("nonexistent-mhe-test-path" in err or "a_file" in err)  # names the input
    with pytest.raises(Exception) as error:  # --debug: the error itself propagates, with its traceback
        run_script_file(script, [*argv, "--debug"], monkeypatch)
    assert not isinstance(error.value, SystemExit)


def test_debug_shows_the_traceback_in_a_fresh_process(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, str(SCRIPTS_DIR / "train_tokenizer.py"), *failing_argv("train_tokenizer.py", tmp_path)]
    quiet = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=300)
    assert quiet.returncode == 1 and "Traceback" not in quiet.stderr
    assert "train_tokenizer.py: error:" in quiet.stderr and "corpus.txt" in quiet.stderr
    loud = subprocess.run(command + ["--debug"], capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=300)
    assert loud.returncode == 1 and "Traceback (most recent call last)" in loud.stderr
