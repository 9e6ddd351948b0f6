"""Per-packet cost of the shared steering program against the single-feed one it replaced.

    .venv/bin/python -m bench.steer_cost [--repeat 2000000] [--rounds 5]

Both programs run through BPF_PROG_TEST_RUN (`bpftool prog run ... repeat N`, the kernel's own
timing loop, ns per run) on the same frames, interleaved round by round, in one run: a feed
frame (its flow is steered), another UDP frame, and a non-IP frame. The steered flow's queue has
no AF_XDP socket here (a test run cannot bind one), so a feed frame ends at the XSKMAP lookup in
both programs: the numbers compare the classification work, which is what changed. Needs root
and clang; mounts a private bpffs in a temporary directory.
"""
from __future__ import annotations

import argparse
import ipaddress
import os
import re
import statistics
import struct
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
from tests.support import frames  # noqa: E402  (the tests' frame builder)

SHARED = os.path.join(ROOT, "native", "bpf", "steer.bpf.c")
SINGLE = os.path.join(HERE, "steer_single_feed.bpf.c")
GROUP, PORT, SOURCE = "239.1.1.1", 5000, "198.18.0.1"


def sh(*cmd: str) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def hexbytes(data: bytes) -> list[str]:
    return [f"{b:02x}" for b in data]


def compile_program(source: str, out: str) -> None:
    arch = f"/usr/include/{os.uname().machine}-linux-gnu"
    sh("clang", "-O2", "-g", "-target", "bpf", f"-I{arch}", f"-I{os.path.join(ROOT, 'native', 'bpf')}",
       "-c", source, "-o", out)


def load(obj: str, pin: str) -> None:
    sh("bpftool", "prog", "load", obj, pin + "/prog", "type", "xdp", "pinmaps", pin)


def update(pin: str, name: str, key: bytes, value: bytes) -> None:
    sh("bpftool", "map", "update", "pinned", f"{pin}/{name}", "key", "hex", *hexbytes(key),
       "value", "hex", *hexbytes(value))


def steer_single(pin: str, source: str | None) -> None:
    """The old program: (group, port) -> line."""
    update(pin, "tw_lines", ipaddress.IPv4Address(GROUP).packed + struct.pack("!H", PORT) + b"\0\0",
           struct.pack("=I", 0))


def steer_shared(pin: str, source: str | None, vlan: int = 0) -> None:
    """The shared program: (group, source, port, vlan) -> (queue 0, line 0), and the group's shape."""
    src = ipaddress.IPv4Address(source).packed if source else b"\0" * 4
    update(pin, "tw_flows", ipaddress.IPv4Address(GROUP).packed + src + struct.pack("!H", PORT)
           + struct.pack("=H", vlan), struct.pack("=II", 0, 0))
    shape = (1 if vlan else 4) if source else (2 if vlan else 8)
    update(pin, "tw_groups", ipaddress.IPv4Address(GROUP).packed + struct.pack("!H", PORT) + b"\0\0",
           struct.pack("=III", shape, 0, 0))   # shapes, then the any-flow's (queue, line)


def run(pin: str, frame_path: str, repeat: int) -> float:
    out = sh("bpftool", "prog", "run", "pinned", pin + "/prog", "data_in", frame_path,
             "repeat", str(repeat))
    return float(re.search(r"duration \(average\): (\d+)ns", out).group(1))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=2_000_000, help="runs per measurement")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median reported)")
    args = ap.parse_args(argv)

    payload = frames.run_of(1, 1)
    cases = {
        "feed frame": frames.frame(payload, GROUP, PORT, SOURCE),
        "other UDP": frames.frame(payload, "239.9.9.9", 6000, SOURCE),
        "ARP-like (not IP)": frames.ethernet(bytes(28), b"\xff" * 6, ethertype=0x0806),
    }
    with tempfile.TemporaryDirectory(prefix="tw-steer-cost-") as tmp:
        bpffs = os.path.join(tmp, "bpffs")
        os.mkdir(bpffs)
        sh("mount", "-t", "bpf", "bpf", bpffs)
        try:
            programs = {}
            for name, source, steer in (("single-feed (before)", SINGLE, steer_single),
                                        ("shared, any source", SHARED, steer_shared),
                                        ("shared, SSM + vlan", SHARED, None)):
                pin = os.path.join(bpffs, re.sub(r"\W+", "_", name))
                os.mkdir(pin)
                obj = os.path.join(tmp, os.path.basename(source) + ".o")
                compile_program(source, obj)
                load(obj, pin)
                if steer is not None:
                    steer(pin, None)
                else:
                    steer_shared(pin, SOURCE, vlan=100)
                programs[name] = pin
            results: dict[tuple[str, str], list[float]] = {}
            for case, frame in cases.items():
                if case == "feed frame":
                    variants = {n: frame for n in programs}
                    variants["shared, SSM + vlan"] = frames.frame(payload, GROUP, PORT, SOURCE,
                                                                   vlans=((frames.TPID_8021Q, 100),))
                else:
                    variants = {n: frame for n in programs}
                paths = {}
                for n, f in variants.items():
                    paths[n] = os.path.join(tmp, f"{abs(hash((case, n)))}.bin")
                    with open(paths[n], "wb") as out:
                        out.write(f)
                for _ in range(args.rounds):
                    for n, pin in programs.items():
                        results.setdefault((case, n), []).append(run(pin, paths[n], args.repeat))
        finally:
            subprocess.run(["umount", "-l", bpffs], check=False)

    print(f"ns per run, median of {args.rounds} interleaved rounds of {args.repeat:,} "
          f"(min-max in brackets)")
    for case in cases:
        for n in programs:
            values = results[(case, n)]
            print(f"  {case:<18} {n:<22} {statistics.median(values):5.0f}  "
                  f"[{min(values):.0f}-{max(values):.0f}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
