/* Shared maps and helpers of the threatseer BPF programs.
 *
 * Every program file includes this header; the maps are __weak definitions so that
 * `bpftool gen object` (the libbpf static linker) merges the identical copies into ONE map
 * each in threatseer.bpf.o. Records are built in a per-CPU scratch area and copied into the
 * ring buffer with bpf_ringbuf_output() at their used length, so short records stay short.
 */
#ifndef THREATSEER_COMMON_H
#define THREATSEER_COMMON_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>
#include "records.h"

#define TSR_AF_INET 2
#define TSR_AF_INET6 10
#define TSR_S_IFMT 00170000
#define TSR_S_IFSOCK 0140000
#define TSR_S_IFREG 0100000
#define TSR_IPPROTO_TCP 6
#define TSR_IPPROTO_UDP 17

/* One ring buffer for every record; userspace sets max_entries before load. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 24);
} ts_events SEC(".maps") __weak;

/* The reader's wish about wakeups, written by userspace (one __u32): TSR_READER_HOLD while
 * it holds a batch back on its own timer, so the records meanwhile need not wake it. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} ts_reader SEC(".maps") __weak;

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TSR_C_MAX);
	__type(key, __u32);
	__type(value, __u64);
} ts_counters SEC(".maps") __weak;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tsr_config);
} ts_config SEC(".maps") __weak;

/* Sensitive path prefixes ('*' components stored literally, see match_prefix). */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct tsr_prefix_key);
	__type(value, __u8);
} ts_prefixes SEC(".maps") __weak;

/* Watched prefixes for file changes (value: TSR_W_* bits), same '*' rule as ts_prefixes. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct tsr_prefix_key);
	__type(value, __u8);
} ts_watched SEC(".maps") __weak;

/* Arguments of the file-change and privilege syscalls, saved at entry, used at exit (keyed
 * by pid_tgid); user memory is read at exit, when the kernel has surely faulted it in. */
struct call {
	__u16 op;           /* enum tsr_op */
	__u16 _pad;
	__s32 fd;           /* dirfd / fd of the (first) path */
	__s32 fd2;          /* dirfd of the second path */
	__u32 mode;
	__u64 ptr;          /* first user path / string */
	__u64 ptr2;         /* second user path / string */
	__u64 arg[6];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct call);
} ts_calls SEC(".maps") __weak;

/* Syscall arguments saved at entry, read at exit (keyed by pid_tgid = thread). */
struct inflight {
	__u64 ptr;          /* user pointer: filename or sockaddr */
	__u32 flags;        /* open flags */
	__s32 fd;
	__u16 kind;
	__u16 addrlen;
	__u8 sa[28];        /* connect: sockaddr copied at entry */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct inflight);
} ts_inflight SEC(".maps") __weak;

/* In-kernel enforcement's verdict on an exec (enforce.bpf.c), for the exec record that
 * tsr_exec emits right after it in the same tracepoint (keyed by tgid). */
struct verdict {
	__u16 verdict;      /* enum tsr_verdict */
	__u16 rule;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, struct verdict);
} ts_verdicts SEC(".maps") __weak;

struct scratch {
	union {
		struct tsr_hdr hdr;
		struct tsr_exec exec;
		struct tsr_open open;
		struct tsr_net net;
		struct tsr_cgroup cg;
		struct tsr_fchange fc;
		struct tsr_cred cred;
		struct tsr_sys sys;
	} rec;
	char pathbuf[TSR_PATH_MAX + 256];
	char ubuf[TSR_PATH_MAX];        /* a user string being joined to its directory */
	struct tsr_prefix_key key;
	struct tsr_prefix_key key2;
	char key2_pad[TSR_PREFIX_MAX];  /* room for masked (verifier-provable) writes into key2 */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch);
} ts_scratch SEC(".maps") __weak;

/* Make the compiler forget what it knows about v, so a following mask reaches the verifier. */
#define ts_barrier(v) asm volatile("" : "+r"(v))

static __always_inline void count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&ts_counters, &idx);
	if (v)
		*v += 1;   /* per-CPU slot: no atomics needed */
}

static __always_inline struct tsr_config *get_config(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&ts_config, &zero);
}

static __always_inline struct scratch *get_scratch(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&ts_scratch, &zero);
}

/* True (and counted) when tgid is the sensor itself. */
static __always_inline bool is_self(__u32 tgid)
{
	struct tsr_config *cfg = get_config();
	if (cfg && cfg->self_tgid && cfg->self_tgid == tgid) {
		count(TSR_C_SELF);
		return true;
	}
	return false;
}

static __always_inline __u32 current_tgid(void)
{
	return bpf_get_current_pid_tgid() >> 32;
}

/* Fill the task context of a record from task t. */
static __always_inline void fill_task(struct tsr_hdr *h, struct task_struct *t)
{
	struct tsr_task *k = &h->task;
	const struct cred *cred = BPF_CORE_READ(t, cred);
	struct css_set *cs = BPF_CORE_READ(t, cgroups);
	struct cgroup_subsys_state *css = NULL;
	struct pid *tp = BPF_CORE_READ(t, thread_pid);
	unsigned int level = BPF_CORE_READ(tp, level);
	struct pid_namespace *pns = NULL;
	int memid = bpf_core_enum_value(enum cgroup_subsys_id, memory_cgrp_id);

	h->flags = 0;
	k->ts_ns = bpf_ktime_get_boot_ns();
	k->start_ns = BPF_CORE_READ(t, start_boottime);
	k->pid = BPF_CORE_READ(t, tgid);
	k->tid = BPF_CORE_READ(t, pid);
	k->ppid = BPF_CORE_READ(t, real_parent, tgid);
	k->uid = BPF_CORE_READ(cred, uid.val);
	k->gid = BPF_CORE_READ(cred, gid.val);
	k->euid = BPF_CORE_READ(cred, euid.val);
	k->auid = BPF_CORE_READ(t, loginuid.val);
	bpf_core_read(&pns, sizeof(pns), &tp->numbers[level & 31].ns);
	k->pidns = BPF_CORE_READ(pns, ns.inum);
	k->mntns = BPF_CORE_READ(t, nsproxy, mnt_ns, ns.inum);
	k->cgroup_id = BPF_CORE_READ(cs, dfl_cgrp, kn, id);
	struct signal_struct *sig = BPF_CORE_READ(t, signal);
	struct pid *sp = NULL;
	bpf_core_read(&sp, sizeof(sp), &sig->pids[PIDTYPE_SID]);
	k->sid = BPF_CORE_READ(sp, numbers[0].nr);
	struct tty_struct *tty = BPF_CORE_READ(sig, tty);
	k->tty = 0;
	if (tty) {
		struct tty_driver *drv = BPF_CORE_READ(tty, driver);
		__u32 major = BPF_CORE_READ(drv, major);
		__u32 minor = BPF_CORE_READ(drv, minor_start) + BPF_CORE_READ(tty, index);
		k->tty = major << 20 | (minor & 0xfffff);
	}
	BPF_CORE_READ_STR_INTO(&k->comm, t, comm);
	k->memcg[0] = 0;
	if (memid >= 0 && memid < 16) {
		bpf_core_read(&css, sizeof(css), &cs->subsys[memid]);
		struct cgroup *cg = BPF_CORE_READ(css, cgroup);
		if (cg && BPF_CORE_READ(cg, level) > 0) {
			const char *name = BPF_CORE_READ(cg, kn, name);
			bpf_probe_read_kernel_str(k->memcg, sizeof(k->memcg), name);
		}
	}
}

/* Copy rec (size bytes, bounded by the scratch record) into the ring buffer. */
static __always_inline void emit(struct scratch *s, __u32 size)
{
	/* the mask keeps the copy inside the scratch value (> 16 KiB), which the verifier needs */
	_Static_assert(sizeof(struct scratch) > 16383, "scratch smaller than emit mask");
	struct tsr_config *cfg = get_config();
	__u64 flags = 0;

	ts_barrier(size);
	size &= 16383;
	s->rec.hdr.size = size;
	/* Wakeups: a reader woken per record costs a syscall and a Python round trip. Past
	 * wakeup_bytes pending, always wake it (a full batch is waiting). Below: not while it
	 * holds a batch on its own timer; otherwise flags 0, with which the kernel wakes it
	 * only for the first record after it drained the ring (an idle reader learns of an
	 * event at once, a busy one is not woken again). */
	if (cfg && cfg->wakeup_bytes) {
		__u32 zero = 0;
		__u32 *hold = bpf_map_lookup_elem(&ts_reader, &zero);

		if (bpf_ringbuf_query(&ts_events, BPF_RB_AVAIL_DATA) + size >= cfg->wakeup_bytes)
			flags = BPF_RB_FORCE_WAKEUP;
		else if (hold && *hold == TSR_READER_HOLD)
			flags = BPF_RB_NO_WAKEUP;
	}
	if (bpf_ringbuf_output(&ts_events, &s->rec, size, flags))
		count(TSR_C_LOST);
	else
		count(TSR_C_EVENTS);
}

struct walk_ctx {
	struct scratch *s;
	struct dentry *dentry;
	struct vfsmount *vfsmnt;
	struct mount *mnt;
	struct mount *mnt_parent;
	__u32 off;
	bool done;
};

/* One step of the dentry walk (a bpf_loop callback: verified once, not per iteration). */
static long walk_step(__u64 i, void *arg)
{
	struct walk_ctx *c = arg;
	struct dentry *dentry = c->dentry;
	struct vfsmount *vfsmnt = c->vfsmnt;
	struct mount *mnt = c->mnt;
	struct dentry *root = BPF_CORE_READ(vfsmnt, mnt_root);
	struct dentry *parent = BPF_CORE_READ(dentry, d_parent);

	if (dentry == root) {
		struct mount *up = c->mnt_parent;
		if (mnt == up) {
			c->done = true;
			return 1;
		}
		c->dentry = BPF_CORE_READ(mnt, mnt_mountpoint);
		c->mnt = up;
		c->mnt_parent = BPF_CORE_READ(up, mnt_parent);
		c->vfsmnt = &up->mnt;
		return 0;
	}
	if (!dentry) {
		c->done = true;
		return 1;
	}
	long last = 0;
	if (dentry == parent) {
		/* a disconnected (pseudo) dentry, e.g. a memfd's "memfd:NAME": keep its name
		 * when it is all there is, then stop */
		c->done = true;
		if (c->off != TSR_PATH_MAX - 1)
			return 1;
		last = 1;
	}
	__u32 len = BPF_CORE_READ(dentry, d_name.len) & 255;
	const unsigned char *name = BPF_CORE_READ(dentry, d_name.name);
	__u32 off = c->off;
	if (len + 1 > off)
		return 1;
	off -= len;
	bpf_probe_read_kernel(&c->s->pathbuf[off & (TSR_PATH_MAX - 1)], len, name);
	off -= 1;
	c->s->pathbuf[off & (TSR_PATH_MAX - 1)] = '/';
	c->off = off;
	c->dentry = parent;
	return last;
}

/* Build the absolute path of (dentry, vfsmount) by walking dentries and crossing mounts,
 * right-aligned in s->pathbuf: returns the offset where the NUL-terminated path starts
 * (the NUL is at TSR_PATH_MAX - 1). Sets *trunc when the walk did not reach the root. */
static __always_inline __u32 build_path(struct scratch *s, struct dentry *dentry,
					struct vfsmount *vfsmnt, bool *trunc)
{
	struct mount *mnt = container_of(vfsmnt, struct mount, mnt);
	struct walk_ctx c = {
		.s = s,
		.dentry = dentry,
		.vfsmnt = vfsmnt,
		.mnt = mnt,
		.mnt_parent = BPF_CORE_READ(mnt, mnt_parent),
		.off = TSR_PATH_MAX - 1,
		.done = false,
	};
	s->pathbuf[TSR_PATH_MAX - 1] = 0;
	bpf_loop(TSR_PATH_DEPTH, walk_step, &c, 0);
	__u32 off = c.off & (TSR_PATH_MAX - 1);
	if (off == TSR_PATH_MAX - 1) {
		off -= 1;
		s->pathbuf[off] = '/';
	}
	*trunc = !c.done;
	if (!c.done)
		count(TSR_C_PATH_TRUNC);
	return off;
}

/* Copy the right-aligned path at off into dst (capacity >= TSR_PATH_MAX); returns its
 * length including the NUL. */
static __always_inline __u32 copy_path(struct scratch *s, char *dst, __u32 off)
{
	__u32 len = TSR_PATH_MAX - (off & (TSR_PATH_MAX - 1));
	bpf_probe_read_kernel(dst, len & (2 * TSR_PATH_MAX - 1), &s->pathbuf[off & (TSR_PATH_MAX - 1)]);
	return len;
}

/* The struct file behind fd in the current task, or NULL. */
static __always_inline struct file *file_from_fd(int fd)
{
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(t, files, fdt);
	struct file **fds = BPF_CORE_READ(fdt, fd);
	unsigned int max = BPF_CORE_READ(fdt, max_fds);
	struct file *f = NULL;

	if (fd < 0 || (unsigned int)fd >= max)
		return NULL;
	bpf_core_read(&f, sizeof(f), &fds[fd]);
	return f;
}

/* The struct sock behind socket fd in the current task, or NULL. */
static __always_inline struct sock *sock_from_fd(int fd)
{
	struct file *f = file_from_fd(fd);
	if (!f)
		return NULL;
	umode_t mode = BPF_CORE_READ(f, f_inode, i_mode);
	if ((mode & TSR_S_IFMT) != TSR_S_IFSOCK)
		return NULL;
	struct socket *sock = BPF_CORE_READ(f, private_data);
	return BPF_CORE_READ(sock, sk);
}

#define TSR_AT_FDCWD -100

/* Write the absolute form of the path in s->ubuf (n bytes with its NUL, as returned by a
 * bpf_probe_read_*_str into it; n <= 1: none), relative to dirfd (TSR_AT_FDCWD: the cwd), into
 * dst (room for 2 * TSR_PATH_MAX); an empty path means dirfd's own file (the f* calls,
 * AT_EMPTY_PATH). Joined textually, not normalised ("..", symlinks). Returns the length
 * including the NUL (<= TSR_PATH_MAX, 1 when nothing is known); sets *trunc. */
static __always_inline __u32 path_join(struct scratch *s, char *dst, int dirfd, long n,
				       bool *trunc)
{
	struct dentry *dentry = NULL;
	struct vfsmount *mnt = NULL;
	__u32 len, at, off;

	dst[0] = 0;
	if (n > TSR_PATH_MAX)
		n = TSR_PATH_MAX;
	if (n > 1 && s->ubuf[0] == '/') {
		bpf_probe_read_kernel(dst, n & (2 * TSR_PATH_MAX - 1), s->ubuf);
		return n;
	}
	if (n > 1 && dirfd == TSR_AT_FDCWD) {
		struct task_struct *t = (struct task_struct *)bpf_get_current_task();
		dentry = BPF_CORE_READ(t, fs, pwd.dentry);
		mnt = BPF_CORE_READ(t, fs, pwd.mnt);
	} else {
		struct file *f = file_from_fd(dirfd);
		if (f) {
			dentry = BPF_CORE_READ(f, f_path.dentry);
			mnt = BPF_CORE_READ(f, f_path.mnt);
		}
	}
	if (!dentry || !mnt) {          /* unknown directory: keep what the user said */
		if (n > 0)
			bpf_probe_read_kernel(dst, n & (2 * TSR_PATH_MAX - 1), s->ubuf);
		return n > 0 ? n : 1;
	}
	off = build_path(s, dentry, mnt, trunc);
	len = copy_path(s, dst, off);
	if (n <= 1)
		return len;
	at = (len - 1) & (TSR_PATH_MAX - 1);       /* where the directory's NUL is */
	if (at > 1) {                               /* not "/" */
		dst[at] = '/';
		at += 1;
	}
	ts_barrier(n);
	if (n > TSR_PATH_MAX)
		n = TSR_PATH_MAX;
	bpf_probe_read_kernel(&dst[at & (TSR_PATH_MAX - 1)], n & (2 * TSR_PATH_MAX - 1), s->ubuf);
	len = (at & (TSR_PATH_MAX - 1)) + n;
	if (len > TSR_PATH_MAX) {
		dst[TSR_PATH_MAX - 1] = 0;
		len = TSR_PATH_MAX;
		*trunc = true;
		count(TSR_C_PATH_TRUNC);
	}
	return len;
}

/* path_join of the user path upath (see there). */
static __always_inline __u32 path_at(struct scratch *s, char *dst, int dirfd, __u64 upath,
				     bool *trunc)
{
	long n = 0;

	if (upath)
		n = bpf_probe_read_user_str(s->ubuf, TSR_PATH_MAX, (const void *)upath);
	return path_join(s, dst, dirfd, n, trunc);
}

/* Save a syscall's arguments for its exit (not for the sensor itself). */
static __always_inline int save_call(struct call *c)
{
	__u64 id = bpf_get_current_pid_tgid();

	if (is_self(id >> 32))
		return 0;
	bpf_map_update_elem(&ts_calls, &id, c, BPF_ANY);
	return 0;
}

/* Take (and forget) the arguments saved at entry; false when none. */
static __always_inline bool take_call(struct call *c)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct call *in = bpf_map_lookup_elem(&ts_calls, &id);

	if (!in)
		return false;
	*c = *in;
	bpf_map_delete_elem(&ts_calls, &id);
	return true;
}

#endif /* THREATSEER_COMMON_H */
