"""Build glue that pyproject.toml cannot express: the cffi extension and the XDP object.

The XDP program is compiled with clang next to the extension (in the source tree for editable
installs, in build_lib otherwise) so that `tickwire_engine` always finds `steer.bpf.o` beside
itself. The same goes for `tickwire-feed blast`: its XDP generator (blast.bpf.o) and the small
libbpf loader that drives it (`blast`, a C program) are built into `tickwire_feed`.
"""
import os
import subprocess

from setuptools import setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
BPF_SOURCE = os.path.join(HERE, "native", "bpf", "steer.bpf.c")


BPF_DIR = os.path.join(HERE, "native", "bpf")
BLAST_LOADER = os.path.join(HERE, "native", "blast", "blast.c")


def compile_bpf(out_dir: str, source: str = BPF_SOURCE) -> None:
    os.makedirs(out_dir, exist_ok=True)
    target = os.path.join(out_dir, os.path.basename(source).replace(".c", ".o"))
    arch_include = "/usr/include/" + os.uname().machine + "-linux-gnu"
    subprocess.check_call([
        os.environ.get("CLANG", "clang"), "-O2", "-g", "-Wall", "-target", "bpf",
        "-I" + arch_include, "-I" + BPF_DIR, "-c", source, "-o", target,
    ])


def compile_blast(out_dir: str) -> None:
    """tickwire-feed blast's generator: the XDP program and its libbpf loader."""
    compile_bpf(out_dir, os.path.join(BPF_DIR, "blast.bpf.c"))
    subprocess.check_call([
        os.environ.get("CC", "gcc"), "-O2", "-g", "-Wall", "-Wextra", "-std=gnu11", "-I" + BPF_DIR,
        "-o", os.path.join(out_dir, "blast"), BLAST_LOADER, "-lbpf",
    ])


class BuildExtWithBpf(build_ext):
    def run(self):
        super().run()
        root = os.path.join(HERE, "native") if self.inplace else self.build_lib
        compile_bpf(os.path.join(root, "tickwire_engine"))
        compile_blast(os.path.join(root, "tickwire_feed"))


setup(
    cffi_modules=["native/tickwire_engine/_build.py:ffibuilder",
                  "native/tickwire_engine/_consumer_build.py:ffibuilder"],
    cmdclass={"build_ext": BuildExtWithBpf},
)
