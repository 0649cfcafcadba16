"""Sampling profiles of the benchmarked processes with py-spy (``--profile DIR`` on the benchmarks).

While a measured run lasts, ``py-spy record`` samples each named process (100 Hz, idle
frames left out) into ``DIR/<name>.txt`` (collapsed stacks: one line per stack, its sample
count last — what flamegraph tools read). Afterwards :func:`summarise` prints, per process,
the functions with the most *self* samples and the packages with the most *inclusive*
samples, which is what each optimisation step of issue 14 was chosen from.

py-spy needs ptrace rights over the process (root, or ``kernel.yama.ptrace_scope=0``).
"""

from __future__ import annotations

import collections
import contextlib
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

_PACKAGE = re.compile(r"\((?:.*/site-packages/|.*/src/)?([A-Za-z_][\w]*)")


def _py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        raise SystemExit("bench: --profile needs py-spy (uv sync installs it with the dev group)")
    return found


@contextlib.contextmanager
def profiling(directory: Path | None, pids: dict[str, int]) -> Iterator[None]:
    """Record every process of ``pids`` while the block runs (no-op when ``directory`` is None)."""
    if directory is None:
        yield
        return
    directory.mkdir(parents=True, exist_ok=True)
    recorders = [
        subprocess.Popen(
            [
                _py_spy(),
                "record",
                "--pid",
                str(pid),
                "--rate",
                "100",
                "--format",
                "raw",
                "--output",
                str(directory / f"{name}.txt"),
                "--nonblocking",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name, pid in pids.items()
    ]
    try:
        yield
    finally:
        for recorder in recorders:
            recorder.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        for recorder in recorders:
            try:
                recorder.wait(timeout=30)
            except subprocess.TimeoutExpired:
                recorder.kill()


def summarise(directory: Path, top: int = 15) -> None:
    """Print the top self-time functions and inclusive packages of every profile in ``directory``."""
    for path in sorted(directory.glob("*.txt")):
        self_samples: collections.Counter[str] = collections.Counter()
        inclusive: collections.Counter[str] = collections.Counter()
        total = 0
        for line in path.read_text().splitlines():
            stack, _, count_text = line.rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            count = int(count_text)
            total += count
            frames = stack.split(";")
            self_samples[frames[-1]] += count
            for package in {m.group(1) for frame in frames if (m := _PACKAGE.search(frame))}:
                inclusive[package] += count
        if not total:
            continue
        print(f"\nprofile {path.stem}: {total} samples ({path})")
        print("  self time, top functions:")
        for frame, count in self_samples.most_common(top):
            print(f"    {100 * count / total:5.1f} %  {frame[:150]}")
        print("  inclusive time, by package:")
        for package, count in inclusive.most_common(top):
            print(f"    {100 * count / total:5.1f} %  {package}")
