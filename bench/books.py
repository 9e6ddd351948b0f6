"""Book and stream benchmarks (issue 13): not tests, numbers.

    python -m bench.books [--messages 1000000] [--stocks 500] [--repeats 5]

1. book update cost per ITCH message over a replayed generated day (tickwire-feed's market in
   day mode: every message refers to real orders), full per-order book with and without the
   stream, and price levels only: native/tests/book_bench.c, one thread, best of --repeats;
2. publish-to-reader latency on the stream: native/tests/stream_stress.c, the writer pinned to one
   CPU and the readers to another, 1 and 8 readers, p50/p99/p99.9 (ns).
Goals (issue 13): <= 100 ns full book, <= 50 ns levels only; publish p50 <= 100 ns, p99 <= 250 ns
with 8 readers. On a 2-core VM shared with other work the latency figures measure the scheduler
as much as the stream: the JSON says how many CPUs there were and the load.
"""
from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(ROOT, "native", "src")
TESTS = os.path.join(ROOT, "native", "tests")
BOOK_MIX = "A=30,F=6,E=8,C=3,X=6,D=22,U=12,P=3,Q=0.5,H=0.5,S=0.2,R=0.2,I=1,B=0.2"


def build(out_dir: str) -> tuple[str, str]:
    book = os.path.join(out_dir, "book_bench")
    stress = os.path.join(out_dir, "stream_stress")
    flags = ["-O2", "-std=gnu11", "-march=native", "-pthread", f"-I{SRC}"]
    subprocess.run(["gcc", *flags, os.path.join(TESTS, "book_bench.c"),
                    *[os.path.join(SRC, f) for f in ("book.c", "stream.c", "itch.c")], "-o", book],
                   check=True)
    subprocess.run(["gcc", *flags, os.path.join(TESTS, "stream_stress.c"),
                    os.path.join(SRC, "stream.c"), "-o", stress], check=True)
    return book, stress


def write_day(path: str, messages: int, stocks: int, mix: str, seed: int = 1) -> None:
    from tickwire_feed import moldudp64
    from tickwire_feed.market import Mix
    from tickwire_feed.schedule import Schedule, ScheduleConfig
    schedule = Schedule(ScheduleConfig(messages=messages, per_packet=20, mix=Mix.parse(mix),
                                       day=True, stocks=stocks, seed=seed))
    with open(path, "wb") as out:
        for chunk in iter(lambda: schedule.next_chunk(512), []):
            for t in chunk:
                for m in moldudp64.decode_packet(bytes(t.payload)).messages:
                    out.write(struct.pack(">H", len(m)) + m)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.books")
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--stocks", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--stress-ms", type=int, default=1000)
    args = parser.parse_args(argv)
    cpus = sorted(os.sched_getaffinity(0))
    results = {"cpus": len(cpus), "load_before": os.getloadavg()}
    # the stream on tmpfs, as /run is on a node (a disk-backed page cache adds writeback work)
    with tempfile.TemporaryDirectory(dir="/dev/shm" if os.path.isdir("/dev/shm") else None) as tmp:
        book, stress = build(tmp)
        for name, mix in (("book_mix", BOOK_MIX), ("default_mix", "default")):
            day = os.path.join(tmp, f"{name}.day")
            write_day(day, args.messages, args.stocks, mix)
            out = subprocess.run(["taskset", "-c", str(cpus[-1]), book, day, tmp, str(args.repeats)],
                                 capture_output=True, text=True, check=True)
            results[f"book_cost_{name}"] = json.loads(out.stdout)
        writer, reader = str(cpus[0]), str(cpus[-1])
        for readers in (1, 8):
            out = subprocess.run([stress, tmp, str(readers), str(args.stress_ms), str(1 << 20),
                                  "1000", writer, reader], capture_output=True, text=True,
                                 check=True, timeout=300)
            report = json.loads(out.stdout)
            results[f"publish_latency_{readers}_readers"] = {
                **report["latency"], "lapped": sum(r["lapped"] for r in report["readers"]),
                "torn": sum(r["torn"] for r in report["readers"])}
    results["load_after"] = os.getloadavg()
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
