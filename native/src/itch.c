/* itch.c - NASDAQ TotalView-ITCH 5.0 message lengths.
 *
 * Every ITCH 5.0 message has a fixed length that its type letter decides. The lengths follow
 * from the field tables of the spec (section 4), e.g. Add Order 'A' = type 1 + stock locate 2 +
 * tracking number 2 + timestamp 6 + order reference 8 + side 1 + shares 4 + stock 8 + price 4 = 36.
 * A type missing here is not ITCH 5.0: the decoder counts it malformed.
 */
#include "tickwire.h"

static const uint8_t itch_lengths[128] = {
    /* 4.1 system event */
    ['S'] = 12,
    /* 4.2 stock related */
    ['R'] = 39, /* stock directory */
    ['H'] = 25, /* stock trading action */
    ['Y'] = 20, /* Reg SHO short sale price test restriction */
    ['L'] = 26, /* market participant position */
    ['V'] = 35, /* MWCB decline level */
    ['W'] = 12, /* MWCB status */
    ['K'] = 28, /* IPO quoting period update */
    ['J'] = 35, /* LULD auction collar */
    ['h'] = 21, /* operational halt */
    /* 4.3 add order */
    ['A'] = 36, /* no MPID attribution */
    ['F'] = 40, /* with MPID attribution */
    /* 4.4 modify order */
    ['E'] = 31, /* order executed */
    ['C'] = 36, /* order executed with price */
    ['X'] = 23, /* order cancel */
    ['D'] = 19, /* order delete */
    ['U'] = 35, /* order replace */
    /* 4.5 trades */
    ['P'] = 44, /* non-cross trade */
    ['Q'] = 40, /* cross trade */
    ['B'] = 19, /* broken trade */
    /* 4.6 net order imbalance indicator */
    ['I'] = 50,
    /* 4.7 retail price improvement indicator */
    ['N'] = 20,
    /* 4.8 direct listing with capital raise price discovery */
    ['O'] = 48,
};

uint32_t tw_itch_length(uint8_t type)
{
    return type < sizeof(itch_lengths) ? itch_lengths[type] : 0;
}
