"""The engine's configuration: parsed, validated, and turned into the C struct.

Every error says what is wrong and how to fix it, because the people who read them are running a
feed at 09:29 in the morning.
"""
from __future__ import annotations

import ipaddress
import os
import re
import socket
import struct
from dataclasses import dataclass, field
from datetime import datetime, time as dtime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

XDP_MODES = {"auto": 0, "native": 1, "generic": 2}
ZERO_COPY = {"auto": 0, "required": 1, "off": 2}
LINE_NAMES = ("A", "B")
DEFAULT_BPFFS_ROOT = "/sys/fs/bpf/tickwire"

# The zone each protocol's exchange stamps its timestamps in: ITCH timestamps count nanoseconds
# from the exchange's local midnight, so this decides every exchange-to-engine latency.
PROTOCOL = "moldudp64-itch50"
EXCHANGE_TIMEZONES = {"moldudp64-itch50": "America/New_York"}   # NASDAQ
LOCAL_ZONE = "local"     # explicit opt-in to the node's own zone (a private feed stamped in it)
# Midnights after the first one given to the decoder (tickwire.h: TW_MAX_LATER_MIDNIGHTS): more than
# a year of days. An engine running past the last one stops recording exchange latency and says so.
LATER_MIDNIGHTS = 512

class ConfigError(ValueError):
    """The configuration cannot work; the message names the field and the fix."""


class PrivilegeError(PermissionError):
    """The process lacks a capability the engine needs; the message names it."""


@dataclass(frozen=True)
class Line:
    """One feed line: the multicast (group, port) it arrives on, optionally from one source (SSM)
    and on one VLAN. No source: any sender; no vlan: tagged with any VLAN id, or untagged."""

    name: str
    group: str
    port: int
    source: str | None = None
    vlan: int | None = None

    _SPEC = re.compile(r"^(?P<name>[^=]+)=(?P<group>[^:@,]+):(?P<port>[^@,]+)"
                       r"(?:@(?P<source>[^,]+))?(?:,vlan=(?P<vlan>.+))?$")

    @classmethod
    def parse(cls, spec: str) -> "Line":
        """`A=233.54.12.111:26477`, `B=233.49.196.111:26477@206.200.127.138` or with a VLAN
        `A=233.54.12.111:26477,vlan=100`."""
        m = cls._SPEC.match(spec.strip())
        if not m:
            raise ConfigError(f"line '{spec}': expected NAME=GROUP:PORT[@SOURCE][,vlan=ID], "
                              "for example A=233.54.12.111:26477")
        try:
            port = int(m["port"])
        except ValueError:
            raise ConfigError(f"line '{spec}': port '{m['port']}' is not a number") from None
        vlan = None
        if m["vlan"] is not None:
            try:
                vlan = int(m["vlan"])
            except ValueError:
                raise ConfigError(f"line '{spec}': vlan '{m['vlan']}' is not a number") from None
        line = cls(m["name"], m["group"], port, m["source"], vlan)
        line.validate()
        return line

    @property
    def engine_arg(self) -> str:
        """`A=GROUP:PORT[@SOURCE][,vlan=ID]`: the inverse of `parse`, the CLI's --line syntax."""
        text = f"{self.name}={self.group}:{self.port}"
        if self.source:
            text += f"@{self.source}"
        return f"{text},vlan={self.vlan}" if self.vlan is not None else text

    def validate(self) -> None:
        if self.name not in LINE_NAMES:
            raise ConfigError(f"line name '{self.name}': must be A or B")
        try:
            group = ipaddress.IPv4Address(self.group)
        except ValueError:
            raise ConfigError(f"line {self.name}: group '{self.group}' is not an IPv4 address") from None
        if not group.is_multicast:
            raise ConfigError(f"line {self.name}: group {self.group} is not a multicast address "
                              "(224.0.0.0/4)")
        if not 1 <= self.port <= 65535:
            raise ConfigError(f"line {self.name}: port {self.port} is out of range 1-65535")
        if self.source is not None:
            try:
                source = ipaddress.IPv4Address(self.source)
            except ValueError:
                raise ConfigError(f"line {self.name}: source '{self.source}' is not an IPv4 "
                                  "address") from None
            if source.is_multicast or source.is_unspecified:
                raise ConfigError(f"line {self.name}: source {self.source} must be a unicast "
                                  "sender address")
        if self.vlan is not None and (isinstance(self.vlan, bool) or not isinstance(self.vlan, int)
                                      or not 1 <= self.vlan <= 4094):
            raise ConfigError(f"line {self.name}: vlan {self.vlan!r} is out of range 1-4094 "
                              "(leave it out to accept any VLAN or none)")


def validate_lines(lines: list[Line]) -> None:
    if not 1 <= len(lines) <= 2:
        raise ConfigError(f"{len(lines)} lines given: a feed has line A and optionally line B")
    for line in lines:
        line.validate()
    names = [line.name for line in lines]
    if len(set(names)) != len(names):
        raise ConfigError(f"line names repeat: {names}; use A and B")
    flows = [(line.group, line.port) for line in lines]
    if len(set(flows)) != len(flows):
        # The decoder tells lines apart by (group, port) alone.
        raise ConfigError(f"lines A and B both use {flows[0][0]}:{flows[0][1]}: "
                          "A/B lines arrive on different (group, port) flows")


def exchange_zone(zone: str | None = None, protocol: str = PROTOCOL):
    """The tzinfo of an exchange zone: an IANA name, "local" for the node's own zone (None from
    here on), or None/"" for the protocol's exchange (America/New_York for NASDAQ ITCH)."""
    if not zone:
        zone = EXCHANGE_TIMEZONES[protocol]
    if zone == LOCAL_ZONE:
        return None
    try:
        return ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"exchange time zone '{zone}' is unknown: use an IANA name such as "
                          f"America/New_York, or '{LOCAL_ZONE}' for this node's zone") from None


def _midnight_of(day, tz) -> int:
    """CLOCK_REALTIME ns of the midnight that starts `day` in tz (None: the local zone). The UTC
    offset is the midnight's own, which differs from the day's noon on a DST change day."""
    if tz is None:
        midnight = datetime.combine(day, dtime(0)).astimezone()
    else:
        midnight = datetime.combine(day, dtime(0), tzinfo=tz)
    return int(midnight.timestamp()) * 1_000_000_000


def _today(tz, now: datetime | None):
    if tz is None:
        return (now or datetime.now()).astimezone().date()
    return (now or datetime.now(tz)).astimezone(tz).date()


def exchange_midnight_ns(zone: str | None = None, now: datetime | None = None) -> int:
    """CLOCK_REALTIME nanoseconds of today's midnight in `zone` (see exchange_zone for None).

    ITCH timestamps count nanoseconds from the exchange's midnight, so this is the reference
    the exchange-to-engine latency is measured against."""
    tz = exchange_zone(zone)
    return _midnight_of(_today(tz, now), tz)


def exchange_midnights_ns(zone: str | None = None, now: datetime | None = None,
                          later: int = LATER_MIDNIGHTS) -> list[int]:
    """Yesterday's midnight in `zone`, then today's and the `later - 1` after it (CLOCK_REALTIME
    ns, rising): the days the decoder follows as real time passes. Each is computed from the
    zone's rules, so a spring-forward day is 23 hours long and a fall-back day 25. Yesterday comes
    first so that a message stamped just before midnight and read just after it still finds its
    day."""
    tz = exchange_zone(zone)
    yesterday = _today(tz, now) - timedelta(days=1)
    return [_midnight_of(yesterday + timedelta(days=i), tz) for i in range(later + 1)]


def _be32(address: str | None) -> int:
    """An IPv4 address as the uint32 holding its bytes in network order (0 for None)."""
    if not address:
        return 0
    return struct.unpack("=I", ipaddress.IPv4Address(address).packed)[0]


def check_midnights(midnights_ns) -> list[int]:
    """The decoder's midnight table as a list, or ConfigError naming what is wrong with it."""
    table = list(midnights_ns)
    if not 1 <= len(table) <= LATER_MIDNIGHTS + 1:
        raise ConfigError(f"exchange midnights: {len(table)} given; give 1 to "
                          f"{LATER_MIDNIGHTS + 1} (the first, then the ones after it)")
    for i, (before, after) in enumerate(zip(table, table[1:])):
        if not isinstance(after, int) or after <= before:
            raise ConfigError(f"exchange midnights[{i + 1}] = {after!r} is not after "
                              f"midnights[{i}] = {before!r}: give them in rising order")
    return table


def fill_decoder_config(c_cfg, lines: list["Line"], midnights_ns, arbitration_window_ns: int) -> None:
    """Write a cffi `struct tw_decoder_config`: the one place Python and C meet on it.

    midnights_ns: the exchange's midnights, rising (exchange_midnights_ns()); a single one (an int
    or a list of one) fixes the day for good, as a replay of one day's capture wants."""
    table = check_midnights([midnights_ns] if isinstance(midnights_ns, int) else midnights_ns)
    c_cfg.n_lines = len(lines)
    for i, line in enumerate(lines):
        c_cfg.lines[i].group_be = _be32(line.group)
        c_cfg.lines[i].port_be = socket.htons(line.port)
        c_cfg.lines[i].source_be = _be32(line.source)
        c_cfg.lines[i].vlan = line.vlan or 0
    c_cfg.exchange_midnight_realtime_ns = table[0]
    c_cfg.n_later_midnights = len(table) - 1
    c_cfg.later_midnights_ns[0:len(table) - 1] = table[1:]
    c_cfg.arbitration_window_ns = arbitration_window_ns


# A sequence number jumping ahead further than MAX_SEQ_JUMP + MAX_SEQ_RATE * (seconds since the
# session's last packet) is suspect until confirmed (docs/design.md, "Sequencing rules"). The same
# numbers as TW_DEFAULT_MAX_SEQ_JUMP / _RATE in tickwire.h (a unit test holds them together).
DEFAULT_MAX_SEQ_JUMP = 1_000_000
DEFAULT_MAX_SEQ_RATE = 10_000_000


def validate_sequencing(max_seq_jump: int, max_seq_rate: int) -> None:
    for name, value, unit in (("max_seq_jump", max_seq_jump, "messages"),
                              ("max_seq_rate", max_seq_rate, "messages per second")):
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value < 2**64:
            raise ConfigError(f"{name} {value!r}: give a whole number of {unit} >= 1")


def fill_sequencing_config(c_cfg, max_seq_jump: int, max_seq_rate: int) -> None:
    """The plausibility bounds of a `struct tw_decoder_config` (after fill_decoder_config)."""
    c_cfg.max_seq_jump = max_seq_jump
    c_cfg.max_seq_rate = max_seq_rate


@dataclass(frozen=True)
class Rerequest:
    """The MoldUDP64 re-request server and how the engine asks it (docs/design.md "Gap recovery").

    A gap that no line filled is asked for again: cut into requests of at most max_messages (the
    server's limit), each waiting timeout_ms for its answer and sent at most `attempts` times in a
    row without one, every request charged against `rate` per second in bursts of up to `burst`.
    What is still missing after that is given up: counted in gaps and missing."""

    server: str                    # "ADDRESS:PORT", IPv4 unicast
    max_messages: int = 100
    timeout_ms: float = 20.0
    attempts: int = 3
    rate: int = 1000
    burst: int = 32

    @property
    def address(self) -> tuple[str, int]:
        host, sep, port = self.server.rpartition(":")
        if not sep:
            raise ConfigError(f"re-request server '{self.server}': expected ADDRESS:PORT, "
                              "for example 10.0.0.5:26400")
        try:
            address = ipaddress.IPv4Address(host)
            number = int(port)
        except ValueError:
            raise ConfigError(f"re-request server '{self.server}': expected an IPv4 ADDRESS:PORT, "
                              "for example 10.0.0.5:26400") from None
        if address.is_multicast or address.is_unspecified or address.is_reserved:
            raise ConfigError(f"re-request server '{self.server}': {address} is not a unicast "
                              "address (requests and answers are unicast)")
        if not 1 <= number <= 65535:
            raise ConfigError(f"re-request server '{self.server}': port {number} is out of range "
                              "1-65535")
        return str(address), number

    def validate(self) -> None:
        self.address  # noqa: B018  (raises on a bad server)
        checks = (("max_messages", self.max_messages, 1, 0xFFFE, "messages per request"),
                  ("attempts", self.attempts, 1, 100, "requests per range"),
                  ("rate", self.rate, 1, 1_000_000, "requests per second"),
                  ("burst", self.burst, 1, 1024, "requests"))
        for name, value, low, high, unit in checks:
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise ConfigError(f"re-request {name} {value!r}: give {low}..{high} {unit}")
        if not isinstance(self.timeout_ms, (int, float)) or not 0.01 <= self.timeout_ms <= 60_000:
            raise ConfigError(f"re-request timeout_ms {self.timeout_ms!r}: give 0.01..60000 ms")


def fill_rerequest_config(c_cfg, rerequest: Rerequest | None) -> None:
    """The re-request part of a `struct tw_decoder_config` (off when rerequest is None)."""
    r = c_cfg.rerequest
    if rerequest is None:
        r.enabled = 0
        return
    rerequest.validate()
    r.enabled = 1
    r.max_count = rerequest.max_messages
    r.timeout_ns = round(rerequest.timeout_ms * 1e6)
    r.attempts = rerequest.attempts
    r.rate = rerequest.rate
    r.burst = rerequest.burst


def _books_off():
    from .bookconfig import BooksConfig   # here, not at the top: bookconfig imports this module
    return BooksConfig()


def _power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


@dataclass
class EngineConfig:
    interface: str
    lines: list[Line]
    queue: int = 0
    xdp_mode: str = "auto"
    zero_copy: str = "auto"
    core: int | None = None
    hugepages: bool = False
    busy_poll: bool = True
    busy_poll_usec: int = 0
    busy_poll_budget: int = 0
    rt_priority: int = 0
    # Rings, libxdp's convention: every frame is stocked in the fill ring before the XDP program is
    # attached (fill ring = frame_count entries, at least twice the RX ring). While the poll thread
    # is off the CPU the kernel can deliver up to ring_size frames: 4096 hold a 4 ms stall at
    # 1 M packets/s (the engine's only losses under noise were ring-full drops).
    frame_count: int = 8192
    frame_size: int = 2048
    ring_size: int = 4096
    batch_size: int = 64
    # IANA zone of the exchange's midnight; None: the feed's exchange (America/New_York for NASDAQ
    # ITCH), "local": this node's zone.
    exchange_tz: str | None = None
    # The midnights themselves, rising (tests, replays); None: computed from exchange_tz at start.
    exchange_midnights: list[int] | None = None
    arbitration_window_ns: int = 2_000_000
    max_seq_jump: int = DEFAULT_MAX_SEQ_JUMP
    max_seq_rate: int = DEFAULT_MAX_SEQ_RATE
    rerequest: Rerequest | None = None   # None: a gap no line filled is final at once
    bpf_object: str = field(default_factory=lambda: os.path.join(os.path.dirname(__file__),
                                                                  "steer.bpf.o"))
    # Where the interface's shared steering program and maps are pinned (a bpffs directory every
    # engine of the node sees; /sys/fs/bpf is mounted when missing, as bpftool does).
    bpffs_root: str = DEFAULT_BPFFS_ROOT
    # Books and their stream (contracts C7, C8): <stream_root>/<feed>/events and /snapshot.
    feed: str = ""
    stream_root: str | None = None       # None: $TICKWIRE_STREAM_ROOT or /run/tickwire/streams
    books: "BooksConfig" = field(default_factory=_books_off)  # noqa: F821 (bookconfig.BooksConfig)

    def validate(self) -> None:
        """Check everything that can be checked before touching the kernel."""
        validate_lines(self.lines)
        if self.xdp_mode not in XDP_MODES:
            raise ConfigError(f"XDP mode '{self.xdp_mode}': use one of {', '.join(XDP_MODES)}")
        if self.zero_copy not in ZERO_COPY:
            raise ConfigError(f"zero-copy '{self.zero_copy}': use one of {', '.join(ZERO_COPY)}")
        if not 0 <= self.rt_priority <= 99:
            raise ConfigError(f"real-time priority {self.rt_priority}: use 1-99 (SCHED_FIFO) or 0 "
                              "for normal scheduling")
        if self.frame_size not in (2048, 4096):
            raise ConfigError(f"frame size {self.frame_size}: use 2048 or 4096")
        self._validate_rings()
        if self.core is not None:
            allowed = os.sched_getaffinity(0)
            if self.core not in allowed:
                raise ConfigError(f"core {self.core} is not available to this process "
                                  f"(allowed: {sorted(allowed)})")
        if not os.path.isabs(self.bpffs_root) or len(self.bpffs_root.encode()) > 200:
            raise ConfigError(f"bpffs root {self.bpffs_root!r}: give an absolute path of at most "
                              "200 bytes on a bpf filesystem")
        if not os.path.exists(self.bpf_object):
            raise ConfigError(f"XDP object {self.bpf_object} is missing: reinstall the package "
                              "(pip install -e .) so clang builds it")
        if self.exchange_midnights is not None:
            check_midnights(self.exchange_midnights)
        else:
            exchange_zone(self.exchange_tz)
        if not isinstance(self.arbitration_window_ns, int) or self.arbitration_window_ns < 0:
            raise ConfigError(f"arbitration window {self.arbitration_window_ns!r} ns: give a whole "
                              "number of nanoseconds >= 0")
        validate_sequencing(self.max_seq_jump, self.max_seq_rate)
        if self.rerequest is not None:
            self.rerequest.validate()
        self.books.validate()
        if self.books.enabled and self.feed:
            from .bookconfig import validate_feed_name
            validate_feed_name(self.feed)
        self._validate_interface()

    def midnights(self) -> list[int]:
        """The exchange midnights the decoder follows: given, or computed now from the zone."""
        if self.exchange_midnights is not None:
            return list(self.exchange_midnights)
        return exchange_midnights_ns(self.exchange_tz)

    def _validate_rings(self) -> None:
        if not _power_of_two(self.ring_size):
            raise ConfigError(f"ring_size {self.ring_size} (RX ring entries): must be a power of two, "
                              f"such as {EngineConfig.ring_size}")
        if not _power_of_two(self.frame_count) or self.frame_count < 2 * self.ring_size:
            raise ConfigError(f"frame_count {self.frame_count}: must be a power of two and at least "
                              f"twice ring_size ({2 * self.ring_size}): every frame is stocked in the "
                              "fill ring, which is at least twice the RX ring (libxdp's convention)")
        if not 1 <= self.batch_size <= self.ring_size:
            raise ConfigError(f"batch_size {self.batch_size}: must be 1..ring_size ({self.ring_size})")

    def _validate_interface(self) -> None:
        try:
            socket.if_nametoindex(self.interface)
        except OSError:
            present = ", ".join(sorted(name for _, name in socket.if_nameindex()))
            raise ConfigError(f"unknown interface '{self.interface}' (this namespace has: "
                              f"{present})") from None
        queues = rx_queue_count(self.interface)
        if queues is not None and not 0 <= self.queue < queues:
            raise ConfigError(f"queue {self.queue} is out of range: {self.interface} has "
                              f"{queues} RX queue(s), 0..{queues - 1}")


def rx_queue_count(interface: str) -> int | None:
    """RX queues of an interface from sysfs, or None where sysfs does not show it."""
    path = f"/sys/class/net/{interface}/queues"
    try:
        return sum(1 for entry in os.listdir(path) if entry.startswith("rx-"))
    except OSError:
        return None
