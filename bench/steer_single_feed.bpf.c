// SPDX-License-Identifier: (GPL-2.0 OR BSD-2-Clause)
/* steer_single_feed.bpf.c - the baseline for bench/steer_cost.py: the single-feed steering
 * program as it was before the shared one (native/bpf/steer.bpf.c at 7d8d1ec), kept unchanged
 * so that both can be measured in the same run.
 *
 * steer.bpf.c - send only the feed's flows to the AF_XDP socket; everything else to the kernel.
 *
 * A frame is redirected when it is IPv4/UDP (optionally behind one or two VLAN tags), its
 * (destination address, destination port) is a key of `tw_lines`, and it arrived on a queue that
 * has a socket in `tw_xsks`. All else gets XDP_PASS, so ARP, SSH and the node's other traffic keep
 * working on the same interface.
 *
 * Before redirecting, the program stores the kernel receive time in the packet's metadata area
 * (bpf_xdp_adjust_meta) so the engine can measure kernel-to-engine latency. Where the driver has
 * no metadata room the frame is still redirected, without a time.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "steer_meta.h"

struct vlan_hdr {
	__be16 tci;
	__be16 encapsulated_proto;
};

struct line_key {
	__be32 group;
	__be16 port;
	__u16 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8);
	__type(key, struct line_key);
	__type(value, __u32); /* line id: 0 = A, 1 = B */
} tw_lines SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, 256);
	__type(key, __u32);   /* RX queue index */
	__type(value, __u32); /* AF_XDP socket fd (user space) */
} tw_xsks SEC(".maps");

/* Frames matched per line, and frames passed on, for debugging with bpftool. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} tw_counters SEC(".maps");

#define TW_COUNTER_REDIRECTED 0
#define TW_COUNTER_PASSED 1
#define TW_COUNTER_NO_META 2

static __always_inline void count(__u32 which)
{
	__u64 *value = bpf_map_lookup_elem(&tw_counters, &which);

	if (value)
		*value += 1;
}

static __always_inline int is_ours(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__u16 proto;
	void *cursor;

	if ((void *)(eth + 1) > data_end)
		return 0;
	proto = eth->h_proto;
	cursor = eth + 1;

#pragma unroll
	for (int i = 0; i < 2; i++) {
		struct vlan_hdr *vlan = cursor;

		if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
			break;
		if ((void *)(vlan + 1) > data_end)
			return 0;
		proto = vlan->encapsulated_proto;
		cursor = vlan + 1;
	}
	if (proto != bpf_htons(ETH_P_IP))
		return 0;

	struct iphdr *ip = cursor;

	if ((void *)(ip + 1) > data_end || ip->protocol != IPPROTO_UDP || ip->ihl < 5)
		return 0;

	struct udphdr *udp = (void *)ip + ip->ihl * 4;

	if ((void *)(udp + 1) > data_end)
		return 0;

	struct line_key key = { .group = ip->daddr, .port = udp->dest, .pad = 0 };

	return bpf_map_lookup_elem(&tw_lines, &key) != NULL;
}

SEC("xdp")
int tw_steer(struct xdp_md *ctx)
{
	__u32 queue = ctx->rx_queue_index;

	if (!is_ours(ctx) || !bpf_map_lookup_elem(&tw_xsks, &queue)) {
		count(TW_COUNTER_PASSED);
		return XDP_PASS;
	}

	if (bpf_xdp_adjust_meta(ctx, -(int)sizeof(struct tw_xdp_meta)) == 0) {
		struct tw_xdp_meta *meta = (void *)(long)ctx->data_meta;

		if ((void *)(meta + 1) <= (void *)(long)ctx->data) {
			meta->rx_ns = bpf_ktime_get_ns();
			meta->magic = TW_XDP_META_MAGIC;
		}
	} else {
		count(TW_COUNTER_NO_META);
	}

	count(TW_COUNTER_REDIRECTED);
	return bpf_redirect_map(&tw_xsks, queue, XDP_PASS);
}

char _license[] SEC("license") = "Dual BSD/GPL";
