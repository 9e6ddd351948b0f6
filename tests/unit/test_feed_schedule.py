"""The plan of tickwire-feed and its ground-truth summary.

Each test builds a plan, "sends" it (hands every chunk to the Ledger, as the publisher does) and
then recomputes every summary number by brute force from the bytes of the planned packets:
decoding each packet, collecting sequence numbers per line in sets, and counting runs. The two
must agree, and the faults must be visible in the bytes where the docstrings say they are.
"""
from collections import Counter

import pytest

from tickwire_feed import itch, moldudp64
from tickwire_feed.ledger import Ledger
from tickwire_feed.market import Mix
from tickwire_feed.schedule import Schedule, ScheduleConfig, ScheduleError


def run_plan(config: ScheduleConfig, chunk_packets: int = 64, heartbeat: bool = False):
    schedule = Schedule(config)
    ledger = Ledger(config.start_seq, config.lines)
    sent = []
    while chunk := schedule.next_chunk(chunk_packets):
        ledger.record(chunk)
        sent.extend(chunk)
    if heartbeat:
        ledger.record_heartbeat(schedule.next_seq)
    return sent, ledger.summary()


def brute_force(sent, config: ScheduleConfig, announced_by_heartbeat: bool = False) -> dict:
    """Every summary number, from decoded bytes and Python sets only."""
    per_line = [set() for _ in range(config.lines)]
    scheduled, copies_per_line, packets = set(), 0, Counter()
    messages_of: dict[int, bytes] = {}
    duplicate_copies = 0
    for t in sent:
        packet = moldudp64.decode_packet(bytes(t.payload))
        seqs = range(packet.sequence, packet.sequence + packet.count)
        scheduled.update(seqs)
        messages_of.update(zip(seqs, packet.messages))
        for line in t.lines:
            per_line[line].update(seqs)
            packets[line] += 1
            copies_per_line += packet.count
            duplicate_copies += packet.count if t.is_copy else 0
    delivered = set().union(*per_line)
    first, last = config.start_seq, max(scheduled)
    everything = set(range(first, last + 1))
    undelivered = everything - delivered
    window_end = last if announced_by_heartbeat else max(delivered)
    window = range(min(delivered), window_end + 1)
    runs, previous_missing = [], False
    for seq in window:
        missing = seq in undelivered
        if missing and previous_missing:
            runs[-1] += 1
        elif missing:
            runs.append(1)
        previous_missing = missing

    def is_malformed(message: bytes) -> bool:
        fmt = itch.FORMATS.get(message[:1])
        return fmt is None or len(message) != fmt.length

    by_type = Counter(chr(messages_of[s][0]) for s in delivered if not is_malformed(messages_of[s]))
    lost_all = scheduled - delivered
    return {
        "first_seq": first,
        "last_seq": last,
        "messages_scheduled": len(scheduled),
        "messages_sent": len(delivered),
        "messages_by_type": dict(sorted(by_type.items())),
        "malformed_sent": sum(is_malformed(messages_of[s]) for s in delivered),
        "packets_sent": {"AB"[i]: packets[i] for i in range(config.lines)},
        "gap_numbers_injected": len(everything - scheduled),
        "lost_on_a": len(scheduled - per_line[0]),
        "lost_on_b": len(scheduled - per_line[1]) if config.lines == 2 else 0,
        "lost_on_all_lines": len(lost_all),
        "covered_by_other_line": (len((scheduled - per_line[0]) & per_line[1])
                                  + len((scheduled - per_line[1]) & per_line[0])
                                  if config.lines == 2 else 0),
        "missing_injected": len(undelivered),
        "duplicates_sent": duplicate_copies,
        "expected_duplicates": copies_per_line - len(delivered),
        "expected_gaps": len(runs),
        "expected_missing": sum(runs),
        "leading_missing": sum(1 for s in undelivered if s < min(delivered)),
        "trailing_missing": sum(1 for s in undelivered if s > window_end),
        "first_delivered_seq": min(delivered),
        "last_announced_seq": window_end,
    }


def assert_summary_matches(summary: dict, expected: dict):
    mismatches = {k: (summary[k], v) for k, v in expected.items() if summary[k] != v}
    assert not mismatches, f"summary vs brute force: {mismatches}"


def test_plain_feed_is_contiguous_and_gap_free():
    config = ScheduleConfig(messages=1000, per_packet=3, start_seq=500)
    sent, summary = run_plan(config)
    assert_summary_matches(summary, brute_force(sent, config))
    seqs = [moldudp64.decode_packet(bytes(t.payload)).sequence for t in sent]
    assert seqs == list(range(500, 1500, 3))
    assert summary["last_seq"] == 1499 and summary["next_seq"] == 1500
    assert summary["messages_sent"] == 1000
    assert summary["expected_gaps"] == summary["missing_injected"] == 0
    assert sum(summary["messages_by_type"].values()) == 1000


def test_injected_gaps_skip_numbers_on_every_line_and_never_at_the_end():
    config = ScheduleConfig(messages=100, per_packet=2, lines=2, gap_every=10, gap_size=3)
    sent, summary = run_plan(config)
    assert_summary_matches(summary, brute_force(sent, config))
    # 50 packets, a gap after packets 10, 20, 30, 40 (not after the last one, 50).
    assert summary["gaps_injected"] == 4 and summary["gap_numbers_injected"] == 12
    assert summary["expected_gaps"] == 4 and summary["expected_missing"] == 12
    assert summary["last_seq"] == 100 + 12
    firsts = [moldudp64.decode_packet(bytes(t.payload)).sequence for t in sent if 0 in t.lines]
    jumps = [b - a for a, b in zip(firsts, firsts[1:]) if b - a != 2]
    assert jumps == [5, 5, 5, 5]


def test_loss_on_both_lines_with_coverage_gaps_and_merged_runs():
    config = ScheduleConfig(messages=5000, per_packet=2, lines=2, loss_a=20, loss_b=30,
                            gap_every=7, gap_size=2, seed=42)
    sent, summary = run_plan(config, heartbeat=True)
    assert_summary_matches(summary, brute_force(sent, config, announced_by_heartbeat=True))
    assert summary["covered_by_other_line"] > 0 and summary["lost_on_all_lines"] > 0
    # An injected gap next to a packet lost on both lines is one event, not two.
    assert summary["expected_gaps"] < summary["gaps_injected"] + summary["lost_on_all_lines"] // 2
    assert summary["missing_injected"] == summary["gap_numbers_injected"] + summary["lost_on_all_lines"]


def test_duplicates_resend_identical_bytes_on_the_same_lines():
    config = ScheduleConfig(messages=300, per_packet=1, lines=2, duplicate_every=10, loss_a=10)
    sent, summary = run_plan(config)
    assert_summary_matches(summary, brute_force(sent, config))
    copies = [i for i, t in enumerate(sent) if t.is_copy]
    assert len(copies) == 30
    for i in copies:
        assert sent[i].payload is sent[i - 1].payload and sent[i].lines == sent[i - 1].lines
        assert sent[i].stamps == ()  # a copy is never re-stamped
    assert summary["duplicates_sent"] == sum(len(sent[i].lines) for i in copies)


def test_reordering_swaps_adjacent_packets_without_creating_gaps():
    config = ScheduleConfig(messages=200, per_packet=2, reorder_every=5, duplicate_every=4)
    sent, summary = run_plan(config, chunk_packets=3)  # small chunks: pairs must not be split
    assert_summary_matches(summary, brute_force(sent, config))
    originals = [moldudp64.decode_packet(bytes(t.payload)).sequence for t in sent if not t.is_copy]
    backwards = sum(1 for a, b in zip(originals, originals[1:]) if b < a)
    # 100 packets: 5, 10, ..., 95 swap with their follower; packet 100 has none.
    assert backwards == summary["reordered"] == 19
    assert sorted(originals) == list(range(1, 201, 2))
    assert summary["expected_gaps"] == 0


def test_malformed_messages_occupy_sequence_numbers():
    config = ScheduleConfig(messages=1000, per_packet=4, malformed_every=50)
    sent, summary = run_plan(config)
    assert_summary_matches(summary, brute_force(sent, config))
    assert summary["malformed_sent"] == 20
    assert summary["messages_sent"] == 1000 == sum(summary["messages_by_type"].values()) + 20


def test_tail_losses_are_only_visible_after_a_heartbeat():
    # Pick the first seed whose plan loses its last packet on the only line.
    for seed in range(1, 200):
        config = ScheduleConfig(messages=40, per_packet=1, loss_a=30, seed=seed)
        sent, summary = run_plan(config)
        if not sent[-1].lines:
            break
    else:
        pytest.fail("no seed in 1..199 loses the last packet at 30% loss")
    assert summary["trailing_missing"] > 0
    assert_summary_matches(summary, brute_force(sent, config))
    _, with_heartbeat = run_plan(config, heartbeat=True)
    assert with_heartbeat["trailing_missing"] == 0
    assert with_heartbeat["expected_missing"] == summary["expected_missing"] + summary["trailing_missing"]


def test_everything_at_once_matches_brute_force():
    config = ScheduleConfig(messages=20_000, per_packet=3, lines=2, loss_a=5, loss_b=5,
                            gap_every=50, gap_size=2, duplicate_every=30, reorder_every=40,
                            malformed_every=97, start_seq=1_000_000, seed=9)
    sent, summary = run_plan(config, chunk_packets=100)
    assert_summary_matches(summary, brute_force(sent, config))


def test_plans_are_reproducible_and_lines_are_independent():
    def fingerprint(config):
        sent, _ = run_plan(config)
        return [(bytes(t.payload), t.lines) for t in sent]

    base = ScheduleConfig(messages=500, lines=2, loss_a=10, loss_b=10, seed=5)
    assert fingerprint(base) == fingerprint(base)
    other_seed = fingerprint(ScheduleConfig(messages=500, lines=2, loss_a=10, loss_b=10, seed=6))
    assert other_seed != fingerprint(base)
    more_loss_on_b = fingerprint(ScheduleConfig(messages=500, lines=2, loss_a=10, loss_b=60, seed=5))
    assert [(p, 0 in lines) for p, lines in more_loss_on_b] == [(p, 0 in lines) for p, lines in fingerprint(base)]


def test_adds_mix_sends_only_add_orders():
    config = ScheduleConfig(messages=100, mix=Mix.parse("adds"))
    _, summary = run_plan(config)
    assert summary["messages_by_type"] == {"A": 100}


@pytest.mark.parametrize("kwargs, problem", [
    ({"per_packet": 0}, "--per-packet"),
    ({"loss_a": 101}, "--loss-a"),
    ({"loss_b": 5}, "needs a line B"),
    ({"reorder_every": 1}, "--reorder-every"),
    ({"gap_size": 0}, "--gap-size"),
    ({"session": "WAYTOOLONGSESSION"}, "--session"),
    ({"start_seq": 0}, "--start-seq"),
])
def test_bad_plans_are_refused_with_the_option_named(kwargs, problem):
    with pytest.raises(ScheduleError, match=problem):
        Schedule(ScheduleConfig(messages=10, **kwargs))


def test_big_packets_are_cut_to_fit_one_mtu_without_losing_a_message():
    config = ScheduleConfig(messages=5000, per_packet=200, lines=2, loss_a=3, gap_every=4,
                            malformed_every=33)
    sent, summary = run_plan(config)
    assert_summary_matches(summary, brute_force(sent, config))
    sizes = [len(t.payload) for t in sent]
    counts = [t.count for t in sent]
    assert max(sizes) <= 1472 and min(counts[:-1]) > 20  # full packets, all within one MTU
    assert summary["messages_scheduled"] == 5000
