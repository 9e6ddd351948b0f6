/* steer_meta.h - the metadata the XDP program leaves in front of each redirected frame.
 * Shared by the BPF program and the engine: it sits in the `sizeof(struct tw_xdp_meta)` bytes
 * just before the frame's first byte in the UMEM. The magic tells a real stamp from whatever an
 * earlier frame left in that headroom. */
#ifndef TW_STEER_META_H
#define TW_STEER_META_H

#define TW_XDP_META_MAGIC 0x74774d31u /* "twM1" */

struct tw_xdp_meta {
	__u64 rx_ns;   /* bpf_ktime_get_ns(): CLOCK_MONOTONIC at XDP time */
	__u32 pad;
	__u32 magic;   /* last, so it is adjacent to the frame */
};

#endif
