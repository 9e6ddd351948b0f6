"""cffi build script (API mode) for the engine: native/src/*.c linked with libxdp and libbpf.

Run by setup.py's `cffi_modules` during `pip install`; the C API comes from native/src/tickwire.h,
the one header shared by C and Python.
"""
import glob
import os
import re

from cffi import FFI

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
SRC = os.path.normpath(SRC)
HEADER = os.path.join(SRC, "tickwire.h")

_INT_DEFINE = re.compile(r"^#define\s+\w+\s+-?\d+\s*(/\*.*\*/)?\s*$")


def cdef_text(header_path: str = HEADER) -> str:
    """The header as cdef accepts it: integer #defines kept, other preprocessor lines dropped."""
    lines = []
    for line in open(header_path, encoding="utf-8"):
        stripped = line.strip()
        if stripped.startswith("#") and not _INT_DEFINE.match(stripped):
            continue
        lines.append(line)
    return "".join(lines)


ffibuilder = FFI()
ffibuilder.cdef(cdef_text())
ffibuilder.set_source(
    "tickwire_engine._native",
    '#include "tickwire.h"',
    sources=sorted(os.path.relpath(p) for p in glob.glob(os.path.join(SRC, "*.c"))),
    include_dirs=[SRC],
    libraries=["xdp", "bpf", "pthread"],
    extra_compile_args=["-O2", "-g", "-Wall", "-Wextra", "-Wno-unused-parameter", "-std=gnu11"],
)

if __name__ == "__main__":
    ffibuilder.compile(tmpdir=os.path.join(SRC, "..", "build-cffi"), verbose=True)
