// SPDX-License-Identifier: (GPL-2.0 OR BSD-2-Clause)
/* blast.bpf.c - the benchmark's exchange inside the kernel: MoldUDP64/ITCH frames redirected
 * onto a veth by BPF_PROG_TEST_RUN with BPF_F_TEST_XDP_LIVE_FRAMES.
 *
 * The loader (native/blast/blast.c) runs this program on `repeat` frames per call. Every call
 * starts from the same input frame and the kernel recycles the frames' pages between runs, so
 * nothing written into a frame survives as a fact: each run copies the whole next pool entry in
 * (sizing the frame to it), then writes the sequence number from the global counter and the send
 * time into every message, then redirects to the exchange veth. Counters live in the program's
 * globals, so what was sent is known exactly, by the program itself.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "blast.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, BLAST_POOL_MAX);
	__type(key, __u32);
	__type(value, struct blast_entry);
} blast_pool SEC(".maps");

struct blast_state state;

static __always_inline void put_be64(__u8 *p, __u64 v)
{
	p[0] = v >> 56; p[1] = v >> 48; p[2] = v >> 40; p[3] = v >> 32;
	p[4] = v >> 24; p[5] = v >> 16; p[6] = v >> 8;  p[7] = v;
}

static __always_inline void put_be48(__u8 *p, __u64 v)
{
	p[0] = v >> 40; p[1] = v >> 32; p[2] = v >> 24;
	p[3] = v >> 16; p[4] = v >> 8;  p[5] = v;
}

SEC("xdp")
int blast(struct xdp_md *ctx)
{
	__u32 pool_size = state.pool_size;
	__u32 index;
	struct blast_entry *e;

	if (!pool_size)
		goto abort;
	index = state.frames % pool_size;
	e = bpf_map_lookup_elem(&blast_pool, &index);
	if (!e)
		goto abort;

	__u32 len = e->len;
	if (len < BLAST_MOLD_SEQ_OFFSET + 10 || len > BLAST_MAX_FRAME)
		goto abort;
	int have = (int)(ctx->data_end - ctx->data);
	if (have != (int)len && bpf_xdp_adjust_tail(ctx, (int)len - have))
		goto abort;
	if (bpf_xdp_store_bytes(ctx, 0, e->frame, len))
		goto abort;

	__u8 *data = (__u8 *)(long)ctx->data, *end = (__u8 *)(long)ctx->data_end;
	if (data + BLAST_MOLD_SEQ_OFFSET + 8 > end)
		goto abort;
	__u64 seq = state.next_seq;
	put_be64(data + BLAST_MOLD_SEQ_OFFSET, seq);

	__u64 stamp = bpf_ktime_get_ns() + state.stamp_offset_ns;
	__u32 n = e->n_msgs;
	for (__u32 i = 0; i < BLAST_MAX_MSGS; i++) {
		if (i >= n)
			break;
		__u32 off = e->stamp_off[i];
		if (off > BLAST_MAX_FRAME - 6)
			goto abort;
		__u8 *p = data + off;
		if (p + 6 > end)
			goto abort;
		put_be48(p, stamp);
	}
	state.next_seq = seq + n;
	state.frames += 1;
	state.messages += n;
	return bpf_redirect(state.target_ifindex, 0);
abort:
	state.aborted += 1;
	return XDP_DROP;
}

/* The frames the target refused. veth drops redirected frames without a counter of its own when
 * its peer cannot take them: with no native XDP program and GRO off on the peer the redirect
 * itself fails (xdp_redirect_err, one frame each), and when the peer's ring is full the flush
 * drops the rest (xdp_devmap_xmit, `drops` frames). Both fire in the loader's own call, so only
 * the loader's events count; the receiving side's own XDP program runs in that call too (the
 * veth's NAPI), and its failed redirects to an AF_XDP socket (a full RX ring: the receiver's loss,
 * not the generator's) are told apart by their map: ours redirect to a plain ifindex.
 * Raw tracepoint arguments (kernel >= 5.17): xdp_redirect_err (dev, prog, target, err, map_type,
 * map_id, index); xdp_devmap_xmit (from_dev, to_dev, sent, drops, err). */
static __always_inline int ours(void)
{
	return (__u32)(bpf_get_current_pid_tgid() >> 32) == state.loader_tgid;
}

SEC("raw_tp/xdp_redirect_err")
int count_redirect_err(struct bpf_raw_tracepoint_args *ctx)
{
	if (ours() && ctx->args[4] == BPF_MAP_TYPE_UNSPEC && (__u32)ctx->args[6] == state.target_ifindex)
		__sync_fetch_and_add(&state.refused, 1);
	return 0;
}

SEC("raw_tp/xdp_devmap_xmit")
int count_xmit_drops(struct bpf_raw_tracepoint_args *ctx)
{
	int drops = (int)ctx->args[3];

	if (ours() && drops > 0)
		__sync_fetch_and_add(&state.refused, (__u64)drops);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
