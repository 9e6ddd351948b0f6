"""Fixtures shared by the netns tests."""
from __future__ import annotations

import pytest

from tests.support.agent_run import AgentProcess


@pytest.fixture
def agents():
    """Agents a test starts (append them): every one is killed with its engine at the end."""
    started: list[AgentProcess] = []
    yield started
    for agent in started:
        agent.kill_all()
