/* Process lifecycle: exec (with resolved executable path, argv, whether the executable is a
 * memfd or deleted, whether stdin/stdout are network sockets, and the dynamic loader's
 * injection variables LD_PRELOAD/LD_AUDIT from the new environment), fork (new processes
 * only, not threads) and exit (once per thread group, with exit code or signal).
 * tp_btf programs: typed task/bprm arguments, no kprobes needed. */
#include "common.h"

char LICENSE[] SEC("license") = "GPL";

/* Is fd of the current task an IPv4/IPv6 socket? (A shell whose stdio is one is a remote
 * shell; inetd-style services are the only other programs started that way.) */
static __always_inline bool fd_is_inet_socket(int fd)
{
	struct sock *sk = sock_from_fd(fd);
	__u16 family;

	if (!sk)
		return false;
	family = BPF_CORE_READ(sk, __sk_common.skc_family);
	return family == TSR_AF_INET || family == TSR_AF_INET6;
}

/* Is fd of the current task a regular file? (A network client reading one sends it.) */
static __always_inline bool fd_is_regular_file(int fd)
{
	struct file *f = file_from_fd(fd);

	return f && (BPF_CORE_READ(f, f_inode, i_mode) & TSR_S_IFMT) == TSR_S_IFREG;
}

/* Is f directly in a directory named "tmp" or "shm" (/tmp, /var/tmp, /dev/shm)? That is
 * where a survey's loot file goes. When the directory is the root of its own mount (a tmpfs
 * on /tmp), the name is the mount point's (below any mounts stacked on it). */
static __always_inline bool file_in_tmp_dir(struct file *f)
{
	struct dentry *parent = BPF_CORE_READ(f, f_path.dentry, d_parent);
	const unsigned char *name;
	char buf[4] = {};

	if (!parent)
		return false;
	if (parent == BPF_CORE_READ(parent, d_parent)) {
		struct mount *mnt = container_of(BPF_CORE_READ(f, f_path.mnt), struct mount, mnt);
		struct dentry *mp = BPF_CORE_READ(mnt, mnt_mountpoint);

		/* mounts stacked on one directory: each is mounted on the root of the one below */
#pragma unroll
		for (int i = 0; i < 4; i++) {
			struct mount *up;

			if (!mp || mp != BPF_CORE_READ(mp, d_parent))
				break;
			up = BPF_CORE_READ(mnt, mnt_parent);
			if (!up || up == mnt)
				break;
			mnt = up;
			mp = BPF_CORE_READ(mnt, mnt_mountpoint);
		}
		if (!mp)
			return false;
		name = BPF_CORE_READ(mp, d_name.name);
	} else {
		name = BPF_CORE_READ(parent, d_name.name);
	}
	if (!name || bpf_probe_read_kernel(buf, sizeof(buf), name))
		return false;
	return buf[3] == 0 && ((buf[0] == 't' && buf[1] == 'm' && buf[2] == 'p') ||
			       (buf[0] == 's' && buf[1] == 'h' && buf[2] == 'm'));
}

struct env_ctx {
	struct scratch *s;
	unsigned long ptr;  /* next environment string (user memory of the new image) */
	unsigned long end;
	__u32 at;           /* where the loader variables start in the exec record's data */
	__u32 out;          /* bytes of them so far */
};

/* One environment string (a bpf_loop callback): kept when it is LD_PRELOAD= or LD_AUDIT=. */
static long env_step(__u64 i, void *arg)
{
	struct env_ctx *c = arg;
	struct scratch *s = c->s;
	const char *v = s->ubuf;
	long n;

	if (c->ptr >= c->end)
		return 1;
	n = bpf_probe_read_user_str(s->ubuf, TSR_PATH_MAX, (const void *)c->ptr);
	if (n <= 0)
		return 1;
	c->ptr += n;
	if (n < 10 || v[0] != 'L' || v[1] != 'D' || v[2] != '_')
		return 0;
	bool preload = v[3] == 'P' && v[4] == 'R' && v[5] == 'E' && v[6] == 'L' && v[7] == 'O' &&
		       v[8] == 'A' && v[9] == 'D' && n > 11 && v[10] == '=';
	bool audit = v[3] == 'A' && v[4] == 'U' && v[5] == 'D' && v[6] == 'I' && v[7] == 'T' &&
		     v[8] == '=';
	if (!preload && !audit)
		return 0;
	__u32 len = n > 256 ? 256 : n;
	if (c->out + len > TSR_ENV_MAX)
		return 1;
	__u32 o = (c->at + c->out) & 16383;
	ts_barrier(len);
	len &= 511;
	bpf_probe_read_kernel(&s->rec.exec.data[o], len, v);
	s->rec.exec.data[(o + len - 1) & 16383] = 0;  /* a cut-off value stays a C string */
	c->out += len;
	return 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(tsr_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	struct scratch *s;
	struct tsr_exec *e;
	bool trunc = false;
	__u32 path_len, args_len;

	if (is_self(BPF_CORE_READ(p, tgid)))
		return 0;
	s = get_scratch();
	if (!s)
		return 0;
	e = &s->rec.exec;
	fill_task(&e->h, p);
	e->h.kind = TSR_EXEC;
	e->argc = BPF_CORE_READ(bprm, argc);

	struct file *file = BPF_CORE_READ(bprm, file);
	if (file) {
		__u32 off = build_path(s, BPF_CORE_READ(file, f_path.dentry),
				       BPF_CORE_READ(file, f_path.mnt), &trunc);
		path_len = copy_path(s, e->data, off);
		if (trunc)
			e->h.flags |= TSR_F_PATH_TRUNC;
		/* fileless execution: no links left -- a memfd ("memfd:NAME") or a deleted file */
		if (BPF_CORE_READ(file, f_inode, i_nlink) == 0) {
			char name[8] = {};
			bpf_probe_read_kernel(name, 6, BPF_CORE_READ(file, f_path.dentry, d_name.name));
			bool memfd = name[0] == 'm' && name[1] == 'e' && name[2] == 'm' &&
				     name[3] == 'f' && name[4] == 'd' && name[5] == ':';
			e->h.flags |= memfd ? TSR_F_EXE_MEMFD : TSR_F_EXE_DELETED;
		}
	} else {
		long n = bpf_probe_read_kernel_str(e->data, TSR_PATH_MAX, BPF_CORE_READ(bprm, filename));
		path_len = n > 0 ? n : 0;
		e->h.flags |= TSR_F_PATH_USER;
	}
	path_len &= (TSR_PATH_MAX * 2 - 1);
	if (path_len > TSR_PATH_MAX)
		path_len = TSR_PATH_MAX;
	e->path_len = path_len;

	unsigned long start = BPF_CORE_READ(p, mm, arg_start);
	unsigned long end = BPF_CORE_READ(p, mm, arg_end);
	args_len = end > start ? end - start : 0;
	if (args_len > TSR_ARGS_MAX) {
		args_len = TSR_ARGS_MAX;
		e->h.flags |= TSR_F_ARGS_TRUNC;
	}
	/* two calls with constant/masked sizes: the verifier needs a provable bound */
	long err;
	__u64 at = path_len;
	__u64 n = args_len;
	ts_barrier(at);
	at &= (TSR_PATH_MAX * 2 - 1);
	if (n >= TSR_ARGS_MAX) {
		err = bpf_probe_read_user(&e->data[at], TSR_ARGS_MAX, (void *)start);
	} else {
		ts_barrier(n);
		n &= (TSR_ARGS_MAX - 1);
		err = bpf_probe_read_user(&e->data[at], n, (void *)start);
	}
	if (err)
		args_len = 0;
	e->args_len = args_len;

	struct env_ctx env = {
		.s = s,
		.ptr = BPF_CORE_READ(p, mm, env_start),
		.end = BPF_CORE_READ(p, mm, env_end),
		.at = path_len + args_len,
		.out = 0,
	};
	bpf_loop(TSR_ENV_VARS, env_step, &env, 0);
	e->env_len = env.out;
	if (fd_is_inet_socket(0))
		e->h.flags |= TSR_F_STDIN_SOCK;
	else if (fd_is_regular_file(0))
		e->h.flags |= TSR_F_STDIN_FILE;
	if (fd_is_inet_socket(1))
		e->h.flags |= TSR_F_STDOUT_SOCK;
	else if (fd_is_regular_file(1)) {
		e->h.flags |= TSR_F_STDOUT_FILE;
		struct file *out = file_from_fd(1);

		/* a file with a name: not an O_TMPFILE/unlinked scratch file (pytest's capture) */
		if (out && BPF_CORE_READ(out, f_inode, i_nlink) > 0 && file_in_tmp_dir(out))
			e->h.flags |= TSR_F_STDOUT_TMP;
	}
	emit(s, offsetof(struct tsr_exec, data) + path_len + args_len + env.out);
	return 0;
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(tsr_fork, struct task_struct *parent, struct task_struct *child)
{
	struct scratch *s;

	if (BPF_CORE_READ(child, pid) != BPF_CORE_READ(child, tgid))
		return 0;   /* a new thread, not a new process */
	if (is_self(BPF_CORE_READ(parent, tgid)))
		return 0;
	s = get_scratch();
	if (!s)
		return 0;
	fill_task(&s->rec.hdr, child);
	s->rec.hdr.kind = TSR_FORK;
	s->rec.hdr.task.ppid = BPF_CORE_READ(parent, tgid);
	emit(s, sizeof(struct tsr_fork));
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(tsr_exit, struct task_struct *p, bool group_dead)
{
	struct scratch *s;
	struct tsr_exit *e;

	if (!group_dead)
		return 0;   /* a thread ended; the process lives on */
	if (is_self(BPF_CORE_READ(p, tgid)))
		return 0;
	s = get_scratch();
	if (!s)
		return 0;
	e = (struct tsr_exit *)&s->rec;
	fill_task(&e->h, p);
	e->h.kind = TSR_EXIT;
	e->exit_code = BPF_CORE_READ(p, exit_code);
	emit(s, sizeof(struct tsr_exit));
	return 0;
}
