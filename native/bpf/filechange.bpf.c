/* File changes: unlink/rmdir, rename, link/symlink, mkdir, chmod, chown, utimes, setxattr of
 * security.capability, truncate. (Creating and write-opening watched files is seen by the
 * open programs in file.bpf.c.)
 *
 * Entry saves the arguments per thread (ts_calls); exit reads the user strings (now surely
 * mapped), joins relative paths to the cwd or dirfd's path, and keeps the change only when
 * a path is under a watched prefix (ts_watched, same '*' rule as sensitive opens) -- or,
 * for chmod, when it sets setuid/setgid bits, wherever the file is. Everything else is
 * counted as change_filtered.
 */
#include "prefix.h"

char LICENSE[] SEC("license") = "GPL";

#define TSR_AT_REMOVEDIR 0x200
#define TSR_S_ISUID 04000
#define TSR_S_ISGID 02000
#define TSR_UTIME_NOW ((1l << 30) - 1l)
#define TSR_UTIME_OMIT ((1l << 30) - 2l)

/* how utimes' times pointer (arg[1]) is laid out: arg[2] */
#define TIMES_UTIMBUF 0
#define TIMES_TIMEVAL 1
#define TIMES_TIMESPEC 2

static __always_inline int enter(__u16 op, int fd, __u64 ptr, int fd2, __u64 ptr2, __u32 mode,
				 __u64 a0, __u64 a1, __u64 a2, __u64 a3)
{
	struct call c = {
		.op = op, .fd = fd, .ptr = ptr, .fd2 = fd2, .ptr2 = ptr2, .mode = mode,
		.arg = { a0, a1, a2, a3 },
	};
	return save_call(&c);
}

/* Every exit tail-calls ONE handler program, so the verifier checks the handler once
 * instead of once per syscall (each copy took ~0.5 s to verify). */
SEC("tp/syscalls/sys_exit_unlink")
int ts_change_exit(struct trace_event_raw_sys_exit *ctx);

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 1);
	__uint(key_size, sizeof(__u32));
	__array(values, int (struct trace_event_raw_sys_exit *));
} ts_change_tail SEC(".maps") = {
	.values = { [0] = (void *)&ts_change_exit },
};

#define ARG(i) (ctx->args[i])
#define ENTER(sys) SEC("tp/syscalls/sys_enter_" #sys) \
	int ts_enter_##sys(struct trace_event_raw_sys_enter *ctx)
#define EXIT(sys) SEC("tp/syscalls/sys_exit_" #sys) \
	int ts_exit_##sys(struct trace_event_raw_sys_exit *ctx) \
	{ bpf_tail_call(ctx, &ts_change_tail, 0); return 0; }
#define CWD TSR_AT_FDCWD

/* Is the user string at ptr exactly "security.capability"? */
static __always_inline bool is_cap_xattr(__u64 ptr)
{
	static const char want[] = "security.capability";
	char name[sizeof(want)] = {};

	if (bpf_probe_read_user_str(name, sizeof(name), (const void *)ptr) != sizeof(want))
		return false;
#pragma unroll
	for (int i = 0; i < sizeof(want); i++)
		if (name[i] != want[i])
			return false;
	return true;
}

static __always_inline void read_mtime(struct tsr_fchange *fc, __u64 ptr, __u64 kind)
{
	__s64 t[4] = {};

	fc->mtime_set = 0;
	if (!ptr)
		return;                         /* NULL times: "now", not an explicit time */
	if (kind == TIMES_UTIMBUF) {
		if (bpf_probe_read_user(t, 2 * sizeof(__s64), (void *)ptr))
			return;
		fc->mtime_sec = t[1];
		fc->mtime_nsec = 0;
	} else {
		if (bpf_probe_read_user(t, sizeof(t), (void *)ptr))
			return;
		if (kind == TIMES_TIMESPEC && (t[3] == TSR_UTIME_NOW || t[3] == TSR_UTIME_OMIT))
			return;
		fc->mtime_sec = t[2];
		fc->mtime_nsec = kind == TIMES_TIMEVAL ? t[3] * 1000 : t[3];
	}
	fc->mtime_set = 1;
}

/* The handler: attached to nothing itself (autoattach off in the loader), reached only by
 * tail calls from the ts_exit_* programs. */
SEC("tp/syscalls/sys_exit_unlink")
int ts_change_exit(struct trace_event_raw_sys_exit *ctx)
{
	struct call c;
	struct scratch *s;
	struct tsr_fchange *fc;
	bool trunc = false;
	__u32 len1, len2 = 0;
	__u8 klass;

	if (!take_call(&c) || c.op < TSR_OP_UNLINK || c.op > TSR_OP_TRUNCATE)
		return 0;
	if (c.op == TSR_OP_SETXATTR && !is_cap_xattr(c.arg[1])) {
		count(TSR_C_CHANGE_FILTERED);
		return 0;
	}
	s = get_scratch();
	if (!s)
		return 0;
	fc = &s->rec.fc;
	len1 = path_at(s, fc->data, c.fd, c.ptr, &trunc);
	len1 &= (2 * TSR_PATH_MAX - 1);
	if (len1 > TSR_PATH_MAX)
		len1 = TSR_PATH_MAX;
	if (c.op == TSR_OP_RENAME || c.op == TSR_OP_LINK) {
		len2 = path_at(s, &fc->data[len1], c.fd2, c.ptr2, &trunc);
	} else if (c.op == TSR_OP_SYMLINK) {
		long n = bpf_probe_read_user_str(&fc->data[len1], TSR_PATH_MAX, (const void *)c.ptr2);
		len2 = n > 0 ? n : 0;
	}
	len2 &= (2 * TSR_PATH_MAX - 1);
	if (len2 > TSR_PATH_MAX)
		len2 = TSR_PATH_MAX;

	klass = match_prefix(s, fc->data, len1, 1);
	if (!klass && len2)
		klass = match_prefix(s, &fc->data[len1], len2, 1);
	if (c.op == TSR_OP_CHMOD && (c.mode & (TSR_S_ISUID | TSR_S_ISGID)))
		klass |= TSR_W_SETID;
	if (!klass) {
		count(TSR_C_CHANGE_FILTERED);
		return 0;
	}
	fill_task(&fc->h, (struct task_struct *)bpf_get_current_task());
	fc->h.kind = TSR_FCHANGE;
	if (trunc)
		fc->h.flags |= TSR_F_PATH_TRUNC;
	fc->result = ctx->ret;
	fc->op = c.op;
	fc->klass = klass;
	fc->mode = c.mode;
	fc->flags = c.arg[0];
	fc->uid = fc->gid = (__u32)-1;
	fc->mtime_set = 0;
	fc->size = 0;
	fc->xvalue_len = 0;
	if (c.op == TSR_OP_CHOWN) {
		fc->uid = c.arg[1];
		fc->gid = c.arg[2];
	} else if (c.op == TSR_OP_UTIMES) {
		read_mtime(fc, c.arg[1], c.arg[2]);
	} else if (c.op == TSR_OP_TRUNCATE) {
		fc->size = c.arg[1];
	} else if (c.op == TSR_OP_SETXATTR) {
		__u64 n = c.arg[3];
		fc->xvalue_len = n;
		if (n > sizeof(fc->xvalue))
			n = sizeof(fc->xvalue);
		if (bpf_probe_read_user(fc->xvalue, n & 31, (void *)c.arg[2]))
			fc->xvalue_len = 0;
	}
	fc->path_len = len1;
	fc->path2_len = len2;
	emit(s, offsetof(struct tsr_fchange, data) + len1 + len2);
	return 0;
}

ENTER(unlink) { return enter(TSR_OP_UNLINK, CWD, ARG(0), 0, 0, 0, 0, 0, 0, 0); }
EXIT(unlink)
ENTER(unlinkat)
{
	return enter(ARG(2) & TSR_AT_REMOVEDIR ? TSR_OP_RMDIR : TSR_OP_UNLINK, ARG(0), ARG(1), 0, 0,
		     0, ARG(2), 0, 0, 0);
}
EXIT(unlinkat)
ENTER(rmdir) { return enter(TSR_OP_RMDIR, CWD, ARG(0), 0, 0, 0, 0, 0, 0, 0); }
EXIT(rmdir)

ENTER(rename) { return enter(TSR_OP_RENAME, CWD, ARG(0), CWD, ARG(1), 0, 0, 0, 0, 0); }
EXIT(rename)
ENTER(renameat) { return enter(TSR_OP_RENAME, ARG(0), ARG(1), ARG(2), ARG(3), 0, 0, 0, 0, 0); }
EXIT(renameat)
ENTER(renameat2)
{
	return enter(TSR_OP_RENAME, ARG(0), ARG(1), ARG(2), ARG(3), 0, ARG(4), 0, 0, 0);
}
EXIT(renameat2)

ENTER(link) { return enter(TSR_OP_LINK, CWD, ARG(0), CWD, ARG(1), 0, 0, 0, 0, 0); }
EXIT(link)
ENTER(linkat) { return enter(TSR_OP_LINK, ARG(0), ARG(1), ARG(2), ARG(3), 0, ARG(4), 0, 0, 0); }
EXIT(linkat)
/* symlink: the first path is the link created, the second what it points to (verbatim) */
ENTER(symlink) { return enter(TSR_OP_SYMLINK, CWD, ARG(1), 0, ARG(0), 0, 0, 0, 0, 0); }
EXIT(symlink)
ENTER(symlinkat) { return enter(TSR_OP_SYMLINK, ARG(1), ARG(2), 0, ARG(0), 0, 0, 0, 0, 0); }
EXIT(symlinkat)

ENTER(mkdir) { return enter(TSR_OP_MKDIR, CWD, ARG(0), 0, 0, ARG(1), 0, 0, 0, 0); }
EXIT(mkdir)
ENTER(mkdirat) { return enter(TSR_OP_MKDIR, ARG(0), ARG(1), 0, 0, ARG(2), 0, 0, 0, 0); }
EXIT(mkdirat)

ENTER(chmod) { return enter(TSR_OP_CHMOD, CWD, ARG(0), 0, 0, ARG(1), 0, 0, 0, 0); }
EXIT(chmod)
ENTER(fchmod) { return enter(TSR_OP_CHMOD, ARG(0), 0, 0, 0, ARG(1), 0, 0, 0, 0); }
EXIT(fchmod)
ENTER(fchmodat) { return enter(TSR_OP_CHMOD, ARG(0), ARG(1), 0, 0, ARG(2), 0, 0, 0, 0); }
EXIT(fchmodat)
ENTER(fchmodat2) { return enter(TSR_OP_CHMOD, ARG(0), ARG(1), 0, 0, ARG(2), ARG(3), 0, 0, 0); }
EXIT(fchmodat2)

ENTER(chown) { return enter(TSR_OP_CHOWN, CWD, ARG(0), 0, 0, 0, 0, ARG(1), ARG(2), 0); }
EXIT(chown)
ENTER(lchown) { return enter(TSR_OP_CHOWN, CWD, ARG(0), 0, 0, 0, 0, ARG(1), ARG(2), 0); }
EXIT(lchown)
ENTER(fchown) { return enter(TSR_OP_CHOWN, ARG(0), 0, 0, 0, 0, 0, ARG(1), ARG(2), 0); }
EXIT(fchown)
ENTER(fchownat)
{
	return enter(TSR_OP_CHOWN, ARG(0), ARG(1), 0, 0, 0, ARG(4), ARG(2), ARG(3), 0);
}
EXIT(fchownat)

ENTER(utime) { return enter(TSR_OP_UTIMES, CWD, ARG(0), 0, 0, 0, 0, ARG(1), TIMES_UTIMBUF, 0); }
EXIT(utime)
ENTER(utimes) { return enter(TSR_OP_UTIMES, CWD, ARG(0), 0, 0, 0, 0, ARG(1), TIMES_TIMEVAL, 0); }
EXIT(utimes)
ENTER(futimesat)
{
	return enter(TSR_OP_UTIMES, ARG(0), ARG(1), 0, 0, 0, 0, ARG(2), TIMES_TIMEVAL, 0);
}
EXIT(futimesat)
ENTER(utimensat)
{
	return enter(TSR_OP_UTIMES, ARG(0), ARG(1), 0, 0, 0, ARG(3), ARG(2), TIMES_TIMESPEC, 0);
}
EXIT(utimensat)

/* setxattr(path, name, value, size, flags): only security.capability is kept (at exit) */
ENTER(setxattr)
{
	return enter(TSR_OP_SETXATTR, CWD, ARG(0), 0, 0, 0, ARG(4), ARG(1), ARG(2), ARG(3));
}
EXIT(setxattr)
ENTER(lsetxattr)
{
	return enter(TSR_OP_SETXATTR, CWD, ARG(0), 0, 0, 0, ARG(4), ARG(1), ARG(2), ARG(3));
}
EXIT(lsetxattr)
ENTER(fsetxattr)
{
	return enter(TSR_OP_SETXATTR, ARG(0), 0, 0, 0, 0, ARG(4), ARG(1), ARG(2), ARG(3));
}
EXIT(fsetxattr)

ENTER(truncate) { return enter(TSR_OP_TRUNCATE, CWD, ARG(0), 0, 0, 0, 0, ARG(1), 0, 0); }
EXIT(truncate)
ENTER(ftruncate) { return enter(TSR_OP_TRUNCATE, ARG(0), 0, 0, 0, 0, 0, ARG(1), 0, 0); }
EXIT(ftruncate)
