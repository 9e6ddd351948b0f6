"""Multicast endpoints and the sending socket (shared by `publish` and `replay`)."""
from __future__ import annotations

import ipaddress
import socket
import struct

SEND_BUFFER_BYTES = 4 << 20


class EndpointError(ValueError):
    pass


def parse_group_port(text: str, what: str = "endpoint") -> tuple[str, int]:
    """`GROUP:PORT` with GROUP an IPv4 multicast address (224.0.0.0/4) and PORT 1..65535."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise EndpointError(f"{what} {text!r} is not GROUP:PORT (e.g. 239.1.1.1:26477)")
    try:
        group = ipaddress.IPv4Address(host)
    except ValueError:
        raise EndpointError(f"{what} {text!r}: {host!r} is not an IPv4 address") from None
    if not group.is_multicast:
        raise EndpointError(f"{what} {text!r}: {group} is not a multicast group "
                            "(use 224.0.0.0-239.255.255.255, e.g. 239.x.x.x)")
    try:
        port = int(port_text)
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        raise EndpointError(f"{what} {text!r}: port {port_text!r} is not 1..65535")
    return str(group), port


def open_sender(*, iface: str | None = None, source_ip: str | None = None, ttl: int = 1,
                loop: bool = False) -> socket.socket:
    """A UDP socket whose multicast leaves through `iface` (or the interface owning `source_ip`).

    Multicast loopback is off unless asked for: on a trading host the feed must not echo back
    into local receivers. Raises EndpointError naming the bad interface or address.
    """
    if iface and source_ip:
        raise EndpointError("give either an interface or a source address, not both")
    if not 0 <= ttl <= 255:
        raise EndpointError(f"TTL must be 0..255, got {ttl}")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        if iface:
            try:
                index = socket.if_nametoindex(iface)
            except OSError:
                raise EndpointError(f"unknown interface {iface!r} (see `ip link`)") from None
            # struct ip_mreqn {multiaddr, address, ifindex}: by index, so an interface without
            # an IPv4 address works too.
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF,
                            struct.pack("4s4si", bytes(4), bytes(4), index))
        elif source_ip:
            try:
                packed = socket.inet_aton(source_ip)
                sock.bind((source_ip, 0))
            except OSError as exc:
                raise EndpointError(f"source address {source_ip!r} is not usable on this host "
                                    f"({exc.strerror or exc}); give an address of a local interface") from None
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, packed)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1 if loop else 0)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
    except BaseException:
        sock.close()
        raise
    return sock


def describe_send_error(exc: OSError, destination: tuple[str, int]) -> str:
    hint = ""
    if exc.errno in (101, 113):  # ENETUNREACH, EHOSTUNREACH
        hint = ("; there is no route for multicast: pass --iface, or add one "
                "(ip route add 224.0.0.0/4 dev IF)")
    return f"sending to {destination[0]}:{destination[1]} failed: {exc.strerror or exc}{hint}"
