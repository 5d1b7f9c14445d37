"""Small helpers shared by the data, tokenizer, training, benchmark and comparison code: atomic folders, and reports
that record the machine they were measured on."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator, Sequence


@contextlib.contextmanager
def atomic_directory(output_dir: str | os.PathLike, keep: Sequence[str] = ()) -> Iterator[Path]:
    """Yield a temporary directory that replaces `output_dir` only if the block succeeds.

    The temporary directory is a sibling of `output_dir` (same file system), so the final
    step is a rename: readers see either the old complete output or the new complete output,
    never a half-written one. On error the temporary directory is removed and `output_dir`
    is left untouched. Entries of the old `output_dir` matching a glob pattern of `keep` (e.g. Trainer's
    checkpoint-N folders) are moved into the new one just before the swap, so they are not lost with it.
    """
    output_dir = Path(output_dir).resolve()
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.tmp-", dir=output_dir.parent))
    try:
        yield tmp_dir
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    # mkdtemp creates the directory with mode 0700; give the result the usual permissions.
    tmp_dir.chmod(0o755)
    # os.replace cannot overwrite a non-empty directory, so move the old one aside first.
    old_dir = None
    if output_dir.exists():
        for pattern in keep:  # renames only: kept entries are never copied or half-moved
            for entry in output_dir.glob(pattern):
                if not (tmp_dir / entry.name).exists():
                    os.replace(entry, tmp_dir / entry.name)
        old_dir = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.old-", dir=output_dir.parent))
        os.replace(output_dir, old_dir / output_dir.name)
    os.replace(tmp_dir, output_dir)
    if old_dir is not None:
        shutil.rmtree(old_dir, ignore_errors=True)


def write_report(
    output_dir: str | os.PathLike, stem: str, data: dict, markdown: str, plot: Callable[[dict, Path], None]
) -> Path:
    """`<stem>.json`, `<stem>.md` and `<stem>.png` (drawn by `plot(data, path)`), replacing `output_dir` atomically."""
    with atomic_directory(output_dir) as tmp_dir:
        (tmp_dir / f"{stem}.json").write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
        (tmp_dir / f"{stem}.md").write_text(markdown, encoding="utf-8")
        plot(data, tmp_dir / f"{stem}.png")
    return Path(output_dir)


def load_average() -> list[float] | None:
    """1, 5 and 15-minute load averages (what `uptime` prints): how busy the machine was."""
    try:
        return [round(load, 2) for load in os.getloadavg()]
    except OSError:
        return None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device=None) -> dict:
    """The command, versions and machine a report was measured with; `device` (a torch.device, default: the first
    GPU if any, else the CPU) is named too."""
    import torch  # imported here: the file helpers above do not need it
    import transformers

    if device is None:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "load_average_start": load_average(),
    }
