/* In-kernel exec enforcement: kill a denied exec before its first user instruction.
 *
 * At sched_process_exec the new image is loaded and the task has not returned to user space;
 * a SIGKILL sent now (bpf_send_signal, to the current task) is delivered on that return, so
 * not one instruction of the program runs. What is denied comes from the rule bundle through
 * the hub (userspace fills ts_exec_deny): executables under a path prefix, memfds (fileless)
 * and deleted files, each kill or dry run. Protected process names (ts_protected, the new
 * comm) are never killed, and at most max_kills per window_ns are (then the verdict is
 * "limited" and the hub's slower path, with its own limit, decides).
 *
 * The verdict goes to tsr_exec (process.bpf.c) through ts_verdicts, keyed by tgid: the exec
 * record carries it, so the exec event itself says the process was killed at exec. This
 * program is attached before tsr_exec for that (see BpfProbe's ``first``), and is loaded only
 * where the kernel permits bpf_send_signal here (SEC("?..."): the probe tries, and falls
 * back without it).
 */
#include "common.h"

char LICENSE[] SEC("license") = "GPL";

#define TSR_SIGKILL 9
#define TSR_PF_KTHREAD 0x00200000

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tsr_enforce_config);
} ts_enforce SEC(".maps") __weak;

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 256);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct tsr_prefix_key);
	__type(value, struct tsr_deny);
} ts_exec_deny SEC(".maps") __weak;

/* Process names (the comm after exec) never killed. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, char[TSR_COMM_LEN]);
	__type(value, __u8);
} ts_protected SEC(".maps") __weak;

/* The rate limit's window: when it started, kills in it (shared by all CPUs). */
struct enforce_window {
	__u64 start_ns;
	__u32 kills;
	__u32 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct enforce_window);
} ts_enforce_window SEC(".maps") __weak;

/* Whether one more kill fits the window (counted when it does). */
static __always_inline bool within_limit(struct tsr_enforce_config *cfg)
{
	__u32 zero = 0;
	struct enforce_window *w;
	__u64 now;

	if (!cfg->max_kills)
		return true;
	w = bpf_map_lookup_elem(&ts_enforce_window, &zero);
	if (!w)
		return false;
	now = bpf_ktime_get_boot_ns();
	if (now - w->start_ns >= cfg->window_ns) {
		/* racing CPUs may both restart the window: at worst a few kills more */
		w->start_ns = now;
		w->kills = 0;
	}
	if (w->kills >= cfg->max_kills)
		return false;
	__sync_fetch_and_add(&w->kills, 1);   /* CPUs racing here: a kill or two more */
	return true;
}

SEC("?tp_btf/sched_process_exec")
int BPF_PROG(tsr_enforce_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	__u32 zero = 0;
	struct tsr_enforce_config *cfg = bpf_map_lookup_elem(&ts_enforce, &zero);
	struct scratch *s;
	struct tsr_deny *deny;
	struct verdict v = {};
	bool trunc = false;
	__u32 tgid, kind, slot, len;
	__u8 bit;

	if (!cfg || !cfg->enabled)
		return 0;
	tgid = BPF_CORE_READ(p, tgid);
	if (tgid <= 1 || is_self(tgid) || (BPF_CORE_READ(p, flags) & TSR_PF_KTHREAD))
		return 0;
	struct file *file = BPF_CORE_READ(bprm, file);
	if (!file)
		return 0;
	s = get_scratch();
	if (!s)
		return 0;
	kind = TSR_KIND_ANY;
	slot = 0;
	if (BPF_CORE_READ(file, f_inode, i_nlink) == 0) {
		char name[8] = {};
		bpf_probe_read_kernel(name, 6, BPF_CORE_READ(file, f_path.dentry, d_name.name));
		bool memfd = name[0] == 'm' && name[1] == 'e' && name[2] == 'm' &&
			     name[3] == 'f' && name[4] == 'd' && name[5] == ':';
		kind = memfd ? TSR_KIND_MEMFD : TSR_KIND_DELETED;
		slot = memfd ? 1 : 2;
	}
	__u32 off = build_path(s, BPF_CORE_READ(file, f_path.dentry),
			       BPF_CORE_READ(file, f_path.mnt), &trunc);
	len = TSR_PATH_MAX - 1 - (off & (TSR_PATH_MAX - 1));   /* without the NUL */
	if (len > TSR_PREFIX_MAX)
		len = TSR_PREFIX_MAX;
	bpf_probe_read_kernel(s->key.data, TSR_PREFIX_MAX, &s->pathbuf[off & (TSR_PATH_MAX - 1)]);
	s->key.prefixlen = len * 8;
	deny = bpf_map_lookup_elem(&ts_exec_deny, &s->key);
	if (!deny)
		return 0;
	/* a memfd or deleted file is also "any file"; its own rule wins when there is one */
	bit = kind;
	if (kind != TSR_KIND_ANY && !((deny->kill | deny->dry) & kind)) {
		bit = TSR_KIND_ANY;
		slot = 0;
	}
	if (!((deny->kill | deny->dry) & bit))
		return 0;
	if (slot >= TSR_KINDS)
		return 0;
	v.rule = deny->rule[slot];

	char comm[TSR_COMM_LEN] = {};
	BPF_CORE_READ_STR_INTO(&comm, p, comm);
	if (bpf_map_lookup_elem(&ts_protected, comm))
		v.verdict = TSR_V_PROTECTED;
	else if (!(deny->kill & bit))
		v.verdict = TSR_V_DRY_RUN;
	else if (!within_limit(cfg))
		v.verdict = TSR_V_LIMITED;
	else
		v.verdict = bpf_send_signal(TSR_SIGKILL) ? TSR_V_FAILED : TSR_V_KILLED;
	bpf_map_update_elem(&ts_verdicts, &tgid, &v, BPF_ANY);
	return 0;
}
