/* Sensitive file opens (open, openat, openat2), filtered IN THE KERNEL by the prefix trie.
 *
 * Entry saves the filename pointer and flags per thread; exit resolves the path from the
 * opened file (so relative paths and dirfds give absolute paths) or, on failure, reads the
 * user string then, when the page is surely mapped. Only matching opens reach the ring. */
#include "common.h"

char LICENSE[] SEC("license") = "GPL";

static __always_inline int save_open(const char *filename, __u32 flags)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct inflight in = {};

	if (is_self(id >> 32))
		return 0;
	in.kind = TSR_OPEN;
	in.ptr = (__u64)filename;
	in.flags = flags;
	bpf_map_update_elem(&ts_inflight, &id, &in, BPF_ANY);
	return 0;
}

SEC("tp/syscalls/sys_enter_openat")
int ts_enter_openat(struct trace_event_raw_sys_enter *ctx)
{
	return save_open((const char *)ctx->args[1], ctx->args[2]);
}

SEC("tp/syscalls/sys_enter_open")
int ts_enter_open(struct trace_event_raw_sys_enter *ctx)
{
	return save_open((const char *)ctx->args[0], ctx->args[1]);
}

SEC("tp/syscalls/sys_enter_openat2")
int ts_enter_openat2(struct trace_event_raw_sys_enter *ctx)
{
	__u64 flags = 0;
	bpf_probe_read_user(&flags, sizeof(flags), (void *)ctx->args[2]);  /* open_how.flags */
	return save_open((const char *)ctx->args[1], flags);
}

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
	bool hit;
};

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
	if (bpf_map_lookup_elem(&ts_prefixes, &s->key2)) {
		t->hit = true;
		return 1;
	}
	return 0;
}

/* Does the path in s->rec.open.path (path_len bytes with NUL) match a sensitive prefix? */
static __always_inline bool match_prefix(struct scratch *s, __u32 path_len)
{
	struct tsr_config *cfg = get_config();
	__u32 len = path_len > 0 ? path_len - 1 : 0;

	if (len > TSR_PREFIX_MAX)
		len = TSR_PREFIX_MAX;
	bpf_probe_read_kernel(s->key.data, TSR_PREFIX_MAX, s->rec.open.path);
	s->key.prefixlen = len * 8;
	if (bpf_map_lookup_elem(&ts_prefixes, &s->key))
		return true;
	if (!cfg || !cfg->wild_mask)
		return false;

	struct star_ctx sc = { .s = s, .len = len };
	bpf_loop(TSR_PREFIX_MAX, star_scan, &sc, 0);
	struct star_try t = { .s = s, .sc = &sc, .mask = cfg->wild_mask };
	bpf_loop(8, star_lookup, &t, 0);
	return t.hit;
}

static __always_inline int open_exit(struct trace_event_raw_sys_exit *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct inflight *in = bpf_map_lookup_elem(&ts_inflight, &id);
	struct scratch *s;
	struct tsr_open *o;
	__u32 path_len = 0;
	__u64 ptr;
	__u32 flags;
	bool trunc = false;
	long ret = ctx->ret;

	if (!in || in->kind != TSR_OPEN)
		return 0;
	ptr = in->ptr;
	flags = in->flags;
	bpf_map_delete_elem(&ts_inflight, &id);
	s = get_scratch();
	if (!s)
		return 0;
	o = &s->rec.open;
	o->h.flags = 0;
	if (ret >= 0) {
		struct file *f = file_from_fd(ret);
		if (f) {
			__u32 off = build_path(s, BPF_CORE_READ(f, f_path.dentry),
					       BPF_CORE_READ(f, f_path.mnt), &trunc);
			path_len = copy_path(s, o->path, off);
		}
	}
	if (!path_len) {
		long n = bpf_probe_read_user_str(o->path, TSR_PATH_MAX, (const char *)ptr);
		path_len = n > 0 ? n : 0;
		trunc = false;
	}
	if (!match_prefix(s, path_len)) {
		count(TSR_C_FILTERED);
		return 0;
	}
	fill_task(&o->h, (struct task_struct *)bpf_get_current_task());
	o->h.kind = TSR_OPEN;
	if (ret < 0 || trunc)
		o->h.flags |= ret < 0 ? TSR_F_PATH_USER : TSR_F_PATH_TRUNC;
	o->result = ret;
	o->flags = flags;
	o->path_len = path_len;
	emit(s, offsetof(struct tsr_open, path) + (path_len & (2 * TSR_PATH_MAX - 1)));
	return 0;
}

/* open, openat and openat2 exit the same way; the saved entry state says which file. */
SEC("tp/syscalls/sys_exit_openat")
int ts_exit_openat(struct trace_event_raw_sys_exit *ctx)
{
	return open_exit(ctx);
}

SEC("tp/syscalls/sys_exit_open")
int ts_exit_open(struct trace_event_raw_sys_exit *ctx)
{
	return open_exit(ctx);
}

SEC("tp/syscalls/sys_exit_openat2")
int ts_exit_openat2(struct trace_event_raw_sys_exit *ctx)
{
	return open_exit(ctx);
}
