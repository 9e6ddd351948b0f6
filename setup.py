"""Build glue that pyproject.toml cannot express: the cffi extension and the XDP object.

The XDP program is compiled with clang next to the extension (in the source tree for editable
installs, in build_lib otherwise) so that `tickwire_engine` always finds `steer.bpf.o` beside
itself.
"""
import os
import subprocess

from setuptools import setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
BPF_SOURCE = os.path.join(HERE, "native", "bpf", "steer.bpf.c")


def compile_bpf(out_dir: str) -> None:
    os.makedirs(out_dir, exist_ok=True)
    target = os.path.join(out_dir, "steer.bpf.o")
    arch_include = "/usr/include/" + os.uname().machine + "-linux-gnu"
    subprocess.check_call([
        os.environ.get("CLANG", "clang"), "-O2", "-g", "-Wall", "-target", "bpf",
        "-I" + arch_include, "-c", BPF_SOURCE, "-o", target,
    ])


class BuildExtWithBpf(build_ext):
    def run(self):
        super().run()
        if self.inplace:
            out_dir = os.path.join(HERE, "native", "tickwire_engine")
        else:
            out_dir = os.path.join(self.build_lib, "tickwire_engine")
        compile_bpf(out_dir)


setup(
    cffi_modules=["native/tickwire_engine/_build.py:ffibuilder",
                  "native/tickwire_engine/_consumer_build.py:ffibuilder"],
    cmdclass={"build_ext": BuildExtWithBpf},
)
