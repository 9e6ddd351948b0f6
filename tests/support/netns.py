"""Namespace helpers for tests: the product's VethPair, plus the CI rule that netns tests fail
instead of skipping when TICKWIRE_REQUIRE_NETNS=1."""
from __future__ import annotations

import contextlib
import os
import subprocess

import pytest

from tickwire_demo.localnet import VethPair as _VethPair, netns_available, sh  # noqa: F401


def require_netns() -> None:
    """Skip when namespaces are unavailable, but fail when TICKWIRE_REQUIRE_NETNS=1 (CI)."""
    ok, why = netns_available()
    if ok:
        return
    if os.environ.get("TICKWIRE_REQUIRE_NETNS") == "1":
        pytest.fail(f"TICKWIRE_REQUIRE_NETNS=1 but {why}")
    pytest.skip(why)


class VethPair(_VethPair):
    def create(self):
        require_netns()
        return super().create()


@contextlib.contextmanager
def bpffs_mounted(where):
    """A private bpf filesystem at `where` (created), unmounted at the end: the pin root of the
    engines a test starts (`--bpffs-root WHERE/tickwire`). Mounted in this (the host's) mount
    namespace, so every `ip netns exec` child sees the same instance, as engines on one node see
    the host's /sys/fs/bpf."""
    os.makedirs(where, exist_ok=True)
    subprocess.run(["mount", "-t", "bpf", "bpf", str(where)], check=True)
    try:
        yield os.path.join(str(where), "tickwire")
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)
