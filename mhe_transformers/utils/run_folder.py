"""The one owner of every folder a script writes (its output folder, or run folder): checks, one lock per folder,
atomic replacement, and the repair of what a killed run left behind. docs/reliability.md states the rules.

    check_output_dir(output_dir, overwrite, inputs=[...])   # before any work: may this run write there?
    with lock_output_dir(output_dir):                         # one run per folder, from the check to the end
        ...                                                   # the work
        with atomic_directory(output_dir) as tmp_dir:         # written beside output_dir, renamed over it at the end
            ...

The rules:
- A folder is deleted or replaced only when it carries OUTPUT_MARKER (this tool wrote it), only when the user asked
  (`--overwrite_output_dir`), and never when it is, or holds, an input of the same run. Resuming follows the same
  rule: a folder of the user's own is never resumed into (that would replace it at the final save).
- Never the working directory, the home folder, `/`, or a parent of any of them.
- Symbolic links: an output folder that IS a symlink is refused (replacing it would either destroy the link or act
  on a folder elsewhere, and rmtree refuses links anyway). Links among its PARENTS are followed: every check is made
  on the resolved path, so a linked parent cannot hide the working directory, home or an input.
- One run per folder: `lock_output_dir` holds `.<name>.lock` beside the folder (the `filelock` package), which
  describes its holder (pid, host, command with secrets redacted, start time) and is deleted when the run ends; a
  second run into the folder is refused with that description.
- Temporaries live beside the folder, each marked as ours from its creation: `.<name>.tmp-*` (a result being
  written), `.<name>.old-*` / `.<name>.replaced-*` (the previous folder moved aside during the final rename) and
  `.<name>.next` (a training run that will replace an earlier one, see `RunFolder`). `clean_stale_temporaries`
  deletes only marked ones, under the lock; a folder that merely looks like a temporary is left alone.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from .secrets import redact

logger = logging.getLogger(__name__)

# Written into every folder this tool creates; only such folders are ever replaced or cleared. Hidden, so the Hub
# upload (an explicit list of known files) never sends it.
OUTPUT_MARKER = ".mhe-transformers-output"
MARKER_TEXT = "Written by mhe-transformers. Its scripts replace this folder only when told to overwrite it.\n"


class OutputDirError(ValueError):
    """An output folder that must not be written to or replaced; the message says why and what to do."""


def is_own_output(folder: str | os.PathLike) -> bool:
    """Whether `folder` was written by this tool: a real folder (not a symlink) holding OUTPUT_MARKER as a regular
    file (not a symlink)."""
    folder, marker = Path(folder), Path(folder) / OUTPUT_MARKER
    return folder.is_dir() and not folder.is_symlink() and marker.is_file() and not marker.is_symlink()


def write_marker(folder: str | os.PathLike) -> None:
    (Path(folder) / OUTPUT_MARKER).write_text(MARKER_TEXT, encoding="utf-8")


def _is_within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _holds_anything(folder: Path) -> bool:
    return folder.is_dir() and any(folder.iterdir())


def resolve_output_dir(output_dir: str | os.PathLike) -> Path:
    """The absolute, resolved path of `output_dir`; OutputDirError if the folder itself is a symbolic link."""
    path = Path(output_dir).expanduser().absolute()
    if path.is_symlink():
        raise OutputDirError(
            f"Output directory {path} is a symbolic link (to {os.readlink(path)}); this tool never writes through or "
            "replaces a link. Pass the folder it points to, or another folder."
        )
    return path.resolve()


def check_not_protected(output_dir: str | os.PathLike) -> None:
    """Raise OutputDirError if `output_dir` is the working directory, the home folder, `/`, or a parent of one."""
    output_dir = resolve_output_dir(output_dir)
    protected = {"the root folder": Path("/"), "your home folder": Path.home(), "the working directory": Path.cwd()}
    for what, folder in protected.items():
        if _is_within(folder.resolve(), output_dir):
            raise OutputDirError(
                f"Output directory {output_dir} is {what} or one of its parents; choose a new folder inside it."
            )


def check_output_dir(
    output_dir: str | os.PathLike,
    overwrite: bool = False,
    inputs: Iterable[str | os.PathLike | None] = (),
    flag: str = "--overwrite_output_dir",
) -> None:
    """Raise OutputDirError unless `output_dir` may receive this run's output; deletes nothing.

    Allowed: a missing or empty folder; with `overwrite`, a non-empty one this tool wrote. Never: a symlink, a folder
    that is or contains one of `inputs` (local paths; Hub ids and None are skipped), the working directory, home,
    `/` or a parent of them, a path that is not a folder, or one whose nearest existing parent is not writable.
    `flag` names the overwrite option in messages.
    """
    output_dir = resolve_output_dir(output_dir)
    check_not_an_input(output_dir, inputs)
    check_not_protected(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise OutputDirError(f"Output directory {output_dir} exists and is not a folder.")
    if _holds_anything(output_dir):
        check_own(output_dir)
        if not overwrite:
            raise OutputDirError(
                f"Output directory {output_dir} already holds an earlier run; pass {flag} to replace it, or choose "
                "another output directory."
            )
    check_creatable(output_dir)


def check_creatable(output_dir: Path) -> None:
    """Raise OutputDirError unless the nearest existing folder above `output_dir` (resolved) is a writable folder."""
    existing = output_dir
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise OutputDirError(f"Cannot create {output_dir}: {existing} is a file, not a folder.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputDirError(f"Cannot write {output_dir}: {existing} is not writable.")


def check_own(folder: Path) -> None:
    """Raise OutputDirError unless `folder` (holding something) carries OUTPUT_MARKER."""
    if not is_own_output(folder):
        raise OutputDirError(
            f"Output directory {folder} holds files that mhe-transformers did not write (no {OUTPUT_MARKER}); "
            "it will not replace them. Choose another output directory, or empty this one yourself."
        )


def check_not_an_input(output_dir: str | os.PathLike, inputs: Iterable[str | os.PathLike | None]) -> None:
    """Raise OutputDirError if `output_dir` is or holds one of `inputs` (local paths; others are skipped)."""
    output_dir = Path(output_dir).expanduser().resolve()
    for source in inputs:
        if source and os.path.exists(source) and _is_within(Path(source).resolve(), output_dir):
            raise OutputDirError(
                f"Output directory {output_dir} is, or holds, an input of this run ({source}); writing there would "
                "destroy it. Choose another output directory."
            )


def remove_own_folder(folder: str | os.PathLike) -> None:
    """Delete `folder` (missing: nothing to do), which must be this tool's (OUTPUT_MARKER) and not protected."""
    folder = resolve_output_dir(folder)
    if not folder.exists():
        return
    check_not_protected(folder)
    if _holds_anything(folder):
        check_own(folder)
    shutil.rmtree(folder)


# ---------------------------------------------------------------------------------------------------------------------
# One run per folder


_HELD_LOCKS: dict[Path, list] = {}  # resolved output_dir -> [FileLock, depth]: re-entered by the same process


def lock_path(output_dir: Path) -> Path:
    """The lock file beside `output_dir` (a resolved path); it holds a description of the run holding it."""
    return output_dir.parent / f".{output_dir.name}.lock"


class _UnlinkedLockFile(Exception):
    """The lock was taken on a lock file its previous holder had just deleted: try again on the current one."""


def _holder_description(lock_file: Path) -> str:
    try:
        info = json.loads(lock_file.read_text(encoding="utf-8"))
        return f"pid {info['pid']} on {info['host']}, started {info['started']}: {info['command']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "its details were not recorded"


def _take_lock(lock_file: Path, description: bytes):
    """filelock's FileLock on `lock_file`, taken without waiting (filelock.Timeout if another process holds it), with
    `description` written into it. The holder deletes the file when it lets go (so no file stays beside the folder):
    a lock taken on a file deleted meanwhile is taken again on the current file."""
    from filelock import FileLock  # imported here: only writers need it

    def describe(descriptor: int) -> None:
        try:
            current = os.stat(lock_file)
        except FileNotFoundError:
            raise _UnlinkedLockFile from None
        if not os.path.samestat(os.fstat(descriptor), current):
            raise _UnlinkedLockFile
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, description, 0)

    for _ in range(10):
        lock = FileLock(lock_file, timeout=0, thread_local=False, on_acquired=describe)
        try:
            lock.acquire()
            return lock
        except _UnlinkedLockFile:
            continue
    raise OutputDirError(f"Could not take the lock {lock_file}: it keeps being replaced.")


@contextlib.contextmanager
def lock_output_dir(output_dir: str | os.PathLike, enabled: bool = True) -> Iterator[None]:
    """Hold `output_dir`'s lock for the block: another run (any process, any host sharing the file system) that
    tries to take it meanwhile gets OutputDirError naming this one (pid, host, start, command with secrets redacted).
    Re-entrant within a process; `enabled=False` (a process of a multi-process run that does not write) makes it a
    no-op. Creates the parent folder if needed. The lock file `.<name>.lock` is deleted when the block ends; one
    left by a killed run does not block the next (the system releases a dead process's locks)."""
    if not enabled:
        yield
        return
    from filelock import Timeout

    output_dir = resolve_output_dir(output_dir)
    if output_dir in _HELD_LOCKS:
        _HELD_LOCKS[output_dir][1] += 1
        try:
            yield
        finally:
            _HELD_LOCKS[output_dir][1] -= 1
        return
    lock_file = lock_path(output_dir)
    check_creatable(output_dir.parent)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    info = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": " ".join(redact([Path(sys.argv[0]).name, *sys.argv[1:]])),
    }
    try:
        lock = _take_lock(lock_file, (json.dumps(info) + "\n").encode())
    except Timeout:
        raise OutputDirError(
            f"Output directory {output_dir} is in use by another run ({_holder_description(lock_file)}). Wait for it "
            "to finish, or choose another output directory."
        ) from None
    _HELD_LOCKS[output_dir] = [lock, 1]
    try:
        yield
    finally:
        del _HELD_LOCKS[output_dir]
        lock_file.unlink(missing_ok=True)  # while still holding it: the next run creates a fresh one
        lock.release()


@contextlib.contextmanager
def claim_output_dir(
    output_dir: str | os.PathLike,
    overwrite: bool = False,
    inputs: Iterable[str | os.PathLike | None] = (),
    flag: str = "--overwrite_output_dir",
) -> Iterator[Path]:
    """`check_output_dir`, then hold the folder's lock for the block, checking again once it is held (another run
    may have written the folder meanwhile). Yields the resolved folder. Deletes nothing."""
    check_output_dir(output_dir, overwrite, inputs, flag)
    with lock_output_dir(output_dir):
        check_output_dir(output_dir, overwrite, inputs, flag)
        yield resolve_output_dir(output_dir)


# ---------------------------------------------------------------------------------------------------------------------
# Temporaries and the final rename


def _temporaries(output_dir: Path, kind: str) -> list[Path]:
    """This tool's `.<name>.<kind>-*` folders beside `output_dir`; look-alikes without the marker are skipped."""
    found = []
    for path in sorted(output_dir.parent.glob(f".{output_dir.name}.{kind}-*")):
        if is_own_output(path):
            found.append(path)
        elif path.is_dir():
            logger.warning("Leaving %s alone: it looks like a temporary folder but mhe-transformers did not write it.",
                           path)  # fmt: skip
    return found


def _make_temporary(output_dir: Path, kind: str) -> Path:
    folder = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.{kind}-", dir=output_dir.parent))
    write_marker(folder)  # ours from the start: only marked temporaries are ever cleaned
    return folder


def clean_stale_temporaries(output_dir: str | os.PathLike, keep: Iterable[str] = ()) -> list[Path]:
    """Repair what an interrupted `atomic_directory(output_dir, keep)` left beside `output_dir` (holding its lock);
    returns the temporaries removed. Only folders carrying OUTPUT_MARKER are touched.

    A previous folder moved aside (`.old-*` or `.replaced-*`) while `output_dir` is missing (a kill between the two
    renames) is put back; once `output_dir` is in place, the entries matching `keep` (e.g. checkpoints) still in an
    `.old-*` folder move into it (`.replaced-*` ones belonged to the run being replaced: dropped). Half-written
    results (`.tmp-*`) are deleted.
    """
    output_dir = resolve_output_dir(output_dir)
    removed = []
    if not output_dir.parent.is_dir():
        return removed
    with lock_output_dir(output_dir):
        for kind in ("old", "replaced"):
            for stale in _temporaries(output_dir, kind):
                previous = stale / output_dir.name
                if previous.is_dir() and not output_dir.exists():
                    os.replace(previous, output_dir)
                elif kind == "old":
                    _move_missing_entries(previous, output_dir, keep)
                shutil.rmtree(stale)
                removed.append(stale)
        for stale in _temporaries(output_dir, "tmp"):
            shutil.rmtree(stale)
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
def atomic_directory(
    output_dir: str | os.PathLike, keep: Iterable[str] = (), source: str | os.PathLike | None = None
) -> Iterator[Path]:
    """Yield a temporary directory that replaces `output_dir` only if the block succeeds (holding the lock).

    The temporary directory is a sibling of `output_dir` (same file system), so the final step is a rename: readers
    see either the old complete output or the new complete output, never a half-written one. On error the temporary
    directory is removed and `output_dir` is left untouched. The result carries OUTPUT_MARKER; a non-empty
    `output_dir` without it is never replaced (OutputDirError, before the block runs).

    Entries matching the glob patterns in `keep` (e.g. Trainer's "checkpoint-*") move into the new folder after the
    swap: from the old `output_dir`, or from `source` (a run's working folder, deleted afterwards) when given, the
    old `output_dir` then being dropped whole. At every instant they are in `output_dir`, in `source`, or, between
    the two renames, in the hidden `.<name>.old-*` folder beside it, which `clean_stale_temporaries` puts back.
    """
    output_dir = resolve_output_dir(output_dir)
    check_not_protected(output_dir)
    if _holds_anything(output_dir):
        check_own(output_dir)
    with lock_output_dir(output_dir):
        tmp_dir = _make_temporary(output_dir, "tmp")
        try:
            yield tmp_dir
        except BaseException:
            shutil.rmtree(tmp_dir, ignore_errors=True)
            raise
        # mkdtemp creates the directory with mode 0700; give the result the usual permissions.
        tmp_dir.chmod(0o755)
        # os.replace cannot overwrite a non-empty directory, so move the old one aside first.
        aside = None
        if output_dir.exists():
            aside = _make_temporary(output_dir, "old" if source is None else "replaced")
            os.replace(output_dir, aside / output_dir.name)
        os.replace(tmp_dir, output_dir)
        if source is not None:
            _move_missing_entries(Path(source), output_dir, keep)
            remove_own_folder(source)
        elif aside is not None:
            _move_missing_entries(aside / output_dir.name, output_dir, keep)
        if aside is not None:
            shutil.rmtree(aside)


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


# ---------------------------------------------------------------------------------------------------------------------
# Training runs: checkpoints first, the final folder at the end


STAGING_SUFFIX = "next"


@dataclass(frozen=True)
class RunFolder:
    """Where a training run writes: `output_dir` receives the final checkpoint (`atomic_directory`); `work_dir`
    receives Trainer's checkpoints meanwhile. `work_dir` is `output_dir` itself, except when the run replaces an
    earlier one (`--overwrite_output_dir`): then it is the hidden sibling `.<name>.next`, and the earlier run stays
    untouched until the new one has succeeded, whatever stops it before (a bad option that only the first evaluation
    reveals, a crash, a kill). Resuming continues `.<name>.next` when it exists (the newest run), else `output_dir`.
    """

    output_dir: Path
    work_dir: Path

    @classmethod
    def plan(cls, output_dir: str | os.PathLike, resuming: bool) -> RunFolder:
        """Where a run writes; call it after `clean_stale_temporaries`, holding the lock. Deletes nothing."""
        output_dir = resolve_output_dir(output_dir)
        staging = output_dir.parent / f".{output_dir.name}.{STAGING_SUFFIX}"
        if resuming:
            return cls(output_dir, staging if is_own_output(staging) else output_dir)
        return cls(output_dir, staging if _holds_anything(output_dir) else output_dir)

    @property
    def replaces_earlier_run(self) -> bool:
        return self.work_dir != self.output_dir

    def check(self, resuming: bool, overwrite: bool, inputs: Iterable[str | os.PathLike | None] = ()) -> None:
        """Raise OutputDirError unless this run may write here: `check_output_dir` for a new run; for a resumed one,
        `work_dir` must be missing, empty or this tool's (it is replaced at the final save), and hold no input."""
        if not resuming:
            check_output_dir(self.output_dir, overwrite, inputs, flag="--overwrite_output_dir true")
            return
        check_not_an_input(self.output_dir, inputs)
        check_not_protected(self.output_dir)
        for folder in {self.output_dir, self.work_dir}:
            if _holds_anything(folder):
                check_own(folder)

    def claim(self, resuming: bool) -> None:
        """Create `work_dir` with the marker (holding the lock); a new run first drops a `.next` left by an earlier
        attempt that was stopped."""
        with lock_output_dir(self.output_dir):
            if self.replaces_earlier_run and not resuming:
                remove_own_folder(self.work_dir)
            self.work_dir.mkdir(parents=True, exist_ok=True)
            write_marker(self.work_dir)

    def final_directory(self, keep: Iterable[str]):
        """`atomic_directory` for the final checkpoint: `keep` entries (checkpoints) come from `work_dir`."""
        return atomic_directory(self.output_dir, keep, source=self.work_dir if self.replaces_earlier_run else None)


__all__ = [
    "MARKER_TEXT",
    "OUTPUT_MARKER",
    "OutputDirError",
    "RunFolder",
    "atomic_directory",
    "check_not_an_input",
    "check_not_protected",
    "check_output_dir",
    "check_own",
    "claim_output_dir",
    "clean_stale_temporaries",
    "is_own_output",
    "lock_output_dir",
    "remove_own_folder",
    "resolve_output_dir",
    "write_json",
    "write_marker",
    "write_text_atomically",
]
