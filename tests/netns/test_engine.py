"""The engine on a real veth pair between two namespaces, generic XDP, real AF_XDP socket.

The exchange side runs `tickwire-feed`; its summary is the ground truth every count is compared
with, exactly. Needs root: fails instead of skipping when TICKWIRE_REQUIRE_NETNS=1 (CI).
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import struct
import subprocess
import textwrap
import time

import pytest

from tests.support.agent_run import only_capabilities
from tests.support.engine_run import (ENGINE, ENGINE_UNCHECKED, FEED, EngineProcess, engine_running, publish,
                                      xdp_attached)
from tests.support.netns import VethPair
from tests.support.testdata import capture_files
from tickwire_engine import capabilities

pytestmark = pytest.mark.netns

GROUP_A, GROUP_B, PORT = "239.77.1.1", "239.77.1.2", 26477
LINE_A, LINE_B = f"A={GROUP_A}:{PORT}", f"B={GROUP_B}:{PORT}"


@pytest.fixture
def pair():
    with VethPair() as p:
        yield p


def test_every_published_message_is_counted_once(pair, tmp_path):
    with engine_running(pair, [LINE_A], tmp_path) as engine:
        sent = publish(pair, tmp_path, ["--line", LINE_A, "--messages", "20000",
                                        "--per-packet", "5", "--rate", "50000", "--seed", "1"])
        stats = engine.settle(messages=sent["messages_sent"])
        final = engine.stop()
    assert sent["messages_sent"] == 20000
    assert final["messages"] == 20000
    assert final["messages_by_type"] == sent["messages_by_type"]
    assert final["packets"] == sent["packets_sent"]["A"]
    assert (final["gaps"], final["missing"], final["duplicates"], final["malformed"]) == (0, 0, 0, 0)
    assert final["xdp_mode"] == "generic" and final["zero_copy"] is False
    # Both latency stages were measured for every message / packet.
    assert final["latency"]["exchange_to_engine"]["count"] == 20000
    assert final["latency"]["kernel_to_engine"]["count"] == final["packets"]
    assert 0 < final["latency"]["kernel_to_engine"]["p50"] <= final["latency"]["kernel_to_engine"]["max"]
    assert stats["messages"] == final["messages"]


def test_injected_gaps_are_counted_exactly(pair, tmp_path):
    with engine_running(pair, [LINE_A], tmp_path) as engine:
        sent = publish(pair, tmp_path, ["--line", LINE_A, "--messages", "10000", "--per-packet", "4",
                                        "--gap-every", "200", "--gap-size", "3", "--seed", "2"])
        engine.settle()
        final = engine.stop()
    assert sent["expected_gaps"] > 0
    assert final["gaps"] == sent["expected_gaps"]
    assert final["missing"] == sent["expected_missing"]
    assert final["messages"] == sent["messages_sent"]
    assert final["recovered"] == 0


def test_a_and_b_lines_cover_each_others_loss(pair, tmp_path):
    with engine_running(pair, [LINE_A, LINE_B], tmp_path) as engine:
        sent = publish(pair, tmp_path, ["--line", LINE_A, "--line", LINE_B, "--messages", "20000",
                                        "--per-packet", "4", "--loss-a", "5", "--loss-b", "5",
                                        "--rate", "50000", "--seed", "3"])
        engine.settle()
        final = engine.stop()
    assert sent["lost_on_a"] > 0 and sent["lost_on_b"] > 0 and sent["covered_by_other_line"] > 0
    # Only sequence numbers lost on both lines are gaps; everything else the other line filled.
    assert final["gaps"] == sent["expected_gaps"]
    assert final["missing"] == sent["expected_missing"]
    assert final["messages"] == sent["messages_sent"]
    # Every message that arrived on both lines is one first copy and one duplicate.
    both = final["lines"]["A"]["packets"] + final["lines"]["B"]["packets"]
    assert both == sent["packets_sent"]["A"] + sent["packets_sent"]["B"]
    assert final["lines"]["A"]["first_messages"] + final["lines"]["B"]["first_messages"] == final["messages"]
    assert final["duplicates"] == sent["expected_duplicates"]


def test_duplicates_and_reordering(pair, tmp_path):
    with engine_running(pair, [LINE_A], tmp_path) as engine:
        sent = publish(pair, tmp_path, ["--line", LINE_A, "--messages", "8000", "--per-packet", "4",
                                        "--duplicate-every", "50", "--reorder-every", "97",
                                        "--seed", "4"])
        engine.settle()
        final = engine.stop()
    assert sent["duplicates_sent"] > 0 and sent["reordered"] > 0
    assert final["messages"] == sent["messages_sent"]
    assert final["duplicates"] == sent["duplicates_sent"]
    # One line: a packet overtaken by its successor leaves a hole that counts as a gap at once
    # and is then filled late, so it shows as missing and recovered in equal measure.
    assert final["gaps"] == sent["reordered"]
    assert final["missing"] == final["recovered"] > 0


def _raw_sender(pair: VethPair, frames_hex: list[str]) -> None:
    """Send hand-made Ethernet frames from the exchange side (AF_PACKET)."""
    script = textwrap.dedent(f"""
        import socket
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        s.bind(({pair.exchange_if!r}, 0))
        for h in {frames_hex!r}:
            s.send(bytes.fromhex(h))
    """)
    pair.run(pair.exchange_ns, "python3", "-c", script)


def _frame(payload: bytes, group: str = GROUP_A, port: int = PORT, vlan: int | None = None,
           udp_len_delta: int = 0, ip_len_delta: int = 0) -> bytes:
    """Ethernet[/802.1Q]/IPv4/UDP around a payload, checksums zero (the engine ignores them)."""
    mac = bytes.fromhex("01005e") + socket.inet_aton(group)[1:]
    mac = bytes([mac[0], mac[1], mac[2], mac[3] & 0x7F, mac[4], mac[5]])
    eth = mac + bytes.fromhex("020000000001")
    if vlan is not None:
        eth += struct.pack("!HH", 0x8100, vlan)
    eth += struct.pack("!H", 0x0800)
    udp = struct.pack("!HHHH", 40000, port, 8 + len(payload) + udp_len_delta, 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp) + ip_len_delta, 0, 0x4000, 1, 17, 0,
                     socket.inet_aton("198.18.0.9"), socket.inet_aton(group))
    return eth + ip + udp


def _mold(seq: int, messages: list[bytes], session: bytes = b"TWTEST0001", count: int | None = None) -> bytes:
    head = session + struct.pack("!QH", seq, len(messages) if count is None else count)
    return head + b"".join(struct.pack("!H", len(m)) + m for m in messages)


def _itch_delete(ref: int) -> bytes:
    """Order Delete ('D', 19 bytes): type, locate, tracking, 6-byte timestamp, reference."""
    return b"D" + struct.pack("!HH", 1, 0) + (0).to_bytes(6, "big") + struct.pack("!Q", ref)


def test_malformed_packets_are_counted_and_the_engine_keeps_going(pair, tmp_path):
    bad = [
        _frame(b"short"),                                                  # MoldUDP64 header cut
        _frame(_mold(1, [_itch_delete(1)] * 3, count=5)),                  # blocks run past the end
        _frame(_mold(1, [b"D" + b"\0" * 5]), udp_len_delta=200),           # UDP length lies
        _frame(_mold(1, [b"?" + b"\0" * 18])),                             # unknown ITCH type
        _frame(_mold(2, [b"D" + b"\0" * 30])),                             # wrong length for 'D'
        _frame(_mold(3, [_itch_delete(3)]), ip_len_delta=64),             # IPv4 length lies
    ]
    with engine_running(pair, [LINE_A], tmp_path) as engine:
        _raw_sender(pair, [f.hex() for f in bad])
        engine.settle()
        sent = publish(pair, tmp_path, ["--line", LINE_A, "--messages", "3000", "--per-packet", "3",
                                        "--malformed-every", "100", "--session", "TWFEED0001",
                                        "--seed", "5"])
        engine.settle()
        final = engine.stop()
        assert engine.proc.returncode == 0
    reasons = final["malformed_by_reason"]
    assert reasons["mold_header"] == 1
    assert reasons["mold_truncated"] == 1
    assert reasons["udp_header"] == 1
    assert reasons["ip_header"] == 1
    assert reasons["itch_unknown_type"] + reasons["itch_bad_length"] == 2 + sent["malformed_sent"]
    assert final["malformed"] == 6 + sent["malformed_sent"]
    # The feed after the garbage is counted exactly: malformed messages hold their sequence
    # number, so they cause no gap; they are just not counted as messages.
    assert final["messages"] == sent["messages_sent"] - sent["malformed_sent"]
    assert final["gaps"] == 0


def test_vlan_tagged_frames_are_decoded(pair, tmp_path):
    frames = [_frame(_mold(seq, [_itch_delete(seq)]), vlan=100 + seq % 2) for seq in range(1, 51)]
    with engine_running(pair, [LINE_A], tmp_path) as engine:
        _raw_sender(pair, [f.hex() for f in frames])
        engine.settle(messages=50)
        final = engine.stop()
    assert final["messages"] == 50
    assert final["messages_by_type"] == {"D": 50}
    assert final["gaps"] == 0 and final["malformed"] == 0


def test_ping_and_tcp_still_work_while_the_engine_runs(pair, tmp_path):
    server = pair.popen(pair.node_ns, ["python3", "-c", textwrap.dedent(f"""
        import socket
        s = socket.create_server(({pair.node_ip!r}, 7070))
        s.settimeout(20)
        c, _ = s.accept()
        c.sendall(c.recv(100).upper())
    """)])
    try:
        with engine_running(pair, [LINE_A], tmp_path) as engine:
            ping = pair.run(pair.exchange_ns, "ping", "-c", "3", "-i", "0.2", "-W", "2", pair.node_ip,
                            check=False)
            reply = pair.run(pair.exchange_ns, "python3", "-c", textwrap.dedent(f"""
                import socket, time
                for attempt in range(50):
                    try:
                        c = socket.create_connection(({pair.node_ip!r}, 7070), timeout=2)
                        break
                    except OSError:
                        time.sleep(0.1)
                c.sendall(b"tickwire")
                print(c.recv(100).decode())
            """)).stdout.strip()
            sent = publish(pair, tmp_path, ["--line", LINE_A, "--messages", "1000", "--seed", "6"])
            final = engine.settle(messages=sent["messages_sent"])
            assert xdp_attached(pair)
    finally:
        server.kill()
        server.wait(timeout=5)
    assert ping.returncode == 0, ping.stdout
    assert reply == "TICKWIRE"
    assert final["messages"] == 1000
    assert final["unmatched"] == 0  # the kernel's traffic never reached the socket


def test_no_program_is_left_after_stop_or_sigkill(pair, tmp_path):
    engine = EngineProcess(pair, [LINE_A], tmp_path).start()
    assert "tw_steer" in xdp_attached(pair)
    engine.stop()
    assert engine.proc.returncode == 0
    assert xdp_attached(pair) == ""

    engine = EngineProcess(pair, [LINE_A], tmp_path).start()
    assert "tw_steer" in xdp_attached(pair)
    engine.stop(signal.SIGKILL)
    # The program hangs on a BPF link owned by the process: the kernel drops it with the process.
    assert xdp_attached(pair) == ""


def _compile_foreign_program(tmp_path) -> str:
    source = tmp_path / "other.bpf.c"
    source.write_text('#include <linux/bpf.h>\n#include <bpf/bpf_helpers.h>\n'
                      'SEC("xdp") int someone_else(struct xdp_md *ctx) { return XDP_PASS; }\n'
                      'char _license[] SEC("license") = "GPL";\n')
    obj = tmp_path / "other.bpf.o"
    arch = f"/usr/include/{os.uname().machine}-linux-gnu"
    subprocess.run(["clang", "-O2", "-target", "bpf", f"-I{arch}", "-c", str(source), "-o", str(obj)],
                   check=True)
    return str(obj)


def test_a_stale_program_of_ours_is_replaced_but_never_someone_elses(pair, tmp_path):
    import tickwire_engine.config as config

    ours = os.path.join(os.path.dirname(config.__file__), "steer.bpf.o")
    # A stale tickwire program attached the old way (netlink, no link), as a crashed older
    # engine would leave it.
    pair.run(pair.node_ns, "ip", "link", "set", "dev", pair.node_if, "xdpgeneric", "obj", ours,
             "sec", "xdp")
    assert "tw_steer" in xdp_attached(pair)
    with engine_running(pair, [LINE_A], tmp_path) as engine:
        sent = publish(pair, tmp_path, ["--line", LINE_A, "--messages", "500", "--seed", "7"])
        stats = engine.settle(messages=sent["messages_sent"])
        assert "replaced a stale tickwire XDP program" in stats["fallback"]
        assert stats["messages"] == 500
    assert xdp_attached(pair) == ""

    foreign = _compile_foreign_program(tmp_path)
    pair.run(pair.node_ns, "ip", "link", "set", "dev", pair.node_if, "xdpgeneric", "obj", foreign,
             "sec", "xdp")
    result = pair.run(pair.node_ns, ENGINE, "run", "--iface", pair.node_if, "--mode", "generic",
                      "--line", LINE_A, "--duration", "1", check=False)
    assert result.returncode == 5  # "in use", permanent: a supervisor must not retry it
    assert "someone_else" in result.stderr and "detach it first" in result.stderr
    assert "someone_else" in xdp_attached(pair)


def test_the_poll_thread_can_own_its_core_with_sched_fifo(pair, tmp_path):
    core = max(os.sched_getaffinity(0))
    with engine_running(pair, [LINE_A], tmp_path,
                        ["--core", str(core), "--busy-poll", "on", "--rt-priority", "10"]) as engine:
        sent = publish(pair, tmp_path, ["--line", LINE_A, "--messages", "2000", "--seed", "8"])
        stats = engine.settle(messages=sent["messages_sent"])
        threads = subprocess.run(["ps", "-L", "-o", "comm=,rtprio=,psr=", "-p", str(engine.proc.pid)],
                                 capture_output=True, text=True, check=True).stdout.split("\n")
    poll = [t.split() for t in threads if t.startswith("tw-poll")]
    assert poll == [["tw-poll", "10", str(core)]]
    assert stats["rt_priority"] == 10 and stats["core"] == core
    assert stats["messages"] == 2000


def test_sigusr1_writes_a_snapshot_on_demand(pair, tmp_path):
    stats_path = tmp_path / "on-demand.json"
    proc = pair.popen(pair.node_ns, [ENGINE, "run", "--iface", pair.node_if, "--mode", "generic",
                                     "--line", LINE_A, "--stats-json", str(stats_path), "--quiet"],
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(200):                   # bounded: the first write says the engine is up
            if stats_path.exists():
                break
            time.sleep(0.05)
        assert json.loads(stats_path.read_text())["messages"] == 0
        sent = publish(pair, tmp_path, ["--line", LINE_A, "--messages", "300", "--seed", "9"])
        time.sleep(0.3)
        assert json.loads(stats_path.read_text())["messages"] == 0   # no interval: not rewritten
        stats = {}
        for _ in range(100):
            proc.send_signal(signal.SIGUSR1)
            time.sleep(0.05)
            if stats_path.exists():
                stats = json.loads(stats_path.read_text())
                if stats["messages"] == sent["messages_sent"]:
                    break
        assert stats["messages"] == 300 and stats["running"] is True
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert proc.returncode == 0


# The engine's UMEM by default (8192 frames of 2 KiB) against a memlock limit that cannot hold it:
# without CAP_IPC_LOCK the kernel charges the UMEM to RLIMIT_MEMLOCK and refuses (ENOBUFS).
UMEM_MIB = 16
MEMLOCK_BELOW_UMEM = ["prlimit", f"--memlock={4 << 20}"]
NEEDED = sorted(name.removeprefix("CAP_") for name in capabilities.NEEDED)
# What the kernel refuses without each capability, and the explanation the engine adds to it.
KERNEL_REFUSAL = {
    "NET_ADMIN": "cannot load XDP program: Operation not permitted (this process lacks CAP_NET_ADMIN, "
                 "needed to load the XDP steering program and create its maps)",   # the XSKMAP
    "NET_RAW": "UMEM: registration failed: Operation not permitted (this process lacks CAP_NET_RAW, "
               "needed to open an AF_XDP socket)",
    "BPF": "cannot load XDP program: Operation not permitted (this process lacks CAP_BPF, "
           "needed to load the XDP steering program and create its maps)",
    "PERFMON": "cannot load XDP program: Permission denied (this process lacks CAP_PERFMON, needed to "
               "let the verifier accept the steering program's packet-pointer arithmetic)",
    "IPC_LOCK": f"UMEM: registration failed: No buffer space available (this process lacks CAP_IPC_LOCK, "
                f"so the UMEM's {UMEM_MIB} MiB are charged to RLIMIT_MEMLOCK, 4 MiB, shared by every "
                f"process of this user: grant CAP_IPC_LOCK, or raise the memlock limit",
}


def run_with_only(pair, caps, bpffs_root, engine=(ENGINE,)):
    """The engine as root with exactly `caps` (setpriv cuts the bounding set, so root gets nothing
    else) and a memlock limit below its UMEM. The pin root is mounted for it: mounting one would
    take CAP_SYS_ADMIN, which an engine is never given (the agent Pod mounts the host's bpffs)."""
    return pair.run(pair.node_ns, *only_capabilities(caps), *MEMLOCK_BELOW_UMEM, *engine, "run",
                    "--iface", pair.node_if, "--mode", "generic", "--line", LINE_A, "--duration", "1",
                    "--bpffs-root", bpffs_root, "--quiet", check=False)


def named_capabilities(text: str) -> set[str]:
    return set(re.findall(r"CAP_[A-Z_]+", text))


def test_with_every_capability_it_checks_for_the_engine_runs(pair, bpffs_root):
    result = run_with_only(pair, NEEDED, bpffs_root)
    assert result.returncode == 0, result.stderr     # so each refusal below is its one missing capability


@pytest.mark.parametrize("missing", NEEDED)
def test_a_missing_capability_is_named_before_anything_is_touched(pair, missing, bpffs_root):
    result = run_with_only(pair, set(NEEDED) - {missing}, bpffs_root)
    assert result.returncode == 2, result.stderr     # permanent: a supervisor must not retry it
    name = f"CAP_{missing}"
    assert f"tickwire-engine: the engine lacks {name} (to {capabilities.NEEDED[name][1]}" in result.stderr
    assert named_capabilities(result.stderr) == {name}, result.stderr
    if missing == "IPC_LOCK":
        assert f"RLIMIT_MEMLOCK is 4 MiB, below the UMEM's {UMEM_MIB} MiB: grant CAP_IPC_LOCK, or raise " \
               "the memlock limit (prlimit --memlock" in result.stderr
    assert xdp_attached(pair) == ""


@pytest.mark.parametrize("missing", NEEDED)
def test_a_kernel_refusal_names_the_capability_it_lacks(pair, missing, bpffs_root):
    """Past the pre-check (taken out here: a kernel or a security module may still say no), the
    engine's message names the capability the kernel wanted, and only that one."""
    result = run_with_only(pair, set(NEEDED) - {missing}, bpffs_root, engine=ENGINE_UNCHECKED)
    assert result.returncode == 3, result.stderr
    assert KERNEL_REFUSAL[missing] in result.stderr
    assert named_capabilities(result.stderr) == {f"CAP_{missing}"}, result.stderr
    assert xdp_attached(pair) == ""


@pytest.mark.parametrize("args, message", [
    (["--iface", "nosuchif0", "--line", LINE_A], "unknown interface 'nosuchif0'"),
    (["--iface", "{node}", "--queue", "7", "--line", LINE_A], "queue 7 is out of range"),
    (["--iface", "{node}", "--line", "A=10.1.2.3:5000"], "not a multicast address"),
    (["--iface", "{node}", "--line", "A=239.1.1.1:70000"], "port 70000 is out of range"),
    (["--iface", "{node}", "--line", "A=239.1.1.1:5000", "--line", "A=239.1.1.2:5000"],
     "line names repeat"),
    (["--iface", "{node}", "--mode", "native", "--zero-copy", "required", "--line", LINE_A],
     "zero-copy required"),
])
def test_bad_configurations_are_refused_with_a_clear_message(pair, args, message):
    args = [a.replace("{node}", pair.node_if) for a in args]
    result = pair.run(pair.node_ns, ENGINE, "run", *args, "--duration", "1", check=False)
    assert result.returncode in (2, 3), result.stdout
    assert message in result.stderr
    assert xdp_attached(pair) == ""


def test_real_captures_decode_with_zero_malformed(pair, tmp_path):
    captures = capture_files()
    if not captures:
        pytest.skip("../shared/testdata/itch50 is absent (real captures are never committed)")
    with engine_running(pair, [LINE_A], tmp_path) as engine:
        summary = tmp_path / "replay.json"
        # --renumber: the sanitized captures have zeroed sessions and sequence numbers, which
        # a MoldUDP64 receiver rightly takes for resends; renumbered, they form one clean session.
        pair.run(pair.exchange_ns, FEED, "replay", "--renumber", "--to", f"{GROUP_A}:{PORT}",
                 "--iface", pair.exchange_if, "--summary-json", str(summary), *captures)
        sent = json.loads(summary.read_text())
        final = engine.settle()
        engine.stop()
    assert final["malformed"] == 0
    assert final["packets"] == sent["packets_sent"]
    assert final["messages_by_type"] == sent["messages_by_type"]
    assert final["gaps"] == 0 and final["duplicates"] == 0
    assert sum(sent["messages_by_type"].values()) == 117
