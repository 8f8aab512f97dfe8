"""Sampling profiles of the server's workers under load (py-spy), and what they say in a table.

``bench.loadtest --profile SECONDS`` calls ``start`` once the load has ramped up: py-spy samples every gunicorn
worker for SECONDS (``--nonblocking``: the workers are never paused) and writes its collapsed stacks
(``pyspy-<pid>.txt``, one ``frame;frame;... count`` line per distinct stack). ``summarize`` reads them back:
the share of samples in which each function was on the stack (inclusive), over all workers, and the share
that was the project's own code versus Django, DRF, psycopg, gevent and the rest.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# py-spy's sampling rate (samples per second per worker): enough for a minute's profile to rank functions.
RATE = 50
_LINE_NUMBER = re.compile(r":\d+\)$")


@dataclass
class Profiler:
    """The py-spy processes sampling the workers; ``wait`` until they have written their files."""

    processes: list[subprocess.Popen[bytes]]
    files: list[Path]

    def wait(self, timeout: float) -> list[Path]:
        for process in self.processes:
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return [path for path in self.files if path.is_file() and path.stat().st_size]


def worker_pids(master_pid: int) -> list[int]:
    """The gunicorn master's children (its workers)."""
    import psutil

    try:
        return sorted(child.pid for child in psutil.Process(master_pid).children())
    except psutil.Error:
        return []


def start(master_pid: int, seconds: int, out: Path) -> Profiler:
    """py-spy on every worker of ``master_pid`` for ``seconds``. RuntimeError when py-spy is not installed."""
    # The virtual environment's own, beside this interpreter, whether or not its bin directory is on PATH.
    beside = Path(sys.executable).with_name("py-spy")
    executable = str(beside) if beside.is_file() else shutil.which("py-spy")
    if executable is None:
        raise RuntimeError("py-spy is not installed (pip install -r requirements-bench.txt)")
    processes, files = [], []
    for pid in worker_pids(master_pid):
        path = out / f"pyspy-{pid}.txt"
        command = [executable, "record", "--pid", str(pid), "--duration", str(seconds), "--rate", str(RATE)]
        command += ["--format", "raw", "--nonblocking", "--output", str(path)]
        processes.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT))
        files.append(path)
    return Profiler(processes, files)


def _function(frame: str) -> str:
    """``name (path/file.py:123)`` -> ``name (path/file.py)``: lines of one function count as one."""
    return _LINE_NUMBER.sub(")", frame.strip())


def summarize(files: Sequence[Path], top: int = 40) -> tuple[int, list[tuple[str, float]]]:
    """(samples, [(function, share of samples with it on the stack)]) over ``files``, largest first."""
    samples = 0
    inclusive: Counter[str] = Counter()
    for path in files:
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            stack, _, count_text = line.rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            count = int(count_text)
            samples += count
            for function in {_function(frame) for frame in stack.split(";")}:
                inclusive[function] += count
    if not samples:
        return 0, []
    return samples, [(function, count / samples) for function, count in inclusive.most_common(top)]


def render(files: Sequence[Path], seconds: int, top: int = 40) -> str:
    """The summary as Markdown."""
    samples, ranked = summarize(files, top)
    lines = [
        f"# Where the workers' time went ({len(files)} worker(s), {seconds} s at {RATE} samples/s each, "
        f"{samples:,} samples)",
        "",
        "Share of samples in which the function was on the stack (inclusive: a view's share contains everything "
        "it called). py-spy samples only a worker that is running, so an idle worker adds no samples.",
        "",
        "| share | function |",
        "|---:|---|",
    ]
    lines += [f"| {share * 100:.1f} % | `{function}` |" for function, share in ranked]
    return "\n".join(lines) + "\n"
