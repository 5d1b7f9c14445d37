"""The one redaction of secrets (Hub tokens, API keys, passwords) before anything is written to disk or a log.

    redact(["train.py", "--hub_token", "hf_abc..."])  # ["train.py", "--hub_token", "<redacted>"]
    redact({"hub_token": "hf_abc...", "lr": 0.001})   # {"hub_token": "<redacted>", "lr": 0.001}

Every record a script writes (training_args.json, the model card's hyperparameters, comparison and benchmark
records, the command line kept in a run folder's lock) passes through `redact`. A value is a secret when:
- its key or flag names one (`*token*`, `*secret*`, `*password*`, `*api_key*`, `*auth*`, ...), as in
  `--hub_token X`, `--hub_token=X` or `{"hub_token": X}`;
- it looks like a Hugging Face access token (`hf_` followed by 20 or more letters and digits), wherever it appears;
- it is the value of an environment variable whose name names a secret (HF_TOKEN, WANDB_API_KEY, ...), wherever it
  appears.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

REDACTED = "<redacted>"
# Names of options, fields and environment variables that hold secrets. `token` alone would also match
# `tokenizer_name` and `max_tokens`: only whole words or `_token` suffixes/prefixes count.
SECRET_NAME = re.compile(
    r"(^|[_\-.])(token|secret|password|passwd|api_?key|auth|authorization|credentials?)($|[_\-.])", re.IGNORECASE
)
HF_TOKEN_PATTERN = re.compile(r"\bhf_[A-Za-z0-9]{20,}\b")
# `name: value` or `name=value` inside a text (a YAML recipe, a command line kept as one string).
ASSIGNMENT_PATTERN = re.compile(r"(?P<name>[A-Za-z][\w.-]*)(?P<sep>[ \t]*[:=][ \t]*)(?P<value>[^\s,}]+)")
# Values shorter than this, even in a secret-named environment variable, are not searched for (e.g. "1" or "true").
MIN_SECRET_LENGTH = 8


def is_secret_name(name: str) -> bool:
    """Whether an option, field or environment variable called `name` holds a secret (`--hub_token`, `HF_TOKEN`)."""
    return bool(SECRET_NAME.search(name.lstrip("-")))


def environment_secrets(environ: Mapping[str, str] | None = None) -> list[str]:
    """The values of the environment variables whose names name a secret, longest first."""
    environ = os.environ if environ is None else environ
    values = {value for name, value in environ.items() if is_secret_name(name) and len(value) >= MIN_SECRET_LENGTH}
    return sorted(values, key=len, reverse=True)


def redact_text(text: str, known_secrets: list[str] | None = None) -> str:
    """`text` with Hub tokens, the values of secret environment variables and the values assigned to secret names
    (`hub_token: X`, `--hub_token=X`) replaced by REDACTED."""
    text = HF_TOKEN_PATTERN.sub(REDACTED, text)
    for secret in environment_secrets() if known_secrets is None else known_secrets:
        text = text.replace(secret, REDACTED)
    return ASSIGNMENT_PATTERN.sub(
        lambda m: f"{m['name']}{m['sep']}{REDACTED}" if is_secret_name(m["name"]) else m[0], text
    )


def _redact_argv(argv: list | tuple, secrets: list[str]) -> list:
    redacted, hide_next = [], False
    for item in argv:
        if not isinstance(item, str):
            redacted.append(redact(item, secrets))
            hide_next = False
            continue
        flag, equals, _ = item.partition("=")
        if hide_next and not item.startswith("--"):
            redacted.append(REDACTED)
        elif item.startswith("-") and equals and is_secret_name(flag):
            redacted.append(f"{flag}={REDACTED}")
        else:
            redacted.append(redact_text(item, secrets))
        hide_next = item.startswith("-") and not equals and is_secret_name(item)
    return redacted


def redact(value: Any, known_secrets: list[str] | None = None) -> Any:
    """A copy of `value` (strings, numbers, and lists, tuples and dicts of them, nested) with every secret replaced
    by REDACTED: values of secret-named keys and flags, Hub tokens, and secret environment variables' values."""
    secrets = environment_secrets() if known_secrets is None else known_secrets
    if isinstance(value, str):
        return redact_text(value, secrets)
    if isinstance(value, Mapping):
        return {
            key: (REDACTED if isinstance(key, str) and is_secret_name(key) and item not in (None, "") else
                  redact(item, secrets))
            for key, item in value.items()
        }  # fmt: skip
    if isinstance(value, (list, tuple)):
        return _redact_argv(value, secrets)
    return value


__all__ = ["REDACTED", "environment_secrets", "is_secret_name", "redact", "redact_text"]
