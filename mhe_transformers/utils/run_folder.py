"""Small helpers shared by every script that writes a folder: one rule for output folders, atomic folders, and
reports that record the machine they were measured on.

The rule (`check_output_dir`, enforced again by `atomic_directory`): a folder that holds anything is replaced only
when the user said so, only if this tool wrote it (it carries OUTPUT_MARKER), and never when it is (or holds) an
input of the same run.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Iterator

# Written into every folder this tool creates; only such folders are ever replaced or cleared. Hidden, so the Hub
# upload (an explicit list of known files) never sends it.
OUTPUT_MARKER = ".mhe-transformers-output"
MARKER_TEXT = "Written by mhe-transformers. Its scripts replace this folder only when told to overwrite it.\n"


class OutputDirError(ValueError):
    """An output folder that must not be written to or replaced; the message says why and what to do."""


def is_own_output(folder: str | os.PathLike) -> bool:
    """Whether `folder` was written by this tool (it holds OUTPUT_MARKER)."""
    return (Path(folder) / OUTPUT_MARKER).is_file()


def write_marker(folder: str | os.PathLike) -> None:
    (Path(folder) / OUTPUT_MARKER).write_text(MARKER_TEXT, encoding="utf-8")


def _is_within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_output_dir(
    output_dir: str | os.PathLike,
    overwrite: bool = False,
    inputs: Iterable[str | os.PathLike | None] = (),
    flag: str = "--overwrite_output_dir",
) -> None:
    """Raise OutputDirError unless `output_dir` may receive this run's output; deletes nothing.

    Allowed: a missing or empty folder; with `overwrite`, a non-empty one this tool wrote. Never: a folder that is
    or contains one of `inputs` (local paths; Hub ids and None are skipped) or the working directory, a path that is
    not a folder, or one whose nearest existing parent is not writable. `flag` names the overwrite option in messages.
    """
    output_dir = Path(output_dir).resolve()
    check_not_an_input(output_dir, inputs)
    if _is_within(Path.cwd().resolve(), output_dir):
        raise OutputDirError(
            f"Output directory {output_dir} is the working directory or one of its parents; choose a new folder."
        )
    if output_dir.exists() and not output_dir.is_dir():
        raise OutputDirError(f"Output directory {output_dir} exists and is not a folder.")
    if output_dir.is_dir() and any(output_dir.iterdir()):
        if not is_own_output(output_dir):
            raise OutputDirError(
                f"Output directory {output_dir} holds files that mhe-transformers did not write (no {OUTPUT_MARKER}); "
                "it will not replace them. Choose another output directory, or empty this one yourself."
            )
        if not overwrite:
            raise OutputDirError(
                f"Output directory {output_dir} already holds an earlier run; pass {flag} to replace it, or choose "
                "another output directory."
            )
    existing = output_dir
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise OutputDirError(f"Cannot create {output_dir}: {existing} is a file, not a folder.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputDirError(f"Cannot write {output_dir}: {existing} is not writable.")


def check_not_an_input(output_dir: str | os.PathLike, inputs: Iterable[str | os.PathLike | None]) -> None:
    """Raise OutputDirError if `output_dir` is or holds one of `inputs` (local paths; others are skipped)."""
    output_dir = Path(output_dir).resolve()
    for source in inputs:
        if source and os.path.exists(source) and _is_within(Path(source).resolve(), output_dir):
            raise OutputDirError(
                f"Output directory {output_dir} is, or holds, an input of this run ({source}); writing there would "
                "destroy it. Choose another output directory."
            )


def clean_stale_temporaries(output_dir: str | os.PathLike, keep: Iterable[str] = ()) -> list[Path]:
    """Remove the temporary folders an interrupted `atomic_directory(output_dir, keep)` left beside `output_dir`
    (hidden `.<name>.tmp-*` and `.<name>.old-*` folders: this tool's own naming); returns what was removed.

    An `.old-*` folder still holding the previous `<name>` while `output_dir` is missing (a kill between the two
    renames of a swap) is put back; entries matching `keep` (e.g. checkpoints) still in it move into `output_dir`.
    """
    output_dir = Path(output_dir).resolve()
    removed = []
    if not output_dir.parent.is_dir():
        return removed
    for stale in sorted(output_dir.parent.glob(f".{output_dir.name}.old-*")):
        previous = stale / output_dir.name
        if previous.is_dir() and not output_dir.exists():
            os.replace(previous, output_dir)
        else:
            _move_missing_entries(previous, output_dir, keep)
        shutil.rmtree(stale, ignore_errors=True)
        removed.append(stale)
    for stale in sorted(output_dir.parent.glob(f".{output_dir.name}.tmp-*")):
        shutil.rmtree(stale, ignore_errors=True)
        removed.append(stale)
    return removed


def _move_missing_entries(source: Path, target: Path, patterns: Iterable[str]) -> None:
    """Move the entries of `source` matching `patterns` into `target`, keeping whatever `target` already has."""
    if not source.is_dir():
        return
    for pattern in patterns:
        for entry in source.glob(pattern):
            if not (target / entry.name).exists():
                os.replace(entry, target / entry.name)


@contextlib.contextmanager
def atomic_directory(output_dir: str | os.PathLike, keep: Iterable[str] = ()) -> Iterator[Path]:
    """Yield a temporary directory that replaces `output_dir` only if the block succeeds.

    The temporary directory is a sibling of `output_dir` (same file system), so the final step is a rename: readers
    see either the old complete output or the new complete output, never a half-written one. On error the temporary
    directory is removed and `output_dir` is left untouched. The result carries OUTPUT_MARKER; a non-empty
    `output_dir` without it is never replaced (OutputDirError, before the block runs).

    Entries of the old `output_dir` matching the glob patterns in `keep` (e.g. Trainer's "checkpoint-*") move into
    the new one after the swap. At every instant they are in `output_dir` or, between the two renames, in the
    hidden `.<name>.old-*` folder beside it, which `clean_stale_temporaries` puts back.
    """
    output_dir = Path(output_dir).resolve()
    if output_dir.is_dir() and any(output_dir.iterdir()) and not is_own_output(output_dir):
        check_output_dir(output_dir, overwrite=True)  # raises, naming the foreign folder
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.tmp-", dir=output_dir.parent))
    try:
        yield tmp_dir
        write_marker(tmp_dir)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    # mkdtemp creates the directory with mode 0700; give the result the usual permissions.
    tmp_dir.chmod(0o755)
    # os.replace cannot overwrite a non-empty directory, so move the old one aside first.
    old_dir = None
    if output_dir.exists():
        old_dir = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.old-", dir=output_dir.parent))
        os.replace(output_dir, old_dir / output_dir.name)
    os.replace(tmp_dir, output_dir)
    if old_dir is not None:
        _move_missing_entries(old_dir / output_dir.name, output_dir, keep)
        shutil.rmtree(old_dir, ignore_errors=True)


def write_text_atomically(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` through a temporary file beside it and a rename: a reader (or a run stopped halfway)
    sees the old file or the new one, never a truncated one."""
    path = Path(path)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(text)
        os.chmod(temporary, 0o644)  # mkstemp creates the file private
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_json(path: str | os.PathLike, values: Any, indent: int = 4) -> None:
    """`values` as indented JSON with sorted keys (the layout of Trainer's `*_results.json`), written atomically."""
    write_text_atomically(path, json.dumps(values, indent=indent, sort_keys=True) + "\n")
