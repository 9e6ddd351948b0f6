"""ITCH 5.0 message lengths: the C table against the spec's, the spec's against real captures, and
each type decoded and counted."""
import glob
import os

import pytest

from tests.support import frames as F
from tickwire_engine._native import lib
from tickwire_engine.decoder import Decoder, FrameResult
from tests.support.testdata import CAPTURES_DIR

CAPTURES = CAPTURES_DIR


def test_every_itch50_type_has_its_spec_length():
    assert len(F.ITCH_LENGTHS) == 23
    for letter, length in F.ITCH_LENGTHS.items():
        assert lib.tw_itch_length(ord(letter)) == length, letter


def test_other_bytes_are_unknown():
    known = {ord(t) for t in F.ITCH_LENGTHS}
    for byte in range(256):
        if byte not in known:
            assert lib.tw_itch_length(byte) == 0, f"type {byte:#x} should be unknown"


@pytest.mark.skipif(not os.path.isdir(CAPTURES), reason=f"{CAPTURES} is absent (shared test data)")
def test_real_messages_have_the_spec_lengths():
    seen = set()
    for path in glob.glob(os.path.join(CAPTURES, "*", "*.pcap")):
        for eth in F.read_pcap(path):
            for message in F.mold_fields(F.udp_of(eth)[2])[2]:
                letter = chr(message[0])
                assert len(message) == F.ITCH_LENGTHS[letter], f"{path}: {letter}"
                seen.add(letter)
    assert len(seen) >= 15  # the captures cover most types


def test_each_type_decodes_and_is_counted_by_type():
    dec = Decoder([("A", "239.1.1.1", 5000)])
    messages = [F.itch(letter) for letter in F.ITCH_LENGTHS for _ in range(2)]
    assert dec.decode_frame(F.frame(F.mold(1, messages)), now=(1, 1)) is FrameResult.DATA
    stats = dec.stats()
    assert stats["messages"] == 46 and stats["malformed"] == 0
    assert stats["messages_by_type"] == {letter: 2 for letter in F.ITCH_LENGTHS}


@pytest.mark.parametrize("letter", sorted(F.ITCH_LENGTHS))
def test_one_byte_off_is_bad_length(letter):
    dec = Decoder([("A", "239.1.1.1", 5000)])
    good = F.ITCH_LENGTHS[letter]
    dec.decode_mold(0, F.mold(1, [F.itch(letter, length=good - 1), F.itch(letter, length=good + 1)]),
                    now=(1, 1))
    stats = dec.stats()
    assert stats["malformed_by_reason"]["itch_bad_length"] == 2
    assert stats["messages"] == 0
