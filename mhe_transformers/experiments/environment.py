"""What a measured report records: the command, versions and machine it ran on, and how busy the machine was."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Callable

from ..utils.run_folder import atomic_directory
from ..utils.secrets import redact


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
        "command": " ".join(redact([Path(sys.argv[0]).name, *sys.argv[1:]])),
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
