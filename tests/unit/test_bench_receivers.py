"""The contenders' command lines (bench/receivers.py): who is tuned how, and testpmd's counters."""
from bench.receivers import _PORT_STATS, CONTENDERS, HEADLINE, MAIN, Feed, command

FEED = Feed("twn1", "239.77.0.1", 30077, 0, cpu=1, housekeeping_cpu=0)


def option(cmd: list[str], name: str) -> str:
    return cmd[cmd.index(name) + 1]


def test_the_headline_engine_is_native_and_busy_polls():
    cmd = command(CONTENDERS["engine"], FEED, "/tmp/s.json", "kernel_rx")
    assert option(cmd, "--mode") == "native" and option(cmd, "--busy-poll") == "on"
    assert option(cmd, "--ring-size") == "4096" and option(cmd, "--core") == "1"
    assert option(command(CONTENDERS["engine_generic"], FEED, "x", "k"), "--mode") == "generic"
    assert option(command(CONTENDERS["engine_poll"], FEED, "x", "k"), "--busy-poll") == "off"


def test_the_kernel_baseline_is_tuned_for_veth_not_flattering_the_engine():
    """SO_BUSY_POLL on a veth socket takes the veth's NAPI away from the sending CPU and the
    256-entry ring overflows at 100k packets/s: the baseline must not set it; it gets a large
    receive buffer and batches instead."""
    cmd = command(CONTENDERS["kernel_c"], FEED, "x", "kernel_rx")
    assert option(cmd, "--busy-poll-usec") == "0"
    assert int(option(cmd, "--rcvbuf")) >= 8 << 20 and option(cmd, "--batch") == "64"
    assert "--wait" not in cmd
    sleeping = command(CONTENDERS["kernel_c_sleep"], FEED, "x", "kernel_rx")
    assert option(sleeping, "--wait") == "1" and option(sleeping, "--busy-poll-usec") == "0"


def test_each_tuning_changes_one_knob_of_the_baseline():
    base = dict(zip(CONTENDERS["kernel_c"].args[::2], CONTENDERS["kernel_c"].args[1::2]))
    for key in ("kernel_c_busy_poll", "kernel_c_small_rcvbuf", "kernel_c_batch1"):
        variant = dict(zip(CONTENDERS[key].args[::2], CONTENDERS[key].args[1::2]))
        assert CONTENDERS[key].tuning and len({k for k in base if base[k] != variant[k]}) == 1, key
    assert not set(MAIN) & {k for k, c in CONTENDERS.items() if c.tuning}
    assert set(HEADLINE) <= set(MAIN) and "dpdk_af_xdp" in MAIN


def test_testpmd_runs_rxonly_on_af_xdp_without_hugepages_with_the_engines_ring():
    cmd = command(CONTENDERS["dpdk_af_xdp"], FEED, "x", "k")
    assert "--no-huge" in cmd and "--no-shconf" in cmd and "--forward-mode=rxonly" in cmd
    assert option(cmd, "--vdev") == "net_af_xdp0,iface=twn1,start_queue=0,queue_count=1"
    assert "--rxd=4096" in cmd and option(cmd, "-l") == "0,1"


def test_testpmd_port_stats_are_read():
    shown = ("  ######################## NIC statistics for port 0  ########################\n"
             "  RX-packets: 57488      RX-missed: 42516      RX-bytes:  11075095\n")
    m = _PORT_STATS.search(shown)
    assert (int(m[1]), int(m[2]), int(m[3])) == (57488, 42516, 11075095)
