"""Many engines on one interface: one shared XDP program, each engine on its own RX queue.

Real AF_XDP on a multi-queue veth (generic mode). The exchange side puts each feed's flows on a
chosen queue with a tc egress program (tests/support/tx_queues.py), as a NIC's ntuple rule would;
an AF_XDP socket only receives frames of its own queue, so exact counts per engine prove the
frames were spread over the queues and each engine saw only its own.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from tests.support.engine_run import ENGINE, FEED, EngineProcess, publish, xdp_attached
from tests.support.netns import VethPair
from tests.support.tx_queues import TxQueueSteering, steer_feeds

FEEDS = 4
QUEUES = FEEDS + 1   # generic XDP on veth: the exchange side needs one transmit queue more


def lines_of(feed: int) -> list[str]:
    return [f"A=239.10.{feed}.1:{5100 + feed}", f"B=239.20.{feed}.1:{5200 + feed}"]


def flows_of(feed: int) -> list[tuple[str, int]]:
    return [(f"239.10.{feed}.1", 5100 + feed), (f"239.20.{feed}.1", 5200 + feed)]


@pytest.fixture
def pair():
    with VethPair(queues=QUEUES) as p:
        yield p


@pytest.fixture
def steering(pair, bpffs_root, tmp_path):
    tx = steer_feeds(pair, bpffs_root, tmp_path, [flows_of(feed) for feed in range(FEEDS)])
    yield tx
    tx.close()


def start_engine(pair, tmp_path, bpffs_root, queue: int, lines: list[str]) -> EngineProcess:
    return EngineProcess(pair, lines, tmp_path,
                         ["--queue", str(queue), "--bpffs-root", bpffs_root]).start()


def run_engine(pair, bpffs_root, queue: int, lines: list[str], *extra: str):
    """An engine run to completion (it is expected to refuse): the CompletedProcess."""
    return pair.run(pair.node_ns, ENGINE, "run", "--iface", pair.node_if, "--queue", str(queue),
                    "--bpffs-root", bpffs_root, "--duration", "1", "--quiet",
                    *[arg for line in lines for arg in ("--line", line)], *extra, check=False)


def publish_feed(pair, tmp_path, feed: int, messages: int, *extra: str) -> dict:
    args = [arg for line in lines_of(feed) for arg in ("--line", line)]
    return publish(pair, tmp_path, [*args, "--messages", str(messages), "--per-packet", "4",
                                    "--session", f"FEED{feed}", "--seed", str(feed), *extra])


def publish_in_background(pair, tmp_path, feed: int, messages: int, rate: int):
    summary = tmp_path / f"bg-{feed}-{time.monotonic_ns()}.json"
    args = [arg for line in lines_of(feed) for arg in ("--line", line)]
    proc = pair.popen(pair.exchange_ns, [FEED, "publish", "--iface", pair.exchange_if, *args,
                                         "--messages", str(messages), "--rate", str(rate),
                                         "--per-packet", "4", "--session", f"LIVE{feed}",
                                         "--seed", str(100 + feed), "--summary-json", str(summary)])
    return proc, summary


def pinned(root: str) -> list[str]:
    """Everything under the pin root, relative to it."""
    found = []
    for directory, dirs, files in os.walk(root):
        found += [os.path.relpath(os.path.join(directory, n), root) for n in dirs + files]
    return sorted(found)


def xdp_sockets(pair) -> int:
    """AF_XDP sockets open in the node namespace: the kernel's own per-namespace count (this
    kernel has no xsk_diag, so `ss --xdp` lists nothing even while an engine runs)."""
    for line in pair.run(pair.node_ns, "cat", "/proc/net/protocols").stdout.splitlines():
        fields = line.split()
        if fields and fields[0] == "XDP":
            return int(fields[2])
    raise AssertionError("no XDP line in /proc/net/protocols")


def counters(pair, bpffs_root) -> dict[str, int]:
    """The shared program's counters (summed over CPUs), read from its pinned map with bpftool."""
    (interface_dir,) = [d for d in os.listdir(bpffs_root) if d.startswith("n")]
    out = pair.run(pair.node_ns, "bpftool", "-j", "map", "dump", "pinned",
                   os.path.join(bpffs_root, interface_dir, "tw_counters")).stdout
    names = {0: "redirected", 1: "passed", 2: "no_meta", 3: "wrong_queue", 4: "no_socket"}
    totals = {}
    for entry in json.loads(out):
        key = int.from_bytes(bytes(int(b, 16) for b in entry["key"]), "little")
        value = sum(int.from_bytes(bytes(int(b, 16) for b in v["value"]), "little")
                    for v in entry["values"])
        if key in names:
            totals[names[key]] = value
    return totals


def assert_nothing_left(pair, bpffs_root) -> None:
    assert pinned(bpffs_root) == []
    assert xdp_attached(pair) == ""
    assert xdp_sockets(pair) == 0


def test_four_engines_share_one_program_and_keep_counting_while_others_stop(
        pair, bpffs_root, steering, tmp_path):
    engines = {q: start_engine(pair, tmp_path, bpffs_root, q, lines_of(q)) for q in range(FEEDS)}
    try:
        infos = {q: e.stats() for q, e in engines.items()}
        assert len({info["prog_id"] for info in infos.values()}) == 1        # one program
        assert [q for q, info in infos.items() if info["attached_program"]] == [0]
        assert "tw_steer" in xdp_attached(pair)
        assert xdp_sockets(pair) == FEEDS

        for feed in range(FEEDS):
            sent = publish_feed(pair, tmp_path, feed, 2000)
            assert sent["messages_sent"] == 2000
        for feed, engine in engines.items():
            stats = engine.settle(messages=2000)
            # Each engine got exactly its own feed, both lines, nothing of the others'.
            assert stats["messages"] == 2000 and stats["gaps"] == 0, (feed, stats)
            assert stats["duplicates"] == 2000 and stats["unmatched"] == 0, (feed, stats)
            assert stats["lines"]["A"]["packets"] == stats["lines"]["B"]["packets"] > 0
        seen = counters(pair, bpffs_root)
        assert seen["wrong_queue"] == 0 and seen["no_socket"] == 0
        assert seen["redirected"] == sum(e.stats()["packets"] for e in engines.values())

        # Feeds 0 and 1 keep flowing while engine 2 stops and engine 3 is killed.
        live = {feed: publish_in_background(pair, tmp_path, feed, 20000, 5000) for feed in (0, 1)}
        time.sleep(1.0)
        final_2 = engines[2].stop(signal.SIGTERM)
        assert engines[2].proc.returncode == 0 and final_2["messages"] == 2000
        engines[3].proc.kill()
        engines[3].proc.wait(timeout=10)
        # A new engine takes the killed one's queue (and its flows) while the feeds still flow.
        engines[3] = start_engine(pair, tmp_path, bpffs_root, 3, lines_of(3))
        assert "removed what a stopped engine left on queue 3" in engines[3].stats()["fallback"]
        # The same program all along: never detached or replaced while feeds were live.
        assert engines[3].stats()["prog_id"] == infos[0]["prog_id"]
        assert not engines[3].stats()["attached_program"]
        assert "tw_steer" in xdp_attached(pair)
        for feed, (proc, summary) in live.items():
            assert proc.wait(timeout=60) == 0
            assert json.loads(summary.read_text())["messages_sent"] == 20000
        for feed in (0, 1):
            stats = engines[feed].settle(messages=22000)
            assert stats["messages"] == 22000 and stats["gaps"] == 0, (feed, stats)
            assert stats["missing"] == 0, (feed, stats)
        publish_feed(pair, tmp_path, 3, 1000, "--session", "AGAIN3")
        stats = engines[3].settle(messages=1000)
        assert stats["messages"] == 1000 and stats["gaps"] == 0

        for feed in (0, 1, 3):
            engines[feed].stop(signal.SIGTERM)
            assert engines[feed].proc.returncode == 0
            if feed != 3:
                assert "tw_steer" in xdp_attached(pair)  # another engine still lives
        assert_nothing_left(pair, bpffs_root)
    finally:
        for engine in engines.values():
            engine.kill()


def test_in_use_is_exit_5_and_release_removes_what_a_killed_engine_left(
        pair, bpffs_root, steering, tmp_path):
    first = start_engine(pair, tmp_path, bpffs_root, 0, lines_of(0))
    try:
        owner = first.proc.pid
        taken = run_engine(pair, bpffs_root, 0, lines_of(1))
        assert taken.returncode == 5, taken.stderr
        assert f"queue 0 of {pair.node_if} is owned by pid" in taken.stderr

        same_flow = run_engine(pair, bpffs_root, 1, [lines_of(0)[0]])
        assert same_flow.returncode == 5, same_flow.stderr
        assert "is already steered to queue 0" in same_flow.stderr

        other_mode = run_engine(pair, bpffs_root, 1, lines_of(1), "--mode", "native")
        assert other_mode.returncode == 5, other_mode.stderr
        assert "attached in generic mode" in other_mode.stderr

        alive = pair.run(pair.node_ns, ENGINE, "release", "--iface", pair.node_if, "--queue", "0",
                         "--bpffs-root", bpffs_root, check=False)
        assert alive.returncode == 5, alive.stderr
        # None of the refusals touched the running engine.
        publish_feed(pair, tmp_path, 0, 500)
        assert first.settle(messages=500)["messages"] == 500

        first.proc.kill()
        first.proc.wait(timeout=10)
        assert owner
        # The link is pinned: the program stays for the next engine; release takes it away.
        assert "tw_steer" in xdp_attached(pair) and pinned(bpffs_root)
        released = pair.run(pair.node_ns, ENGINE, "release", "--iface", pair.node_if,
                            "--bpffs-root", bpffs_root, check=False)
        assert released.returncode == 0, released.stderr
        assert "removed what a stopped engine left on queue 0" in released.stdout
        assert "detached the steering program" in released.stdout
        assert_nothing_left(pair, bpffs_root)
        again = pair.run(pair.node_ns, ENGINE, "release", "--iface", pair.node_if,
                         "--bpffs-root", bpffs_root, check=False)
        assert again.returncode == 0 and "nothing pinned" in again.stdout
    finally:
        first.kill()


def test_two_namespaces_with_the_same_interface_name_do_not_share(bpffs_root, tmp_path):
    """The pin directory is per (network namespace, interface): two nodes' eth0s never meet."""
    with VethPair() as one, VethPair() as two:
        for pair in (one, two):
            pair.run(pair.node_ns, "ip", "link", "set", pair.node_if, "down")
            pair.run(pair.node_ns, "ip", "link", "set", pair.node_if, "name", "feed0")
            pair.run(pair.node_ns, "ip", "link", "set", "feed0", "up")
            pair.node_if = "feed0"
        a = start_engine(one, tmp_path, bpffs_root, 0, lines_of(0))
        b = start_engine(two, tmp_path, bpffs_root, 0, lines_of(0))
        try:
            assert a.stats()["attached_program"] and b.stats()["attached_program"]
            assert len([d for d in os.listdir(bpffs_root) if d.startswith("n")]) == 2
            a.stop()
            assert "tw_steer" in xdp_attached(two)
            b.stop()
            assert pinned(bpffs_root) == []
        finally:
            a.kill()
            b.kill()


# ---- only the configured flows reach the engine; the kernel gets everything else -------------

SSM_SOURCE = "198.18.77.7"
LINE_SSM = ("239.30.0.1", 5300)              # line A: SSM, only from SSM_SOURCE
LINE_VLAN = ("239.31.0.1", 5301, 100)        # line B: only tagged with VLAN 100
# Kernel sockets in the node namespace: UDP sockets for what the stack delivers, and an AF_PACKET
# tap on the interface, which sees every frame XDP passed to the kernel (not one it redirected):
# the only kernel witness for a VLAN-200 frame, as this kernel has no 802.1Q devices.
TAGS = ["WRONGSRC", "FRAGMENT", "IPV6UDP!", "VLAN200!", "UNTAGGED", "WRONGPRT", "WRONGQ!!"]
KERNEL_RECEIVER = r"""
import json, socket, struct, sys, time
ifname, expected, tags = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode().split(b",")
ifindex = socket.if_nametoindex(ifname)
def v4(port, group):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("", port))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                 socket.inet_aton(group) + socket.inet_aton("0.0.0.0") + struct.pack("=i", ifindex))
    return s
socks = {"ssm": v4(5300, "239.30.0.1"), "vlan": v4(5301, "239.31.0.1"), "port": v4(5399, "239.30.0.1")}
s6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
s6.bind(("::", 5300))
s6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP,
              socket.inet_pton(socket.AF_INET6, "ff15::30") + struct.pack("=I", ifindex))
socks["ipv6"] = s6
tap = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
tap.bind((ifname, 0))
socks["tap"] = tap
for s in socks.values():
    s.setblocking(False)
got = {name: [] for name in socks}
print("ready", flush=True)
deadline = time.monotonic() + 15
while time.monotonic() < deadline and sum(map(len, got.values())) < expected:
    for name, s in socks.items():
        try:
            data = s.recv(4096)
        except BlockingIOError:
            continue
        if name != "tap":
            got[name].append(data[:8].decode(errors="replace"))
        else:
            got[name] += [t.decode() for t in tags if t in data]
    time.sleep(0.002)
print(json.dumps(got), flush=True)
"""


def mold_frame(seq: int, group: str, port: int, src: str, vlan: int | None = None,
               tag: bytes = b"") -> bytes:
    from tests.support import frames
    payload = tag + frames.run_of(seq, 1) if tag else frames.run_of(seq, 1)
    vlans = ((frames.TPID_8021Q, vlan),) if vlan else ()
    return frames.frame(payload, group, port, src, vlans=vlans)


def fragments(group: str, port: int, src: str) -> list[bytes]:
    """A UDP datagram of the SSM line's flow, from its source, in two IPv4 fragments: the first
    carries the whole UDP header, so only the fragment check keeps it from the engine."""
    from tests.support import frames
    datagram = frames.udp(b"FRAGMENT" + bytes(56), 40000, port)
    mac = frames.multicast_mac(group)
    first = frames.ipv4(datagram[:32], src, group, flags_frag=0x2000)          # MF, offset 0
    second = frames.ipv4(datagram[32:], src, group, flags_frag=32 // 8)       # offset 32
    return [frames.ethernet(first, mac), frames.ethernet(second, mac)]


def ipv6_udp_frame(port: int, payload: bytes) -> bytes:
    import ipaddress
    import struct as st
    src = ipaddress.IPv6Address("fe80::2:1").packed
    dst = ipaddress.IPv6Address("ff15::30").packed
    udp = st.pack("!HHHH", 40000, port, 8 + len(payload), 0) + payload
    pseudo = src + dst + st.pack("!I3xB", len(udp), 17) + udp
    pseudo += b"\0" * (len(pseudo) % 2)
    total = sum(st.unpack(f"!{len(pseudo) // 2}H", pseudo))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    udp = udp[:6] + st.pack("!H", (~total & 0xFFFF) or 0xFFFF) + udp[8:]
    ip6 = st.pack("!IHBB", 6 << 28, len(udp), 17, 1) + src + dst
    return b"\x33\x33\x00\x00\x00\x30" + b"\x02\x00\x00\x00\x00\x01" + b"\x86\xdd" + ip6 + udp


def send_raw(pair, tmp_path, frames_list: list[bytes]) -> None:
    from tests.support.raw_sender import write_frames
    path = tmp_path / f"frames-{time.monotonic_ns()}.bin"
    write_frames(path, frames_list)
    sender = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support", "raw_sender.py")
    pair.run(pair.exchange_ns, "python3", sender, "burst", pair.exchange_if, str(path))


def test_only_the_configured_flows_reach_the_engine_and_the_kernel_gets_the_rest(
        bpffs_root, tmp_path):
    with VethPair(queues=3) as pair:
        node = pair.node_ns
        for key in ("all", "default", pair.node_if):
            pair.run(node, "sysctl", "-qw", f"net.ipv4.conf.{key}.rp_filter=0")
        tx = TxQueueSteering(pair, os.path.join(os.path.dirname(bpffs_root), "exchange"), tmp_path)
        try:
            tx.route(*LINE_SSM, rx_queue=0)
            tx.route(*LINE_VLAN[:2], rx_queue=0)
            line_a = f"A={LINE_SSM[0]}:{LINE_SSM[1]}@{SSM_SOURCE}"
            line_b = f"B={LINE_VLAN[0]}:{LINE_VLAN[1]},vlan={LINE_VLAN[2]}"
            engine = start_engine(pair, tmp_path, bpffs_root, 0, [line_a, line_b])
            try:
                receiver = kernel_receiver(pair, expected=11)
                group_a, port_a = LINE_SSM
                group_b, port_b, vlan_b = LINE_VLAN
                ours = [mold_frame(seq, group_a, port_a, SSM_SOURCE) for seq in range(1, 11)]
                ours += [mold_frame(seq, group_b, port_b, "198.18.0.1", vlan=vlan_b)
                         for seq in range(11, 21)]
                others = [
                    mold_frame(1, group_a, port_a, "198.18.77.8", tag=b"WRONGSRC"),  # not the SSM source
                    *fragments(group_a, port_a, SSM_SOURCE),                      # one datagram
                    ipv6_udp_frame(port_a, b"IPV6UDP!"),                          # IPv6
                    mold_frame(2, group_b, port_b, "198.18.0.1", vlan=200, tag=b"VLAN200!"),
                    mold_frame(3, group_b, port_b, "198.18.0.1", tag=b"UNTAGGED"),  # B wants a tag
                    mold_frame(4, group_a, 5399, SSM_SOURCE, tag=b"WRONGPRT"),     # not our port
                ]
                send_raw(pair, tmp_path, ours + others)
                out, _ = receiver.communicate(timeout=30)
                got = json.loads(out)
                # Delivered by the stack (the fragments reassembled), and seen passing by the tap.
                assert got == {"ssm": ["WRONGSRC", "FRAGMENT"], "vlan": ["UNTAGGED"],
                               "port": ["WRONGPRT"], "ipv6": ["IPV6UDP!"],
                               "tap": ["WRONGSRC", "FRAGMENT", "IPV6UDP!", "VLAN200!", "UNTAGGED",
                                       "WRONGPRT"]}, got
                stats = engine.settle(messages=20)
                # The engine saw its 20 frames and not one more.
                assert stats["frames"] == stats["packets"] == stats["messages"] == 20, stats
                assert stats["unmatched"] == stats["malformed"] == 0
                seen = counters(pair, bpffs_root)
                assert seen["redirected"] == 20 and seen["wrong_queue"] == 0

                # The SSM line's frames arriving on another queue than the engine's: the
                # program passes them (an AF_XDP socket would drop them) and counts them.
                tx.route(*LINE_SSM, rx_queue=1)
                receiver = kernel_receiver(pair, expected=6)
                send_raw(pair, tmp_path, [mold_frame(seq, group_a, port_a, SSM_SOURCE,
                                                     tag=b"WRONGQ!!") for seq in range(21, 24)])
                out, _ = receiver.communicate(timeout=30)
                got = json.loads(out)
                assert got["ssm"] == got["tap"] == ["WRONGQ!!"] * 3, got
                assert counters(pair, bpffs_root)["wrong_queue"] == 3
                assert engine.settle()["frames"] == 20
                engine.stop()
                assert engine.proc.returncode == 0
            finally:
                engine.kill()
        finally:
            tx.close()
        assert pinned(bpffs_root) == [] and xdp_attached(pair) == ""


def kernel_receiver(pair, expected: int) -> subprocess.Popen:
    receiver = pair.popen(pair.node_ns, ["python3", "-c", KERNEL_RECEIVER, pair.node_if,
                                         str(expected), ",".join(TAGS)],
                          stdout=subprocess.PIPE, text=True)
    assert receiver.stdout.readline().strip() == "ready"
    return receiver


def test_in_native_mode_each_engine_counts_only_its_queue(bpffs_root, tmp_path):
    """Native (DRV) XDP on veth sees the transmit queue itself (generic sees it minus one): the
    same sharing with the other mapping, engines on queues 1 and 2."""
    with VethPair(queues=3) as pair:
        tx = TxQueueSteering(pair, os.path.join(os.path.dirname(bpffs_root), "exchange"), tmp_path,
                             xdp_mode="native")
        engines = {}
        try:
            for feed in (1, 2):
                for group, port in flows_of(feed):
                    tx.route(group, port, rx_queue=feed)
                engines[feed] = EngineProcess(pair, lines_of(feed), tmp_path,
                                              ["--queue", str(feed), "--bpffs-root", bpffs_root,
                                               "--mode", "native"]).start()
            assert {e.stats()["xdp_mode"] for e in engines.values()} == {"native"}
            for feed in engines:
                publish_feed(pair, tmp_path, feed, 1000)
            for feed, engine in engines.items():
                stats = engine.settle(messages=1000)
                assert stats["messages"] == 1000 and stats["duplicates"] == 1000, (feed, stats)
                assert stats["unmatched"] == 0 and stats["gaps"] == 0
            assert counters(pair, bpffs_root)["wrong_queue"] == 0
            for engine in engines.values():
                engine.stop()
            assert_nothing_left(pair, bpffs_root)
        finally:
            for engine in engines.values():
                engine.kill()
            tx.close()
