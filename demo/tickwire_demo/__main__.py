"""`python -m tickwire_demo` (what `make demo` runs): the whole system on one machine.

An "exchange" namespace publishes a trading day of ITCH 5.0 over MoldUDP64 on lines A and B, each
losing some packets (and now and then a burst lost on both, which its re-request server gives
back); a "node" namespace runs the agent from a plan, which tunes the host and runs the engine in
generic XDP mode with order books on. The terminal shows what the engine sees while it runs, and
the live top of book of the busiest instruments as a consumer reads it from the engine's
shared-memory stream; at the end come a summary (what was sent against what was counted, what
was recovered by request, and the books) and a latency plot. Everything is torn down on the way
out, Ctrl-C included.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

from .localnet import VethPair, netns_available
from .plot import plot_percentiles
from .processes import stop
from .view import CLEAR, final_summary, render, render_books

BIN = os.path.dirname(sys.executable)
FEED_NAME = "nasdaq-demo"
GROUP_A, GROUP_B, PORT = "239.192.77.1", "239.192.77.2", 26477
STOCKS = 16          # instruments the exchange names in its stock directory
REREQUEST_PORT = 26400


def build_plan(pair: VethPair, args: argparse.Namespace, stream_root: str) -> dict:
    cpus = sorted(os.sched_getaffinity(0))
    return {
        "apiVersion": "tickwire.dev/plan-v1",
        "feedHandler": None,
        "feed": {"name": FEED_NAME, "protocol": "moldudp64-itch50"},
        "interface": pair.node_if,
        "queue": 0,
        "lines": [{"name": "A", "group": GROUP_A, "port": PORT, "source": None},
                  {"name": "B", "group": GROUP_B, "port": PORT, "source": None}],
        "cores": [cpus[-1]],
        "hugepages": {"count": args.hugepages, "numaNode": None},
        "xdpMode": "generic",
        "zeroCopy": "auto",
        "busyPoll": {"enabled": args.busy_poll, "usec": 50, "budget": 64},
        "latencySLO": {"p99Micros": 200},
        "staleAfterSeconds": 5,
        "exchangeTimezone": None,
        "metrics": {"address": "0.0.0.0", "port": 9470},
        "restoreDrift": True,
        "statusIntervalSeconds": 5,
        "books": {"enabled": True, "depth": 5, "symbols": [], "maxOrders": 1 << 20, "maxInstruments": 1024},
        "streamRoot": stream_root,
        # what both lines lose is asked for again from the exchange's re-request server
        "rerequest": {"server": f"{pair.exchange_ip}:{REREQUEST_PORT}", "timeoutMillis": 50,
                      "attempts": 5},
    }


class BookWatcher:
    """A consumer of the engine's stream, as a strategy on the node would be one: the top of book
    from the snapshot area (never the ring, so it cannot be lapped), reopened when a new engine
    replaces the stream."""

    def __init__(self, stream_root: str):
        self.stream_root = stream_root
        self.reader = None

    def snapshots(self) -> dict | None:
        from tickwire_engine import consumer   # the native reader loads only when books are shown
        if self.reader is not None and (self.reader.ended or self.reader.replaced()):
            self.close()
        if self.reader is None:
            try:
                self.reader = consumer.open(FEED_NAME, self.stream_root, measure_latency=False)
            except consumer.StreamError:
                return None        # the engine has not created it yet
        return self.reader.snapshots()

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
            self.reader = None


def read_json(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def wait_for(path: str, proc: subprocess.Popen, log: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        doc = read_json(path)
        if doc is not None:
            return doc
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    with open(log, encoding="utf-8", errors="replace") as f:
        tail = "".join(f.readlines()[-20:])
    raise RuntimeError(f"the agent did not start the engine (see {log}):\n{tail}")


def run_demo(args: argparse.Namespace) -> int:
    out_dir = os.path.abspath(args.out)
    os.makedirs(out_dir, exist_ok=True)
    state_dir = os.path.join(out_dir, "state")
    agent_log_path = os.path.join(out_dir, "agent.log")
    feed_summary = os.path.join(out_dir, "feed-summary.json")
    stream_root = os.path.join(out_dir, "streams")
    for stale in (feed_summary, os.path.join(state_dir, "stats.json")):
        if os.path.exists(stale):
            os.unlink(stale)
    tty = sys.stdout.isatty()
    agent = feed = None
    books = BookWatcher(stream_root)
    with VethPair() as pair, open(agent_log_path, "w") as agent_log:
        try:
            plan_path = os.path.join(out_dir, "plan.json")
            with open(plan_path, "w", encoding="utf-8") as f:
                json.dump(build_plan(pair, args, stream_root), f, indent=2)
            print(f"exchange {pair.exchange_ns} ({pair.exchange_if}) --veth--> node {pair.node_ns} "
                  f"({pair.node_if}); plan {plan_path}", flush=True)
            agent = pair.popen(pair.node_ns, [os.path.join(BIN, "tickwire-agent"), "run", "--plan",
                                              plan_path, "--state-dir", state_dir],
                               stdout=agent_log, stderr=subprocess.STDOUT)
            wait_for(os.path.join(state_dir, "stats.json"), agent, agent_log_path, timeout=30)
            feed = pair.popen(pair.exchange_ns, [
                os.path.join(BIN, "tickwire-feed"), "publish", "--iface", pair.exchange_if,
                "--line", f"A={GROUP_A}:{PORT}", "--line", f"B={GROUP_B}:{PORT}",
                "--duration", str(args.duration), "--rate", str(args.rate), "--per-packet", "4",
                "--loss-a", str(args.loss), "--loss-b", str(args.loss), "--seed", "2026",
                "--day", "--stocks", str(STOCKS),
                # bursts lost on both lines, which only a re-request brings back; heartbeats show
                # what is lost at the tail; the server keeps answering 2 s after the last packet
                "--loss-burst-every", "5000", "--loss-burst-size", "2", "--heartbeat-every-s", "0.5",
                "--rerequest-listen", f"{pair.exchange_ip}:{REREQUEST_PORT}",
                "--rerequest-linger-s", "2",
                "--summary-json", feed_summary], stdout=subprocess.DEVNULL)
            started = time.monotonic()
            last_print = 0.0
            while feed.poll() is None and time.monotonic() - started < args.duration + 30:
                time.sleep(0.25)
                stats = read_json(os.path.join(state_dir, "stats.json"))
                if agent.poll() is not None:
                    raise RuntimeError(f"the agent exited ({agent.returncode}); see {agent_log_path}")
                if stats is None:
                    continue
                elapsed = time.monotonic() - started
                snapshots = books.snapshots() or {}
                if tty:
                    print(CLEAR + render(stats, elapsed, FEED_NAME) + "\n\n" + render_books(snapshots),
                          flush=True)
                elif elapsed - last_print >= 2.0:
                    last_print = elapsed
                    busiest = render_books(snapshots, limit=1).splitlines()[2]
                    print(render(stats, elapsed, FEED_NAME).splitlines()[2] + " |" + busiest, flush=True)
            time.sleep(1.0)  # the last packets, and the arbitration window, settle
            final_books = books.snapshots() or {}   # before the engine stops (the stream ends then)
            stop(agent)
            final = read_json(os.path.join(state_dir, "stats.json"))
            sent = read_json(feed_summary) or {}
            if final is None:
                raise RuntimeError(f"no final stats from the engine; see {agent_log_path}")
            print(render(final, time.monotonic() - started, FEED_NAME))
            print("\n" + render_books(final_books))
            books.close()
            print(final_summary(final, sent, {"stocks": STOCKS, "reader_instruments": len(final_books)}))
            series = {label: final["latency"][stage]["lines"][line]["buckets"]
                      for stage, label_prefix in (("exchange_to_engine", "exchange->engine"),
                                                  ("kernel_to_engine", "kernel->engine"))
                      for line in final["latency"][stage]["lines"]
                      for label in [f"{label_prefix}, line {line}"]}
            plot = plot_percentiles(series, os.path.join(out_dir, "latency.png"),
                                    f"tickwire engine latency, generic XDP on veth "
                                    f"({final['messages']:,} messages)")
            print(f"\n  latency plot: {plot}\n  agent log:    {agent_log_path}")
            return 0
        finally:
            books.close()
            stop(feed)
            stop(agent)
            remove_state(state_dir, agent)
            remove_streams(stream_root)


def remove_state(state_dir: str, agent: subprocess.Popen | None) -> None:
    """The agent's state directory goes once the agent has put the host back (exit 0, no journal);
    otherwise it stays, and we say how to finish the job."""
    if not os.path.isdir(state_dir):
        return
    if agent is not None and agent.returncode == 0 and not os.path.exists(os.path.join(state_dir, "journal.jsonl")):
        shutil.rmtree(state_dir)
    else:
        print(f"  host settings may be left changed: tickwire-agent restore --state-dir {state_dir}",
              file=sys.stderr)


def remove_streams(stream_root: str) -> None:
    """The stream's directories: the agent ended the stream and removed its files when it stopped;
    what it left (an agent that could not) stays, and we say where."""
    for directory in (os.path.join(stream_root, FEED_NAME), stream_root):
        try:
            os.rmdir(directory)
        except FileNotFoundError:
            pass
        except OSError:
            print(f"  the book stream is left in {directory}", file=sys.stderr)
            return


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tickwire_demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=20, help="seconds of feed (default 20)")
    parser.add_argument("--rate", type=int, default=100_000, help="messages per second")
    parser.add_argument("--loss", type=float, default=1.0, help="percent of packets each line loses")
    parser.add_argument("--hugepages", type=int, default=8,
                        help="2 MiB pages for the UMEM (8192 frames of 2 KiB need 8)")
    parser.add_argument("--busy-poll", action=argparse.BooleanOptionalAction, default=True,
                        help="spin on the RX ring on the engine's core (measured here: exchange->"
                             "engine p99 19 us spinning against 3.8 ms sleeping in poll())")
    parser.add_argument("--out", default="demo-output", help="where the plan, logs and plot go")
    args = parser.parse_args(argv)
    ok, why = netns_available()
    if not ok:
        print(f"tickwire demo: {why}; run it as root (make demo)", file=sys.stderr)
        return 2
    try:
        return run_demo(args)
    except KeyboardInterrupt:
        print("\ninterrupted: everything has been torn down", file=sys.stderr)
        return 130
    except RuntimeError as exc:
        print(f"tickwire demo: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
