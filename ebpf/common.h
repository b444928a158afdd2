// Shared by replies.bpf.c and responder.bpf.c: the headers both use and the
// Ethernet parse (one 802.1Q or 802.1ad tag).
#pragma once

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include <linux/tcp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#ifndef ETH_P_8021AD
#define ETH_P_8021AD 0x88A8
#endif

// The offset of the L3 header of the frame at `data`, past one VLAN tag, and
// its protocol (network order) in `*proto`; 0 if the frame is too short.
static __always_inline __u32 l3_offset(void *data, void *data_end, __u16 *proto)
{
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end)
		return 0;
	*proto = eth->h_proto;
	__u32 off = sizeof(*eth);
	if (*proto == bpf_htons(ETH_P_8021Q) || *proto == bpf_htons(ETH_P_8021AD)) {
		// struct vlan_hdr: TCI then the encapsulated protocol.
		__be16 *vlan = (void *)(eth + 1);
		if ((void *)(vlan + 2) > data_end)
			return 0;
		*proto = vlan[1];
		off += 4;
	}
	return off;
}
