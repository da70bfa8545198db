/* Process lifecycle: exec (with resolved executable path, argv, and whether the executable
 * is a memfd or deleted), fork (new processes
 * only, not threads) and exit (once per thread group, with exit code or signal).
 * tp_btf programs: typed task/bprm arguments, no kprobes needed. */
#include "common.h"

char LICENSE[] SEC("license") = "GPL";

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
	e->verdict = TSR_V_NONE;
	e->rule = 0;
	{
		/* what enforce.bpf.c (attached before this program) decided for this exec */
		__u32 tgid = BPF_CORE_READ(p, tgid);
		struct verdict *v = bpf_map_lookup_elem(&ts_verdicts, &tgid);
		if (v) {
			e->verdict = v->verdict;
			e->rule = v->rule;
			bpf_map_delete_elem(&ts_verdicts, &tgid);
		}
	}

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
	emit(s, offsetof(struct tsr_exec, data) + path_len + args_len);
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
