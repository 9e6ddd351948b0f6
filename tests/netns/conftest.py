"""Fixtures shared by the netns tests."""
from __future__ import annotations

import pytest

from tests.support.agent_run import AgentProcess
from tests.support.netns import bpffs_mounted


@pytest.fixture
def agents():
    """Agents a test starts (append them): every one is killed with its engine at the end."""
    started: list[AgentProcess] = []
    yield started
    for agent in started:
        agent.kill_all()


@pytest.fixture
def bpffs_root(tmp_path):
    """The pin root for engines of this test, on a bpffs of its own (see bpffs_mounted)."""
    with bpffs_mounted(tmp_path / "bpffs") as root:
        yield root
