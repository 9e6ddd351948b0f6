"""Where everything runs: set explicitly, the same for every contender, and written into `setup`.

On two cores the placement decides the result, so nothing is left to the scheduler's mood:

  publisher CPU   the generator (in-kernel blast or the C publisher), pinned; a veth transmit
                  or an XDP redirect onto a veth runs the receive side's softirq on
                  the transmitting CPU, so with RPS off the kernel's receive work (the UDP/IP
                  stack for kernel sockets, generic XDP and the copy into the UMEM for the
                  engine, the veth NAPI poll in native mode) lands here too;
  receiver CPU    the contender (the engine's poll thread, the C receiver, the Python receiver),
                  alone; the engine's main thread, which only reports, runs on the publisher CPU,
                  as it would on a housekeeping core in production.

RPS is switched off on the node's veth (written, then read back), so the softirq stays on the
publisher's CPU for every contender. `--rps-cpu` moves the backlog softirq (kernel sockets and
generic XDP) elsewhere; native XDP on veth polls its NAPI on the transmitting CPU whatever RPS
says, and threaded NAPI cannot be switched on before XDP gives the veth a NAPI. The setup records
what was used.
"""
from __future__ import annotations

import os
import platform

from tickwire_demo.localnet import VethPair


def _read(pair: VethPair, path: str) -> str | None:
    result = pair.run(pair.node_ns, "cat", path, check=False)
    return result.stdout.strip() if result.returncode == 0 else None


def _write(pair: VethPair, path: str, value: str) -> bool:
    return pair.run(pair.node_ns, "sh", "-c", f"echo {value} > {path}", check=False).returncode == 0


def cpu_mask(cpu: int | None) -> str:
    return "0" if cpu is None else format(1 << cpu, "x")


def apply(pair: VethPair, publisher_cpu: int, receiver_cpu: int, rps_cpu: int | None = None) -> dict:
    """Sets RPS and threaded NAPI on the node veth; returns the placement as it now is."""
    cpus = os.cpu_count() or 1
    for name, cpu in (("publisher", publisher_cpu), ("receiver", receiver_cpu), ("rps", rps_cpu)):
        if cpu is not None and not 0 <= cpu < cpus:
            raise ValueError(f"--{name}-cpu {cpu}: this machine has CPUs 0..{cpus - 1}")
    if publisher_cpu == receiver_cpu:
        raise ValueError(f"publisher and receiver both on CPU {publisher_cpu}: give each its own "
                         "core (--publisher-cpu, --receiver-cpu)")
    sysfs = f"/sys/class/net/{pair.node_if}"
    rps_path = f"{sysfs}/queues/rx-0/rps_cpus"
    if not _write(pair, rps_path, cpu_mask(rps_cpu)):
        raise RuntimeError(f"cannot set {rps_path} (needs root and sysfs in the node namespace)")
    threaded_ok = _write(pair, f"{sysfs}/threaded", "0")   # a veth without XDP has no NAPI: may fail
    # GRO on gives the node veth a NAPI of its own: without it (or a native XDP program on this
    # side) veth drops the frames the in-kernel generator redirects to it, silently. With it,
    # the kernel sender's skbs are queued to that NAPI too, on the transmitting CPU.
    gro_ok = pair.run(pair.node_ns, "ethtool", "-K", pair.node_if, "gro", "on", check=False).returncode == 0
    gro = pair.run(pair.node_ns, "ethtool", "-k", pair.node_if, check=False).stdout
    gro_state = next((line.split(":", 1)[1].strip() for line in gro.splitlines()
                      if line.startswith("generic-receive-offload")), "?")
    if not gro_ok or not gro_state.startswith("on"):
        raise RuntimeError(f"cannot switch GRO on for {pair.node_if} (ethtool -K gro on): the "
                           "in-kernel generator's frames would be dropped by the veth")
    rps = _read(pair, rps_path) or "?"
    softirq_cpu = publisher_cpu if int(rps.replace(",", "") or "0", 16) == 0 else rps_cpu
    return {
        "cpus": cpus,
        "publisher_cpu": publisher_cpu,
        "receiver_cpu": receiver_cpu,
        "rx_softirq_cpu": softirq_cpu,
        "rps_cpus": rps,
        "threaded_napi": _read(pair, f"{sysfs}/threaded") if threaded_ok else "off (no NAPI before XDP)",
        "busy_poll_sysctls": {name: _read(pair, f"/proc/sys/net/core/{name}")
                              for name in ("busy_poll", "busy_read")},
        "irqs": "none: a veth has no hardware interrupts; its receive work runs as softirq",
        "node_veth_gro": gro_state,
        "how": (f"generator pinned to CPU {publisher_cpu}; each receiver's process pinned to CPU "
                f"{receiver_cpu} (taskset), except the engine's main thread, which only writes stats "
                f"every 0.1 s: its poll thread has CPU {receiver_cpu} (--core), the main thread CPU "
                f"{publisher_cpu}; "
                f"RPS {'off' if rps_cpu is None else 'to CPU ' + str(rps_cpu)} and threaded NAPI "
                f"off and GRO on for the node veth, so the veth's NAPI (which the generator's "
                f"redirect or transmit schedules) and the receive softirq run on CPU {softirq_cpu}: "
                f"native XDP, the copy into the UMEM, generic XDP and the UDP/IP stack all land "
                f"there, beside the generator; a receiver that busy-polls the NAPI pulls that "
                f"work onto CPU {receiver_cpu}"),
    }


def host() -> dict:
    cpu_model = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu_model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    try:
        with open("/sys/devices/system/clocksource/clocksource0/current_clocksource") as f:
            clocksource = f.read().strip()
    except OSError:
        clocksource = "?"
    return {"kernel": platform.release(), "machine": platform.machine(), "cpu_model": cpu_model,
            "clocksource": clocksource, "python": platform.python_version()}
