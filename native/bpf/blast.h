/* blast.h - what the blast generator's XDP program (blast.bpf.c) and its loader (blast/blast.c)
 * share: the pool entry layout and the program's global state. */
#ifndef TICKWIRE_BLAST_H
#define TICKWIRE_BLAST_H

#define BLAST_MAX_FRAME 1514      /* Ethernet + IPv4 + UDP + MoldUDP64 payload, MTU 1500 */
#define BLAST_MAX_MSGS 32         /* ITCH messages one pool packet may carry */
#define BLAST_POOL_MAX 8192       /* pool entries (frames) */
#define BLAST_HEADERS_LEN 42      /* Ethernet 14 + IPv4 20 + UDP 8 */
#define BLAST_MOLD_SEQ_OFFSET (BLAST_HEADERS_LEN + 10)
#define BLAST_ITCH_TIMESTAMP_OFFSET 5  /* within an ITCH message: the 6-byte timestamp */

/* One prepared frame: complete headers and payload; the program writes only the MoldUDP64
 * sequence number and each message's ITCH timestamp. */
struct blast_entry {
	__u16 len;                        /* frame bytes */
	__u16 n_msgs;
	__u16 stamp_off[BLAST_MAX_MSGS];  /* frame offset of each message's ITCH timestamp */
	__u8 frame[BLAST_MAX_FRAME];
};

/* The program's globals (.bss), read and written by the loader through the mmapped map between
 * runs. Frames are counted here, by the program, so the ledger is exact even when a run is cut
 * short by a signal. */
struct blast_state {
	__u64 next_seq;        /* MoldUDP64 sequence number of the next frame's first message */
	__u64 frames;          /* frames redirected so far */
	__u64 messages;        /* messages in them */
	__u64 aborted;         /* frames the program could not build (pool not loaded, ...) */
	__s64 stamp_offset_ns; /* bpf_ktime_get_ns() + this = ns since the exchange's midnight */
	__u32 pool_size;       /* entries used in blast_pool; frame i uses entry i % pool_size */
	__u32 target_ifindex;  /* where frames are redirected: the exchange side of the veth */
	__u64 refused;         /* frames the target device refused (xdp_devmap_xmit drops) */
	__u32 loader_tgid;     /* the loader's process: only its redirects are counted */
	__u32 pad;
};

#endif
