"""spec.books from the FeedHandler to the plan and the agent Pod (contract C8): the plan carries the
books and where the stream goes, the Pod mounts exactly that feed's stream directory and asks for
the books' memory; a FeedHandler without books keeps the plan (and so the Pod) it had before."""
from __future__ import annotations


import jsonschema
import kubernetes_validate
import pytest

from tests.e2e.test_operator_parts import PLAN_SCHEMA, _host_paths, _pod, feedhandler, node
from tickwire_operator import sizing
from tickwire_operator.inventory import read_node
from tickwire_operator.placement import place
from tickwire_operator.plan import build_plan, plan_hash
from tickwire_operator.pod import AgentSettings, build_agent_pod
from tickwire_operator.spec import InvalidSpec, validated_spec

BOOKS = {"enabled": True, "depth": 5, "symbols": ["AAPL", "MSFT"], "maxOrders": 2_000_000, "maxInstruments": 100}
STREAM = "/run/tickwire/streams/feeds/fh-a"


def test_books_are_defaulted_and_checked_like_the_api_server_would():
    spec = validated_spec(feedhandler(books={"enabled": True}))
    assert spec["books"] == {"enabled": True, "depth": 10, "maxOrders": 1048576, "maxInstruments": 16384}
    with pytest.raises(InvalidSpec, match="more symbols than spec.books.maxInstruments"):
        validated_spec(feedhandler(books={"enabled": True, "symbols": ["A", "B", "C"], "maxInstruments": 2}))
    with pytest.raises(InvalidSpec, match=r"spec.books.symbols\[0\]"):
        validated_spec(feedhandler(books={"enabled": True, "symbols": ["TOOLONGSYM"]}))
    with pytest.raises(InvalidSpec, match="spec.books.maxInstruments"):
        validated_spec(feedhandler(books={"enabled": True, "maxInstruments": 65536}))   # stock locate: 16 bits


def test_the_plan_carries_the_books_and_a_stream_root_per_namespace():
    plan, _ = _pod(books=BOOKS)
    jsonschema.Draft202012Validator(PLAN_SCHEMA, format_checker=jsonschema.FormatChecker()).validate(plan)
    assert plan["books"] == BOOKS
    # <root>/<namespace>: the engine adds the feed's name, so fh-a of namespace "feeds" publishes
    # in /run/tickwire/streams/feeds/fh-a and an fh-a of another namespace elsewhere.
    assert plan["streamRoot"] == "/run/tickwire/streams/feeds"
    other = feedhandler(books=BOOKS)
    other["metadata"]["namespace"] = "team-b"
    valid = validated_spec(other)
    assert build_plan(other, valid, place(valid, {"n1": read_node(node("n1"))}, []))["streamRoot"] == \
        "/run/tickwire/streams/team-b"


@pytest.mark.parametrize("books", [None, {"enabled": False}, {"enabled": False, "depth": 3}])
def test_without_books_the_plan_is_the_one_of_before(books):
    """An operator upgrade must not replace running agent Pods: their plan hash stays."""
    plain, _ = _pod()
    spec = {} if books is None else {"books": books}
    plan, pod = _pod(**spec)
    assert "books" not in plan and "streamRoot" not in plan
    assert plan_hash(plan) == plan_hash(plain)
    assert "stream" not in {v["name"] for v in pod["spec"]["volumes"]}


def test_the_pod_mounts_its_own_stream_directory_writable_and_nothing_around_it():
    plan, pod = _pod(books=BOOKS)
    mounted = _host_paths(pod)
    assert mounted[STREAM] == ("DirectoryOrCreate", STREAM, True)     # same path inside as on the node
    assert not any(p != STREAM and p.startswith("/run/tickwire/streams") for p in mounted)
    kubernetes_validate.validate(pod, kubernetes_validate.latest_version(), strict=True)


def test_the_stream_root_comes_from_the_operator_settings(tmp_path):
    body = feedhandler(books=BOOKS)
    valid = validated_spec(body)
    allocation = place(valid, {"n1": read_node(node("n1"))}, [])
    settings = AgentSettings.from_env({"TICKWIRE_AGENT_STREAM_ROOT": str(tmp_path)})
    plan = build_plan(body, valid, allocation, settings.stream_root)
    pod = build_agent_pod(body, allocation, plan, settings)
    assert str(tmp_path / "feeds" / "fh-a") in _host_paths(pod)


def test_the_pod_asks_for_the_books_memory():
    _, plain = _pod()
    _, books = _pod(books=BOOKS)
    memory = [p["spec"]["containers"][0]["resources"] for p in (plain, books)]
    assert memory[0]["requests"]["memory"] == memory[0]["limits"]["memory"] == "256Mi"
    # 2,000,001 order slots * (32 + 40) B + an index of 2^22 slots * 16 B + 100 instruments *
    # (128 B + a 256 B snapshot entry at depth 5) + the 256 KiB locate index + two 256 B headers
    # + a ring of 2^20 events * 64 B = 278,518,856 B: 266 MiB, on top of the agent's 256 MiB.
    assert memory[1]["requests"]["memory"] == memory[1]["limits"]["memory"] == "522Mi"


def test_books_memory_grows_with_each_size():
    base = sizing.books_bytes(BOOKS)
    assert sizing.books_bytes({**BOOKS, "maxOrders": BOOKS["maxOrders"] + 1}) - base == 72   # same index
    assert sizing.books_bytes({**BOOKS, "maxOrders": 2**21 + 1}) - base == \
        (2**21 + 1 - BOOKS["maxOrders"]) * 72 + 2**22 * 16                          # the index doubles
    assert sizing.books_bytes({**BOOKS, "maxInstruments": 200}) - base == 100 * (128 + 256)
    assert sizing.books_bytes({**BOOKS, "depth": 7}) - base == 100 * 64    # 304 B: the next cache line
    assert sizing.books_bytes({**BOOKS, "enabled": False}) == sizing.books_bytes(None) == 0
