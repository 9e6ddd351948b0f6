"""Compile the benchmark's C programs (not committed; rebuilt when a source is newer).

kernel_rx links the engine's own decoder (native/src/decode.c and what it calls: re-requests, exchange
time, ITCH, histograms, the books and their stream, as native/fuzz/run.sh links it) with the flags the
engine's cffi build uses, so the kernel-socket contender decodes with exactly the engine's code.
"""
from __future__ import annotations

import os
import shutil
import subprocess

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(REPO, "native", "src")
BENCH = os.path.join(REPO, "bench")
BUILD_DIR = os.path.join(REPO, "build", "bench")
CFLAGS = ["-O2", "-g", "-Wall", "-Wextra", "-Wno-unused-parameter", "-std=gnu11"]
DECODER = [os.path.join(SRC, f"{name}.c")
           for name in ("decode", "rerequest", "exchange_time", "itch", "hist", "book", "stream")]
PROGRAMS = {
    "publisher": [os.path.join(BENCH, "publisher.c")],
    "kernel_rx": [os.path.join(BENCH, "kernel_rx.c"), *DECODER],
}


def _stale(target: str, sources: list[str]) -> bool:
    if not os.path.exists(target):
        return True
    built = os.path.getmtime(target)
    headers = [os.path.join(SRC, h) for h in os.listdir(SRC) if h.endswith(".h")]
    return any(os.path.getmtime(s) > built for s in sources + headers if os.path.exists(s))


def build(out_dir: str = BUILD_DIR) -> dict[str, str]:
    """Paths of the built programs, by name. Raises RuntimeError with the compiler's message."""
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        raise RuntimeError("no C compiler: install gcc (make setup does)")
    os.makedirs(out_dir, exist_ok=True)
    built = {}
    for name, sources in PROGRAMS.items():
        target = os.path.join(out_dir, name)
        if _stale(target, sources):
            cmd = [compiler, *CFLAGS, "-I", SRC, "-o", target, *sources]
            result = subprocess.run(cmd, capture_output=True, text=True)
            if result.returncode != 0:
                raise RuntimeError(f"building {name} failed:\n{' '.join(cmd)}\n{result.stderr}")
        built[name] = target
    return built
