"""The command-line arguments every training pipeline shares: `MHETrainingArguments` (transformers' TrainingArguments
with the output-folder guard and our verified Hub push) and `ModelArguments` (which trained model and tokenizer to
load, and how). Each pipeline adds its own `DataArguments` (and pretraining its new-model options) and parses them
with `utils.cli.parse_args`, the one command-line style.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from transformers import TrainingArguments

from ..utils.secrets import environment_secrets, is_secret_name, redact
from .launch import check_local_path


class HubPush:
    """Where the final checkpoint goes on the Hub, and with which token (None: huggingface_hub's own, i.e. HF_TOKEN
    or the `hf auth login` cache). Never written anywhere: pickling drops the token, repr hides it."""

    def __init__(self, repo_id: str | None, private: bool, token: str | None):
        self.repo_id, self.private, self.token = repo_id, private, token

    def __reduce__(self):  # pickled (e.g. inside training_args.bin) without the token
        return HubPush, (self.repo_id, self.private, None)

    def __deepcopy__(self, memo):
        return self

    def __repr__(self) -> str:
        return f"HubPush(repo_id={self.repo_id!r}, private={self.private}, token={'<set>' if self.token else None})"


@dataclasses.dataclass
class MHETrainingArguments(TrainingArguments):
    """transformers' TrainingArguments plus the output-folder guard that Transformers 5 dropped, and with the Hub push
    taken away from Trainer.

    `--push_to_hub` means ONE upload, at the end: the verified final checkpoint (`loop.save_final_checkpoint`).
    Trainer's own pushes (it creates the repo at start-up and uploads every checkpoint and `save_model`,
    `training_args.bin` included, unverified) are switched off, and `--hub_token` moves out of the arguments into
    `hub_push`, so that no pickled or saved copy of them (`training_args.bin`, `training_args.json`) holds it.
    """

    overwrite_output_dir: bool = dataclasses.field(
        default=False,
        metadata={
            "help": "Replace an earlier run of these scripts in output_dir (checkpoints and final model) with a new "
            "one, trained beside it; the earlier run is deleted only once the new one has succeeded."
        },
    )

    def __post_init__(self):
        if self.max_steps == 0 or self.max_steps < -1:  # TrainingArguments would train by epochs instead
            raise ValueError(f"max_steps must be positive (or -1: train num_train_epochs), got {self.max_steps}.")
        self.hub_push = (
            HubPush(self.hub_model_id, bool(self.hub_private_repo), self.hub_token) if self.push_to_hub else None
        )
        self.push_to_hub, self.hub_token = False, None
        self._refuse_secrets_outside_the_token()
        super().__post_init__()

    def _refuse_secrets_outside_the_token(self) -> None:
        """Trainer pickles these arguments whole (`training_args.bin`): a Hub token typed into another option
        (`--run_name hf_...`) would be written to disk, where `redact` never sees it. Refused, naming the option."""
        token = self.hub_push.token if self.hub_push is not None else None
        known = environment_secrets() + ([token] if token else [])
        for field in dataclasses.fields(self):
            value = getattr(self, field.name, None)
            if isinstance(value, str) and value and redact(value, known) != value and not is_secret_name(field.name):
                raise ValueError(f"--{field.name} holds a secret (a Hub token or a secret environment variable's "
                                 "value); pass a token only with --hub_token or HF_TOKEN.")  # fmt: skip

    def to_dict(self):
        # The record says what the user asked for; the token is redacted as TrainingArguments.to_dict does.
        values = super().to_dict()
        values["push_to_hub"] = self.hub_push is not None
        return values


@dataclasses.dataclass
class ModelArguments:
    """The trained model and tokenizer a pipeline loads, and the options of every `from_pretrained`. Pretraining and
    classification fine-tuning extend it with their own options; question answering uses it as it is."""

    model_name_or_path: str | None = dataclasses.field(
        default=None,
        metadata={"help": "Checkpoint folder or Hub id of the trained model to fine-tune (or to continue pretraining)."},
    )
    tokenizer_name: str | None = dataclasses.field(
        default=None, metadata={"help": "Tokenizer folder or Hub id (default: model_name_or_path)."}
    )
    cache_dir: str | None = dataclasses.field(
        default=None, metadata={"help": "Where to cache Hub models and datasets."}
    )
    trust_remote_code: bool = dataclasses.field(
        default=False, metadata={"help": "Allow a Hub checkpoint's own modeling code (not needed for MHE models)."}
    )

    @property
    def loading_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of every `from_pretrained` of this run."""
        return {"cache_dir": self.cache_dir, "trust_remote_code": self.trust_remote_code}

    def check_trained_model(self) -> None:
        """The fine-tuning pipelines' check: a trained model is given, and local paths exist."""
        if not self.model_name_or_path:
            raise ValueError("Pass --model_name_or_path: the pretrained checkpoint (folder or Hub id) to fine-tune.")
        check_local_path(self.model_name_or_path, "--model_name_or_path", self.cache_dir)
        check_local_path(self.tokenizer_name, "--tokenizer_name", self.cache_dir)


def check_something_to_do(training_args: TrainingArguments, predict: bool = False) -> None:
    """At least one of --do_train and --do_eval (and --do_predict where the pipeline predicts) is set."""
    if not (training_args.do_train or training_args.do_eval or (predict and training_args.do_predict)):
        flags = "--do_train, --do_eval and/or --do_predict" if predict else "--do_train and/or --do_eval"
        raise ValueError(f"Nothing to do: pass {flags}.")


__all__ = ["HubPush", "MHETrainingArguments", "ModelArguments", "check_local_path", "check_something_to_do"]
