/* Network: TCP connect (egress), accept (ingress) and listen, IPv4 and IPv6, from the
 * syscalls so the acting pid is right; UDP datagrams to port 53 (sendto, sendmsg,
 * sendmmsg, also on connected sockets) with their payload for DNS question decoding, and
 * DNS over TCP (the first segment of each send on a connection to port 53). */
#include "common.h"

char LICENSE[] SEC("license") = "GPL";

/* Local address of sk into (addr, port); remote into the other pair. */
static __always_inline void sock_addrs(struct sock *sk, __u16 family, __u8 *laddr, __u16 *lport,
				       __u8 *raddr, __u16 *rport)
{
	*lport = BPF_CORE_READ(sk, __sk_common.skc_num);
	*rport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	if (family == TSR_AF_INET6) {
		BPF_CORE_READ_INTO((struct in6_addr *)laddr, sk, __sk_common.skc_v6_rcv_saddr);
		BPF_CORE_READ_INTO((struct in6_addr *)raddr, sk, __sk_common.skc_v6_daddr);
	} else {
		BPF_CORE_READ_INTO((__be32 *)laddr, sk, __sk_common.skc_rcv_saddr);
		BPF_CORE_READ_INTO((__be32 *)raddr, sk, __sk_common.skc_daddr);
	}
}

/* Destination of a user sockaddr (copied into sa): returns the family, 0 if not IP. */
static __always_inline __u16 sockaddr_dest(const __u8 *sa, __u8 *addr, __u16 *port)
{
	__u16 family = *(const __u16 *)sa;
	*port = bpf_ntohs(*(const __u16 *)(sa + 2));
	if (family == TSR_AF_INET) {
		__builtin_memcpy(addr, sa + 4, 4);
	} else if (family == TSR_AF_INET6) {
		__builtin_memcpy(addr, sa + 8, 16);
	} else {
		return 0;
	}
	return family;
}

static __always_inline struct tsr_net *net_record(struct scratch *s, __u16 kind)
{
	struct tsr_net *n = &s->rec.net;
	fill_task(&n->h, (struct task_struct *)bpf_get_current_task());
	n->h.kind = kind;
	n->result = 0;
	n->payload_len = 0;
	__builtin_memset(n->saddr, 0, sizeof(n->saddr));
	__builtin_memset(n->daddr, 0, sizeof(n->daddr));
	return n;
}

static __always_inline int save_fd(__u16 kind, int fd, const void *uaddr, __u32 addrlen)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct inflight in = {};

	if (is_self(id >> 32))
		return 0;
	in.kind = kind;
	in.fd = fd;
	if (uaddr) {
		in.addrlen = addrlen;
		bpf_probe_read_user(in.sa, sizeof(in.sa), uaddr);
	}
	bpf_map_update_elem(&ts_inflight, &id, &in, BPF_ANY);
	return 0;
}

SEC("tp/syscalls/sys_enter_connect")
int ts_enter_connect(struct trace_event_raw_sys_enter *ctx)
{
	return save_fd(TSR_CONNECT, ctx->args[0], (const void *)ctx->args[1], ctx->args[2]);
}

SEC("tp/syscalls/sys_exit_connect")
int ts_exit_connect(struct trace_event_raw_sys_exit *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct inflight *in = bpf_map_lookup_elem(&ts_inflight, &id);
	struct scratch *s;
	struct tsr_net *n;
	struct sock *sk;
	__u8 raddr[16];
	__u16 rport = 0, lport = 0, dummy;

	if (!in || in->kind != TSR_CONNECT)
		return 0;
	sk = sock_from_fd(in->fd);
	if (!sk || BPF_CORE_READ(sk, sk_protocol) != TSR_IPPROTO_TCP) {
		bpf_map_delete_elem(&ts_inflight, &id);
		return 0;
	}
	s = get_scratch();
	if (!s)
		return 0;
	__builtin_memset(raddr, 0, sizeof(raddr));
	__u16 family = sockaddr_dest(in->sa, raddr, &rport);
	bpf_map_delete_elem(&ts_inflight, &id);
	if (!family)
		return 0;
	n = net_record(s, TSR_CONNECT);
	n->family = BPF_CORE_READ(sk, __sk_common.skc_family);
	n->protocol = TSR_IPPROTO_TCP;
	sock_addrs(sk, n->family, n->saddr, &lport, n->daddr, &dummy);
	if (family == TSR_AF_INET && n->family == TSR_AF_INET6) {
		/* v4 address on a dual-stack socket: report it v4-mapped */
		__builtin_memset(n->daddr, 0, 10);
		n->daddr[10] = 0xff;
		n->daddr[11] = 0xff;
		__builtin_memcpy(&n->daddr[12], raddr, 4);
	} else {
		__builtin_memcpy(n->daddr, raddr, 16);
	}
	n->sport = lport;
	n->dport = rport;
	n->result = ctx->ret;
	emit(s, offsetof(struct tsr_net, payload));
	return 0;
}

static __always_inline int accept_exit(struct trace_event_raw_sys_exit *ctx)
{
	struct scratch *s;
	struct tsr_net *n;
	struct sock *sk;
	long ret = ctx->ret;

	if (ret < 0 || is_self(current_tgid()))
		return 0;
	sk = sock_from_fd(ret);
	if (!sk || BPF_CORE_READ(sk, sk_protocol) != TSR_IPPROTO_TCP)
		return 0;
	s = get_scratch();
	if (!s)
		return 0;
	n = net_record(s, TSR_ACCEPT);
	n->family = BPF_CORE_READ(sk, __sk_common.skc_family);
	n->protocol = TSR_IPPROTO_TCP;
	/* source = the remote peer, destination = our local end */
	sock_addrs(sk, n->family, n->daddr, &n->dport, n->saddr, &n->sport);
	n->result = ret;
	emit(s, offsetof(struct tsr_net, payload));
	return 0;
}

SEC("tp/syscalls/sys_exit_accept")
int ts_exit_accept(struct trace_event_raw_sys_exit *ctx)
{
	return accept_exit(ctx);
}

SEC("tp/syscalls/sys_exit_accept4")
int ts_exit_accept4(struct trace_event_raw_sys_exit *ctx)
{
	return accept_exit(ctx);
}

SEC("tp/syscalls/sys_enter_listen")
int ts_enter_listen(struct trace_event_raw_sys_enter *ctx)
{
	return save_fd(TSR_LISTEN, ctx->args[0], NULL, 0);
}

SEC("tp/syscalls/sys_exit_listen")
int ts_exit_listen(struct trace_event_raw_sys_exit *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct inflight *in = bpf_map_lookup_elem(&ts_inflight, &id);
	struct scratch *s;
	struct tsr_net *n;
	struct sock *sk;
	__u16 dummy;
	__u8 dummy_addr[16];

	if (!in || in->kind != TSR_LISTEN)
		return 0;
	int fd = in->fd;
	bpf_map_delete_elem(&ts_inflight, &id);
	if (ctx->ret != 0)
		return 0;
	sk = sock_from_fd(fd);
	if (!sk || BPF_CORE_READ(sk, sk_protocol) != TSR_IPPROTO_TCP)
		return 0;
	s = get_scratch();
	if (!s)
		return 0;
	n = net_record(s, TSR_LISTEN);
	n->family = BPF_CORE_READ(sk, __sk_common.skc_family);
	n->protocol = TSR_IPPROTO_TCP;
	n->sport = 0;
	sock_addrs(sk, n->family, n->daddr, &n->dport, dummy_addr, &dummy);
	emit(s, offsetof(struct tsr_net, payload));
	return 0;
}

/* A UDP datagram about to be sent: report it when it goes to port 53. */
static __always_inline int udp_send(int fd, const void *buf, __u64 len, const void *uaddr)
{
	struct scratch *s;
	struct tsr_net *n;
	struct sock *sk;
	__u8 sa[28];
	__u8 daddr[16];
	__u16 dport = 0, family;

	if (is_self(current_tgid()))
		return 0;
	sk = sock_from_fd(fd);
	if (!sk || BPF_CORE_READ(sk, sk_protocol) != TSR_IPPROTO_UDP)
		return 0;
	__builtin_memset(daddr, 0, sizeof(daddr));
	family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if (uaddr) {
		if (bpf_probe_read_user(sa, sizeof(sa), uaddr))
			return 0;
		family = sockaddr_dest(sa, daddr, &dport);
		if (!family)
			return 0;
	} else {
		dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
		if (family == TSR_AF_INET6)
			BPF_CORE_READ_INTO((struct in6_addr *)daddr, sk, __sk_common.skc_v6_daddr);
		else
			BPF_CORE_READ_INTO((__be32 *)daddr, sk, __sk_common.skc_daddr);
	}
	if (dport != 53)
		return 0;
	s = get_scratch();
	if (!s)
		return 0;
	n = net_record(s, TSR_DNS);
	n->family = family;
	n->protocol = TSR_IPPROTO_UDP;
	n->dport = dport;
	n->sport = BPF_CORE_READ(sk, __sk_common.skc_num);
	__builtin_memcpy(n->daddr, daddr, 16);
	if (family == TSR_AF_INET6)
		BPF_CORE_READ_INTO((struct in6_addr *)n->saddr, sk, __sk_common.skc_v6_rcv_saddr);
	else
		BPF_CORE_READ_INTO((__be32 *)n->saddr, sk, __sk_common.skc_rcv_saddr);
	__u64 plen = len;
	if (plen > TSR_DNS_MAX)
		plen = TSR_DNS_MAX;
	ts_barrier(plen);
	if (plen > TSR_DNS_MAX)
		plen = TSR_DNS_MAX;
	if (bpf_probe_read_user(n->payload, plen & 511, buf))
		plen = 0;
	n->payload_len = plen;
	emit(s, offsetof(struct tsr_net, payload) + (plen & 511));
	return 0;
}

SEC("tp/syscalls/sys_enter_sendto")
int ts_enter_sendto(struct trace_event_raw_sys_enter *ctx)
{
	return udp_send(ctx->args[0], (const void *)ctx->args[1], ctx->args[2],
			(const void *)ctx->args[4]);
}

static __always_inline int msg_send(int fd, const struct user_msghdr *umsg)
{
	struct user_msghdr m;
	struct iovec iov;

	if (bpf_probe_read_user(&m, sizeof(m), umsg))
		return 0;
	if (!m.msg_iov || bpf_probe_read_user(&iov, sizeof(iov), m.msg_iov))
		return 0;
	return udp_send(fd, iov.iov_base, iov.iov_len, m.msg_name);
}

SEC("tp/syscalls/sys_enter_sendmsg")
int ts_enter_sendmsg(struct trace_event_raw_sys_enter *ctx)
{
	return msg_send(ctx->args[0], (const struct user_msghdr *)ctx->args[1]);
}

SEC("tp/syscalls/sys_enter_sendmmsg")
int ts_enter_sendmmsg(struct trace_event_raw_sys_enter *ctx)
{
	/* the first message (glibc sends the A and AAAA questions together) */
	return msg_send(ctx->args[0], (const struct user_msghdr *)ctx->args[1]);
}

/* ---- DNS over TCP ---------------------------------------------------------------------- */

/* The user buffer a send starts with, skipping DNS-over-TCP's two-byte length prefix
 * (sent as its own iovec by some resolvers, in front of the message by others). */
static __always_inline const __u8 *tcp_dns_message(struct msghdr *msg, __u64 *len)
{
	__u8 type = BPF_CORE_READ(msg, msg_iter.iter_type);
	struct iovec v = {};

	if (type == bpf_core_enum_value(enum iter_type, ITER_UBUF)) {
		v.iov_base = BPF_CORE_READ(msg, msg_iter.ubuf);
		v.iov_len = BPF_CORE_READ(msg, msg_iter.count);
	} else if (type == bpf_core_enum_value(enum iter_type, ITER_IOVEC)) {
		const struct iovec *iov = BPF_CORE_READ(msg, msg_iter.__iov);
		bpf_probe_read_kernel(&v, sizeof(v), iov);
		if (v.iov_len == 2 && BPF_CORE_READ(msg, msg_iter.nr_segs) > 1) {
			bpf_probe_read_kernel(&v, sizeof(v), iov + 1);
			*len = v.iov_len;
			return v.iov_base;
		}
	} else {
		return NULL;
	}
	if (v.iov_len <= 2)
		return NULL;
	*len = v.iov_len - 2;
	return (const __u8 *)v.iov_base + 2;
}

/* Each TCP send, as the socket layer takes it (process context, right pid). Only
 * connections to port 53 at the start of a send are looked at: a cheap test for the rest.
 * Loaded only where the tracepoint exists ('?', see probe.py). */
SEC("?tp_btf/tcp_sendmsg_locked")
int BPF_PROG(ts_tcp_sendmsg, struct sock *sk, struct msghdr *msg, struct sk_buff *skb,
	     int size_goal)
{
	struct scratch *s;
	struct tsr_net *n;
	const __u8 *buf;
	__u64 len = 0;
	__u16 dummy;

	if (BPF_CORE_READ(sk, __sk_common.skc_dport) != bpf_htons(53))
		return 0;
	if (BPF_CORE_READ(msg, msg_iter.iov_offset) != 0 || is_self(current_tgid()))
		return 0;
	buf = tcp_dns_message(msg, &len);
	if (!buf)
		return 0;
	s = get_scratch();
	if (!s)
		return 0;
	n = net_record(s, TSR_DNS);
	n->family = BPF_CORE_READ(sk, __sk_common.skc_family);
	n->protocol = TSR_IPPROTO_TCP;
	sock_addrs(sk, n->family, n->saddr, &n->sport, n->daddr, &dummy);
	n->dport = 53;
	if (len > TSR_DNS_MAX)
		len = TSR_DNS_MAX;
	ts_barrier(len);
	if (len > TSR_DNS_MAX)
		len = TSR_DNS_MAX;
	if (bpf_probe_read_user(n->payload, len & 511, buf))
		len = 0;
	n->payload_len = len;
	emit(s, offsetof(struct tsr_net, payload) + (len & 511));
	return 0;
}
