"""cffi build script (API mode) for the stream reader: native/include/tickwire/consumer.h only.

A module of its own, without libxdp or libbpf, so that a consumer (a strategy's Pod) needs
nothing of the engine's. The cdef is the part of the header between its cdef markers.
"""
import os
import re

from cffi import FFI

INCLUDE = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "include"))
HEADER = os.path.join(INCLUDE, "tickwire", "consumer.h")

_INT_DEFINE = re.compile(r"^#define\s+\w+\s+-?\d+\s*(/\*.*\*/)?\s*$")


def cdef_text(header_path: str = HEADER) -> str:
    """The header's cdef block: integer #defines and declarations, other preprocessor lines dropped."""
    text = open(header_path, encoding="utf-8").read()
    block = text.split("/* cdef-begin */", 1)[1].split("/* cdef-end */", 1)[0]
    lines = []
    for line in block.splitlines(keepends=True):
        stripped = line.strip()
        if stripped.startswith("#") and not _INT_DEFINE.match(stripped):
            continue
        lines.append(line)
    return "".join(lines)


ffibuilder = FFI()
ffibuilder.cdef(cdef_text())
ffibuilder.set_source(
    "tickwire_engine._consumer",
    '#include "tickwire/consumer.h"',
    include_dirs=[INCLUDE],
    extra_compile_args=["-O2", "-g", "-Wall", "-Wextra", "-std=gnu11"],
)

if __name__ == "__main__":
    ffibuilder.compile(tmpdir=os.path.join(INCLUDE, "..", "build-cffi"), verbose=True)
