/* Privilege changes and the kernel-level tricks attackers use.
 *
 * - set*uid/set*gid/capset: credentials read at entry and exit; reported only when the
 *   call GAINED something (a uid/gid of 0 that was not, or capabilities), else counted
 *   priv_filtered. Dropping privileges (what daemons do all day) costs no record.
 * - ptrace attach/seize/poke/setregs (not peeks), process_vm_writev, process_vm_readv of
 *   another process (memory scraping), memfd_create,
 *   init_module/finit_module, bpf(BPF_PROG_LOAD) by anyone but the sensor, prctl(PR_SET_NAME)
 *   of a process's main thread, mount/move_mount, unshare/setns of namespaces.
 * Exits of the "sys" kinds tail-call one handler, verified once (see filechange.bpf.c).
 */
#include "common.h"

char LICENSE[] SEC("license") = "GPL";

#define ARG(i) (ctx->args[i])
#define CWD TSR_AT_FDCWD

#define TSR_PTRACE_POKETEXT 4
#define TSR_PTRACE_POKEDATA 5
#define TSR_PTRACE_POKEUSER 6
#define TSR_PTRACE_SETREGS 13
#define TSR_PTRACE_SETFPREGS 15
#define TSR_PTRACE_ATTACH 16
#define TSR_PTRACE_SETREGSET 0x4205
#define TSR_PTRACE_SEIZE 0x4206
#define TSR_BPF_PROG_LOAD 5
#define TSR_PR_SET_NAME 15
#define TSR_CLONE_NS (0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | \
		      0x20000000 | 0x40000000 | 0x00000080)
#define TSR_MOVE_MOUNT_F_EMPTY_PATH 0x4

/* ---- credentials ------------------------------------------------------------------- */

struct ts_creds {
	__u32 id[8];    /* uid euid suid fsuid gid egid sgid fsgid */
	__u64 eff;
	__u64 perm;
};

static __always_inline void read_creds(struct ts_creds *c)
{
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	const struct cred *cr = BPF_CORE_READ(t, cred);

	c->id[0] = BPF_CORE_READ(cr, uid.val);
	c->id[1] = BPF_CORE_READ(cr, euid.val);
	c->id[2] = BPF_CORE_READ(cr, suid.val);
	c->id[3] = BPF_CORE_READ(cr, fsuid.val);
	c->id[4] = BPF_CORE_READ(cr, gid.val);
	c->id[5] = BPF_CORE_READ(cr, egid.val);
	c->id[6] = BPF_CORE_READ(cr, sgid.val);
	c->id[7] = BPF_CORE_READ(cr, fsgid.val);
	/* kernel_cap_t: one u64 since 6.3, two u32 before: the same 8 bytes either way */
	bpf_core_read(&c->eff, sizeof(c->eff), &cr->cap_effective);
	bpf_core_read(&c->perm, sizeof(c->perm), &cr->cap_permitted);
}

static __always_inline int cred_enter(__u16 op)
{
	struct call c = { .op = op };
	struct ts_creds cr;

	read_creds(&cr);
	c.arg[0] = cr.id[0] | (__u64)cr.id[1] << 32;
	c.arg[1] = cr.id[2] | (__u64)cr.id[3] << 32;
	c.arg[2] = cr.id[4] | (__u64)cr.id[5] << 32;
	c.arg[3] = cr.id[6] | (__u64)cr.id[7] << 32;
	c.arg[4] = cr.eff;
	c.arg[5] = cr.perm;
	return save_call(&c);
}

static __always_inline int cred_exit(struct trace_event_raw_sys_exit *ctx)
{
	struct call c;
	struct ts_creds now;
	struct scratch *s;
	struct tsr_cred *r;
	__u32 before[8];
	bool gained = false;

	if (!take_call(&c) || c.op < TSR_OP_SETUID || c.op > TSR_OP_CAPSET)
		return 0;
	read_creds(&now);
#pragma unroll
	for (int i = 0; i < 4; i++) {
		before[2 * i] = c.arg[i];
		before[2 * i + 1] = c.arg[i] >> 32;
	}
#pragma unroll
	for (int i = 0; i < 8; i++)
		if (now.id[i] == 0 && before[i] != 0)
			gained = true;
	if ((now.eff & ~c.arg[4]) || (now.perm & ~c.arg[5]))
		gained = true;
	if (!gained) {
		count(TSR_C_PRIV_FILTERED);
		return 0;
	}
	s = get_scratch();
	if (!s)
		return 0;
	r = &s->rec.cred;
	fill_task(&r->h, (struct task_struct *)bpf_get_current_task());
	r->h.kind = TSR_CRED;
	r->result = ctx->ret;
	r->op = c.op;
	r->_pad = 0;
#pragma unroll
	for (int i = 0; i < 8; i++) {
		r->before[i] = before[i];
		r->after[i] = now.id[i];
	}
	r->cap_eff[0] = c.arg[4];
	r->cap_eff[1] = now.eff;
	r->cap_perm[0] = c.arg[5];
	r->cap_perm[1] = now.perm;
	emit(s, sizeof(struct tsr_cred));
	return 0;
}

#define CRED(sys, op) \
	SEC("tp/syscalls/sys_enter_" #sys) \
	int ts_enter_##sys(struct trace_event_raw_sys_enter *ctx) { return cred_enter(op); } \
	SEC("tp/syscalls/sys_exit_" #sys) \
	int ts_exit_##sys(struct trace_event_raw_sys_exit *ctx) { return cred_exit(ctx); }

CRED(setuid, TSR_OP_SETUID)
CRED(setreuid, TSR_OP_SETREUID)
CRED(setresuid, TSR_OP_SETRESUID)
CRED(setfsuid, TSR_OP_SETFSUID)
CRED(setgid, TSR_OP_SETGID)
CRED(setregid, TSR_OP_SETREGID)
CRED(setresgid, TSR_OP_SETRESGID)
CRED(setfsgid, TSR_OP_SETFSGID)
CRED(capset, TSR_OP_CAPSET)

/* ---- process and kernel tricks ------------------------------------------------------- */

/* Clamp a string length for use as an offset the verifier can bound. */
static __always_inline __u32 clamp_len(long n)
{
	__u32 v = n > 0 ? n : 0;
	ts_barrier(v);
	if (v > TSR_PATH_MAX)
		v = TSR_PATH_MAX;
	return v;
}

/* The path of fd's file into dst (room 2 * TSR_PATH_MAX); its length with NUL, or 0. */
static __always_inline __u32 fd_path(struct scratch *s, char *dst, int fd, bool *trunc)
{
	struct file *f = file_from_fd(fd);
	if (!f)
		return 0;
	__u32 off = build_path(s, BPF_CORE_READ(f, f_path.dentry), BPF_CORE_READ(f, f_path.mnt),
			       trunc);
	return copy_path(s, dst, off);
}

/* Fill a tsr_sys record for call c that returned ret; returns its size (0: nothing). */
static __always_inline __u32 sys_fill(struct scratch *s, struct call *c, long ret)
{
	struct tsr_sys *r = &s->rec.sys;
	bool trunc = false;
	__u32 l0 = 0, l1 = 0, l2 = 0, at;
	long n;

	r->arg[0] = c->arg[0];
	r->arg[1] = c->arg[1];
	r->arg[2] = c->arg[2];
	r->arg[3] = c->arg[3];
	switch (c->op) {
	case TSR_OP_MEMFD:
		n = bpf_probe_read_user_str(r->data, TSR_PATH_MAX, (const void *)c->ptr);
		l0 = clamp_len(n);
		break;
	case TSR_OP_INIT_MODULE:
	case TSR_OP_FINIT_MODULE:
		if (c->op == TSR_OP_FINIT_MODULE)
			l0 = clamp_len(fd_path(s, r->data, c->fd, &trunc));
		n = bpf_probe_read_user_str(&r->data[l0], 256, (const void *)c->ptr2);
		l1 = n > 0 ? n : 0;
		break;
	case TSR_OP_BPF_LOAD: {
		__u32 head[2] = {};
		bpf_probe_read_user(head, sizeof(head), (const void *)c->ptr);
		r->arg[0] = head[0];    /* prog_type */
		r->arg[1] = head[1];    /* insn_cnt */
		if (c->arg[2] >= offsetof(union bpf_attr, prog_name) + 16) {
			n = bpf_probe_read_user_str(r->data, 16,
				(const void *)(c->ptr + offsetof(union bpf_attr, prog_name)));
			l0 = n > 0 ? n : 0;
		}
		break;
	}
	case TSR_OP_SET_NAME: {
		if (ret != 0)
			return 0;
		char now[TSR_COMM_LEN] = {};
		const char *old = (const char *)&c->arg[0];
		bool same = true;
		bpf_get_current_comm(now, sizeof(now));
#pragma unroll
		for (int i = 0; i < TSR_COMM_LEN; i++) {
			if (now[i] != old[i])
				same = false;
			r->data[i] = old[i];
			r->data[TSR_COMM_LEN + i] = now[i];
		}
		if (same)
			return 0;
		r->data[TSR_COMM_LEN - 1] = 0;
		r->data[2 * TSR_COMM_LEN - 1] = 0;
		l0 = l1 = TSR_COMM_LEN;
		r->arg[0] = r->arg[1] = 0;
		break;
	}
	case TSR_OP_MOUNT:
	case TSR_OP_MOVE_MOUNT:
		l0 = clamp_len(path_at(s, r->data, c->fd, c->ptr, &trunc));
		if (c->op == TSR_OP_MOUNT) {
			n = bpf_probe_read_user_str(&r->data[l0], TSR_PATH_MAX, (const void *)c->ptr2);
			l1 = clamp_len(n);
			at = l0 + l1;
			ts_barrier(at);
			if (at > 2 * TSR_PATH_MAX)
				at = 2 * TSR_PATH_MAX;
			n = bpf_probe_read_user_str(&r->data[at], 256, (const void *)c->arg[1]);
			l2 = n > 0 ? n : 0;
		} else {
			/* fd of the mount being moved: its filesystem type */
			struct file *f = file_from_fd(c->fd2);
			const char *name = BPF_CORE_READ(f, f_path.mnt, mnt_sb, s_type, name);
			if (f && name) {
				n = bpf_probe_read_kernel_str(&r->data[l0], 256, name);
				l2 = n > 0 ? n : 0;
			}
		}
		break;
	case TSR_OP_SETNS: {
		struct file *f = file_from_fd(c->fd);
		r->arg[1] = BPF_CORE_READ(f, f_inode, i_ino);
		break;
	}
	default:
		break;
	}
	if (trunc)
		r->h.flags |= TSR_F_PATH_TRUNC;
	r->len[0] = l0;
	r->len[1] = l1;
	r->len[2] = l2;
	return offsetof(struct tsr_sys, data) + l0 + l1 + l2;
}

static __always_inline int sys_exit(long ret)
{
	struct call c;
	struct scratch *s;
	__u32 size;

	if (!take_call(&c) || c.op < TSR_OP_PTRACE || c.op > TSR_OP_SYS_MAX)
		return 0;
	s = get_scratch();
	if (!s)
		return 0;
	s->rec.hdr.flags = 0;
	size = sys_fill(s, &c, ret);
	if (!size)
		return 0;
	fill_task(&s->rec.hdr, (struct task_struct *)bpf_get_current_task());
	if (c.op == TSR_OP_MOUNT || c.op == TSR_OP_MOVE_MOUNT || c.op == TSR_OP_FINIT_MODULE) {
		/* fill_task cleared the flags; path truncation is re-derived by the decoder from
		 * the length (a full TSR_PATH_MAX path) */
	}
	s->rec.sys.h.kind = TSR_SYS;
	s->rec.sys.result = ret;
	s->rec.sys.op = c.op;
	s->rec.sys._pad = 0;
	s->rec.sys._pad2 = 0;
	s->rec.sys._pad3 = 0;
	emit(s, size);
	return 0;
}

SEC("tp/syscalls/sys_exit_ptrace")
int ts_sys_exit(struct trace_event_raw_sys_exit *ctx)
{
	return sys_exit(ctx->ret);
}

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 1);
	__uint(key_size, sizeof(__u32));
	__array(values, int (struct trace_event_raw_sys_exit *));
} ts_sys_tail SEC(".maps") = {
	.values = { [0] = (void *)&ts_sys_exit },
};

static __always_inline int sys_enter(__u16 op, int fd, __u64 ptr, int fd2, __u64 ptr2,
				     __u64 a0, __u64 a1, __u64 a2)
{
	struct call c = {
		.op = op, .fd = fd, .ptr = ptr, .fd2 = fd2, .ptr2 = ptr2, .arg = { a0, a1, a2 },
	};
	return save_call(&c);
}

#define ENTER(sys) SEC("tp/syscalls/sys_enter_" #sys) \
	int ts_enter_##sys(struct trace_event_raw_sys_enter *ctx)
#define EXIT(sys) SEC("tp/syscalls/sys_exit_" #sys) \
	int ts_exit_##sys(struct trace_event_raw_sys_exit *ctx) \
	{ bpf_tail_call(ctx, &ts_sys_tail, 0); return 0; }

ENTER(ptrace)
{
	long req = ARG(0);
	if (req != TSR_PTRACE_ATTACH && req != TSR_PTRACE_SEIZE && req != TSR_PTRACE_POKETEXT &&
	    req != TSR_PTRACE_POKEDATA && req != TSR_PTRACE_POKEUSER && req != TSR_PTRACE_SETREGS &&
	    req != TSR_PTRACE_SETFPREGS && req != TSR_PTRACE_SETREGSET)
		return 0;   /* peeks and the tracer's own bookkeeping: not reported */
	return sys_enter(TSR_OP_PTRACE, 0, 0, 0, 0, req, ARG(1), ARG(2));
}
EXIT(ptrace)

ENTER(process_vm_writev)
{
	return sys_enter(TSR_OP_VM_WRITE, 0, 0, 0, 0, ARG(0), ARG(2), ARG(4));
}
EXIT(process_vm_writev)

ENTER(process_vm_readv)
{
	if ((__u32)ARG(0) == current_tgid())
		return 0;   /* reading one's own memory is nothing */
	return sys_enter(TSR_OP_VM_READ, 0, 0, 0, 0, ARG(0), ARG(2), ARG(4));
}
EXIT(process_vm_readv)

ENTER(memfd_create) { return sys_enter(TSR_OP_MEMFD, 0, ARG(0), 0, 0, ARG(1), 0, 0); }
EXIT(memfd_create)

/* Kernels without CONFIG_MODULES have no init_module/finit_module tracepoints (and no module
 * can load: the syscalls return ENOSYS). The raw_syscalls fallback below still reports the
 * attempts, but it runs on EVERY syscall (it halved a tight openat loop's rate), so it is
 * not loaded unless asked for ('?': autoload off; Probe(module_fallback=True)). */
ENTER(init_module) { return sys_enter(TSR_OP_INIT_MODULE, 0, 0, 0, ARG(2), ARG(1), 0, 0); }
EXIT(init_module)
ENTER(finit_module)
{
	return sys_enter(TSR_OP_FINIT_MODULE, ARG(0), 0, 0, ARG(1), ARG(0), ARG(2), 0);
}
EXIT(finit_module)

#if defined(__TARGET_ARCH_x86)
#define TSR_NR_INIT_MODULE 175
#define TSR_NR_FINIT_MODULE 313

SEC("?raw_tp/sys_enter")
int ts_raw_enter_module(struct bpf_raw_tracepoint_args *ctx)
{
	long nr = ctx->args[1];
	struct pt_regs *regs;

	if (nr != TSR_NR_INIT_MODULE && nr != TSR_NR_FINIT_MODULE)
		return 0;
	regs = (struct pt_regs *)ctx->args[0];
	__u64 a0 = BPF_CORE_READ(regs, di), a1 = BPF_CORE_READ(regs, si);
	__u64 a2 = BPF_CORE_READ(regs, dx);
	if (nr == TSR_NR_INIT_MODULE)
		return sys_enter(TSR_OP_INIT_MODULE, 0, 0, 0, a2, a1, 0, 0);
	return sys_enter(TSR_OP_FINIT_MODULE, a0, 0, 0, a1, a0, a2, 0);
}

SEC("?raw_tp/sys_exit")
int ts_raw_exit_module(struct bpf_raw_tracepoint_args *ctx)
{
	struct pt_regs *regs = (struct pt_regs *)ctx->args[0];
	long nr = BPF_CORE_READ(regs, orig_ax);

	if (nr != TSR_NR_INIT_MODULE && nr != TSR_NR_FINIT_MODULE)
		return 0;
	return sys_exit(ctx->args[1]);
}
#endif

ENTER(bpf)
{
	if (ARG(0) != TSR_BPF_PROG_LOAD)
		return 0;
	return sys_enter(TSR_OP_BPF_LOAD, 0, ARG(1), 0, 0, 0, 0, ARG(2));
}
EXIT(bpf)

ENTER(prctl)
{
	struct call c = { .op = TSR_OP_SET_NAME };
	__u64 id = bpf_get_current_pid_tgid();

	if (ARG(0) != TSR_PR_SET_NAME || (__u32)id != id >> 32)
		return 0;   /* threads naming themselves are not process renames */
	bpf_get_current_comm(&c.arg[0], TSR_COMM_LEN);
	return save_call(&c);
}
EXIT(prctl)

ENTER(mount) { return sys_enter(TSR_OP_MOUNT, CWD, ARG(1), 0, ARG(0), ARG(3), ARG(2), 0); }
EXIT(mount)
ENTER(move_mount)
{
	return sys_enter(TSR_OP_MOVE_MOUNT, ARG(2), ARG(3), ARG(0), 0, ARG(4), 0, 0);
}
EXIT(move_mount)

ENTER(unshare)
{
	if (!(ARG(0) & TSR_CLONE_NS))
		return 0;
	return sys_enter(TSR_OP_UNSHARE, 0, 0, 0, 0, ARG(0), 0, 0);
}
EXIT(unshare)
ENTER(setns) { return sys_enter(TSR_OP_SETNS, ARG(0), 0, 0, 0, ARG(1), 0, 0); }
EXIT(setns)
