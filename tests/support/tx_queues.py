"""Put each test flow on a chosen RX queue of a multi-queue veth, the way a NIC's ntuple rule would.

veth has no flow steering: a frame arrives on the receive queue matching the queue the sender
transmitted it on. A tc egress program on the exchange side (tx_queue.bpf.c) sets each flow's
skb->queue_mapping; the kernel then transmits on queue (mapping - 1) (skb_tx_hash() reads a
non-zero queue_mapping as a recorded receive queue + 1, when no XPS map is set). What the node's
XDP program then sees as rx_queue_index, measured on kernel 6.18:

  native (DRV) XDP:   rx queue = transmit queue      (veth's NAPI ring of that index)
  generic (SKB) XDP:  rx queue = transmit queue - 1  (queue 0 for transmit queue 0: veth leaves
                      the transmit queue in the skb and generic XDP reads it as a recorded
                      receive queue + 1)

So the mapping written is rx + 1 (native) or rx + 2 (generic), and in generic mode the exchange
side needs one transmit queue more than the highest receive queue used. Native XDP on veth also
needs the node side to have at least as many receive queues as the peer has transmit queues.
"""
from __future__ import annotations

import ipaddress
import os
import struct
import subprocess

from .netns import VethPair

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tx_queue.bpf.c")
MAPPING_OFFSET = {"native": 1, "generic": 2}


def compile_program(out_dir) -> str:
    obj = os.path.join(str(out_dir), "tx_queue.bpf.o")
    arch = f"/usr/include/{os.uname().machine}-linux-gnu"
    subprocess.run(["clang", "-O2", "-g", "-target", "bpf", f"-I{arch}", "-c", SOURCE, "-o", obj],
                   check=True)
    return obj


class TxQueueSteering:
    """The exchange side's flow -> queue table, pinned under `pin_dir` (on a bpffs)."""

    def __init__(self, pair: VethPair, pin_dir: str, work_dir, xdp_mode: str = "generic"):
        self.pair = pair
        self.pin_dir = pin_dir
        self.prog = os.path.join(pin_dir, "prog")
        self.map = os.path.join(pin_dir, "maps", "tw_tx_queue")
        self.offset = MAPPING_OFFSET[xdp_mode]
        obj = compile_program(work_dir)
        os.makedirs(pin_dir, exist_ok=True)
        ex = pair.exchange_ns
        pair.run(ex, "bpftool", "prog", "load", obj, self.prog, "type", "classifier",
                 "pinmaps", os.path.join(pin_dir, "maps"))
        pair.run(ex, "tc", "qdisc", "add", "dev", pair.exchange_if, "clsact")
        pair.run(ex, "tc", "filter", "add", "dev", pair.exchange_if, "egress", "bpf",
                 "direct-action", "object-pinned", self.prog)

    def route(self, group: str, port: int, rx_queue: int) -> None:
        """Frames to (group, port) arrive on the node's RX queue `rx_queue`."""
        key = ipaddress.IPv4Address(group).packed + struct.pack("!H", port) + b"\0\0"
        value = struct.pack("=I", rx_queue + self.offset)
        self.pair.run(self.pair.exchange_ns, "bpftool", "map", "update", "pinned", self.map,
                      "key", "hex", *[f"{b:02x}" for b in key],
                      "value", "hex", *[f"{b:02x}" for b in value])

    def close(self) -> None:
        self.pair.run(self.pair.exchange_ns, "tc", "qdisc", "del", "dev", self.pair.exchange_if,
                      "clsact", check=False)
        for path in (self.map, self.prog):
            try:
                os.unlink(path)
            except OSError:
                pass


def steer_feeds(pair: VethPair, bpffs_root: str, work_dir, flows_by_feed) -> "TxQueueSteering":
    """Each feed's flows on the receive queue of the feed's index (feed 0 on queue 0, ...), with
    the exchange side's program pinned beside the node's bpffs root. The caller closes it."""
    tx = TxQueueSteering(pair, os.path.join(os.path.dirname(bpffs_root), "exchange"), work_dir)
    for queue, flows in enumerate(flows_by_feed):
        for group, port in flows:
            tx.route(group, port, rx_queue=queue)
    return tx
