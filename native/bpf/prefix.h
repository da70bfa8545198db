/* In-kernel path-prefix matching against an LPM trie, with one '*' path component.
 *
 * Two tries use it: ts_prefixes (sensitive opens) and ts_watched (file changes). A path
 * matches when the trie holds a prefix of it, or -- for each component k set in the trie's
 * wild mask -- a prefix of it with component k replaced by '*'. Only the first
 * TSR_PREFIX_MAX bytes take part. The map is picked by `watched` inside the lookups, since
 * a map pointer cannot travel through bpf_loop's context.
 */
#ifndef THREATSEER_PREFIX_H
#define THREATSEER_PREFIX_H

#include "common.h"

struct star_ctx {
	struct scratch *s;
	__u32 len;        /* bytes of path in key.data (no NUL) */
	__u32 comp;       /* components seen */
	__u32 start[10];  /* start[k]: index of component k's first byte */
};

/* bpf_loop callback: record where each of the first 8 components starts. */
static long star_scan(__u64 i, void *arg)
{
	struct star_ctx *c = arg;
	__u32 idx = i & (TSR_PREFIX_MAX - 1);
	if (idx >= c->len)
		return 1;
	if (c->s->key.data[idx] == '/') {
		__u32 k = c->comp + 1;
		if (k > 8)
			return 1;
		c->comp = k;
		c->start[k & 7] = idx + 1;  /* k == 8 lands on slot 0, unused by lookups */
	}
	return 0;
}

struct star_try {
	struct scratch *s;
	struct star_ctx *sc;
	__u32 mask;
	__u32 watched;
	__u8 hit;         /* the matching entry's value */
};

static __always_inline __u8 trie_lookup(__u32 watched, struct tsr_prefix_key *key)
{
	__u8 *v = watched ? bpf_map_lookup_elem(&ts_watched, key)
			  : bpf_map_lookup_elem(&ts_prefixes, key);
	return v ? (*v ? *v : 1) : 0;
}

/* bpf_loop callback: replace component k by '*' and look the result up in the trie. */
static long star_lookup(__u64 k, void *arg)
{
	struct star_try *t = arg;
	struct star_ctx *sc = t->sc;
	struct scratch *s = t->s;

	if (k < 1 || k > 7)
		return 0;
	if (!(t->mask & (1u << k)))
		return 0;
	if (k > sc->comp)
		return 1;
	__u32 b = sc->start[k & 7] & (TSR_PREFIX_MAX - 1);
	__u32 e = sc->len;                         /* end of component k */
	if (k + 1 <= sc->comp)
		e = (sc->start[(k + 1) & 7] - 1) & (TSR_PREFIX_MAX - 1);
	if (e < b)
		return 0;
	__u32 rest = sc->len > e ? sc->len - e : 0;

	bpf_probe_read_kernel(s->key2.data, b & (TSR_PREFIX_MAX - 1), s->key.data);
	__u32 at = b & (TSR_PREFIX_MAX - 1);
	s->key2.data[at] = '*';
	__u32 room = TSR_PREFIX_MAX - 1 - at;
	if (rest > room)
		rest = room;
	if (at + 1 < TSR_PREFIX_MAX)
		bpf_probe_read_kernel(&s->key2.data[(at + 1) & (TSR_PREFIX_MAX - 1)],
				      rest & (TSR_PREFIX_MAX - 1), &s->key.data[e & (TSR_PREFIX_MAX - 1)]);
	__u32 n = b + 1 + rest;
	if (n > TSR_PREFIX_MAX)
		n = TSR_PREFIX_MAX;
	s->key2.prefixlen = n * 8;
	t->hit = trie_lookup(t->watched, &s->key2);
	return t->hit ? 1 : 0;
}

/* The value of the trie entry matching path (path_len bytes with its NUL), 0 for none.
 * watched: 0 = ts_prefixes (sensitive opens), 1 = ts_watched (file changes). */
static __always_inline __u8 match_prefix(struct scratch *s, const char *path, __u32 path_len,
					 __u32 watched)
{
	struct tsr_config *cfg = get_config();
	__u32 len = path_len > 0 ? path_len - 1 : 0;
	__u32 mask;
	__u8 hit;

	if (len > TSR_PREFIX_MAX)
		len = TSR_PREFIX_MAX;
	bpf_probe_read_kernel(s->key.data, TSR_PREFIX_MAX, path);
	s->key.prefixlen = len * 8;
	hit = trie_lookup(watched, &s->key);
	if (hit)
		return hit;
	mask = !cfg ? 0 : watched ? cfg->watch_wild_mask : cfg->wild_mask;
	if (!mask)
		return 0;

	struct star_ctx sc = { .s = s, .len = len };
	bpf_loop(TSR_PREFIX_MAX, star_scan, &sc, 0);
	struct star_try t = { .s = s, .sc = &sc, .mask = mask, .watched = watched };
	bpf_loop(8, star_lookup, &t, 0);
	return t.hit;
}

#endif /* THREATSEER_PREFIX_H */
