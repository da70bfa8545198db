# Included by _bpf.pyx: TCP connect/accept/listen and DNS queries.

cdef str _TCP = "tcp"
cdef str _UDP = "udp"
cdef str _IPV4 = "ipv4"
cdef str _IPV6 = "ipv6"


cdef inline str _ip(uint16_t family, const uint8_t *addr):
    cdef char buf[64]
    if inet_ntop(AF_INET6 if family == AF_INET6 else AF_INET, addr, buf, 64) == NULL:
        return ""
    return buf.decode("ascii")


cdef str _dns_qname(const uint8_t *p, uint32_t n):
    """The first question's name of a DNS query payload, or None if not decodable."""
    cdef char out[256]
    cdef uint32_t i = 12
    cdef int o = 0
    cdef uint8_t l
    if n < 13:
        return None
    while i < n:
        l = p[i]
        if l == 0:
            return out[:o].decode("ascii", "replace")
        if l & 0xC0 or i + 1 + l > n or o + l + 1 > 254:
            return None
        if o:
            out[o] = b"."
            o += 1
        memcpy(out + o, p + i + 1, l)
        o += l
        i += 1 + l
    return None


cdef dict decode_net(Decoder dec, const tsr_net *n):
    cdef uint16_t kind = n.h.kind
    cdef dict d
    if kind == TSR_CONNECT:
        d = dec.common(&n.h, actions.CONNECT)
        d["network.direction"] = "egress"
        # -EINPROGRESS (non-blocking connect): not yet known
        d["event.outcome"] = (_SUCCESS if n.result == 0 else
                              _UNKNOWN if n.result == -115 else _FAILURE)
    elif kind == TSR_ACCEPT:
        d = dec.common(&n.h, actions.ACCEPT)
        d["network.direction"] = "ingress"
    elif kind == TSR_LISTEN:
        d = dec.common(&n.h, actions.LISTEN)
        d["network.direction"] = "ingress"   # ECS has no "listening": what it awaits
    else:
        d = dec.common(&n.h, actions.DNS_QUERY)
        d["network.protocol"] = "dns"
        d["network.direction"] = "egress"
        name = _dns_qname(n.payload, n.payload_len)
        if name is not None:
            d["dns.question.name"] = name
    if kind != TSR_LISTEN and (kind != TSR_DNS or n.sport):
        d["source.ip"] = _ip(n.family, n.saddr)
        d["source.port"] = n.sport
    d["destination.ip"] = _ip(n.family, n.daddr)
    d["destination.port"] = n.dport
    d["network.transport"] = _UDP if n.protocol == 17 else _TCP
    d["network.type"] = _IPV6 if n.family == AF_INET6 else _IPV4
    return d

