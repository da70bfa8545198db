/* Sensitive file opens (open, openat, openat2, creat), filtered IN THE KERNEL by the prefix
 * trie; successful write-intent opens of watched files are file changes (TSR_FCHANGE) too,
 * and so are opens of another process's /proc/PID/mem. Opens submitted through io_uring
 * (IORING_OP_OPENAT/OPENAT2) are seen at submission, through the same prefix filter.
 *
 * Entry saves the filename pointer and flags per thread; exit resolves the path from the
 * opened file (so relative paths and dirfds give absolute paths) or, on failure, reads the
 * user string then, when the page is surely mapped. Only matching opens reach the ring. */
#include "prefix.h"

char LICENSE[] SEC("license") = "GPL";

#define TSR_O_ACCMODE 3
#define TSR_O_CREAT 0100
#define TSR_O_TRUNC 01000
#define TSR_FMODE_CREATED 0x100000

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

SEC("tp/syscalls/sys_enter_creat")
int ts_enter_creat(struct trace_event_raw_sys_enter *ctx)
{
	return save_open((const char *)ctx->args[0], TSR_O_CREAT | 1 | TSR_O_TRUNC);
}

SEC("tp/syscalls/sys_enter_openat2")
int ts_enter_openat2(struct trace_event_raw_sys_enter *ctx)
{
	__u64 flags = 0;
	bpf_probe_read_user(&flags, sizeof(flags), (void *)ctx->args[2]);  /* open_how.flags */
	return save_open((const char *)ctx->args[1], flags);
}

/* Does the NUL-terminated path of path_len bytes at p look like /proc/.../mem? */
static __always_inline bool is_proc_mem(const char *p, __u32 path_len)
{
	__u32 e = (path_len - 5) & (TSR_PATH_MAX - 1);

	if (path_len < 12)
		return false;
	return p[0] == '/' && p[1] == 'p' && p[2] == 'r' && p[3] == 'o' && p[4] == 'c' &&
	       p[5] == '/' && p[e] == '/' && p[(e + 1) & (TSR_PATH_MAX - 1)] == 'm' &&
	       p[(e + 2) & (TSR_PATH_MAX - 1)] == 'e' && p[(e + 3) & (TSR_PATH_MAX - 1)] == 'm';
}

/* The pid in a /proc/PID/... path (0 when the component is not a number). */
static __always_inline __u32 proc_pid(const char *p)
{
	__u32 pid = 0;

#pragma unroll
	for (int i = 6; i < 16; i++) {
		char c = p[i];
		if (c == '/')
			return pid;
		if (c < '0' || c > '9')
			return 0;
		pid = pid * 10 + (c - '0');
	}
	return 0;
}

/* A successful open that is a file change: created, opened for writing or truncated under a
 * watched prefix; /proc/PID/mem opened for writing anywhere; /proc/PID/mem of ANOTHER
 * process opened for reading (memory dumping). The path (in s->rec.open.path) is moved to
 * s->ubuf first: the change record shares the scratch. */
static __always_inline void open_change(struct scratch *s, __u32 path_len, __u32 flags,
					long ret, struct file *f, bool write)
{
	struct tsr_fchange *fc = &s->rec.fc;
	__u8 klass;
	__u16 op;

	path_len &= (2 * TSR_PATH_MAX - 1);
	if (path_len > TSR_PATH_MAX)
		path_len = TSR_PATH_MAX;
	bpf_probe_read_kernel(s->ubuf, path_len, s->rec.open.path);
	if (is_proc_mem(s->ubuf, path_len)) {
		if (!write) {
			__u32 pid = proc_pid(s->ubuf);
			if (!pid || pid == current_tgid())
				return;
		}
		op = write ? TSR_OP_PROC_MEM : TSR_OP_PROC_MEM_READ;
		klass = 0;
	} else if (!write) {
		return;
	} else {
		klass = match_prefix(s, s->ubuf, path_len, 1);
		if (!klass) {
			count(TSR_C_CHANGE_FILTERED);
			return;
		}
		op = (BPF_CORE_READ(f, f_mode) & TSR_FMODE_CREATED) ? TSR_OP_CREATE
		     : (flags & TSR_O_TRUNC) ? TSR_OP_TRUNC_OPEN : TSR_OP_WRITE_OPEN;
	}
	fill_task(&fc->h, (struct task_struct *)bpf_get_current_task());
	fc->h.kind = TSR_FCHANGE;
	fc->result = ret;
	fc->op = op;
	fc->klass = klass;
	fc->mode = BPF_CORE_READ(f, f_inode, i_mode);
	fc->flags = flags;
	fc->uid = fc->gid = (__u32)-1;
	fc->mtime_set = 0;
	fc->size = 0;
	fc->xvalue_len = 0;
	fc->path_len = path_len;
	fc->path2_len = 0;
	bpf_probe_read_kernel(fc->data, path_len, s->ubuf);
	emit(s, offsetof(struct tsr_fchange, data) + path_len);
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
	/* write intent: maybe a file change too (after the open record, if any) */
	bool write = ret >= 0 && ((flags & TSR_O_ACCMODE) || (flags & (TSR_O_CREAT | TSR_O_TRUNC)));
	if (!match_prefix(s, o->path, path_len, 0)) {
		count(TSR_C_FILTERED);
		if (write || (ret >= 0 && is_proc_mem(o->path, path_len & (TSR_PATH_MAX - 1))))
			open_change(s, path_len, flags, ret, file_from_fd(ret), write);
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
	if (write || (ret >= 0 && is_proc_mem(o->path, path_len & (TSR_PATH_MAX - 1))))
		open_change(s, path_len, flags, ret, file_from_fd(ret), write);
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

SEC("tp/syscalls/sys_exit_creat")
int ts_exit_creat(struct trace_event_raw_sys_exit *ctx)
{
	return open_exit(ctx);
}

SEC("tp/syscalls/sys_exit_openat2")
int ts_exit_openat2(struct trace_event_raw_sys_exit *ctx)
{
	return open_exit(ctx);
}

/* ---- io_uring ------------------------------------------------------------------------- */

#define TSR_IORING_OP_OPENAT 18
#define TSR_IORING_OP_OPENAT2 28

/* An open submitted through io_uring: no open(2) tracepoint sees it. The request is
 * prepared at this point (its filename copied into the kernel), but not yet executed, so
 * the result is unknown. Loaded only where the tracepoint exists ('?', see probe.py). */
SEC("?tp_btf/io_uring_submit_req")
int BPF_PROG(ts_io_uring_submit, struct io_kiocb *req)
{
	__u8 opcode = BPF_CORE_READ(req, opcode);
	struct io_open *op = (struct io_open *)req;   /* the request's command data */
	struct scratch *s;
	struct tsr_open *o;
	bool trunc = false;
	__u32 path_len;
	long n;

	if (opcode != TSR_IORING_OP_OPENAT && opcode != TSR_IORING_OP_OPENAT2)
		return 0;
	if (is_self(current_tgid()))
		return 0;
	s = get_scratch();
	if (!s)
		return 0;
	o = &s->rec.open;
	n = bpf_probe_read_kernel_str(s->ubuf, TSR_PATH_MAX, BPF_CORE_READ(op, filename, name));
	path_len = path_join(s, o->path, BPF_CORE_READ(op, dfd), n, &trunc);
	if (!match_prefix(s, o->path, path_len, 0)) {
		count(TSR_C_FILTERED);
		return 0;
	}
	fill_task(&o->h, (struct task_struct *)bpf_get_current_task());
	o->h.kind = TSR_OPEN;
	o->h.flags |= TSR_F_IO_URING | (trunc ? TSR_F_PATH_TRUNC : 0);
	o->result = 0;
	o->flags = BPF_CORE_READ(op, how.flags);
	o->path_len = path_len;
	emit(s, offsetof(struct tsr_open, path) + (path_len & (2 * TSR_PATH_MAX - 1)));
	return 0;
}
