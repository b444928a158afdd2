// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// A simulated fleet, for tests and benchmarks: attached (XDP) to the
// target-side end of a testbed veth, it answers for a whole address block
// (an IPv4 block of up to a /16 and an IPv6 block of up to a /112) as if a
// server sat behind every address, and sends its answers straight back out
// of the same interface with XDP_TX:
//
//   ARP request for an address of the block      -> ARP reply (our MAC)
//   IPv6 neighbour solicitation for the block    -> neighbour advertisement
//   TCP SYN to (host, port) of the block         -> SYN-ACK if the port is
//                                                   open, else RST|ACK
//   TCP RST to the block (the scanner's answer
//   to our SYN-ACK)                              -> dropped, silently
//   ICMP echo request / ICMPv6 echo request to
//   a host of the block                          -> echo reply (same id, seq
//                                                   and data), unless the host
//                                                   is silent or in `noicmp`
//   anything else                                -> XDP_PASS
//
// Ground truth (mirrored exactly by testbed/src/fleet.rs; keep in sync):
//
//   words(addr)  = the address as big-endian 32-bit words (1 for IPv4, 4 for
//                  IPv6)
//   h(seed, w[]) = MurmurHash3_x86_32 of the words, each encoded
//                  little-endian (so the block loop reads them as they are)
//   open(a, p)   = scale(h(seed, words(a) ++ [p]), 1e6) < density_ppm
//                  or (a, p) in the `explicit` map
//   class(a)     = v = scale(h(seed ^ CLASS_SALT, words(a)), 1000):
//                  v < silent -> silent; < silent + firewalled ->
//                  firewalled; < silent + firewalled + synproxy ->
//                  SYN proxy; otherwise normal
//   scale(h, n)  = (h * n) >> 32, computed in 64 bits
//
// Host classes: a silent host answers ARP/NDP (it is "up", its packets are
// dropped by a filter in front of it) but never a SYN nor an echo request,
// not even on an explicit pair; a firewalled host answers SYN-ACK on open
// ports and nothing on closed ones; a SYN-proxy host answers SYN-ACK on
// every port; a normal host answers SYN-ACK or RST|ACK. Every host but a
// silent one answers echo, except those in the `noicmp` map (they drop
// ICMP and still answer TCP).
//
// Per address, the `forge` map makes every TCP answer of that host
// defective in one way (FORGE_*): a bad IPv4 header checksum, a bad TCP
// checksum, an IPv4 fragment (more-fragments set: an incomplete first
// fragment), a TCP data offset of 15 (60 bytes) past the IP total length
// (the checksum still right), or an 802.1Q tag (VLAN 100) added to an
// untagged frame. The first and third are IPv4 only. A scanner that accepts
// only what the kernel would accept sees no answer from such a host.
//
// With `count_hosts`, the `hits` map counts per address the SYNs received
// (all of them, whatever the class) and the first and last time one
// arrived (bpf_ktime_get_ns), for the rate one address received.
//
// Then, for every TCP answer: `loss_permille` of them are dropped at random
// (bpf_get_prandom_u32), and with `rate_limit` > 0 a token bucket per host
// (capacity one second's worth, refilled continuously) caps the answers a
// host sends per second. The buckets live in one LRU hash shared by all
// CPUs; concurrent updates from two CPUs may race, so the limit is
// approximate when one host's SYNs arrive on several CPUs at once.
//
// The SYN-ACK's sequence number is a keyed hash of the 4-tuple,
// h(seed ^ SEQ_SALT, words(scanner) ++ words(host) ++ [host port << 16 |
// scanner port]); its ack is their seq + 1. A RST|ACK carries seq 0, ack
// their seq + 1. Answers have no TCP options, a 20-byte IP header (TTL / hop
// limit 64, DF) and window 65535 (SYN-ACK) or 0 (RST|ACK).
//
// veth and XDP_TX (Linux 6.18): in native mode, what this program sends back
// reaches the peer (scan0) only while the peer has a native XDP program of
// its own; otherwise veth counts the frames as xdp_tx_errors, and with GRO
// enabled on the peer instead they are queued but its NAPI is never kicked,
// so they never arrive either. In generic (skb) mode XDP_TX goes through
// the ordinary transmit path of the veth and reaches any peer. `palisade
// fleet` therefore attaches in generic mode unless told otherwise.
//
// Parses Ethernet with at most one VLAN tag (802.1Q or 802.1ad, kept in the
// answer), IPv4 with any header length (no fragments) and IPv6 with
// TCP or ICMPv6 as the first next header. Echo requests are answered only
// with a 20-byte IPv4 header.

#include "common.h"

#define CLASS_SALT 0x636c6173u   // "clas"
#define SEQ_SALT 0x73657121u     // "seq!"

// What user space tells the responder. Keep in sync with `Config` in
// testbed/src/responder.rs.
struct config {
	__u32 enabled;             // 0: pass everything (before configuration)
	__u32 seed;
	__u32 density_ppm;         // open ports per million (hash)
	__u32 loss_permille;       // TCP answers dropped at random
	__u32 silent_permille;     // host classes, by a keyed hash of the address
	__u32 firewalled_permille;
	__u32 synproxy_permille;
	__u32 rate_limit;          // TCP answers per second per host, 0: no limit
	__u32 v4_base;             // IPv4 block, network order
	__u32 v4_mask;             // network order
	__u8 v6_base[16];          // IPv6 block
	__u8 v6_mask[16];
	__u8 mac[6];               // our MAC (the interface's): ARP/NDP answers
	__u8 has_v4;               // the IPv4 block is configured
	__u8 has_v6;               // the IPv6 block is configured
	__u32 count_hosts;         // 1: count SYNs per address in `hits`
};

// An (address, port) pair that is always open (except on silent hosts).
// IPv4 addresses sit in the first 4 bytes, the rest zero.
struct pair {
	__u8 addr[16];
	__u16 port;                // host order
	__u8 family;               // 4 or 6
	__u8 _pad;
};

struct host {
	__u8 addr[16];
	__u32 family;
};

// Per address: SYNs received and when the first and last arrived.
struct hits {
	__u64 syns;
	__u64 first_ns;
	__u64 last_ns;
};

#define FORGE_IP_CHECKSUM 1
#define FORGE_TCP_CHECKSUM 2
#define FORGE_FRAGMENT 3
#define FORGE_DATA_OFFSET 4
#define FORGE_VLAN 5

#define FORGE_VLAN_ID 100

struct bucket {
	__u64 last_ns;
	__u64 tokens;              // in units of 1e-9 answers
};

enum counter {
	CNT_SYNS = 0,              // SYNs to the block
	CNT_SYN_ACKS = 1,          // SYN-ACKs sent
	CNT_RSTS = 2,              // RST|ACKs sent
	CNT_LOSS = 3,              // answers dropped at random (loss)
	CNT_RATE_LIMITED = 4,      // answers dropped by the per-host rate limit
	CNT_ARP = 5,               // ARP requests answered
	CNT_NDP = 6,               // neighbour solicitations answered
	CNT_PASSED = 7,            // packets passed to the kernel
	CNT_SILENT = 8,            // SYNs to silent hosts, dropped
	CNT_FILTERED = 9,          // SYNs to closed ports of firewalled hosts, dropped
	CNT_RSTS_IN = 10,          // RSTs to the block (scanner answers), dropped
	CNT_TX_ERRORS = 11,        // answers that could not be built (resize failed)
	CNT_ECHO = 12,             // echo requests answered
	CNT_ECHO_DROPPED = 13,     // echo requests to silent or `noicmp` hosts, dropped
	CNT_FORGED = 14,           // TCP answers made defective (`forge`)
	CNT_MAX = 15,
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct config);
} config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct pair);
	__type(value, __u8);
} explicit SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 131072);
	__type(key, struct host);
	__type(value, struct bucket);
} buckets SEC(".maps");

// Hosts that drop ICMP (answer TCP, never echo).
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct host);
	__type(value, __u8);
} noicmp SEC(".maps");

// Hosts whose TCP answers are made defective: FORGE_*.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct host);
	__type(value, __u8);
} forge SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 131072);
	__type(key, struct host);
	__type(value, struct hits);
} hits SEC(".maps");

#include "counters.h"

// The map key of a 4- or 16-byte address.
static __always_inline void host_key(struct host *key, const __u8 *a, int v6)
{
	__builtin_memcpy(key->addr, a, 4);
	if (v6)
		__builtin_memcpy(key->addr + 4, a + 4, 12);
	key->family = v6 ? 6 : 4;
}

// ---------------------------------------------------------------------------
// MurmurHash3_x86_32 over 32-bit words

static __always_inline __u32 rotl32(__u32 x, int r)
{
	return (x << r) | (x >> (32 - r));
}

static __always_inline __u32 mm3_block(__u32 h, __u32 k)
{
	k *= 0xcc9e2d51u;
	k = rotl32(k, 15);
	k *= 0x1b873593u;
	h ^= k;
	h = rotl32(h, 13);
	return h * 5 + 0xe6546b64u;
}

static __always_inline __u32 mm3_final(__u32 h, __u32 nwords)
{
	h ^= nwords * 4;
	h ^= h >> 16;
	h *= 0x85ebca6bu;
	h ^= h >> 13;
	h *= 0xc2b2ae35u;
	h ^= h >> 16;
	return h;
}

// The address words (see the header) of a 4- or 16-byte address.
static __always_inline __u32 hash_addr(__u32 h, const __u8 *a, int v6)
{
	h = mm3_block(h, ((__u32)a[0] << 24) | ((__u32)a[1] << 16) | ((__u32)a[2] << 8) | a[3]);
	if (v6) {
#pragma unroll
		for (int i = 4; i < 16; i += 4)
			h = mm3_block(h, ((__u32)a[i] << 24) | ((__u32)a[i + 1] << 16) |
					 ((__u32)a[i + 2] << 8) | a[i + 3]);
	}
	return h;
}

static __always_inline __u32 scale(__u32 h, __u32 n)
{
	return (__u32)(((__u64)h * n) >> 32);
}

enum host_class { NORMAL, SILENT, FIREWALLED, SYNPROXY };

static __always_inline enum host_class classify(const struct config *cfg, const __u8 *a, int v6)
{
	__u32 nwords = v6 ? 4 : 1;
	__u32 v = scale(mm3_final(hash_addr(cfg->seed ^ CLASS_SALT, a, v6), nwords), 1000);
	__u32 t = cfg->silent_permille;
	if (v < t)
		return SILENT;
	t += cfg->firewalled_permille;
	if (v < t)
		return FIREWALLED;
	t += cfg->synproxy_permille;
	if (v < t)
		return SYNPROXY;
	return NORMAL;
}

static __always_inline int hash_open(const struct config *cfg, const __u8 *a, int v6, __u16 port)
{
	__u32 nwords = v6 ? 5 : 2;
	__u32 h = mm3_block(hash_addr(cfg->seed, a, v6), port);
	return scale(mm3_final(h, nwords), 1000000) < cfg->density_ppm;
}

// ---------------------------------------------------------------------------
// Checksums

// Adds `len` bytes (even) at `p`, as big-endian 16-bit words, to `sum`.
static __always_inline __u32 sum16(__u32 sum, const void *p, int len)
{
	const __u16 *w = p;
#pragma unroll
	for (int i = 0; i < len / 2; i++)
		sum += w[i];
	return sum;
}

static __always_inline __u16 fold(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

// ---------------------------------------------------------------------------
// Blocks

static __always_inline int in_v4_block(const struct config *cfg, __u32 addr)
{
	return cfg->has_v4 && (addr & cfg->v4_mask) == cfg->v4_base;
}

static __always_inline int in_v6_block(const struct config *cfg, const __u8 *a)
{
	if (!cfg->has_v6)
		return 0;
	__u32 w[4], b[4], m[4];
	__builtin_memcpy(w, a, 16);
	__builtin_memcpy(b, cfg->v6_base, 16);
	__builtin_memcpy(m, cfg->v6_mask, 16);
#pragma unroll
	for (int i = 0; i < 4; i++)
		if ((w[i] & m[i]) != b[i])
			return 0;
	return 1;
}

// ---------------------------------------------------------------------------
// Rate limit

#define NSEC 1000000000ull

// 1: the host may answer now (a token is spent); 0: over its rate.
static __always_inline int take_token(const struct config *cfg, const __u8 *a, int v6)
{
	__u64 rate = cfg->rate_limit;
	if (!rate)
		return 1;
	struct host key = {};
	host_key(&key, a, v6);
	__u64 now = bpf_ktime_get_ns();
	__u64 cap = rate * NSEC;
	struct bucket *b = bpf_map_lookup_elem(&buckets, &key);
	if (!b) {
		// A new host starts with a full bucket, less this answer.
		struct bucket fresh = { .last_ns = now, .tokens = cap - NSEC };
		bpf_map_update_elem(&buckets, &key, &fresh, BPF_ANY);
		return 1;
	}
	__u64 elapsed = now - b->last_ns;
	if (elapsed > NSEC)
		elapsed = NSEC;
	__u64 tokens = b->tokens + elapsed * rate;
	if (tokens > cap)
		tokens = cap;
	b->last_ns = now;
	if (tokens < NSEC) {
		b->tokens = tokens;
		return 0;
	}
	b->tokens = tokens - NSEC;
	return 1;
}

// ---------------------------------------------------------------------------
// Answers

#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_ACK 0x10

struct arp_eth {
	__be16 htype;
	__be16 ptype;
	__u8 hlen;
	__u8 plen;
	__be16 op;
	__u8 sha[6];
	__u8 spa[4];
	__u8 tha[6];
	__u8 tpa[4];
} __attribute__((packed));

static __always_inline int answer_arp(struct xdp_md *ctx, const struct config *cfg,
				      struct ethhdr *eth, void *l3)
{
	void *data_end = (void *)(long)ctx->data_end;
	struct arp_eth *arp = l3;
	if ((void *)(arp + 1) > data_end)
		return pass();
	if (arp->htype != bpf_htons(1) || arp->ptype != bpf_htons(ETH_P_IP) || arp->hlen != 6 ||
	    arp->plen != 4 || arp->op != bpf_htons(1))
		return pass();
	__u32 tpa, spa;
	__builtin_memcpy(&tpa, arp->tpa, 4);
	__builtin_memcpy(&spa, arp->spa, 4);
	// Not for the block, or a gratuitous ARP / address probe: not ours.
	if (!in_v4_block(cfg, tpa) || spa == tpa || spa == 0)
		return pass();
	arp->op = bpf_htons(2);
	__builtin_memcpy(arp->tha, arp->sha, 6);
	__builtin_memcpy(arp->tpa, &spa, 4);
	__builtin_memcpy(arp->sha, cfg->mac, 6);
	__builtin_memcpy(arp->spa, &tpa, 4);
	__builtin_memcpy(eth->h_dest, eth->h_source, 6);
	__builtin_memcpy(eth->h_source, cfg->mac, 6);
	count(CNT_ARP);
	return XDP_TX;
}

// ICMPv6 neighbour solicitation / advertisement, without options.
struct nd_msg {
	__u8 type;
	__u8 code;
	__be16 csum;
	__be32 flags;
	__u8 target[16];
};

struct nd_lla {
	__u8 type;
	__u8 len;        // in units of 8 bytes
	__u8 mac[6];
};

#define ND_NS 135
#define ND_NA 136
#define NA_FLAGS_SOLICITED_OVERRIDE 0x60000000u

struct na_reply {
	struct ipv6hdr ip;
	struct nd_msg nd;
	struct nd_lla lla;
};

static __always_inline int answer_ns(struct xdp_md *ctx, const struct config *cfg,
				     __u32 l3off, struct ipv6hdr *ip6)
{
	void *data_end = (void *)(long)ctx->data_end;
	struct nd_msg *ns = (void *)(ip6 + 1);
	if ((void *)(ns + 1) > data_end)
		return pass();
	if (ns->type != ND_NS || ns->code != 0 || ip6->hop_limit != 255)
		return pass();
	if (!in_v6_block(cfg, ns->target))
		return pass();
	// DAD (source ::) is never answered: the address would seem taken.
	__u32 src[4];
	__builtin_memcpy(src, &ip6->saddr, 16);
	if ((src[0] | src[1] | src[2] | src[3]) == 0)
		return pass();

	struct na_reply r = {};
	r.ip.version = 6;
	r.ip.payload_len = bpf_htons(sizeof(r.nd) + sizeof(r.lla));
	r.ip.nexthdr = 58; // ICMPv6
	r.ip.hop_limit = 255;
	__builtin_memcpy(&r.ip.saddr, ns->target, 16);
	__builtin_memcpy(&r.ip.daddr, &ip6->saddr, 16);
	r.nd.type = ND_NA;
	r.nd.flags = bpf_htonl(NA_FLAGS_SOLICITED_OVERRIDE);
	__builtin_memcpy(r.nd.target, ns->target, 16);
	r.lla.type = 2; // target link-layer address
	r.lla.len = 1;
	__builtin_memcpy(r.lla.mac, cfg->mac, 6);
	// Pseudo-header: addresses, upper-layer length, next header.
	__u32 sum = sum16(0, &r.ip.saddr, 32);
	sum += bpf_htons(sizeof(r.nd) + sizeof(r.lla));
	sum += bpf_htons(58);
	sum = sum16(sum, &r.nd, sizeof(r.nd) + sizeof(r.lla));
	r.nd.csum = fold(sum);

	struct ethhdr *eth = (void *)(long)ctx->data;
	if ((void *)(eth + 1) > data_end)
		return pass();
	__u8 peer[6];
	__builtin_memcpy(peer, eth->h_source, 6);

	int old_len = (int)(ctx->data_end - ctx->data);
	int new_len = (int)l3off + (int)sizeof(r);
	if (new_len != old_len && bpf_xdp_adjust_tail(ctx, new_len - old_len) != 0) {
		count(CNT_TX_ERRORS);
		return XDP_DROP;
	}
	void *data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	eth = data;
	if ((void *)(eth + 1) > data_end)
		return XDP_DROP;
	if (l3off > 18)
		return XDP_DROP;
	void *out = data + l3off;
	if (out + sizeof(r) > data_end)
		return XDP_DROP;
	__builtin_memcpy(eth->h_dest, peer, 6);
	__builtin_memcpy(eth->h_source, cfg->mac, 6);
	__builtin_memcpy(out, &r, sizeof(r));
	count(CNT_NDP);
	return XDP_TX;
}

struct tcp4_reply {
	struct iphdr ip;
	struct tcphdr tcp;
};

struct tcp6_reply {
	struct ipv6hdr ip;
	struct tcphdr tcp;
};

// What an answer to a SYN needs, gathered before the frame is rewritten.
struct syn_info {
	__u8 saddr[16];   // the scanner
	__u8 daddr[16];   // our host
	__u8 smac[6];
	__u16 sport;      // network order
	__u16 dport;      // network order
	__u32 seq;        // theirs, host order
};

// Counts one SYN to `a` in `hits`.
static __always_inline void count_hit(const __u8 *a, int v6)
{
	struct host key = {};
	host_key(&key, a, v6);
	__u64 now = bpf_ktime_get_ns();
	struct hits *h = bpf_map_lookup_elem(&hits, &key);
	if (!h) {
		struct hits fresh = { .syns = 1, .first_ns = now, .last_ns = now };
		if (bpf_map_update_elem(&hits, &key, &fresh, BPF_NOEXIST) == 0)
			return;
		// Another CPU inserted it meanwhile.
		h = bpf_map_lookup_elem(&hits, &key);
		if (!h)
			return;
	}
	__sync_fetch_and_add(&h->syns, 1);
	h->last_ns = now;
}

static __always_inline int answer_syn(struct xdp_md *ctx, const struct config *cfg,
				      __u32 l3off, int v6, const struct syn_info *in)
{
	count(CNT_SYNS);
	if (cfg->count_hosts)
		count_hit(in->daddr, v6);
	enum host_class cls = classify(cfg, in->daddr, v6);
	if (cls == SILENT) {
		count(CNT_SILENT);
		return XDP_DROP;
	}
	int open;
	if (cls == SYNPROXY) {
		open = 1;
	} else {
		__u16 port = bpf_ntohs(in->dport);
		open = hash_open(cfg, in->daddr, v6, port);
		if (!open) {
			struct pair key = {};
			__builtin_memcpy(key.addr, in->daddr, 4);
			if (v6)
				__builtin_memcpy(key.addr + 4, in->daddr + 4, 12);
			key.port = port;
			key.family = v6 ? 6 : 4;
			open = bpf_map_lookup_elem(&explicit, &key) != NULL;
		}
	}
	if (!open && cls == FIREWALLED) {
		count(CNT_FILTERED);
		return XDP_DROP;
	}
	if (cfg->loss_permille && bpf_get_prandom_u32() % 1000 < cfg->loss_permille) {
		count(CNT_LOSS);
		return XDP_DROP;
	}
	if (!take_token(cfg, in->daddr, v6)) {
		count(CNT_RATE_LIMITED);
		return XDP_DROP;
	}

	struct tcphdr tcp = {};
	tcp.source = in->dport;
	tcp.dest = in->sport;
	tcp.ack_seq = bpf_htonl(in->seq + 1);
	tcp.doff = 5;
	tcp.ack = 1;
	if (open) {
		__u32 nwords = v6 ? 9 : 3;
		__u32 h = hash_addr(cfg->seed ^ SEQ_SALT, in->saddr, v6);
		h = hash_addr(h, in->daddr, v6);
		h = mm3_block(h, ((__u32)bpf_ntohs(in->dport) << 16) | bpf_ntohs(in->sport));
		tcp.seq = bpf_htonl(mm3_final(h, nwords));
		tcp.syn = 1;
		tcp.window = bpf_htons(65535);
	} else {
		tcp.rst = 1;
	}

	struct host fkey = {};
	host_key(&fkey, in->daddr, v6);
	__u8 *fmode = bpf_map_lookup_elem(&forge, &fkey);
	__u8 defect = fmode ? *fmode : 0;
	if (defect)
		count(CNT_FORGED);
	// A VLAN tag goes on untagged frames only.
	int add_tag = defect == FORGE_VLAN && l3off == sizeof(struct ethhdr);

	int old_len = (int)(ctx->data_end - ctx->data);
	int new_len = (int)l3off + (v6 ? (int)sizeof(struct tcp6_reply) : (int)sizeof(struct tcp4_reply));
	if (new_len != old_len && bpf_xdp_adjust_tail(ctx, new_len - old_len) != 0) {
		count(CNT_TX_ERRORS);
		return XDP_DROP;
	}
	if (add_tag && bpf_xdp_adjust_head(ctx, -4) != 0) {
		count(CNT_TX_ERRORS);
		return XDP_DROP;
	}
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end || l3off > 18)
		return XDP_DROP;
	__builtin_memcpy(eth->h_dest, in->smac, 6);
	__builtin_memcpy(eth->h_source, cfg->mac, 6);
	void *out = data + l3off;
	if (add_tag) {
		__be16 *tag = (void *)(eth + 1);
		if ((void *)(tag + 2) > data_end)
			return XDP_DROP;
		eth->h_proto = bpf_htons(ETH_P_8021Q);
		tag[0] = bpf_htons(FORGE_VLAN_ID);
		tag[1] = bpf_htons(v6 ? ETH_P_IPV6 : ETH_P_IP);
		out = data + sizeof(struct ethhdr) + 4;
	}

	if (v6) {
		struct tcp6_reply r = {};
		r.ip.version = 6;
		r.ip.payload_len = bpf_htons(sizeof(struct tcphdr));
		r.ip.nexthdr = IPPROTO_TCP;
		r.ip.hop_limit = 64;
		__builtin_memcpy(&r.ip.saddr, in->daddr, 16);
		__builtin_memcpy(&r.ip.daddr, in->saddr, 16);
		r.tcp = tcp;
		if (defect == FORGE_DATA_OFFSET)
			r.tcp.doff = 15;
		__u32 sum = sum16(0, &r.ip.saddr, 32);
		sum += bpf_htons(sizeof(struct tcphdr));
		sum += bpf_htons(IPPROTO_TCP);
		sum = sum16(sum, &r.tcp, sizeof(r.tcp));
		r.tcp.check = fold(sum);
		if (defect == FORGE_TCP_CHECKSUM)
			r.tcp.check ^= 0x0101;
		if (out + sizeof(r) > data_end)
			return XDP_DROP;
		__builtin_memcpy(out, &r, sizeof(r));
	} else {
		struct tcp4_reply r = {};
		r.ip.version = 4;
		r.ip.ihl = 5;
		r.ip.tot_len = bpf_htons(sizeof(r));
		// DF; a forged fragment has more-fragments set instead.
		r.ip.frag_off = bpf_htons(defect == FORGE_FRAGMENT ? 0x2000 : 0x4000);
		r.ip.ttl = 64;
		r.ip.protocol = IPPROTO_TCP;
		__builtin_memcpy(&r.ip.saddr, in->daddr, 4);
		__builtin_memcpy(&r.ip.daddr, in->saddr, 4);
		r.ip.check = fold(sum16(0, &r.ip, sizeof(r.ip)));
		if (defect == FORGE_IP_CHECKSUM)
			r.ip.check ^= 0x0101;
		r.tcp = tcp;
		if (defect == FORGE_DATA_OFFSET)
			r.tcp.doff = 15;
		__u32 sum = sum16(0, &r.ip.saddr, 8);
		sum += bpf_htons(sizeof(struct tcphdr));
		sum += bpf_htons(IPPROTO_TCP);
		sum = sum16(sum, &r.tcp, sizeof(r.tcp));
		r.tcp.check = fold(sum);
		if (defect == FORGE_TCP_CHECKSUM)
			r.tcp.check ^= 0x0101;
		if (out + sizeof(r) > data_end)
			return XDP_DROP;
		__builtin_memcpy(out, &r, sizeof(r));
	}
	count(open ? CNT_SYN_ACKS : CNT_RSTS);
	return XDP_TX;
}

// Whether host `a` answers echo: not silent, not in `noicmp`. Counts a
// refused request.
static __always_inline int answers_echo(const struct config *cfg, const __u8 *a, int v6)
{
	struct host key = {};
	host_key(&key, a, v6);
	if (classify(cfg, a, v6) == SILENT || bpf_map_lookup_elem(&noicmp, &key)) {
		count(CNT_ECHO_DROPPED);
		return 0;
	}
	return 1;
}

// RFC 1624: the checksum `check` after the 16-bit word `old` became `new`
// (all three as found in the packet).
static __always_inline __u16 csum_replace(__u16 check, __u16 old, __u16 new)
{
	__u32 sum = (__u16)~check;
	sum += (__u16)~old;
	sum += new;
	return fold(sum);
}

static __always_inline void swap_macs(struct ethhdr *eth, const struct config *cfg)
{
	__builtin_memcpy(eth->h_dest, eth->h_source, 6);
	__builtin_memcpy(eth->h_source, cfg->mac, 6);
}

// An ICMP echo request to a host of the block, answered in place.
static __always_inline int echo4(struct xdp_md *ctx, const struct config *cfg, struct ethhdr *eth,
				 struct iphdr *ip)
{
	void *data_end = (void *)(long)ctx->data_end;
	if (ip->ihl != 5)
		return pass();
	__u8 *icmp = (void *)(ip + 1);
	if ((void *)(icmp + 8) > data_end)
		return pass();
	if (icmp[0] != 8 || icmp[1] != 0)
		return pass();
	if (!answers_echo(cfg, (const __u8 *)&ip->daddr, 0))
		return XDP_DROP;
	__be32 them = ip->saddr;
	ip->saddr = ip->daddr;
	ip->daddr = them;
	ip->ttl = 64;
	ip->check = 0;
	ip->check = fold(sum16(0, ip, sizeof(*ip)));
	__u16 *check = (void *)(icmp + 2);
	*check = csum_replace(*check, bpf_htons(0x0800), 0); // type 8 -> 0
	icmp[0] = 0;
	swap_macs(eth, cfg);
	count(CNT_ECHO);
	return XDP_TX;
}

// An ICMPv6 echo request to a host of the block, answered in place.
static __always_inline int echo6(struct xdp_md *ctx, const struct config *cfg, struct ethhdr *eth,
				 struct ipv6hdr *ip6)
{
	void *data_end = (void *)(long)ctx->data_end;
	__u8 *icmp = (void *)(ip6 + 1);
	if ((void *)(icmp + 8) > data_end)
		return pass();
	if (icmp[0] != 128 || icmp[1] != 0)
		return pass();
	if (!answers_echo(cfg, (const __u8 *)&ip6->daddr, 1))
		return XDP_DROP;
	struct in6_addr them = ip6->saddr;
	ip6->saddr = ip6->daddr;
	ip6->daddr = them;
	ip6->hop_limit = 64;
	__u16 *check = (void *)(icmp + 2);
	*check = csum_replace(*check, bpf_htons(0x8000), bpf_htons(0x8100)); // 128 -> 129
	icmp[0] = 129;
	swap_macs(eth, cfg);
	count(CNT_ECHO);
	return XDP_TX;
}

// A TCP segment to the block: a SYN is answered, a RST dropped, the rest
// passed.
static __always_inline int tcp_in(struct xdp_md *ctx, const struct config *cfg, __u32 l3off,
				  int v6, struct tcphdr *tcp, struct syn_info *in)
{
	void *data_end = (void *)(long)ctx->data_end;
	if ((void *)(tcp + 1) > data_end)
		return pass();
	__u8 flags = ((__u8 *)tcp)[13];
	if (flags & TCP_RST) {
		count(CNT_RSTS_IN);
		return XDP_DROP;
	}
	if ((flags & (TCP_SYN | TCP_ACK | TCP_FIN)) != TCP_SYN)
		return pass();
	in->sport = tcp->source;
	in->dport = tcp->dest;
	in->seq = bpf_ntohl(tcp->seq);
	return answer_syn(ctx, cfg, l3off, v6, in);
}

SEC("xdp")
int palisade_responder(struct xdp_md *ctx)
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
	struct ethhdr *eth = data;
	void *l3 = data + l3off;

	if (proto == bpf_htons(ETH_P_ARP))
		return answer_arp(ctx, cfg, eth, l3);

	struct syn_info in = {};
	__builtin_memcpy(in.smac, eth->h_source, 6);
	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = l3;
		if ((void *)(ip + 1) > data_end)
			return pass();
		if (ip->ihl < 5 || (ip->frag_off & bpf_htons(0x3fff)))
			return pass();
		if (!in_v4_block(cfg, ip->daddr))
			return pass();
		if (ip->protocol == IPPROTO_ICMP)
			return echo4(ctx, cfg, eth, ip);
		if (ip->protocol != IPPROTO_TCP)
			return pass();
		__builtin_memcpy(in.saddr, &ip->saddr, 4);
		__builtin_memcpy(in.daddr, &ip->daddr, 4);
		struct tcphdr *tcp = (void *)ip + ip->ihl * 4;
		return tcp_in(ctx, cfg, l3off, 0, tcp, &in);
	}
	if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = l3;
		if ((void *)(ip6 + 1) > data_end)
			return pass();
		if (ip6->nexthdr == 58) { // ICMPv6
			__u8 *icmp = (void *)(ip6 + 1);
			if ((void *)(icmp + 1) <= data_end && icmp[0] == 128 &&
			    in_v6_block(cfg, (const __u8 *)&ip6->daddr))
				return echo6(ctx, cfg, eth, ip6);
			return answer_ns(ctx, cfg, l3off, ip6);
		}
		if (ip6->nexthdr != IPPROTO_TCP)
			return pass();
		if (!in_v6_block(cfg, (const __u8 *)&ip6->daddr))
			return pass();
		__builtin_memcpy(in.saddr, &ip6->saddr, 16);
		__builtin_memcpy(in.daddr, &ip6->daddr, 16);
		return tcp_in(ctx, cfg, l3off, 1, (void *)(ip6 + 1), &in);
	}
	return pass();
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
