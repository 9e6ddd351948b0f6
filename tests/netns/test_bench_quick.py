"""`python -m bench.run --quick` end to end: real veth pair, the in-kernel generator, the real
engine, real kernel sockets, DPDK's testpmd.

About a minute on two cores. It proves the machinery, never the numbers (no timing is asserted):
every contender took the same feed and its clean trials counted exactly what the generator's
ledger says was sent (by message type; testpmd by packet), latencies were recorded for every
decoding contender at both fixed rates, CPU per packet was split by place, the experiments ran,
and latest.json/.md/.png were written in the shape other tools read.
"""
import json
import os
import subprocess
import sys

import pytest

from bench.receivers import MAIN
from tests.support.netns import require_netns

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

pytestmark = [pytest.mark.netns, pytest.mark.slow]


def test_quick_benchmark_runs_every_contender_and_writes_the_results(tmp_path):
    require_netns()
    out = tmp_path / "results"
    run = subprocess.run([sys.executable, "-m", "bench.run", "--quick", "--out", str(out)],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]

    doc = json.loads((out / "latest.json").read_text())
    assert doc["setup"]["errors"] == {}
    assert set(doc["contenders"]) == set(MAIN)
    assert {"engine", "kernel_c", "python", "dpdk_af_xdp"} <= set(doc["contenders"])
    for key, c in doc["contenders"].items():
        assert c["zero_loss_msgs_per_s"] > 0, f"{key} had no clean trial"
        assert c["zero_loss_pkts_per_s"] > 0 and c["cpu_s_per_million_msgs"] > 0
        assert c["cpu_us_per_packet"] > 0 and c["cpu_breakdown_us_per_packet"]["total"] > 0
        assert c["waits"] in ("spin", "sleep")
        trials = [t for r in c["repeats"] for t in r["trials"]] + [
            r[k] for r in c["repeats"] for k in ("latency_trial", "high_rate_trial")]
        assert all(t["generator"] == "blast" for t in trials)
        assert all("veth_refused" not in t["drops"] for t in trials), "the veth refused frames"
        clean = [t for t in trials if t["zero_loss"]]
        assert clean, f"{key}: no clean trial"
        for t in clean:   # exact counts against the generator's ledger
            if c["counts"] == "messages":
                assert t["counts_match"] and t["received_messages"] == t["sent_messages"]
                assert t["malformed"] == 0 and t["duplicates"] == 0
            else:
                assert t["received_packets"] >= t["sent_packets"] and "xsk_missed" not in t["drops"]
        if c["counts"] == "messages":
            for field in ("latency_ns", "latency_high_ns"):
                lat = c[field]
                assert lat["count"] > 0 and 0 < lat["p50"] <= lat["p99"] <= lat["p999"] <= lat["max"]
        else:
            assert c["latency_ns"]["count"] == 0   # testpmd measures no latency; none is made up

    setup = doc["setup"]
    assert setup["host"]["kernel"] == os.uname().release
    assert setup["placement"]["publisher_cpu"] != setup["placement"]["receiver_cpu"]
    assert setup["placement"]["node_veth_gro"].startswith("on")
    assert setup["latency_rate_msgs_per_s"] == 100_000 and setup["high_rate_msgs_per_s"] == 1_000_000
    assert set(doc["ratios"]) >= {"engine_vs_kernel_c_zero_loss_rate", "engine_vs_python_zero_loss_rate",
                                  "engine_vs_kernel_c_p99", "engine_vs_kernel_c_p99_high_rate",
                                  "engine_vs_dpdk_zero_loss_rate", "engine_vs_kernel_c_cpu_per_packet_sleeping"}
    modes = doc["experiments"]["xdp_modes"]
    assert set(modes["summary"]) == {"blast", "publisher"}
    for gen, by_mode in modes["trials"].items():
        for mode, ts in by_mode.items():
            assert ts and all(t["generator"] == gen for t in ts)
    stall = doc["experiments"]["stall"]
    assert len(stall["stalls_ms"]) == 3 and stall["rx_ring_entries"] == 4096
    assert "| contender |" in (out / "latest.md").read_text()
    assert (out / "latest.png").read_bytes()[:4] == b"\x89PNG"
