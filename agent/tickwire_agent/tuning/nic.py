"""The NIC: enough RX channels for the feed's queue, that queue's IRQ affinity, busy-poll knobs.

Channels go through pyroute2's ethtool (the same ioctl `ethtool -L` uses). The busy-poll knobs
are per-device sysfs files. The queue's IRQ is found by name in /proc/interrupts, since drivers
name their queue vectors after the device ("eth0-TxRx-3", "virtio0-input.3", "mlx5_comp3@..."):
virtual devices such as veth have none, and then there is nothing to pin.
"""
from __future__ import annotations

import errno
import os
import re
import time

from pyroute2.ethtool import Ethtool

from . import xsk
from .cpu import format_cpulist
from .settings import FileSetting, Setting


LOWER_TIMEOUT_S = 10.0


class ChannelsSetting(Setting):
    """RX channels of a device: `rx_count` or, on NICs with combined queues, `combined_count`."""

    kind = "channels"

    def __init__(self, ifname: str, field: str, label: str = "channels"):
        self.ifname = ifname
        self.field = field
        self.label = label

    def read(self) -> int:
        with Ethtool() as ethtool:
            return getattr(ethtool.get_channels(self.ifname), self.field)

    def write(self, value: int) -> None:
        value = int(value)
        if value < self.read():
            self._lower(value)
            return
        with Ethtool() as ethtool:
            ethtool.set_channels(self.ifname, {self.field: value})

    def _lower(self, value: int, timeout: float = LOWER_TIMEOUT_S) -> None:
        """Take channels away only once no AF_XDP socket sits on them: wait for the sockets to be
        gone, then retry the kernel's EINVAL while it unregisters their buffer pools (xsk.py)."""
        deadline = time.monotonic() + timeout
        busy = xsk.wait_until_free(self.ifname, value, timeout)
        if busy:
            raise OSError(errno.EBUSY, f"cannot lower {self.ifname} to {value} RX channels: AF_XDP "
                          f"socket(s) still bound to queue {sorted(busy)} after {timeout:g} s")
        while True:
            try:
                with Ethtool() as ethtool:
                    ethtool.set_channels(self.ifname, {self.field: value})
                return
            except OSError as e:
                if e.errno != errno.EINVAL or time.monotonic() >= deadline:
                    raise
            time.sleep(0.02)

    def to_record(self) -> dict:
        return {"kind": self.kind, "ifname": self.ifname, "field": self.field, "label": self.label}


def read_channels(ifname: str):
    """pyroute2's EthtoolChannels (max_rx, rx_count, max_combined, combined_count, ...)."""
    with Ethtool() as ethtool:
        return ethtool.get_channels(ifname)


def channels_needed(ifname: str, queue: int) -> tuple[ChannelsSetting, int, str]:
    """The channel setting RX queue `queue` depends on, the count it needs, and a problem ('' if none)."""
    channels = read_channels(ifname)
    field = "combined_count" if channels.max_combined > 0 else "rx_count"
    maximum = channels.max_combined if field == "combined_count" else channels.max_rx
    if queue >= maximum:
        return ChannelsSetting(ifname, field), queue + 1, (
            f"queue {queue} needs {queue + 1} RX channels but {ifname} has at most {maximum}; "
            f"pick a queue below {maximum}")
    return ChannelsSetting(ifname, field), queue + 1, ""


def busy_poll_knobs(ifname: str, napi_defer_hard_irqs: int | None, gro_flush_timeout_ns: int | None,
                    root: str = "/") -> list[tuple[FileSetting, str]]:
    """[(setting, value)] for the knobs the plan sets; an unset knob is left alone."""
    knobs = []
    base = os.path.join(root, "sys/class/net", ifname)
    if napi_defer_hard_irqs is not None:
        knobs.append((FileSetting(os.path.join(base, "napi_defer_hard_irqs"), "napi_defer_hard_irqs"),
                      str(napi_defer_hard_irqs)))
    if gro_flush_timeout_ns is not None:
        knobs.append((FileSetting(os.path.join(base, "gro_flush_timeout"), "gro_flush_timeout"),
                      str(gro_flush_timeout_ns)))
    return knobs


def device_names(ifname: str, root: str = "/") -> list[str]:
    """Names a driver may use for this interface's IRQs: the interface and its bus device."""
    names = [ifname]
    device = os.path.join(root, "sys/class/net", ifname, "device")
    if os.path.exists(device):
        names.append(os.path.basename(os.path.realpath(device)))
    return names


def find_queue_irq(ifname: str, queue: int, root: str = "/") -> int | None:
    """The IRQ that serves RX queue `queue` of `ifname`, or None (virtual device, unknown naming)."""
    names = device_names(ifname, root)
    ends_with_queue = re.compile(rf"(?<![0-9]){queue}(@.*)?$")
    tx_only = re.compile(r"(^|[-_.])tx[-_.]?[0-9]+(@.*)?$", re.IGNORECASE)
    try:
        with open(os.path.join(root, "proc/interrupts"), encoding="ascii", errors="replace") as f:
            rows = f.read().splitlines()[1:]
    except FileNotFoundError:
        return None
    for row in rows:
        number, _, rest = row.partition(":")
        if not number.strip().isdigit() or not rest.split():
            continue
        action = rest.split()[-1]
        if any(n in action for n in names) and ends_with_queue.search(action) and not tx_only.search(action):
            return int(number)
    return None


def irq_affinity_setting(irq: int, irq_dir: str = "/proc/irq") -> FileSetting:
    """`irq_dir`: /proc/irq, or where the Pod mounts the host's (a container runtime makes the
    container's own /proc/irq read-only, whatever the capabilities)."""
    return FileSetting(os.path.join(irq_dir, str(irq), "smp_affinity_list"), "irq_affinity")


def irq_affinity_value(cpus) -> str:
    return format_cpulist(cpus)
