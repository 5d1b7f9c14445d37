"""The one command-line style of every script: `HfArgumentParser` dataclasses, an optional YAML config, strict
booleans, usage errors that exit 2, and one-line errors (a traceback only with `--debug`).

    @dataclass
    class Arguments:
        output_dir: str = field(metadata={"help": "A new or empty folder."})
        normalize: bool = True

    def main(argv=None):
        (args,) = parse_args((Arguments,), argv, description="...")
        ...

    # scripts/x.py
    if __name__ == "__main__":
        run_script(main)

Rules, enforced here for every script:
- `--config FILE.yaml` maps field names to values; they become defaults, so the command line overrides them, and both
  go through the same type conversion and the dataclasses' own validation. An unknown name in the file is an error.
- A boolean takes `--flag` (true) or `--flag true` / `--flag false` (any case) and nothing else: `--flag ture` and
  `--flag 1` are usage errors, and there are no `--no_flag` spellings.
- An unknown flag, a bad value, or a value the dataclass (or `validate`) refuses exits 2 with the usage line and a
  message naming it. No abbreviations: `--learning_rat` is an unknown flag, not `--learning_rate`.
- An `output_dir` may name other arguments in braces, `outputs/pretrain-{attention_type}`, so that a YAML's folder
  follows what the command line changes (`fill_placeholders`).
- `run_script` turns any other error into one line on stderr and exit 1; `--debug` shows the traceback instead.
  (Trainer's own `debug` option, its underflow/overflow and TPU probes, is not offered on the command line.)
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml
from transformers import HfArgumentParser
from transformers.hf_argparser import string_to_bool

from .secrets import redact_text

DEBUG_FLAG = "--debug"
# Arguments whose value may name other arguments in braces (`fill_placeholders`).
PLACEHOLDER_FIELDS = ("output_dir",)
TRUE_WORDS, FALSE_WORDS = ("true",), ("false",)


def strict_bool(value: str | bool) -> bool:
    """`true` or `false` (any case); anything else is a usage error that names the value."""
    if isinstance(value, bool):
        return value
    if value.lower() in TRUE_WORDS:
        return True
    if value.lower() in FALSE_WORDS:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


class UsageError(SystemExit):
    """A bad command line: exits 2 (argparse's status) when uncaught; `str()` is the message, which names the flag."""

    def __init__(self, message: str):
        super().__init__(2)
        self.message = message

    def __str__(self) -> str:
        return self.message


class _StrictBooleans:
    """Stands in for the parser while HfArgumentParser adds one dataclass field: booleans get `strict_bool` and an
    optional value (`--flag` alone means true); the `--no_flag` complements are not added."""

    def __init__(self, parser: argparse.ArgumentParser):
        self.parser = parser

    def add_argument(self, *names: str, **kwargs: Any):
        if kwargs.get("action") == "store_false" and all(name.startswith("--no") for name in names):
            return None
        if DEBUG_FLAG in names:  # TrainingArguments.debug (Trainer's underflow/TPU probes) yields the flag to ours
            return None
        # Only true booleans: a `str | bool` field such as TrainingArguments.include_num_input_tokens_seen keeps its
        # own parsing.
        if kwargs.get("type") is string_to_bool and isinstance(kwargs.get("default", False), (bool, type(None))):
            kwargs.update(type=strict_bool, nargs="?", const=True, metavar="{true,false}")
        return self.parser.add_argument(*names, **kwargs)


class CommandLineParser(HfArgumentParser):
    """HfArgumentParser with strict booleans, no abbreviations, `--config` and `--debug`."""

    def __init__(self, dataclass_types: Sequence[type], description: str | None = None):
        super().__init__(list(dataclass_types), allow_abbrev=False, description=description)
        self.add_argument("--config", default=None, help="YAML file of `field: value` defaults (configs/README.md)")
        self.add_argument(
            DEBUG_FLAG, dest="show_traceback", type=strict_bool, nargs="?", const=True, default=False,
            metavar="{true,false}", help="show the full traceback of an error",
        )  # fmt: skip

    @staticmethod
    def _parse_dataclass_field(parser, field: dataclasses.Field):
        HfArgumentParser._parse_dataclass_field(_StrictBooleans(parser), field)

    def error(self, message: str):
        """Print the usage line and the message, as argparse does, then raise UsageError (exit status 2). The message
        may quote what was typed (`unrecognized arguments: --hub_tokn hf_...`): secrets are redacted."""
        message = redact_text(message)
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise UsageError(message)

    def field_names(self) -> set[str]:
        return {action.dest for action in self._actions} - {"help", "config", "show_traceback"}


def load_yaml_config(path: str | os.PathLike, known_fields: set[str] | None = None) -> dict[str, Any]:
    """Read a YAML mapping of argument names to values; unknown names are an error (a typo would be ignored)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Config file not found: {path}")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid YAML: {error}") from None
    if not isinstance(values, dict):
        raise ValueError(f"{path} must hold a mapping of argument names to values, got {type(values).__name__}.")
    if known_fields is not None:
        unknown = sorted(set(values) - known_fields)
        if unknown:
            raise ValueError(f"Unknown argument(s) in {path}: {', '.join(unknown)}. Run the script with --help.")
    return values


def parse_args(
    dataclass_types: Sequence[type],
    argv: Sequence[str] | None = None,
    description: str | None = None,
    validate: Callable[..., None] | None = None,
) -> tuple:
    """Parse `[--config FILE.yaml] [--field value ...]` into one instance of each dataclass.

    `validate(*instances)` may raise ValueError (or FileNotFoundError, for a path that does not exist) for a
    combination of values no single field can check; like a dataclass's own ValueError, it becomes a usage error
    (exit 2). With `--debug` they raise instead.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = CommandLineParser(dataclass_types, description)
    config_parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    config_parser.add_argument("--config", default=None)
    config_parser.add_argument(DEBUG_FLAG, type=strict_bool, nargs="?", const=True, default=False)
    early, _ = config_parser.parse_known_args(argv)
    if early.config is not None:
        try:
            parser.set_defaults(**load_yaml_config(early.config, known_fields=parser.field_names()))
        except (OSError, ValueError) as error:
            parser.error(str(error))
    namespace = parser.parse_args(argv)  # unknown flags and unconvertible values: usage, exit 2
    try:
        for name in PLACEHOLDER_FIELDS:
            if isinstance(getattr(namespace, name, None), str):
                setattr(namespace, name, fill_placeholders(name, getattr(namespace, name), vars(namespace)))
        instances = tuple(
            dtype(**{f.name: getattr(namespace, f.name) for f in dataclasses.fields(dtype) if hasattr(namespace, f.name)})
            for dtype in dataclass_types
        )
        if validate is not None:
            validate(*instances)
    except (ValueError, TypeError, FileNotFoundError) as error:
        if namespace.show_traceback:
            raise
        parser.error(str(error))
    return instances


def fill_placeholders(option: str, value: str, arguments: dict[str, Any]) -> str:
    """`outputs/pretrain-{attention_type}` with `--attention_type mha` -> `outputs/pretrain-mha`. A placeholder takes
    the argument's value; a path or Hub id gives its last part (`{model_name_or_path}` of `outputs/pretrain-mha`:
    `pretrain-mha`), so that the result stays one folder name."""

    def fill(match: re.Match) -> str:
        name = match.group(1)
        if name not in arguments:
            raise ValueError(f"--{option} {value}: there is no argument --{name} to fill {{{name}}} with.")
        filled = arguments[name]
        if filled is None or isinstance(filled, (list, dict)):
            raise ValueError(f"--{option} {value}: {{{name}}} needs one value of --{name}, got {filled!r}.")
        return Path(str(filled)).name

    return re.sub(r"\{(\w+)\}", fill, value)


def debug_requested(argv: Sequence[str]) -> bool:
    """Whether `argv` asks for `--debug` (alone, `--debug true`, or `--debug=true`)."""
    for i, arg in enumerate(argv):
        if arg == DEBUG_FLAG:
            following = argv[i + 1] if i + 1 < len(argv) else None
            return following is None or following.startswith("--") or following.lower() in TRUE_WORDS
        if arg.startswith(DEBUG_FLAG + "="):
            return arg.split("=", 1)[1].lower() in TRUE_WORDS
    return False


def run_script(main: Callable[[Sequence[str] | None], Any], argv: Sequence[str] | None = None) -> None:
    """Run a script's `main`: an error becomes one line on stderr and exit status 1 (the traceback with --debug).
    Usage errors have already exited 2 inside `parse_args`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        main(argv)
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        raise SystemExit(130) from None
    except Exception as error:  # every error reaches the user as one line; --debug shows the rest
        if debug_requested(argv):
            raise
        prog = Path(sys.argv[0]).name
        print(f"{prog}: error: {error}\n(run again with --debug for the traceback)", file=sys.stderr)
        raise SystemExit(1) from None


__all__ = [
    "CommandLineParser",
    "UsageError",
    "debug_requested",
    "fill_placeholders",
    "load_yaml_config",
    "parse_args",
    "run_script",
    "strict_bool",
]
