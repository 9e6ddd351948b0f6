"""NASDAQ TotalView-ITCH 5.0 messages: every type of the spec, encoded and decoded.

Every message starts with the same 11-byte header: type (1 byte, an ASCII letter), stock locate
(2), tracking number (2) and a timestamp (6 bytes, nanoseconds since midnight, big endian). The
fields after the header are fixed per type, so each type has one exact length. Integers are big
endian; prices are unsigned 4-byte integers with 4 implied decimals (8-byte with 8 decimals for
the MWCB levels); alpha fields are ASCII, left-justified and padded with spaces.

The format table below is the single description of the layouts: encoders, decoders and the
lengths all come from it.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

HEADER_FORMAT = ">cHHHI"  # type, stock locate, tracking number, timestamp high 16 bits, low 32 bits
HEADER_LENGTH = 11
TIMESTAMP_OFFSET = 5      # where the 6-byte timestamp sits in every message
TIMESTAMP_LENGTH = 6
MAX_TIMESTAMP_NS = (1 << 48) - 1


@dataclass(frozen=True)
class MessageFormat:
    type: bytes              # the one-letter type, e.g. b"A"
    name: str                # snake_case name of the message in the spec
    fields: tuple[tuple[str, str], ...]  # (field name, struct code) after the common header
    struct: struct.Struct

    @property
    def length(self) -> int:
        return self.struct.size

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.fields)


def _format(type_letter: str, name: str, *fields: tuple[str, str]) -> MessageFormat:
    body = "".join(code for _, code in fields)
    return MessageFormat(type_letter.encode("ascii"), name, tuple(fields),
                         struct.Struct(HEADER_FORMAT + body))


STOCK = ("stock", "8s")

# Section 4 of the ITCH 5.0 specification, in its order.
FORMATS: dict[bytes, MessageFormat] = {f.type: f for f in (
    _format("S", "system_event", ("event_code", "c")),
    _format("R", "stock_directory", STOCK, ("market_category", "c"),
            ("financial_status_indicator", "c"), ("round_lot_size", "I"),
            ("round_lots_only", "c"), ("issue_classification", "c"), ("issue_sub_type", "2s"),
            ("authenticity", "c"), ("short_sale_threshold_indicator", "c"), ("ipo_flag", "c"),
            ("luld_reference_price_tier", "c"), ("etp_flag", "c"),
            ("etp_leverage_factor", "I"), ("inverse_indicator", "c")),
    _format("H", "stock_trading_action", STOCK, ("trading_state", "c"), ("reserved", "c"),
            ("reason", "4s")),
    _format("Y", "reg_sho_restriction", STOCK, ("reg_sho_action", "c")),
    _format("L", "market_participant_position", ("mpid", "4s"), STOCK,
            ("primary_market_maker", "c"), ("market_maker_mode", "c"),
            ("market_participant_state", "c")),
    _format("V", "mwcb_decline_level", ("level_1", "Q"), ("level_2", "Q"), ("level_3", "Q")),
    _format("W", "mwcb_status", ("breached_level", "c")),
    _format("K", "ipo_quoting_period_update", STOCK, ("ipo_quotation_release_time", "I"),
            ("ipo_quotation_release_qualifier", "c"), ("ipo_price", "I")),
    _format("J", "luld_auction_collar", STOCK, ("auction_collar_reference_price", "I"),
            ("upper_auction_collar_price", "I"), ("lower_auction_collar_price", "I"),
            ("auction_collar_extension", "I")),
    _format("h", "operational_halt", STOCK, ("market_code", "c"),
            ("operational_halt_action", "c")),
    _format("A", "add_order", ("order_reference_number", "Q"), ("buy_sell_indicator", "c"),
            ("shares", "I"), STOCK, ("price", "I")),
    _format("F", "add_order_mpid", ("order_reference_number", "Q"), ("buy_sell_indicator", "c"),
            ("shares", "I"), STOCK, ("price", "I"), ("attribution", "4s")),
    _format("E", "order_executed", ("order_reference_number", "Q"), ("executed_shares", "I"),
            ("match_number", "Q")),
    _format("C", "order_executed_with_price", ("order_reference_number", "Q"),
            ("executed_shares", "I"), ("match_number", "Q"), ("printable", "c"),
            ("execution_price", "I")),
    _format("X", "order_cancel", ("order_reference_number", "Q"), ("cancelled_shares", "I")),
    _format("D", "order_delete", ("order_reference_number", "Q"),),
    _format("U", "order_replace", ("original_order_reference_number", "Q"),
            ("new_order_reference_number", "Q"), ("shares", "I"), ("price", "I")),
    _format("P", "trade", ("order_reference_number", "Q"), ("buy_sell_indicator", "c"),
            ("shares", "I"), STOCK, ("price", "I"), ("match_number", "Q")),
    _format("Q", "cross_trade", ("shares", "Q"), STOCK, ("cross_price", "I"),
            ("match_number", "Q"), ("cross_type", "c")),
    _format("B", "broken_trade", ("match_number", "Q"),),
    _format("I", "noii", ("paired_shares", "Q"), ("imbalance_shares", "Q"),
            ("imbalance_direction", "c"), STOCK, ("far_price", "I"), ("near_price", "I"),
            ("current_reference_price", "I"), ("cross_type", "c"),
            ("price_variation_indicator", "c")),
    _format("N", "rpii", STOCK, ("interest_flag", "c")),
    _format("O", "dlcr_price_discovery", STOCK, ("open_eligibility_status", "c"),
            ("minimum_allowable_price", "I"), ("maximum_allowable_price", "I"),
            ("near_execution_price", "I"), ("near_execution_time", "Q"),
            ("lower_price_range_collar", "I"), ("upper_price_range_collar", "I")),
)}

TYPES: tuple[str, ...] = tuple(t.decode() for t in FORMATS)
LENGTHS: dict[str, int] = {t.decode(): f.length for t, f in FORMATS.items()}
_BY_NAME = {f.name: f for f in FORMATS.values()}


class ItchError(ValueError):
    """A message that cannot be encoded or decoded as ITCH 5.0."""


def message_format(type_or_name: str) -> MessageFormat:
    """The format of a type letter ("A", case matters: "h" is not "H") or a snake_case name."""
    fmt = FORMATS.get(type_or_name.encode("ascii", "replace")) or _BY_NAME.get(type_or_name)
    if fmt is None:
        raise ItchError(f"unknown ITCH 5.0 message type {type_or_name!r}; "
                        f"known types: {' '.join(TYPES)}")
    return fmt


def _field_value(fmt: MessageFormat, name: str, code: str, value):
    if code == "c" or code.endswith("s"):
        width = 1 if code == "c" else int(code[:-1])
        raw = value.encode("ascii") if isinstance(value, str) else bytes(value)
        if len(raw) > width:
            raise ItchError(f"{fmt.name}.{name}: {value!r} is longer than {width} byte(s)")
        return raw.ljust(width, b" ")
    return int(value)


def encode(type_or_name: str, *, stock_locate: int = 0, tracking_number: int = 0,
           timestamp_ns: int = 0, **fields) -> bytes:
    """One message from named fields. Alpha fields take str or bytes and are space-padded.

    Every field of the type must be given; an unknown or missing field name is an error.
    """
    fmt = message_format(type_or_name)
    missing = [n for n in fmt.field_names if n not in fields]
    unknown = [n for n in fields if n not in fmt.field_names]
    if missing or unknown:
        raise ItchError(f"{fmt.name}: missing fields {missing}, unknown fields {unknown}")
    if not 0 <= timestamp_ns <= MAX_TIMESTAMP_NS:
        raise ItchError(f"timestamp_ns {timestamp_ns} does not fit in 6 bytes")
    values = [_field_value(fmt, n, code, fields[n]) for n, code in fmt.fields]
    try:
        return fmt.struct.pack(fmt.type, stock_locate, tracking_number,
                               timestamp_ns >> 32, timestamp_ns & 0xFFFFFFFF, *values)
    except struct.error as exc:
        raise ItchError(f"{fmt.name}: {exc}") from None


def decode(message: bytes) -> dict:
    """Named fields of one message; alpha fields come back as str without their padding."""
    if not message:
        raise ItchError("empty message")
    fmt = FORMATS.get(bytes(message[:1]))
    if fmt is None:
        raise ItchError(f"unknown message type byte {bytes(message[:1])!r}")
    if len(message) != fmt.length:
        raise ItchError(f"{fmt.name} ({fmt.type.decode()}) must be {fmt.length} bytes, "
                        f"got {len(message)}")
    _, locate, tracking, ts_high, ts_low, *values = fmt.struct.unpack(message)
    out = {"type": fmt.type.decode(), "stock_locate": locate, "tracking_number": tracking,
           "timestamp_ns": (ts_high << 32) | ts_low}
    for (name, _), value in zip(fmt.fields, values):
        out[name] = value.decode("ascii", "replace").rstrip(" ") if isinstance(value, bytes) else value
    return out


def timestamp_of(message: bytes) -> int:
    """The 6-byte timestamp of any message (no type check)."""
    return int.from_bytes(message[TIMESTAMP_OFFSET:TIMESTAMP_OFFSET + TIMESTAMP_LENGTH], "big")
