"""Namespace helpers for tests: the product's VethPair, plus the CI rule that netns tests fail
instead of skipping when TICKWIRE_REQUIRE_NETNS=1."""
from __future__ import annotations

import os

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
