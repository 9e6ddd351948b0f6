"""tickwire-feed on the wire: publish and replay to multicast groups on loopback, received by
sockets joined in the test, compared with the run's summary (its ground truth).

Traffic stays on `lo` (sender bound to 127.0.0.1, receivers joined on lo's index) on groups and
ports derived from the pid. Receivers use large buffers and drain in a thread, so the kernel drops
nothing and "received" equals "sent"; every loop here is bounded in count and time.
"""
import itertools
import json
import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from tickwire_feed import itch, moldudp64
from tickwire_feed.cli import main
from tickwire_feed.clock import ClockError, midnight_realtime_ns
from tickwire_feed.pacing import MAX_LAG_NS, Pacer
from tickwire_feed.publish import PublishConfig, publish
from tickwire_feed.replay import ReplayConfig, replay
from tests.support.netns import VethPair
from tests.support.testdata import CAPTURES_DIR, capture_files

SO_RCVBUFFORCE = 33  # <asm-generic/socket.h>; the socket module does not export it
_ports = itertools.count(20000 + (os.getpid() % 2000) * 10)
GROUP_PREFIX = f"239.77.{(os.getpid() >> 8) & 255}"


def endpoint(line: int) -> tuple[str, int]:
    return f"{GROUP_PREFIX}.{(os.getpid() + line) & 255}", next(_ports)


class LoopbackReceiver:
    """Sockets joined to each line's group on lo, drained by a thread until every line has seen
    an end-of-session packet (or the time bound ends)."""

    def __init__(self, endpoints, stop_after_end_of_session=True, timeout_s=30.0):
        self.packets = [[] for _ in endpoints]   # per line: (payload, realtime ns at receipt)
        self.sockets = []
        lo = socket.if_nametoindex("lo")
        for group, port in endpoints:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 32 << 20)
            except PermissionError:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 << 20)
            sock.bind((group, port))
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                            struct.pack("4s4si", socket.inet_aton(group), bytes(4), lo))
            self.sockets.append(sock)
        self.stop_after_end_of_session = stop_after_end_of_session
        self.deadline = time.monotonic() + timeout_s
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._drain, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        self.thread.join(10)
        for sock in self.sockets:
            sock.close()

    def _drain(self):
        selector = selectors.DefaultSelector()
        for line, sock in enumerate(self.sockets):
            selector.register(sock, selectors.EVENT_READ, line)
        ended = set()
        while time.monotonic() < self.deadline:
            if self.stopping.is_set() and not selector.select(0):
                break
            if self.stop_after_end_of_session and len(ended) == len(self.sockets):
                break
            for key, _ in selector.select(0.1):
                payload = key.fileobj.recv(65536)
                self.packets[key.data].append((payload, time.time_ns()))
                if payload[18:20] == b"\xff\xff":
                    ended.add(key.data)
        selector.close()

    def wait(self, timeout_s=30.0):
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), "receiver did not see end-of-session on every line"

    def wait_for_first_packet(self, timeout_s=10.0):
        deadline = time.monotonic() + timeout_s
        while not any(self.packets) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert any(self.packets), "no packet arrived"


def tally(received: list[list[tuple[bytes, int]]]) -> dict:
    """What a receiver makes of the packets (per line: payload, receive time), from the bytes only."""
    per_line = [set() for _ in received]
    messages: dict[int, bytes] = {}
    data_packets, heartbeats, ends = Counter(), Counter(), Counter()
    copies, announced = 0, 0
    stamps = []
    for line, packets in enumerate(received):
        for payload, received_ns in packets:
            packet = moldudp64.decode_packet(payload)
            if packet.is_heartbeat or packet.is_end_of_session:
                (heartbeats if packet.is_heartbeat else ends)[line] += 1
                announced = max(announced, packet.sequence - 1)
                continue
            data_packets[line] += 1
            copies += packet.count
            for seq, message in enumerate(packet.messages, packet.sequence):
                per_line[line].add(seq)
                messages[seq] = message
                stamps.append((itch.timestamp_of(message), received_ns))
            announced = max(announced, packet.sequence + packet.count - 1)
    delivered = set().union(*per_line)
    valid = {s: m for s, m in messages.items()
             if m[:1] in itch.FORMATS and len(m) == itch.FORMATS[m[:1]].length}
    undelivered = [s for s in range(min(delivered), announced + 1) if s not in delivered]
    gaps = sum(1 for i, s in enumerate(undelivered) if i == 0 or undelivered[i - 1] != s - 1)
    return {
        "messages_sent": len(delivered),
        "messages_by_type": dict(sorted(Counter(chr(m[0]) for m in valid.values()).items())),
        "malformed_sent": len(delivered) - len(valid),
        "packets_sent": {"AB"[i]: data_packets[i] for i in range(len(per_line))},
        "heartbeats": [heartbeats[i] for i in range(len(per_line))],
        "end_of_session": [ends[i] for i in range(len(per_line))],
        "expected_duplicates": copies - len(delivered),
        "expected_gaps": gaps,
        "expected_missing": len(undelivered),
        "last_announced_seq": announced,
        "stamps": stamps,
    }


def assert_received_as_summarised(summary: dict, got: dict):
    lines = len(summary["packets_sent"])
    for key in ("messages_sent", "messages_by_type", "malformed_sent", "packets_sent",
                "expected_duplicates", "expected_gaps", "expected_missing", "last_announced_seq"):
        assert got[key] == summary[key], key
    assert got["heartbeats"] == [summary["heartbeats"]] * lines
    assert got["end_of_session"] == [summary["end_of_session"]] * lines


def test_two_lines_with_every_fault_arrive_exactly_as_summarised():
    lines = [endpoint(0), endpoint(1)]
    config = PublishConfig(lines=lines, source_ip="127.0.0.1", multicast_loop=True,
                           messages=6000, rate=60_000, per_packet=3, loss_a=10, loss_b=10,
                           gap_every=40, gap_size=2, duplicate_every=25, reorder_every=30,
                           malformed_every=150, heartbeat_every_s=0.05, end_session=True,
                           exchange_tz="America/New_York", seed=3)
    with LoopbackReceiver(lines) as receiver:
        summary = publish(config)
        receiver.wait()
    after_ns = time.time_ns()
    got = tally(receiver.packets)
    assert_received_as_summarised(summary, got)
    assert summary["gaps_injected"] > 0 and summary["covered_by_other_line"] > 0
    assert summary["duplicates_sent"] > 0 and summary["reordered"] > 0
    assert summary["malformed_sent"] > 0 and summary["lost_on_all_lines"] > 0
    assert summary["end_of_session"] == 1 and summary["heartbeats"] >= 1

    # ITCH timestamps: exchange-midnight nanoseconds taken between the start of the run and
    # the moment the packet was received.
    midnight = summary["exchange_midnight_realtime_ns"]
    assert midnight == midnight_realtime_ns("America/New_York", summary["started_realtime_ns"])
    for stamp, received_ns in got["stamps"]:
        assert summary["started_realtime_ns"] - midnight <= stamp <= received_ns - midnight
        assert received_ns <= after_ns


@pytest.mark.parametrize("rate, per_packet", [(20_000, 2), (None, 20)])
def test_duration_run_records_only_what_it_sent(rate, per_packet):
    lines = [endpoint(0)]
    config = PublishConfig(lines=lines, source_ip="127.0.0.1", multicast_loop=True,
                           duration_s=0.2, rate=rate, per_packet=per_packet, gap_every=10,
                           loss_a=5, end_session=True)
    with LoopbackReceiver(lines) as receiver:
        summary = publish(config)
        receiver.wait()
    assert summary["messages_scheduled"] > 0
    assert_received_as_summarised(summary, tally(receiver.packets))


def test_cli_publish_writes_the_summary_it_prints(tmp_path):
    group, port = endpoint(0)
    summary_path = tmp_path / "summary.json"
    with LoopbackReceiver([(group, port)]) as receiver:
        result = subprocess.run(
            [sys.executable, "-m", "tickwire_feed", "publish", "--line", f"A={group}:{port}",
             "--source-ip", "127.0.0.1", "--multicast-loop", "--messages", "500",
             "--mix", "A=3,D=1", "--rate", "50000", "--end-session",
             "--summary-json", str(summary_path)],
            capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        receiver.wait()
    summary = json.loads(summary_path.read_text())
    assert json.loads(result.stdout) == summary
    assert set(summary["messages_by_type"]) == {"A", "D"}
    assert_received_as_summarised(summary, tally(receiver.packets))


def test_sigterm_ends_a_long_run_cleanly(tmp_path):
    group, port = endpoint(0)
    summary_path = tmp_path / "summary.json"
    with LoopbackReceiver([(group, port)]) as receiver:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tickwire_feed", "publish", "--line", f"A={group}:{port}",
             "--source-ip", "127.0.0.1", "--multicast-loop", "--duration", "120",
             "--rate", "2000", "--end-session", "--summary-json", str(summary_path)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            receiver.wait_for_first_packet()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0, proc.stderr.read()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        receiver.wait()
    summary = json.loads(summary_path.read_text())
    assert summary["end_of_session"] == 1 and summary["messages_sent"] > 0
    assert_received_as_summarised(summary, tally(receiver.packets))


CAPTURES = capture_files()


@pytest.mark.skipif(not CAPTURES, reason=f"shared test data absent ({CAPTURES_DIR})")
def test_replay_resends_captured_payloads_unchanged():
    from tickwire_feed.pcap import udp_datagrams

    destination = endpoint(0)
    expected = [d.payload for path in CAPTURES for d in udp_datagrams(path)]
    with LoopbackReceiver([destination], stop_after_end_of_session=False, timeout_s=10) as receiver:
        summary = replay(ReplayConfig(to=destination, files=CAPTURES, source_ip="127.0.0.1",
                                      multicast_loop=True, rate=20_000))
        deadline = time.monotonic() + 10
        while len(receiver.packets[0]) < len(expected) and time.monotonic() < deadline:
            time.sleep(0.01)
    assert [payload for payload, _ in receiver.packets[0]] == expected
    assert summary["packets_sent"] == 80 and summary["messages"] == 117
    assert sum(summary["messages_by_type"].values()) == 117


# ---- bad input: exit 2, naming the problem, before anything is sent -------------------------

@pytest.mark.parametrize("args, problem", [
    (["--line", "A=239.1.1.1"], "not GROUP:PORT"),
    (["--line", "A=10.0.0.1:5000"], "not a multicast group"),
    (["--line", "A=239.1.1.1:70000"], "not 1..65535"),
    (["--line", "A=239.1.1.1:5000", "--iface", "nosuchif0"], "unknown interface 'nosuchif0'"),
    (["--line", "A=239.1.1.1:5000", "--mix", "A=1,Z=2"], "unknown ITCH type 'Z'"),
    (["--line", "A=239.1.1.1:5000", "--loss-b", "5"], "needs a line B"),
    (["--line", "B=239.1.1.1:5000"], "--line A=GROUP:PORT is required"),
    (["--line", "C=239.1.1.1:5000"], "not A=GROUP:PORT"),
    (["--line", "A=239.1.1.1:5000", "--exchange-tz", "Mars/Olympus"], "unknown time zone"),
    (["--line", "A=239.1.1.1:5000", "--source-ip", "203.0.113.99"], "not usable on this host"),
    (["--line", "A=239.1.1.1:5000", "--rate", "0"], "--rate must be > 0"),
])
def test_publish_refuses_bad_input_with_exit_2(capsys, args, problem):
    with pytest.raises(SystemExit) as exit_info:
        main(["publish", "--messages", "10", *args])
    assert exit_info.value.code == 2
    assert problem in capsys.readouterr().err


def test_replay_refuses_missing_file_and_bad_group(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["replay", "--to", "239.1.1.1:5000", str(tmp_path / "absent.pcap")])
    assert exit_info.value.code == 2 and "absent.pcap" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["replay", "--to", "192.168.1.1:5000", str(tmp_path / "x.pcap")])
    assert exit_info.value.code == 2 and "not a multicast group" in capsys.readouterr().err


# ---- clocks ---------------------------------------------------------------------------------

def test_exchange_midnight_is_midnight_in_that_zone():
    now_ns = time.time_ns()
    for zone in ("America/New_York", "UTC", "Asia/Tokyo"):
        midnight = midnight_realtime_ns(zone, now_ns)
        wall = datetime.fromtimestamp(midnight / 1e9, ZoneInfo(zone))
        assert (wall.hour, wall.minute, wall.second) == (0, 0, 0)
        assert 0 <= now_ns - midnight < 25 * 3600 * 10**9
    with pytest.raises(ClockError, match="unknown time zone"):
        midnight_realtime_ns("Nowhere/Atlantis")


def test_pacer_spaces_units_and_slides_after_a_stall():
    """A fake clock that advances 1 us per read: the pacer must read it until each deadline."""
    ticks = itertools.count(0, 1_000)
    now = [0]

    def clock():
        now[0] = next(ticks)
        return now[0]

    pacer = Pacer(1_000, clock=clock)         # 1 ms per unit
    for sent in range(5):
        pacer.pace(1)
        assert now[0] >= pacer.base_ns + sent * 1_000_000
    stall_ns = 100_000_000
    ticks = itertools.count(now[0] + stall_ns, 1_000)
    pacer.pace(1)
    # The backlog beyond MAX_LAG_NS is forgiven (the schedule slides), not burst out.
    assert stall_ns - MAX_LAG_NS - 2_000_000 < pacer.slid_ns < stall_ns - MAX_LAG_NS


# ---- between network namespaces: --iface, `ip netns exec`, a kernel receiver on the far side --

NETNS_RECEIVER = r"""
import json, selectors, socket, struct, sys, time
ifname, out_path, endpoints = sys.argv[1], sys.argv[2], sys.argv[3:]
index = socket.if_nametoindex(ifname)
selector, ended = selectors.DefaultSelector(), set()
for line, text in enumerate(endpoints):
    group, port = text.rsplit(":", 1)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, 33, 32 << 20)  # SO_RCVBUFFORCE
    sock.bind((group, int(port)))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                    struct.pack("4s4si", socket.inet_aton(group), bytes(4), index))
    selector.register(sock, selectors.EVENT_READ, line)
print("ready", flush=True)
deadline = time.monotonic() + 60
with open(out_path, "w") as out:
    while len(ended) < len(endpoints) and time.monotonic() < deadline:
        for key, _ in selector.select(0.2):
            payload = key.fileobj.recv(65536)
            out.write(json.dumps([key.data, payload.hex(), time.time_ns()]) + "\n")
            if payload[18:20] == b"\xff\xff":
                ended.add(key.data)
"""


@pytest.mark.netns
def test_publish_through_iface_between_namespaces(tmp_path):
    lines = ["239.78.1.1:26400", "239.78.1.2:26401"]
    received_path = tmp_path / "received.jsonl"
    summary_path = tmp_path / "summary.json"
    with VethPair() as pair:
        receiver = pair.popen(pair.node_ns, [sys.executable, "-c", NETNS_RECEIVER, pair.node_if,
                                             str(received_path), *lines],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert receiver.stdout.readline().strip() == "ready", receiver.stderr.read()
            pair.run(pair.exchange_ns, sys.executable, "-m", "tickwire_feed", "publish",
                     "--iface", pair.exchange_if, "--line", f"A={lines[0]}", "--line", f"B={lines[1]}",
                     "--messages", "3000", "--per-packet", "2", "--rate", "30000", "--loss-a", "8",
                     "--loss-b", "8", "--gap-every", "50", "--end-session",
                     "--summary-json", str(summary_path))
            assert receiver.wait(timeout=30) == 0, receiver.stderr.read()
        finally:
            if receiver.poll() is None:
                receiver.kill()
                receiver.wait(10)
    received = [[], []]
    for row in received_path.read_text().splitlines():
        line, payload, received_ns = json.loads(row)
        received[line].append((bytes.fromhex(payload), received_ns))
    summary = json.loads(summary_path.read_text())
    assert summary["gaps_injected"] > 0 and summary["covered_by_other_line"] > 0
    assert_received_as_summarised(summary, tally(received))


def test_in_process_cli_leaves_signal_handlers_as_it_found_them(capsys):
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    group, port = endpoint(0)
    assert main(["publish", "--line", f"A={group}:{port}", "--source-ip", "127.0.0.1",
                 "--messages", "5"]) == 0
    assert json.loads(capsys.readouterr().out)["messages_sent"] == 5
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
