// SPDX-License-Identifier: (GPL-2.0 OR BSD-2-Clause)
/* steer.bpf.c - one XDP program per interface, shared by every engine on it: each feed's flows go
 * to the AF_XDP socket of the RX queue that owns them; everything else goes to the kernel.
 *
 * The program is loaded once per interface by the first engine and pinned with its maps in bpffs
 * (native/src/steering.c owns the pins and the ownership rule). Engines add and remove their own
 * entries in the maps; the program itself is never replaced while a feed is live.
 *
 * A frame is redirected only when all of these hold:
 *   - IPv4 (behind at most two 802.1Q/802.1ad tags), IHL >= 5, protocol UDP;
 *   - not a fragment: the MF flag and the fragment offset are both 0 (a fragment has no UDP
 *     header of its own, or only the first piece of a datagram: the kernel reassembles those);
 *   - (destination group, destination port, source, VLAN id) is a key of `tw_flows`, where a key
 *     with source 0 matches any source (any-source multicast) and a key with VLAN 0 matches any
 *     tag or none; an exact key is tried before the wildcards (see `flow_lookup`);
 *   - the frame arrived on the queue the flow belongs to. An AF_XDP socket drops a frame
 *     redirected from another queue, so such a frame is passed to the kernel and counted
 *     (TW_COUNTER_WRONG_QUEUE): the NIC's flow steering is wrong, and that must show.
 *   - that queue has a socket in `tw_xsks` (else the frame is passed and counted: an engine is
 *     starting or was killed and its entries are not yet swept).
 *
 * The frame's VLAN id is its innermost tag's (the one next to the IP header), 0 when untagged.
 * A NIC that strips VLAN tags in hardware (rx-vlan-offload) hides them from XDP: give such a line
 * no vlan, or turn the offload off.
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

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TW_MAX_FLOWS);
	__type(key, struct tw_flow_key);
	__type(value, struct tw_flow_target);
} tw_flows SEC(".maps");

/* (group, port) -> the TW_SHAPE_* bits of its keys in tw_flows and its wildcard flow's target,
 * kept by user space under its lock. A frame of a flow nobody steers costs one lookup; an
 * any-source, any-VLAN line's frame one too; a line with a source or a VLAN one more. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TW_MAX_FLOWS);
	__type(key, struct tw_group_key);
	__type(value, struct tw_group);
} tw_groups SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, TW_MAX_QUEUES);
	__type(key, __u32);   /* RX queue index */
	__type(value, __u32); /* AF_XDP socket fd (user space) */
} tw_xsks SEC(".maps");

/* Who owns each queue (pid, process start time): written and read by user space only, for the
 * messages that name an owner. Liveness itself is decided by an flock (steering.c). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, TW_MAX_QUEUES);
	__type(key, __u32);
	__type(value, struct tw_queue_owner);
} tw_owners SEC(".maps");

/* Frames per outcome, for the engine's stats and for bpftool. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TW_COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} tw_counters SEC(".maps");

static __always_inline void count(__u32 which)
{
	__u64 *value = bpf_map_lookup_elem(&tw_counters, &which);

	if (value)
		*value += 1;
}

/* The most specific entry that matches: exact, then any source, then any vlan, then any. */
static __always_inline struct tw_flow_target *flow_lookup(struct tw_flow_key *key,
							   struct tw_group *group)
{
	struct tw_flow_target *target;
	__be32 source = key->source;

	if (group->shapes == TW_SHAPE_ANY)
		return &group->any;
	if (group->shapes & TW_SHAPE_EXACT) {
		target = bpf_map_lookup_elem(&tw_flows, key);
		if (target)
			return target;
	}
	if (group->shapes & TW_SHAPE_ANY_SOURCE) {
		key->source = 0;
		target = bpf_map_lookup_elem(&tw_flows, key);
		if (target)
			return target;
	}
	if (group->shapes & TW_SHAPE_ANY_VLAN) {
		key->source = source;
		key->vlan = 0;
		target = bpf_map_lookup_elem(&tw_flows, key);
		if (target)
			return target;
	}
	return group->shapes & TW_SHAPE_ANY ? &group->any : NULL;
}

/* The flow this frame belongs to, or NULL (not IPv4/UDP, a fragment, or nobody's flow). */
static __always_inline struct tw_flow_target *frame_flow(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__u16 proto, vlan = 0;
	void *cursor;

	if ((void *)(eth + 1) > data_end)
		return NULL;
	proto = eth->h_proto;
	cursor = eth + 1;

#pragma unroll
	for (int i = 0; i < 2; i++) {
		struct vlan_hdr *tag = cursor;

		if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
			break;
		if ((void *)(tag + 1) > data_end)
			return NULL;
		vlan = bpf_ntohs(tag->tci) & 0x0fff;
		proto = tag->encapsulated_proto;
		cursor = tag + 1;
	}
	if (proto != bpf_htons(ETH_P_IP))
		return NULL;

	struct iphdr *ip = cursor;

	if ((void *)(ip + 1) > data_end || ip->version != 4 || ip->ihl < 5 ||
	    ip->protocol != IPPROTO_UDP)
		return NULL;
	if (ip->frag_off & bpf_htons(0x3fff)) /* MF set or offset != 0: a fragment */
		return NULL;

	struct udphdr *udp = (void *)ip + ip->ihl * 4;

	if ((void *)(udp + 1) > data_end)
		return NULL;

	struct tw_group_key group_key = { .group = ip->daddr, .port = udp->dest, .pad = 0 };
	struct tw_group *group = bpf_map_lookup_elem(&tw_groups, &group_key);

	if (!group)
		return NULL;

	struct tw_flow_key key = {
		.group = ip->daddr, .source = ip->saddr, .port = udp->dest, .vlan = vlan,
	};

	return flow_lookup(&key, group);
}

SEC("xdp")
int tw_steer(struct xdp_md *ctx)
{
	__u32 queue = ctx->rx_queue_index;
	struct tw_flow_target *flow = frame_flow(ctx);

	if (!flow) {
		count(TW_COUNTER_PASSED);
		return XDP_PASS;
	}
	if (flow->queue != queue) {
		count(TW_COUNTER_WRONG_QUEUE);
		return XDP_PASS;
	}
	if (!bpf_map_lookup_elem(&tw_xsks, &queue)) {
		count(TW_COUNTER_NO_SOCKET);
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
