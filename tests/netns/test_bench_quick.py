"""`python -m bench.run --quick` end to end: real veth pair, real engine, real kernel sockets.

About 20-40 s on two cores. It proves the machinery, not the numbers: every contender took the
same feed and counted every message of its best trial exactly (by type), latencies were recorded
for all of them, and latest.json/.md/.png were written in the shape other tools read.
"""
import json
import os
import subprocess
import sys

import pytest

from tests.support.netns import require_netns

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

pytestmark = [pytest.mark.netns, pytest.mark.slow]


def test_quick_benchmark_runs_every_contender_and_writes_the_results(tmp_path):
    require_netns()
    out = tmp_path / "results"
    run = subprocess.run([sys.executable, "-m", "bench.run", "--quick", "--out", str(out)],
                         cwd=REPO, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]

    doc = json.loads((out / "latest.json").read_text())
    assert set(doc["contenders"]) == {"engine", "kernel_c", "python"}
    for key, c in doc["contenders"].items():
        assert c["zero_loss_msgs_per_s"] > 0, f"{key} had no clean trial"
        assert c["zero_loss_pkts_per_s"] > 0 and c["cpu_s_per_million_msgs"] > 0
        best = [r for r in c["repeats"]][0]
        clean = [t for t in best["trials"] if t["zero_loss"]]
        assert clean and all(t["counts_match"] and t["received_messages"] == t["sent_messages"] for t in clean)
        lat = c["latency_ns"]
        assert lat["count"] > 0 and 0 < lat["p50"] <= lat["p99"] <= lat["p999"] <= lat["max"]
    setup = doc["setup"]
    assert setup["host"]["kernel"] == os.uname().release
    assert setup["placement"]["publisher_cpu"] != setup["placement"]["receiver_cpu"]
    assert setup["latency_rate_msgs_per_s"] == 100_000
    assert set(doc["ratios"]) >= {"engine_vs_kernel_c_zero_loss_rate", "engine_vs_python_zero_loss_rate",
                                  "engine_vs_kernel_c_p99"}
    assert "| contender |" in (out / "latest.md").read_text()
    assert (out / "latest.png").read_bytes()[:4] == b"\x89PNG"
