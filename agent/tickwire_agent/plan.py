"""The plan: what the operator (or a person, in local mode) asks one agent to do.

A plan is a JSON document checked in two passes, and both report every problem at once, each
naming the field (as a path such as `lines[1].group`), what is wrong and how to fix it:

1. the JSON schema (plan.schema.json, the documented contract);
2. semantic checks a schema cannot express (a multicast group really is one, two lines do not
   carry the same flow, the exchange time zone exists, ...).

Checks against the host the agent runs on (does the interface exist, is the core online) live
in preflight.py: a plan can be valid and still not fit a particular machine.
"""
from __future__ import annotations

import ipaddress
import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jsonschema

from tickwire_engine.config import (EXCHANGE_TIMEZONES, LOCAL_ZONE, ConfigError, EngineConfig,  # the engine's own
                                    Line, Rerequest)

API_VERSION = "tickwire.dev/plan-v1"

MULTICAST = ipaddress.ip_network("224.0.0.0/4")
LOCAL_CONTROL_BLOCK = ipaddress.ip_network("224.0.0.0/24")   # never forwarded, no IGMP join
SSM_RANGE = ipaddress.ip_network("232.0.0.0/8")               # source-specific only (RFC 4607)


@dataclass(frozen=True)
class Problem:
    path: str
    message: str
    fix: str = ""

    def __str__(self) -> str:
        text = f"{self.path or '(plan)'}: {self.message}"
        return f"{text}; {self.fix}" if self.fix else text


class PlanError(ValueError):
    """A plan that cannot be used, with every problem found."""

    def __init__(self, problems: list[Problem], source: str = "plan"):
        self.problems = problems
        self.source = source
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source} is not a usable plan ({len(problems)} problem"
                         f"{'s' if len(problems) != 1 else ''}):\n{lines}")


@dataclass(frozen=True)
class FeedHandlerRef:
    namespace: str
    name: str
    generation: int
    uid: str | None = None


@dataclass(frozen=True)
class Hugepages:
    count: int = 0
    numa_node: int | None = None


@dataclass(frozen=True)
class BusyPoll:
    enabled: bool = True
    usec: int = 50
    budget: int = 64
    napi_defer_hard_irqs: int | None = None
    gro_flush_timeout_ns: int | None = None
    rt_priority: int = 0


@dataclass(frozen=True)
class Books:
    """The order books the engine builds and publishes (contract C8); enabled=False: none."""
    enabled: bool = False
    depth: int = 10
    symbols: tuple[str, ...] = ()        # empty: every instrument
    max_orders: int = 1 << 20
    max_instruments: int = 16384


STREAM_ROOT = "/run/tickwire/streams"    # the engine's default (contract C7)


@dataclass(frozen=True)
class Plan:
    feed: str
    protocol: str
    interface: str
    queue: int
    lines: tuple[Line, ...]
    cores: tuple[int, ...]
    feed_handler: FeedHandlerRef | None = None
    hugepages: Hugepages = field(default_factory=Hugepages)
    xdp_mode: str = "auto"
    zero_copy: str = "auto"
    busy_poll: BusyPoll = field(default_factory=BusyPoll)
    irq_affinity: tuple[int, ...] = ()
    latency_slo_p99_micros: float | None = None
    stale_after_seconds: float = 5.0
    exchange_timezone: str | None = None    # None: the protocol's exchange zone (the engine's default)
    metrics_address: str = "0.0.0.0"
    metrics_port: int = 9470
    restore_drift: bool = True
    status_interval_seconds: float = 5.0
    flow_steering: str = "auto"             # auto | ntuple | off (tuning/flow_steering.py)
    node_state_dir: str | None = None       # None: the agent's --node-state-dir
    books: Books = field(default_factory=Books)
    stream_root: str = STREAM_ROOT

    @property
    def stream_dir(self) -> str | None:
        """Where the engine publishes this feed's books (None: books off)."""
        return os.path.join(self.stream_root, self.feed) if self.books.enabled else None
    rerequest: Rerequest | None = None       # None: a declared gap is final (no re-request server)


@lru_cache(maxsize=1)
def schema() -> dict:
    # Beside this module, in the source tree and in the installed package alike (package-data).
    return json.loads(Path(__file__).with_name("plan.schema.json").read_text(encoding="utf-8"))


def load_file(path: str) -> Plan:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise PlanError([Problem("", f"cannot read {path}: {e.strerror}",
                                 "pass the path of a plan file (`tickwire-agent plan --example` writes one)")],
                        source=path) from None
    return loads(text, source=path)


def load_env(var: str) -> Plan:
    text = os.environ.get(var)
    if not text:
        raise PlanError([Problem("", f"environment variable {var} is empty or unset",
                                 "set it to the plan's JSON (the operator does this in the agent's Pod)")],
                        source=f"${var}")
    return loads(text, source=f"${var}")


def loads(text: str, source: str = "plan") -> Plan:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as e:
        raise PlanError([Problem("", f"not JSON: {e.msg} at line {e.lineno} column {e.colno}",
                                 "fix the syntax (a trailing comma or a missing quote is the usual cause)")],
                        source=source) from None
    return from_document(document, source=source)


def from_document(document: Any, source: str = "plan") -> Plan:
    problems = schema_problems(document)
    if not problems:
        problems = semantic_problems(document)
    if problems:
        raise PlanError(problems, source=source)
    return _build(document)


# ---- pass 1: the schema -------------------------------------------------------------------------

def schema_problems(document: Any) -> list[Problem]:
    validator = jsonschema.Draft202012Validator(schema(), format_checker=jsonschema.FormatChecker())
    errors = sorted(validator.iter_errors(document), key=lambda e: (list(map(str, e.absolute_path)), e.message))
    return [_explain(e) for e in errors]


def _path(parts) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _explain(error: jsonschema.ValidationError) -> Problem:
    path = _path(error.absolute_path)
    kind = error.validator
    if kind == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        return Problem(_path([*error.absolute_path, missing]), "is required but missing",
                       f"add it ({_describe(error.schema, missing)})")
    if kind == "additionalProperties":
        known = ", ".join(sorted(error.schema.get("properties", {})))
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        return Problem(_path([*error.absolute_path, extra[0]]) if len(extra) == 1 else path,
                       f"unknown field{'s' if len(extra) > 1 else ''} {', '.join(map(repr, extra))}",
                       f"remove it or fix the spelling; known fields here: {known}")
    if kind == "const":
        return Problem(path, f"is {error.instance!r}, this agent reads only {error.validator_value!r}",
                       f"set it to {error.validator_value!r} (or run an agent that knows this version)")
    if kind == "enum":
        choices = ", ".join(map(repr, error.validator_value))
        return Problem(path, f"is {error.instance!r}, not one of {choices}", "use one of those values")
    if kind == "format":
        return Problem(path, f"{error.instance!r} is not a valid {error.validator_value} address",
                       "write a dotted-quad IPv4 address such as 239.1.1.1")
    if kind == "oneOf" and path == "feedHandler":
        return Problem(path, "must be null or an object with namespace, name, uid and generation (>= 1)",
                       "set it to null in local mode, or name the FeedHandler this agent serves")
    if kind in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minItems", "maxItems",
                "minLength", "maxLength", "uniqueItems", "pattern", "type"):
        return Problem(path, error.message, _fix_for(kind, error))
    return Problem(path, error.message)


def _describe(schema_node: dict, name: str) -> str:
    prop = schema_node.get("properties", {}).get(name, {})
    return prop.get("description", "see `tickwire-agent plan --example`").rstrip(".")


def _fix_for(kind: str, error: jsonschema.ValidationError) -> str:
    if kind == "type":
        return f"write a value of type {error.validator_value}"
    if kind == "pattern":
        return "use lower-case letters, digits and '-', starting and ending with a letter or digit"
    if kind == "uniqueItems":
        return "list each value once"
    if kind in ("minItems", "maxItems"):
        return "line A alone, or lines A and B" if error.absolute_path and error.absolute_path[-1] == "lines" \
            else "change the number of items"
    return "bring the value into range"


# ---- pass 2: what a schema cannot say ---------------------------------------------------------

# The engine's UMEM with its default frames; hugepages below this leave it on normal pages.
UMEM_BYTES = EngineConfig.frame_count * EngineConfig.frame_size
UMEM_HUGEPAGES = -(-UMEM_BYTES // (2 << 20))

def semantic_problems(doc: dict) -> list[Problem]:
    problems: list[Problem] = []
    seen_names: dict[str, int] = {}
    seen_flows: dict[tuple[str, int], int] = {}
    for i, line in enumerate(doc["lines"]):
        where = f"lines[{i}]"
        if line["name"] in seen_names:
            problems.append(Problem(f"{where}.name", f"line {line['name']!r} is listed twice "
                                    f"(also lines[{seen_names[line['name']]}])", "name the lines A and B"))
        seen_names.setdefault(line["name"], i)
        group = ipaddress.ip_address(line["group"])
        if group not in MULTICAST:
            problems.append(Problem(f"{where}.group", f"{group} is not a multicast group",
                                    "use an address in 224.0.0.0/4 (239.0.0.0/8 for private feeds)"))
        elif group in LOCAL_CONTROL_BLOCK:
            problems.append(Problem(f"{where}.group", f"{group} is in 224.0.0.0/24, reserved for local "
                                    "network control (routers never forward it)", "use a group outside it"))
        source = line.get("source")
        if source is not None:
            addr = ipaddress.ip_address(source)
            if addr.is_multicast or addr.is_unspecified or addr == ipaddress.ip_address("255.255.255.255"):
                problems.append(Problem(f"{where}.source", f"{addr} cannot send multicast",
                                        "write the unicast address of the feed's sender, or null for any source"))
        elif group in SSM_RANGE:
            problems.append(Problem(f"{where}.source", f"{group} is in 232.0.0.0/8, which is "
                                    "source-specific multicast only", "set the feed's source address"))
        flow = (line["group"], line["port"])
        if flow in seen_flows:
            problems.append(Problem(f"{where}", f"carries the same group and port as lines[{seen_flows[flow]}]",
                                    "lines A and B must be distinct flows (different group or port)"))
        seen_flows.setdefault(flow, i)

    pages = doc.get("hugepages", {}).get("count", 0)
    if 0 < pages < UMEM_HUGEPAGES:
        problems.append(Problem("hugepages.count", f"{pages} page(s) cannot hold the engine's UMEM "
                                f"({UMEM_BYTES >> 20} MiB = {UMEM_HUGEPAGES} pages of 2 MiB)",
                                f"ask for at least {UMEM_HUGEPAGES}, or 0 to run on normal pages"))

    zone = doc.get("exchangeTimezone")
    if zone is not None and zone != LOCAL_ZONE:
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            problems.append(Problem("exchangeTimezone", f"{zone!r} is not a known IANA time zone",
                                    "use a name such as America/New_York, or null for the feed's "
                                    f"exchange ({EXCHANGE_TIMEZONES[doc['feed']['protocol']]})"))

    books = doc.get("books")
    if books and len(books["symbols"]) > books["maxInstruments"]:
        problems.append(Problem("books.symbols", f"{len(books['symbols'])} symbols listed, but the books "
                                f"hold only maxInstruments={books['maxInstruments']} instruments",
                                "raise books.maxInstruments or list fewer symbols"))
    rerequest = doc.get("rerequest")
    if rerequest is not None:
        try:
            _rerequest(rerequest).validate()
        except ConfigError as e:
            problems.append(Problem("rerequest", str(e), "give the exchange's re-request server as "
                                    "IPv4 ADDRESS:PORT, with limits in range"))

    address = doc.get("metrics", {}).get("address")
    if address is not None:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            problems.append(Problem("metrics.address", f"{address!r} is not an IP address",
                                    "use 0.0.0.0 (all interfaces) or 127.0.0.1 (this host only)"))
    return problems


def _rerequest(doc: dict | None) -> Rerequest | None:
    if doc is None:
        return None
    defaults = Rerequest("0.0.0.1:1")
    return Rerequest(doc["server"], max_messages=doc.get("maxMessages", defaults.max_messages),
                     timeout_ms=doc.get("timeoutMillis", defaults.timeout_ms),
                     attempts=doc.get("attempts", defaults.attempts),
                     rate=doc.get("rate", defaults.rate), burst=doc.get("burst", defaults.burst))


def _build(doc: dict) -> Plan:
    ref = doc.get("feedHandler")
    hp = doc.get("hugepages", {})
    bp = doc.get("busyPoll", {})
    metrics = doc.get("metrics", {})
    return Plan(
        feed=doc["feed"]["name"],
        protocol=doc["feed"]["protocol"],
        interface=doc["interface"],
        queue=doc["queue"],
        lines=tuple(Line(name=l["name"], group=l["group"], port=l["port"], source=l.get("source"),
                         vlan=l.get("vlan"))
                    for l in sorted(doc["lines"], key=lambda l: l["name"])),
        cores=tuple(doc["cores"]),
        feed_handler=FeedHandlerRef(ref["namespace"], ref["name"], ref["generation"], ref.get("uid"))
        if ref else None,
        hugepages=Hugepages(count=hp.get("count", 0), numa_node=hp.get("numaNode")),
        xdp_mode=doc.get("xdpMode", "auto"),
        zero_copy=doc.get("zeroCopy", "auto"),
        busy_poll=BusyPoll(enabled=bp.get("enabled", True), usec=bp.get("usec", 50),
                           budget=bp.get("budget", 64),
                           napi_defer_hard_irqs=bp.get("napiDeferHardIrqs"),
                           gro_flush_timeout_ns=bp.get("groFlushTimeoutNs"),
                           rt_priority=bp.get("rtPriority", 0)),
        irq_affinity=tuple(doc.get("irqAffinity", ())),
        latency_slo_p99_micros=doc.get("latencySLO", {}).get("p99Micros"),
        stale_after_seconds=doc.get("staleAfterSeconds", 5.0),
        exchange_timezone=doc.get("exchangeTimezone"),
        metrics_address=metrics.get("address", "0.0.0.0"),
        metrics_port=metrics.get("port", 9470),
        restore_drift=doc.get("restoreDrift", True),
        status_interval_seconds=doc.get("statusIntervalSeconds", 5.0),
        flow_steering=doc.get("flowSteering", "auto"),
        node_state_dir=doc.get("nodeStateDir"),
        books=_books(doc.get("books")),
        stream_root=doc.get("streamRoot", STREAM_ROOT),
        rerequest=_rerequest(doc.get("rerequest")),
    )


def _books(books: dict | None) -> Books:
    if not books:
        return Books()
    return Books(enabled=books["enabled"], depth=books["depth"], symbols=tuple(books["symbols"]),
                 max_orders=books["maxOrders"], max_instruments=books["maxInstruments"])
