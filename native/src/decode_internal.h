/* decode_internal.h - wire-format constants and big-endian readers shared by the decoder's C files.
 * Not part of the API (tickwire.h is): cffi never sees this header.
 */
#ifndef TICKWIRE_DECODE_INTERNAL_H
#define TICKWIRE_DECODE_INTERNAL_H

#include <stdint.h>

/* Ethernet and VLAN tags */
#define ETH_HEADER_LEN 14u
#define ETH_TYPE_OFFSET 12u
#define ETH_TYPE_IPV4 0x0800u
#define ETH_TYPE_VLAN 0x8100u   /* 802.1Q */
#define ETH_TYPE_QINQ 0x88a8u   /* 802.1ad service tag */
#define VLAN_TAG_LEN 4u
#define MAX_VLAN_TAGS 2u

/* IPv4 and UDP */
#define IPV4_MIN_HEADER_LEN 20u
#define IPV4_PROTO_UDP 17u
#define IPV4_FLAG_MF 0x2000u
#define IPV4_FRAG_OFFSET_MASK 0x1fffu
#define UDP_HEADER_LEN 8u

/* MoldUDP64: session (10) + sequence number (8) + message count (2), then count blocks of
 * (length (2), message). */
#define MOLD_SESSION_LEN 10u
#define MOLD_SEQ_OFFSET 10u
#define MOLD_COUNT_OFFSET 18u
#define MOLD_HEADER_LEN 20u
#define MOLD_BLOCK_LEN_SIZE 2u
#define MOLD_HEARTBEAT_COUNT 0u
#define MOLD_END_OF_SESSION_COUNT 0xffffu

/* ITCH 5.0: type (1), stock locate (2), tracking number (2), timestamp (6, ns since midnight) */
#define ITCH_TIMESTAMP_OFFSET 5u

static inline uint16_t rd_be16(const uint8_t *p)
{
    return (uint16_t)((uint16_t)p[0] << 8 | p[1]);
}

static inline uint32_t rd_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline uint64_t rd_be48(const uint8_t *p)
{
    return (uint64_t)rd_be16(p) << 32 | rd_be32(p + 2);
}

static inline uint64_t rd_be64(const uint8_t *p)
{
    return (uint64_t)rd_be32(p) << 32 | rd_be32(p + 4);
}

#endif
