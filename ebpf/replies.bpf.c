// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// Palisade's receive filter, attached (XDP) to the scan interface.
//
// A TCP segment with SYN+ACK or RST set, addressed to one of the scanner's
// source addresses and to a port in its source-port range, is a reply to a
// probe: it becomes a compact record in the `replies` ring buffer and is
// dropped, so the kernel never sees it (no RST from the kernel, no firewall
// rule needed). Everything else -- ARP, NDP, SSH to the scan host, traffic of
// other programs -- passes untouched.
//
// Parses Ethernet with at most one VLAN tag (802.1Q or 802.1ad), IPv4 (any
// header length, first fragments only) and IPv6 (TCP as the first next
// header; extension headers are not followed, replies to SYNs carry none).

#include "common.h"

// What user space tells the filter: which replies are ours.
struct config {
	__u32 src_ip4;       // our IPv4 source address, network order (0: none)
	__u8 src_ip6[16];    // our IPv6 source address (all zero: none)
	__u16 port_lo;       // source-port range, host order, inclusive
	__u16 port_hi;
	__u32 enabled;       // 0: pass everything (before configuration)
};

// One reply, as user space reads it. Addresses are network order; an IPv4
// address sits in the first 4 bytes. Keep in sync with `ReplyRecord` in
// engine/dataplane/src/filter.rs.
struct reply {
	__u8 family;         // 4 or 6
	__u8 tcp_flags;      // the TCP flags byte
	__u8 ttl;            // TTL or hop limit as received
	__u8 _pad;
	__u16 src_port;      // the target's port, host order
	__u16 dst_port;      // our source port, host order
	__u32 seq;           // host order
	__u32 ack;           // host order
	__u8 saddr[16];      // the target
	__u8 daddr[16];      // us
};

enum counter {
	CNT_MATCHED = 0,     // replies handed to user space
	CNT_PASSED = 1,      // packets passed to the kernel
	CNT_RINGBUF_FULL = 2, // replies dropped because the ring buffer was full
	CNT_MAX = 3,
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct config);
} config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 24);
} replies SEC(".maps");

#include "counters.h"

// Wake the reader each time another 64 records are waiting. A ring-buffer
// record is the 8-byte header plus the 8-aligned record.
#define RECORD_BYTES (8 + ((sizeof(struct reply) + 7) & ~7))
#define WAKE_BATCH_BYTES (64 * RECORD_BYTES)

#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_ACK 0x10

SEC("xdp")
int palisade_replies(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 zero = 0;
	struct config *cfg = bpf_map_lookup_elem(&config, &zero);
	if (!cfg || !cfg->enabled)
		return pass();

	__u16 proto = 0;
	__u32 l3off = l3_offset(data, data_end, &proto);
	if (!l3off)
		return pass();
	void *l3 = data + l3off;

	struct reply r = {};
	struct tcphdr *tcp;
	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = l3;
		if ((void *)(ip + 1) > data_end)
			return pass();
		if (ip->protocol != IPPROTO_TCP || ip->ihl < 5)
			return pass();
		// Only whole datagrams or first fragments carry the TCP header.
		if (ip->frag_off & bpf_htons(0x1fff))
			return pass();
		if (!cfg->src_ip4 || ip->daddr != cfg->src_ip4)
			return pass();
		tcp = (void *)ip + ip->ihl * 4;
		r.family = 4;
		r.ttl = ip->ttl;
		__builtin_memcpy(r.saddr, &ip->saddr, 4);
		__builtin_memcpy(r.daddr, &ip->daddr, 4);
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = l3;
		if ((void *)(ip6 + 1) > data_end)
			return pass();
		if (ip6->nexthdr != IPPROTO_TCP)
			return pass();
		if (__builtin_memcmp(&ip6->daddr, cfg->src_ip6, 16) != 0)
			return pass();
		tcp = (void *)(ip6 + 1);
		r.family = 6;
		r.ttl = ip6->hop_limit;
		__builtin_memcpy(r.saddr, &ip6->saddr, 16);
		__builtin_memcpy(r.daddr, &ip6->daddr, 16);
	} else {
		return pass();
	}

	if ((void *)(tcp + 1) > data_end)
		return pass();
	__u8 flags = ((__u8 *)tcp)[13];
	int syn_ack = (flags & (TCP_SYN | TCP_ACK)) == (TCP_SYN | TCP_ACK);
	int rst = flags & TCP_RST;
	if (!syn_ack && !rst)
		return pass();
	__u16 dport = bpf_ntohs(tcp->dest);
	if (dport < cfg->port_lo || dport > cfg->port_hi)
		return pass();

	r.tcp_flags = flags;
	r.src_port = bpf_ntohs(tcp->source);
	r.dst_port = dport;
	r.seq = bpf_ntohl(tcp->seq);
	r.ack = bpf_ntohl(tcp->ack_seq);
	// A wake-up costs a self-IPI for the irq_work and one to the reader's
	// CPU (each a VM exit in a guest). Wake the reader only as the backlog
	// crosses another multiple of the batch, never once per record while
	// it is getting up; it polls with a short timeout for the rest.
	__u64 avail = bpf_ringbuf_query(&replies, BPF_RB_AVAIL_DATA);
	__u64 wake = avail != 0 && avail % WAKE_BATCH_BYTES == 0 ? BPF_RB_FORCE_WAKEUP
								   : BPF_RB_NO_WAKEUP;
	if (bpf_ringbuf_output(&replies, &r, sizeof(r), wake) != 0) {
		count(CNT_RINGBUF_FULL);
		return XDP_DROP;
	}
	count(CNT_MATCHED);
	return XDP_DROP;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
