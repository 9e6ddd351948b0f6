"""Who holds a TCP port: so that "metrics port taken" names the holder, not only the port.

Every agent of a node runs on the host network, and each binds exactly the port its plan names
(the operator allocates them per node). When that bind fails, the listening socket is found in
/proc/net/tcp{,6} (this network namespace) and its inode in some process's fd table. In a Pod
without the host's pid namespace the process is not visible: the answer then says so.
"""
from __future__ import annotations

import os

LISTEN = "0A"


def listening_inodes(port: int, proc: str = "/proc") -> set[int]:
    """Inodes of the sockets listening on TCP `port` (IPv4 and IPv6)."""
    inodes = set()
    for table in ("net/tcp", "net/tcp6"):
        try:
            with open(os.path.join(proc, table), encoding="ascii") as f:
                rows = f.read().splitlines()[1:]
        except FileNotFoundError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) < 10 or fields[3] != LISTEN:
                continue
            if int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(int(fields[9]))
    return inodes


def socket_owners(inodes: set[int], proc: str = "/proc") -> list[tuple[int, str]]:
    """[(pid, command name)] of the processes that have one of these sockets open."""
    wanted = {f"socket:[{i}]" for i in inodes}
    owners = []
    for name in os.listdir(proc):
        if not name.isdigit():
            continue
        fd_dir = os.path.join(proc, name, "fd")
        try:
            links = {os.readlink(os.path.join(fd_dir, fd)) for fd in os.listdir(fd_dir)}
            if not links & wanted:
                continue
            with open(os.path.join(proc, name, "comm"), encoding="utf-8", errors="replace") as f:
                owners.append((int(name), f.read().strip()))
        except OSError:   # gone meanwhile, or not ours to look at
            continue
    return sorted(owners)


def describe_listener(port: int, proc: str = "/proc") -> str | None:
    """'pid 1234 (python3)', 'a process this agent cannot see (socket inode N)', or None."""
    inodes = listening_inodes(port, proc)
    if not inodes:
        return None
    owners = socket_owners(inodes, proc)
    if not owners:
        return f"a process this agent cannot see (socket inode {min(inodes)})"
    return ", ".join(f"pid {pid} ({comm})" for pid, comm in owners)
