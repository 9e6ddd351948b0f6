// SPDX-License-Identifier: GPL-2.0
/* tx_queue.bpf.c - a tc egress program for the exchange side of a test veth: puts each flow on the
 * transmit queue the test chose, as a NIC's ntuple filter would put it on a receive queue.
 *
 * `tw_tx_queue` maps (destination IPv4, UDP port) to the value written into skb->queue_mapping.
 * The kernel then picks transmit queue (value - 1): with no XPS map, skb_tx_hash() reads a
 * non-zero queue_mapping as a recorded receive queue plus one. See tests/support/tx_queues.py for
 * which receive queue the node's XDP program then sees (it differs between native and generic).
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

struct flow {
	__be32 daddr;
	__be16 dport;
	__u16 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, struct flow);
	__type(value, __u32);
} tw_tx_queue SEC(".maps");

SEC("tc")
int tw_pick_tx_queue(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	void *cursor = eth + 1;
	__be16 proto;

	if (cursor > end)
		return TC_ACT_OK;
	proto = eth->h_proto;
	if (proto == bpf_htons(ETH_P_8021Q)) { /* one tag in the frame (AF_PACKET senders) */
		if (cursor + 4 > end)
			return TC_ACT_OK;
		proto = *(__be16 *)(cursor + 2);
		cursor += 4;
	}

	struct iphdr *ip = cursor;
	struct udphdr *udp = (void *)(ip + 1);

	if ((void *)(udp + 1) > end || proto != bpf_htons(ETH_P_IP) || ip->ihl != 5 ||
	    ip->protocol != 17)
		return TC_ACT_OK;

	struct flow key = { .daddr = ip->daddr, .dport = udp->dest, .pad = 0 };
	__u32 *mapping = bpf_map_lookup_elem(&tw_tx_queue, &key);

	if (mapping)
		skb->queue_mapping = *mapping;
	return TC_ACT_OK;
}

char _license[] SEC("license") = "GPL";
