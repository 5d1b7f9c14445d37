"""Share MHE checkpoints on the Hugging Face Hub: model card, pre-upload verification, upload.

A shared checkpoint is loaded by people who have Transformers and PyTorch but not this package, through
`trust_remote_code=True`. So before anything is sent, `verify_checkpoint` checks the file set and loads the folder in a
fresh Python process in which `mhe_transformers` cannot be imported, exactly as such a user would.

Pushing never runs code that came with a checkpoint: its configuration_mhe.py and modeling_mhe.py must be
byte-identical to this package's (else the push is refused, naming the file; re-save the checkpoint with this
version), and the fresh process gets an environment without any token (`utils.secrets`). Only regular files inside
the folder are sent (a symlink is refused, naming it), and a Hub that cannot be reached or refuses the credentials
gives one line naming the problem (`HubError`).

    write_model_card(checkpoint_dir, task="fill-mask", datasets=["wordnet"])  # README.md from the folder's files
    verify_checkpoint(checkpoint_dir)                                         # raises CheckpointError on problems
    push_checkpoint(checkpoint_dir, "user/mhe-mul-tiny")                      # verify, create repo, one commit
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import CommitOperationAdd, HfApi, ModelCard
from huggingface_hub.errors import HfHubHTTPError, HTTPError, LocalTokenNotFoundError

from ..models.mhe import modeling_mhe
from ..models.mhe.configuration_mhe import MHEConfig
from ..models.mhe.modeling_mhe import AUTO_MAP
from ..utils import cli
from ..utils.secrets import is_secret_name
from .model_card import SENTENCE_TASKS, TASKS, _read_json, parameter_counts, write_model_card

logger = logging.getLogger(__name__)

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
    # a sentence-transformers folder (modules.json present): its modules' own folders go too (`_module_folders`)
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
)
# Weights sharded by save_pretrained (with model.safetensors.index.json instead of model.safetensors).
WEIGHT_SHARD_PATTERN = "model-[0-9][0-9][0-9][0-9][0-9]-of-[0-9][0-9][0-9][0-9][0-9].safetensors"


class CheckpointError(ValueError):
    """A checkpoint folder is incomplete or does not load; the message lists every problem found."""


class HubError(RuntimeError):
    """The Hub could not be reached, or refused the request (credentials, permissions): one line saying which."""



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

    Checks the required files (regular files inside the folder: no symlinks), code files identical to this
    package's, a config whose `auto_map` names every head and whose architecture fits `task` (default: the task of
    `config.architectures[0]`), a model card that says what the model is, and finally loads the folder with
    `trust_remote_code=True` in a fresh process in which `mhe_transformers` cannot be imported, offline and without
    any token in its environment.
    """
    checkpoint_dir = Path(checkpoint_dir)
    if not checkpoint_dir.is_dir():
        raise CheckpointError(f"{checkpoint_dir} is not a directory.")
    sentence_transformer = is_sentence_transformer(checkpoint_dir)
    tasks = SENTENCE_TASKS if sentence_transformer else TASKS  # a sentence-transformers folder: sentence-similarity
    if task is not None and task not in tasks:
        raise CheckpointError(f"task must be one of {sorted(tasks)} for this folder, got {task!r}.")
    problems = _file_problems(checkpoint_dir)
    if not problems:
        problems += _code_problems(checkpoint_dir)
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
    task_of_architecture = next((t for t, (arch, _) in tasks.items() if arch == architecture), None)
    if config and task_of_architecture is None:
        expected = [arch for arch, _ in tasks.values()]
        problems.append(f"config.json architectures is {architecture!r}; expected one of {expected}")
    if task is not None and task_of_architecture is not None and task != task_of_architecture:
        problems.append(f"task {task!r} needs {tasks[task][0]}, but the checkpoint holds {architecture}")
    task = task or task_of_architecture

    if (checkpoint_dir / "README.md").is_file() and config and task:
        readme = checkpoint_dir / "README.md"
        problems += _card_problems(readme, task, config.get("attention_type"), sentence_transformer)
    if problems:
        raise CheckpointError(f"{checkpoint_dir} is not ready to share:\n- " + "\n- ".join(problems))

    _load_without_package(checkpoint_dir, tasks[task][1])
    if sentence_transformer:
        _load_sentence_transformer_without_package(checkpoint_dir)
    report = VerificationReport(checkpoint_dir, task, files_to_upload(checkpoint_dir))
    for warning in report.warnings:
        logger.warning(warning)
    return report


def _file_problems(checkpoint_dir: Path) -> list[str]:
    """Missing required files, and known files that are symlinks or not regular files: the upload sends regular
    files inside the folder only, so such a file would be missing on the Hub."""
    problems = [f"missing {name}" for name in REQUIRED_FILES if not os.path.lexists(checkpoint_dir / name)]
    problems += _module_problems(checkpoint_dir)
    for path in sorted(checkpoint_dir.iterdir()):
        if not _is_shared(path.name):
            continue
        if path.is_symlink():
            problems.append(f"{path.name} is a symbolic link (to {os.readlink(path)}); copy the file itself in")
        elif not path.is_file():
            problems.append(f"{path.name} is not a regular file")
    return problems


def is_sentence_transformer(checkpoint_dir: str | os.PathLike) -> bool:
    """Whether the folder is a sentence-transformers model (it has modules.json)."""
    return (Path(checkpoint_dir) / "modules.json").is_file()


def _module_folders(checkpoint_dir: Path) -> list[str]:
    """The folders of a sentence-transformers model's modules (1_Pooling, ...), from modules.json; [] otherwise."""
    if not is_sentence_transformer(checkpoint_dir):
        return []
    try:
        modules = json.loads((checkpoint_dir / "modules.json").read_text(encoding="utf-8"))
        return [module["path"] for module in modules if module.get("path")]
    except (json.JSONDecodeError, TypeError, KeyError, AttributeError):
        return []


def _module_problems(checkpoint_dir: Path) -> list[str]:
    """A module folder named by modules.json must be a real folder inside the checkpoint, of regular files."""
    problems = []
    for folder in _module_folders(checkpoint_dir):
        path = checkpoint_dir / folder
        if "/" in folder or folder.startswith(".") or path.is_symlink():
            problems.append(f"modules.json names the module folder {folder!r}, which is not a folder of its own")
        elif path.exists() and not path.is_dir():
            problems.append(f"{folder} is not a folder")
        else:
            problems += [f"{folder}/{entry.name} is not a regular file (a symbolic link or a folder)"
                         for entry in sorted(path.iterdir()) if entry.is_symlink() or not entry.is_file()
                         ] if path.is_dir() else []  # fmt: skip
    return problems


def _is_shared(name: str) -> bool:
    """Whether a file called `name` is one a push sends (REQUIRED_FILES, OPTIONAL_FILES, weight shards)."""
    return name in REQUIRED_FILES or name in OPTIONAL_FILES or fnmatch.fnmatchcase(name, WEIGHT_SHARD_PATTERN)


def _code_problems(checkpoint_dir: Path) -> list[str]:
    """The checkpoint's code files must be this package's, byte for byte: the check below runs them."""
    package_dir = Path(modeling_mhe.__file__).parent
    return [
        f"{name} differs from this mhe_transformers version's; its code is not run. Re-save the checkpoint with "
        "this version (from_pretrained, then save_pretrained) if it is an older one"
        for name in ("configuration_mhe.py", "modeling_mhe.py")
        if (checkpoint_dir / name).read_bytes() != (package_dir / name).read_bytes()
    ]


def _card_problems(
    readme: Path, task: str, attention_type: str | None, sentence_transformer: bool = False
) -> list[str]:
    try:
        data = ModelCard.load(readme).data
    except Exception as error:  # a card the Hub cannot parse is as bad as none
        return [f"README.md does not parse as a model card: {error}"]
    problems = []
    library = "sentence-transformers" if sentence_transformer else "transformers"
    if data.get("library_name") != library:
        problems.append(f"README.md metadata lacks library_name: {library}")
    if data.get("pipeline_tag") != task:
        problems.append(f"README.md metadata pipeline_tag is {data.get('pipeline_tag')!r}, expected {task!r}")
    wanted_tags = {"mhe", "custom_code", attention_type}
    wanted_tags |= {"sentence-transformers"} if sentence_transformer else set()
    missing_tags = wanted_tags - set(data.get("tags") or [])
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
    # question answering: start/end logits; the bare encoder (a sentence-transformers folder): its hidden states
    logits = next(outputs[name] for name in ("logits", "start_logits", "last_hidden_state") if name in outputs)
problems = [f"{kind}: {info[kind]}" for kind in ("missing_keys", "unexpected_keys", "mismatched_keys") if info[kind]]
problems += [f"{name} came from {where}, not from the checkpoint's code" for name, where in loaded.items()
             if not where.startswith("transformers_modules")]
if not torch.isfinite(logits).all():
    problems.append("the model's outputs are not finite")
if "mhe_transformers" in sys.modules:
    problems.append("mhe_transformers was imported")
print("RESULT " + json.dumps({"loaded": loaded, "problems": problems}))
"""


_SENTENCE_TRANSFORMER_SCRIPT = """
import json, sys
import torch
from sentence_transformers import SentenceTransformer
model = SentenceTransformer(sys.argv[1], trust_remote_code=True, device="cpu")
embeddings = model.encode(["a small test sentence", "another one, a little longer"], convert_to_tensor=True)
problems = [] if torch.isfinite(embeddings).all() else ["the sentence embeddings are not finite"]
problems += [f"{name} came from {type(module).__module__}" for name, module in (("model", model[0].auto_model),)
             if not type(module).__module__.startswith("transformers_modules")]
if "mhe_transformers" in sys.modules:
    problems.append("mhe_transformers was imported")
print("RESULT " + json.dumps({"problems": problems}))
"""


def run_without_package(code: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `code` in a fresh, isolated (`python -I`) interpreter where `mhe_transformers` cannot be imported.

    Offline (HF_HUB_OFFLINE=1), in an empty working directory, with a fresh Transformers module cache, so the only
    MHE code it can run is what a checkpoint folder carries; without any token or other secret in its environment
    (HF_TOKEN, ...: `utils.secrets.is_secret_name`), and with huggingface_hub's saved token out of reach (HF_HOME
    points into the empty directory).
    """
    with tempfile.TemporaryDirectory(prefix="mhe-clean-") as workdir:
        env = {name: value for name, value in os.environ.items() if not is_secret_name(name)}
        env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=os.path.join(workdir, "modules"),
                   HF_HOME=os.path.join(workdir, "hf-home"), HF_HUB_DISABLE_IMPLICIT_TOKEN="1")  # fmt: skip
        return subprocess.run(
            [sys.executable, "-I", "-c", _BLOCK_PACKAGE + textwrap.dedent(code), *map(str, args)],
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def _load_sentence_transformer_without_package(checkpoint_dir: Path) -> None:
    """`SentenceTransformer(folder, trust_remote_code=True)` in the fresh process: what a user of the folder does."""
    _load_without_package(checkpoint_dir, "SentenceTransformer", _SENTENCE_TRANSFORMER_SCRIPT)


def _load_without_package(checkpoint_dir: Path, auto_class_name: str, script: str = _LOAD_SCRIPT) -> None:
    process = run_without_package(script, str(checkpoint_dir.resolve()), auto_class_name)
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
    that are regular files (not symlinks) at the top of the folder, and in a sentence-transformers folder the regular
    files of the module folders its modules.json names (1_Pooling/config.json). Everything else stays local."""
    checkpoint_dir = Path(checkpoint_dir)
    top = [path.name for path in checkpoint_dir.iterdir() if path.is_file() and not path.is_symlink()
           and _is_shared(path.name)]  # fmt: skip
    modules = [f"{folder}/{path.name}" for folder in _module_folders(checkpoint_dir)
               if (checkpoint_dir / folder).is_dir() and not (checkpoint_dir / folder).is_symlink()
               for path in (checkpoint_dir / folder).iterdir() if path.is_file() and not path.is_symlink()]  # fmt: skip
    return sorted(top + modules)


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

    Nothing is sent if verification fails (CheckpointError). `token` authenticates (it is kept in memory only);
    without it, huggingface_hub's own: the HF_TOKEN environment variable or the token saved by `hf auth login`. A Hub
    that cannot be reached or refuses the request raises HubError. Returns the CommitInfo (its `.commit_url` links
    to the commit).
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
    operations = [
        CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(Path(checkpoint_dir) / name)) for name in report.files
    ]
    try:
        api = api or HfApi(token=token)
        api.create_repo(repo_id, private=private, exist_ok=True)
        return api.create_commit(repo_id, operations=operations, commit_message=commit_message)
    # HTTPError: HfHubHTTPError and the HTTP client's connection errors; ConnectionError: offline mode.
    except (HTTPError, ConnectionError, LocalTokenNotFoundError) as error:
        raise HubError(f"Could not upload to the Hub repo {repo_id}: {describe_hub_error(error)}") from error


def describe_hub_error(error: BaseException) -> str:
    """One line saying what went wrong with a Hub request (huggingface_hub's messages span several lines)."""
    status = getattr(getattr(error, "response", None), "status_code", None)
    if isinstance(error, LocalTokenNotFoundError):
        return "no Hub token: log in with `hf auth login`, or set HF_TOKEN (or pass --hub_token)."
    if isinstance(error, HfHubHTTPError) and status in (401, 403):
        return (
            f"the Hub refused the credentials (HTTP {status}); log in with `hf auth login`, or pass a token with "
            "write access (HF_TOKEN or --hub_token)."
        )
    first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
    if isinstance(error, HfHubHTTPError):
        return f"the Hub answered HTTP {status}: {first_line}"
    return f"the Hub cannot be reached ({type(error).__name__}: {first_line})"


@dataclass
class PushArguments:
    """The options of `scripts/push_to_hub.py`, named as the training scripts name them (`--hub_model_id`,
    `--hub_private_repo`)."""

    checkpoint_dir: str = field(metadata={"help": "A final checkpoint folder written by the training scripts."})
    hub_model_id: str = field(metadata={"help": "The Hub model repo, e.g. your-name/mhe-mul-tiny."})
    hub_private_repo: bool = field(
        default=False, metadata={"help": "Create the repo as private (an existing repo keeps its visibility)."}
    )
    commit_message: str = field(default="Upload MHE checkpoint", metadata={"help": "The Hub commit's message."})


def main(argv: list[str] | None = None) -> None:
    """`scripts/push_to_hub.py`: verify a final checkpoint folder, then upload it (`push_checkpoint`)."""
    (args,) = cli.parse_args(
        (PushArguments,), argv, description="Verify an MHE checkpoint folder and upload it to a Hub model repo."
    )
    try:
        commit = push_checkpoint(
            args.checkpoint_dir, args.hub_model_id, private=args.hub_private_repo, commit_message=args.commit_message
        )
    except (CheckpointError, HubError) as error:
        raise type(error)(f"Not uploaded. {error}") from None
    print(f"Uploaded {args.checkpoint_dir} to {commit.commit_url}")


__all__ = [
    "CheckpointError",
    "HubError",
    "VerificationReport",
    "files_to_upload",
    "parameter_counts",
    "push_checkpoint",
    "run_without_package",
    "verify_checkpoint",
    "write_model_card",
]
