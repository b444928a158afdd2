// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// Palisade's receive filter, attached (XDP) to the scan interface.
//
// A would-be reply to a probe is
//
//   * a TCP segment with SYN+ACK or RST set, addressed to one of the
//     scanner's source addresses and to a port in its source-port range, or
//   * an ICMP echo reply (type 0) or ICMPv6 echo reply (type 129) addressed
//     to one of the scanner's source addresses.
//
// It counts only if the kernel itself would accept it; otherwise it is
// counted in CNT_INVALID and dropped, never recorded:
//
//   * a VLAN tag while the link is untagged (`accept_vlan` 0, the default);
//   * IPv4: a bad header checksum, or a fragment (more-fragments set: an
//     incomplete first fragment; a non-first fragment carries no transport
//     header, so it cannot be told from other traffic and is passed);
//   * a transport header past the IP total length (IPv6: payload length) or
//     past the end of the frame, or a TCP data offset below 5 or past the IP
//     total length;
//   * a bad TCP, ICMP or ICMPv6 checksum (with its pseudo-header for TCP and
//     ICMPv6). A TCP checksum still pending offload counts as good: the field
//     holds the pseudo-header sum alone (CHECKSUM_PARTIAL: a sender on the
//     same host, across veth or a bridge, hands its segments over with the
//     checksum left to the device, and the kernel accepts them as they are;
//     XDP cannot see that state). A random corruption matches that form with
//     probability 2^-16, and a forger gains nothing from it that a correct
//     checksum would not give him: the cookie judges. The checksum is computed with bpf_csum_diff over the whole
//     segment as the IP length delimits it, copied to the stack: replies to
//     SYNs and echo requests are short (a SYN-ACK or RST carries at most 60
//     bytes of TCP header and usually no data; our echo requests carry no
//     data), so a segment or message longer than MAX_SEGMENT (128 bytes) is
//     counted invalid rather than checksummed.
//
// A reply that passes becomes a compact record in the `replies` ring buffer
// and is dropped, so the kernel never sees it (no RST from the kernel, no
// firewall rule needed). Everything else -- ARP, NDP, SSH to the scan host,
// traffic of other programs -- passes untouched.
//
// Parses Ethernet with at most one VLAN tag (802.1Q or 802.1ad), IPv4 (any
// header length) and IPv6 (TCP or ICMPv6 as the first next header; extension
// headers are not followed -- replies to SYNs and echo requests carry none --
// so such packets are passed to the kernel, unsupported).

#include "common.h"

// What user space tells the filter: which replies are ours. Keep in sync
// with `FilterConfig` in engine/dataplane/src/filter.rs.
struct config {
	__u32 src_ip4;       // our IPv4 source address, network order (0: none)
	__u8 src_ip6[16];    // our IPv6 source address (all zero: none)
	__u16 port_lo;       // source-port range, host order, inclusive
	__u16 port_hi;
	__u32 enabled;       // 0: pass everything (before configuration)
	__u32 accept_vlan;   // 1: the link is tagged, tagged replies count
};

#define REPLY_TCP 0
#define REPLY_ECHO 1

// One reply, as user space reads it. Addresses are network order; an IPv4
// address sits in the first 4 bytes. Keep in sync with `ReplyRecord` in
// engine/dataplane/src/filter.rs.
struct reply {
	__u8 family;         // 4 or 6
	__u8 tcp_flags;      // TCP: the flags byte
	__u8 ttl;            // TTL or hop limit as received
	__u8 kind;           // REPLY_TCP or REPLY_ECHO
	__u16 src_port;      // TCP: the target's port, host order
	__u16 dst_port;      // TCP: our source port, host order
	__u32 seq;           // TCP, host order
	__u32 ack;           // TCP, host order
	__u8 saddr[16];      // the target
	__u8 daddr[16];      // us
	__u8 icmp_type;      // echo: the ICMP / ICMPv6 type
	__u8 icmp_code;      // echo: the code
	__u16 echo_id;       // echo: the identifier, host order
	__u16 echo_seq;      // echo: the sequence number, host order
	__u16 _pad;
};

enum counter {
	CNT_MATCHED = 0,     // replies handed to user space
	CNT_PASSED = 1,      // packets passed to the kernel
	CNT_RINGBUF_FULL = 2, // replies dropped because the ring buffer was full
	CNT_INVALID = 3,     // would-be replies the kernel would not accept, dropped
	CNT_MAX = 4,
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

#define ICMP_ECHO_REPLY 0
#define ICMPV6_ECHO_REPLY 129
#define IPPROTO_ICMPV6_ 58
#define ECHO_HEADER 8

// The longest TCP segment or ICMP message that is checksummed; longer
// would-be replies are invalid.
#define MAX_SEGMENT 128

// Hides `x`'s known range from clang, so that the range checks that
// follow stay in the program for the verifier to see (clang would drop
// checks it can prove, and the verifier loses bounds clang keeps).
#define opaque(x) asm volatile("" : "+r"(x))

static __always_inline int invalid(void)
{
	count(CNT_INVALID);
	return XDP_DROP;
}

// Folds a 32-bit ones'-complement accumulator to 16 bits.
static __always_inline __u32 fold(__u64 s)
{
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u32)s;
}

// Whether the IPv4 header of `hlen` bytes (20..60) at `off` verifies.
static __always_inline int ipv4_header_ok(struct xdp_md *ctx, __u32 off, __u64 hlen)
{
	__u32 buf[15] = {};
	opaque(hlen);
	if (hlen < 20 || hlen > 60)
		return 0;
	if (bpf_xdp_load_bytes(ctx, off, buf, hlen) != 0)
		return 0;
	__s64 sum = bpf_csum_diff(0, 0, buf, hlen, 0);
	return sum >= 0 && fold(sum) == 0xffff;
}

// Whether the `len` bytes (1..MAX_SEGMENT) at `off`, summed on top of the
// pseudo-header sum `seed`, verify. The stack copy is zero-padded to a
// multiple of 4 bytes, which does not change the sum.
static __always_inline int l4_checksum_ok(struct xdp_md *ctx, __u32 off, __u64 len, __u32 seed)
{
	__u32 buf[MAX_SEGMENT / 4] = {};
	opaque(len);
	if (len < 1 || len > MAX_SEGMENT)
		return 0;
	if (bpf_xdp_load_bytes(ctx, off, buf, len) != 0)
		return 0;
	__u64 padded = (len + 3) & ~3ull;
	opaque(padded);
	if (padded > MAX_SEGMENT)
		return 0;
	__s64 sum = bpf_csum_diff(0, 0, buf, padded, seed);
	return sum >= 0 && fold(sum) == 0xffff;
}

// Whether a TCP segment's checksum verifies over `len` bytes at `off`, or
// is still pending offload (the field holds the folded pseudo-header sum).
static __always_inline int tcp_checksum_ok(struct xdp_md *ctx, struct tcphdr *tcp, __u32 off,
					   __u64 len, __u32 pseudo)
{
	if (l4_checksum_ok(ctx, off, len, pseudo))
		return 1;
	__u32 partial = fold(pseudo);
	__u32 field = tcp->check;
	return field == partial || (field == 0 && partial == 0xffff);
}

struct pseudo4 {
	__be32 saddr;
	__be32 daddr;
	__u8 zero;
	__u8 proto;
	__be16 len;
};

struct pseudo6 {
	__u8 saddr[16];
	__u8 daddr[16];
	__be32 len;
	__u8 zero[3];
	__u8 next;
};

static __always_inline __u32 pseudo_v4(const struct iphdr *ip, __u8 proto, __u32 len)
{
	struct pseudo4 ph = {};
	ph.saddr = ip->saddr;
	ph.daddr = ip->daddr;
	ph.proto = proto;
	ph.len = bpf_htons((__u16)len);
	__s64 s = bpf_csum_diff(0, 0, (__be32 *)&ph, sizeof(ph), 0);
	return s < 0 ? 0 : (__u32)s;
}

static __always_inline __u32 pseudo_v6(const struct ipv6hdr *ip6, __u8 next, __u32 len)
{
	struct pseudo6 ph = {};
	__builtin_memcpy(ph.saddr, &ip6->saddr, 16);
	__builtin_memcpy(ph.daddr, &ip6->daddr, 16);
	ph.len = bpf_htonl(len);
	ph.next = next;
	__s64 s = bpf_csum_diff(0, 0, (__be32 *)&ph, sizeof(ph), 0);
	return s < 0 ? 0 : (__u32)s;
}

// Whether the TCP header at `tcp` (its first 20 bytes readable) is a
// would-be reply: SYN+ACK or RST, to a port of our range.
static __always_inline int tcp_is_ours(const struct config *cfg, struct tcphdr *tcp)
{
	__u8 flags = ((__u8 *)tcp)[13];
	int syn_ack = (flags & (TCP_SYN | TCP_ACK)) == (TCP_SYN | TCP_ACK);
	int rst = flags & TCP_RST;
	if (!syn_ack && !rst)
		return 0;
	__u16 dport = bpf_ntohs(tcp->dest);
	return dport >= cfg->port_lo && dport <= cfg->port_hi;
}

static __always_inline void fill_tcp(struct reply *r, struct tcphdr *tcp)
{
	r->kind = REPLY_TCP;
	r->tcp_flags = ((__u8 *)tcp)[13];
	r->src_port = bpf_ntohs(tcp->source);
	r->dst_port = bpf_ntohs(tcp->dest);
	r->seq = bpf_ntohl(tcp->seq);
	r->ack = bpf_ntohl(tcp->ack_seq);
}

static __always_inline void fill_echo(struct reply *r, __u8 *msg)
{
	r->kind = REPLY_ECHO;
	r->icmp_type = msg[0];
	r->icmp_code = msg[1];
	r->echo_id = ((__u16)msg[4] << 8) | msg[5];
	r->echo_seq = ((__u16)msg[6] << 8) | msg[7];
}

// Hands a reply to user space and drops the packet.
static __always_inline int record(struct reply *r)
{
	// A wake-up costs a self-IPI for the irq_work and one to the reader's
	// CPU (each a VM exit in a guest). Wake the reader only as the backlog
	// crosses another multiple of the batch, never once per record while
	// it is getting up; it polls with a short timeout for the rest.
	__u64 avail = bpf_ringbuf_query(&replies, BPF_RB_AVAIL_DATA);
	__u64 wake = avail != 0 && avail % WAKE_BATCH_BYTES == 0 ? BPF_RB_FORCE_WAKEUP
								   : BPF_RB_NO_WAKEUP;
	if (bpf_ringbuf_output(&replies, r, sizeof(*r), wake) != 0) {
		count(CNT_RINGBUF_FULL);
		return XDP_DROP;
	}
	count(CNT_MATCHED);
	return XDP_DROP;
}

static __always_inline int ipv4_in(struct xdp_md *ctx, const struct config *cfg, __u32 l3off,
				   int tagged)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 frame_len = (__u32)(ctx->data_end - ctx->data);
	struct iphdr *ip = data + l3off;
	if ((void *)(ip + 1) > data_end)
		return pass();
	if (!cfg->src_ip4 || ip->daddr != cfg->src_ip4)
		return pass();
	__u32 ihl = ip->ihl;
	if (ip->version != 4 || ihl < 5)
		return pass();
	__u32 hlen = ihl * 4;
	__u16 frag = bpf_ntohs(ip->frag_off);
	// A non-first fragment carries no transport header: not ours to judge.
	if (frag & 0x1fff)
		return pass();
	void *l4 = (void *)ip + hlen;
	__u32 tot = bpf_ntohs(ip->tot_len);

	struct reply r = {};
	r.family = 4;
	r.ttl = ip->ttl;
	__builtin_memcpy(r.saddr, &ip->saddr, 4);
	__builtin_memcpy(r.daddr, &ip->daddr, 4);

	if (ip->protocol == IPPROTO_TCP) {
		struct tcphdr *tcp = l4;
		if ((void *)(tcp + 1) > data_end)
			return pass();
		if (!tcp_is_ours(cfg, tcp))
			return pass();
		// A would-be reply: it counts only if the kernel would take it.
		if (tagged && !cfg->accept_vlan)
			return invalid();
		if (frag & 0x2000) // more fragments: an incomplete first fragment
			return invalid();
		if (!ipv4_header_ok(ctx, l3off, hlen))
			return invalid();
		if (tot < hlen + sizeof(struct tcphdr) || l3off + tot > frame_len)
			return invalid();
		__u32 seg = tot - hlen;
		if (tcp->doff < 5 || (__u32)tcp->doff * 4 > seg || seg > MAX_SEGMENT)
			return invalid();
		if (!tcp_checksum_ok(ctx, tcp, l3off + hlen, seg, pseudo_v4(ip, IPPROTO_TCP, seg)))
			return invalid();
		fill_tcp(&r, tcp);
		return record(&r);
	}
	if (ip->protocol == IPPROTO_ICMP) {
		__u8 *msg = l4;
		if ((void *)(msg + ECHO_HEADER) > data_end)
			return pass();
		if (msg[0] != ICMP_ECHO_REPLY)
			return pass();
		if (tagged && !cfg->accept_vlan)
			return invalid();
		if (frag & 0x2000)
			return invalid();
		if (!ipv4_header_ok(ctx, l3off, hlen))
			return invalid();
		if (tot < hlen + ECHO_HEADER || l3off + tot > frame_len)
			return invalid();
		__u32 len = tot - hlen;
		if (len > MAX_SEGMENT)
			return invalid();
		if (!l4_checksum_ok(ctx, l3off + hlen, len, 0))
			return invalid();
		fill_echo(&r, msg);
		return record(&r);
	}
	return pass();
}

static __always_inline int ipv6_in(struct xdp_md *ctx, const struct config *cfg, __u32 l3off,
				   int tagged)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 frame_len = (__u32)(ctx->data_end - ctx->data);
	struct ipv6hdr *ip6 = data + l3off;
	if ((void *)(ip6 + 1) > data_end)
		return pass();
	if (__builtin_memcmp(&ip6->daddr, cfg->src_ip6, 16) != 0)
		return pass();
	__u32 plen = bpf_ntohs(ip6->payload_len);
	__u32 l4off = l3off + sizeof(struct ipv6hdr);
	void *l4 = (void *)(ip6 + 1);

	struct reply r = {};
	r.family = 6;
	r.ttl = ip6->hop_limit;
	__builtin_memcpy(r.saddr, &ip6->saddr, 16);
	__builtin_memcpy(r.daddr, &ip6->daddr, 16);

	if (ip6->nexthdr == IPPROTO_TCP) {
		struct tcphdr *tcp = l4;
		if ((void *)(tcp + 1) > data_end)
			return pass();
		if (!tcp_is_ours(cfg, tcp))
			return pass();
		if (tagged && !cfg->accept_vlan)
			return invalid();
		if (plen < sizeof(struct tcphdr) || l4off + plen > frame_len)
			return invalid();
		if (tcp->doff < 5 || (__u32)tcp->doff * 4 > plen || plen > MAX_SEGMENT)
			return invalid();
		if (!tcp_checksum_ok(ctx, tcp, l4off, plen, pseudo_v6(ip6, IPPROTO_TCP, plen)))
			return invalid();
		fill_tcp(&r, tcp);
		return record(&r);
	}
	if (ip6->nexthdr == IPPROTO_ICMPV6_) {
		__u8 *msg = l4;
		if ((void *)(msg + ECHO_HEADER) > data_end)
			return pass();
		if (msg[0] != ICMPV6_ECHO_REPLY)
			return pass();
		if (tagged && !cfg->accept_vlan)
			return invalid();
		if (plen < ECHO_HEADER || l4off + plen > frame_len || plen > MAX_SEGMENT)
			return invalid();
		if (!l4_checksum_ok(ctx, l4off, plen, pseudo_v6(ip6, IPPROTO_ICMPV6_, plen)))
			return invalid();
		fill_echo(&r, msg);
		return record(&r);
	}
	return pass();
}

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
	int tagged = l3off > sizeof(struct ethhdr);
	if (proto == bpf_htons(ETH_P_IP))
		return ipv4_in(ctx, cfg, l3off, tagged);
	if (proto == bpf_htons(ETH_P_IPV6))
		return ipv6_in(ctx, cfg, l3off, tagged);
	return pass();
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
