/* steer_meta.h - what the XDP steering program and user space share: the metadata it leaves in
 * front of each redirected frame, and the layout of its maps' keys and values.
 *
 * The metadata sits in the `sizeof(struct tw_xdp_meta)` bytes just before the frame's first byte
 * in the UMEM. The magic tells a real stamp from whatever an earlier frame left in that headroom.
 */
#ifndef TW_STEER_META_H
#define TW_STEER_META_H

#define TW_XDP_META_MAGIC 0x74774d31u /* "twM1" */

struct tw_xdp_meta {
	__u64 rx_ns;   /* bpf_ktime_get_ns(): CLOCK_MONOTONIC at XDP time */
	__u32 pad;
	__u32 magic;   /* last, so it is adjacent to the frame */
};

#define TW_MAX_FLOWS 1024   /* lines of all engines on one interface */
#define TW_MAX_QUEUES 256   /* RX queues an interface may steer to */

/* A line's flow. All fields in network order except vlan; 0 in source or vlan is a wildcard. */
struct tw_flow_key {
	__be32 group;
	__be32 source;
	__be16 port;
	__u16 vlan;    /* 802.1Q VLAN id 1..4094, or 0 for any */
};

struct tw_flow_target {
	__u32 queue;   /* the RX queue whose socket receives the flow */
	__u32 line;    /* 0 = A, 1 = B (for bpftool readers) */
};

struct tw_group_key {
	__be32 group;
	__be16 port;
	__u16 pad;
};

/* Which key shapes tw_flows holds for a (group, port), and the target of its any-source,
 * any-VLAN flow: the common case then costs a frame one lookup, as before flows were shared. */
#define TW_SHAPE_EXACT 1u        /* source and vlan given */
#define TW_SHAPE_ANY_SOURCE 2u   /* vlan given, any source */
#define TW_SHAPE_ANY_VLAN 4u     /* source given, any vlan */
#define TW_SHAPE_ANY 8u          /* any source, any vlan: its target is `any` */

struct tw_group {
	__u32 shapes;
	struct tw_flow_target any;
};

/* Informational: the owner of a queue, for messages. Liveness is an flock (steering.c). */
struct tw_queue_owner {
	__u32 pid;          /* in the owner's pid namespace */
	__u32 lines;        /* flows it steers */
	__u64 start_ticks;  /* /proc/PID/stat field 22: tells a recycled pid from the owner */
};

/* tw_counters slots */
#define TW_COUNTER_REDIRECTED 0
#define TW_COUNTER_PASSED 1       /* not any engine's flow: the kernel's */
#define TW_COUNTER_NO_META 2      /* redirected without a receive time */
#define TW_COUNTER_WRONG_QUEUE 3  /* a flow's frame on another queue than its owner's: passed */
#define TW_COUNTER_NO_SOCKET 4    /* a flow's queue has no socket (engine starting or killed): passed */
#define TW_COUNTERS 8

#endif
