/* threatseer record layouts: the ONE definition shared by the BPF programs (which include
 * vmlinux.h first) and the Cython decoder (userspace, <linux/types.h>).
 *
 * Every record starts with struct tsr_hdr (kind, size) and the acting task's context; the
 * variable-length tail (paths, argv, payload) is emitted only up to its used length, so a
 * record's size is ``size`` and never the full struct. Change a layout here and rebuild both
 * sides (`make build`): they cannot drift because nothing else describes them.
 */
#ifndef THREATSEER_RECORDS_H
#define THREATSEER_RECORDS_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

#define TSR_COMM_LEN 16
#define TSR_MEMCG_LEN 128     /* leaf name of the v1 memory cgroup (container ids are 64 hex) */
#define TSR_PATH_MAX 4096     /* absolute paths built by the dentry walk */
#define TSR_ARGS_MAX 4096     /* argv bytes copied per exec */
#define TSR_ARGS_MAXCOUNT 64  /* argv entries the decoder keeps */
#define TSR_PREFIX_MAX 256    /* bytes of a path the in-kernel prefix filter compares */
#define TSR_DNS_MAX 272       /* DNS header (12) + longest name (255) + type/class */
#define TSR_PATH_DEPTH 48     /* path components walked */
#define TSR_ENV_MAX 512       /* exec: bytes of the loader variables kept (LD_PRELOAD=...) */
#define TSR_ENV_VARS 64       /* exec: environment strings looked at */

enum tsr_kind {
	TSR_EXEC = 1,
	TSR_FORK = 2,
	TSR_EXIT = 3,
	TSR_OPEN = 4,
	TSR_CONNECT = 5,
	TSR_ACCEPT = 6,
	TSR_LISTEN = 7,
	TSR_DNS = 8,
	TSR_CGROUP_MKDIR = 9,
	TSR_CGROUP_RMDIR = 10,
	TSR_FCHANGE = 11,      /* struct tsr_fchange: a file changed (op says how) */
	TSR_CRED = 12,         /* struct tsr_cred: uid/gid/capability gain */
	TSR_SYS = 13,          /* struct tsr_sys: ptrace, memfd, module, bpf, mount, ... */
};

/* What a TSR_FCHANGE / TSR_CRED / TSR_SYS record reports (its ``op``). */
enum tsr_op {
	TSR_OP_CREATE = 1,       /* open created the file (FMODE_CREATED) */
	TSR_OP_WRITE_OPEN = 2,   /* existing watched file opened for writing */
	TSR_OP_TRUNC_OPEN = 3,   /* existing watched file opened with O_TRUNC */
	TSR_OP_PROC_MEM = 4,     /* /proc/PID/mem opened for writing */
	TSR_OP_UNLINK = 5,
	TSR_OP_RMDIR = 6,
	TSR_OP_RENAME = 7,
	TSR_OP_LINK = 8,
	TSR_OP_SYMLINK = 9,
	TSR_OP_MKDIR = 10,
	TSR_OP_CHMOD = 11,
	TSR_OP_CHOWN = 12,
	TSR_OP_UTIMES = 13,
	TSR_OP_SETXATTR = 14,
	TSR_OP_TRUNCATE = 15,
	TSR_OP_PROC_MEM_READ = 16, /* /proc/PID/mem of another process opened for reading */
	/* tsr_cred */
	TSR_OP_SETUID = 20,
	TSR_OP_SETREUID = 21,
	TSR_OP_SETRESUID = 22,
	TSR_OP_SETFSUID = 23,
	TSR_OP_SETGID = 24,
	TSR_OP_SETREGID = 25,
	TSR_OP_SETRESGID = 26,
	TSR_OP_SETFSGID = 27,
	TSR_OP_CAPSET = 28,
	/* tsr_sys */
	TSR_OP_PTRACE = 40,      /* arg0 request, arg1 target pid */
	TSR_OP_VM_WRITE = 41,    /* arg0 target pid, arg1 local iovecs, arg2 remote iovecs */
	TSR_OP_MEMFD = 42,       /* str0 name, arg0 flags */
	TSR_OP_INIT_MODULE = 43, /* arg0 image length, str1 params */
	TSR_OP_FINIT_MODULE = 44,/* str0 path of the fd, arg0 fd, arg1 flags, str1 params */
	TSR_OP_BPF_LOAD = 45,    /* arg0 prog_type, arg1 insn_cnt, str0 prog_name */
	TSR_OP_SET_NAME = 46,    /* str0 old comm, str1 new comm */
	TSR_OP_MOUNT = 47,       /* str0 target, str1 source, str2 fstype, arg0 flags */
	TSR_OP_MOVE_MOUNT = 48,  /* str0 target, str2 fstype, arg0 flags */
	TSR_OP_UNSHARE = 49,     /* arg0 CLONE_* flags */
	TSR_OP_SETNS = 50,       /* arg0 nstype, arg1 inode of the fd's file, str0 its path */
	TSR_OP_VM_READ = 51,     /* arg0 target pid, arg1 local iovecs, arg2 remote iovecs */
	TSR_OP_SYS_MAX = 51,
};

/* Values of the watched-prefix trie (tsr_fchange.klass is the match's value, plus SETID). */
#define TSR_W_WATCHED 0x1     /* file changes under this prefix are reported */
#define TSR_W_LOG 0x2         /* a log directory: truncation is "log-truncate" */
#define TSR_W_SETID 0x4       /* chmod setting setuid/setgid bits (reported anywhere) */

/* Per-CPU counters (index into the "counters" map); userspace sums them over CPUs. */
enum tsr_counter {
	TSR_C_LOST = 0,        /* ring-buffer reserve/output failed: record dropped */
	TSR_C_FILTERED = 1,    /* open dropped by the sensitive-prefix filter */
	TSR_C_EVENTS = 2,      /* records written to the ring buffer */
	TSR_C_SELF = 3,        /* records of the sensor's own process, dropped */
	TSR_C_PATH_TRUNC = 4,  /* path longer than the walk depth/buffer: truncated */
	TSR_C_CHANGE_FILTERED = 5, /* file change outside the watched prefixes: dropped */
	TSR_C_PRIV_FILTERED = 6,   /* uid/gid/cap change that gained nothing: dropped */
	TSR_C_MAX = 7,
};

/* Record flags (tsr_hdr.flags). */
#define TSR_F_ARGS_TRUNC 0x1   /* exec: argv longer than TSR_ARGS_MAX bytes */
#define TSR_F_PATH_USER 0x2    /* path is the user's string, not resolved by the kernel */
#define TSR_F_PATH_TRUNC 0x4   /* path truncated */
#define TSR_F_EXE_DELETED 0x8  /* exec: the executable has no links left (deleted) */
#define TSR_F_EXE_MEMFD 0x10   /* exec: the executable is a memfd (fileless) */
#define TSR_F_STDIN_SOCK 0x20  /* exec: stdin is an IPv4/IPv6 socket */
#define TSR_F_STDOUT_SOCK 0x40 /* exec: stdout is an IPv4/IPv6 socket */
#define TSR_F_IO_URING 0x80    /* open: submitted through io_uring (result not known) */
#define TSR_F_STDIN_FILE 0x100 /* exec: stdin is a regular file (`nc host port < file`) */
#define TSR_F_STDOUT_FILE 0x200 /* exec: stdout is a regular file */
#define TSR_F_STDOUT_TMP 0x400 /* exec: ... in a directory named tmp or shm (`ps > /tmp/loot`) */

/* Config map (array, one entry) written by userspace. */
#define TSR_NO_HIERARCHY 0xffffffffu
struct tsr_config {
	__u32 self_tgid;         /* sensor's own process: filtered in the kernel (0 = none) */
	__u32 memcg_hierarchy;   /* v1 memory controller hierarchy id, TSR_NO_HIERARCHY = off */
	__u32 wild_mask;         /* bit k: some prefix has '*' as path component k (1-based) */
	__u32 wakeup_bytes;      /* 0: the kernel's own wakeups; else wake the reader once this
				  * much is pending, and below it as ts_reader says */
	__u32 watch_wild_mask;   /* wild_mask of the watched-prefix trie */
};

/* Value of the ts_reader map: the reader holds a batch on its own timer (records below
 * wakeup_bytes need not wake it); 0: wake it for the first record after it drained. */
#define TSR_READER_HOLD 1

/* In-kernel exec enforcement (bpf/enforce.bpf.c): which executables an entry of the
 * ts_exec_deny trie (keyed by path prefix, as ts_prefixes) covers ... */
#define TSR_KIND_ANY 0x1       /* any file */
#define TSR_KIND_MEMFD 0x2     /* a memfd (fileless) */
#define TSR_KIND_DELETED 0x4   /* a file with no links left */
#define TSR_KINDS 3            /* tsr_deny.rule slots: any, memfd, deleted */

struct tsr_deny {
	__u8 kill;                 /* TSR_KIND_* bits that are killed */
	__u8 dry;                  /* TSR_KIND_* bits only reported (dry run) */
	__u16 rule[TSR_KINDS];     /* rule id (1-based) per kind */
};

/* ts_enforce (array, one entry), written by userspace. */
struct tsr_enforce_config {
	__u32 enabled;             /* 0: the program returns at once */
	__u32 max_kills;           /* kills per window at most (then TSR_V_LIMITED), 0: none */
	__u64 window_ns;
};

/* ... and what it did (tsr_exec.verdict). */
enum tsr_verdict {
	TSR_V_NONE = 0,
	TSR_V_KILLED = 1,          /* SIGKILL sent before the first user instruction */
	TSR_V_DRY_RUN = 2,         /* would have been killed (dry run) */
	TSR_V_PROTECTED = 3,       /* matched, but the process name is protected */
	TSR_V_LIMITED = 4,         /* matched, but max_kills was reached in this window */
	TSR_V_FAILED = 5,          /* bpf_send_signal refused */
};

/* Key of the sensitive-prefix LPM trie: prefixlen in bits over data. */
struct tsr_prefix_key {
	__u32 prefixlen;
	char data[TSR_PREFIX_MAX];
};

struct tsr_task {
	__u64 ts_ns;        /* bpf_ktime_get_boot_ns() at the event */
	__u64 start_ns;     /* task start, boot clock */
	__u64 cgroup_id;    /* cgroup v2 id */
	__u32 pid;          /* tgid */
	__u32 tid;
	__u32 ppid;         /* real parent's tgid */
	__u32 uid;
	__u32 gid;
	__u32 euid;
	__u32 auid;         /* loginuid */
	__u32 pidns;
	__u32 mntns;
	__u32 sid;          /* session leader's tgid */
	__u32 tty;          /* controlling terminal: major << 20 | minor; 0: none */
	__u32 _pad;
	char comm[TSR_COMM_LEN];
	char memcg[TSR_MEMCG_LEN];
};

struct tsr_hdr {
	__u16 kind;
	__u16 flags;
	__u32 size;         /* bytes of this record actually emitted */
	struct tsr_task task;
};

/* data: path (path_len bytes), argv (args_len bytes, NUL-separated), then the dynamic
 * loader's injection variables found in the environment (env_len bytes, NUL-separated
 * "LD_PRELOAD=..." / "LD_AUDIT=..." strings). */
struct tsr_exec {
	struct tsr_hdr h;
	__u32 argc;         /* bprm->argc: arguments before truncation */
	__u32 path_len;     /* bytes of path in data, including its NUL */
	__u32 args_len;     /* bytes of NUL-separated argv after the path */
	__u32 env_len;      /* bytes of NUL-separated loader variables after argv */
	__u16 verdict;      /* enum tsr_verdict: what in-kernel enforcement did to this exec */
	__u16 rule;         /* the enforcement rule that matched (1-based), 0 = none */
	char data[2 * TSR_PATH_MAX + TSR_ARGS_MAX];  /* verifier-provable bounds; only used bytes are sent */
};

struct tsr_fork {
	struct tsr_hdr h;    /* task = the child */
};

struct tsr_exit {
	struct tsr_hdr h;
	__u32 exit_code;    /* raw kernel exit_code: status << 8 | signal */
	__u32 _pad;
};

struct tsr_open {
	struct tsr_hdr h;
	__s32 result;       /* fd or -errno */
	__u32 flags;        /* open flags (O_*) */
	__u32 path_len;     /* including NUL */
	__u32 _pad;
	char path[TSR_PATH_MAX];
};

/* connect, accept, listen, dns: addresses in network byte order, ports in host order. A DNS
 * payload is the DNS message itself (over TCP without its two-byte length prefix). */
struct tsr_net {
	struct tsr_hdr h;
	__s32 result;       /* connect: 0 or -errno */
	__u16 family;       /* AF_INET / AF_INET6 */
	__u16 protocol;     /* IPPROTO_TCP / IPPROTO_UDP */
	__u16 sport;
	__u16 dport;
	__u32 payload_len;  /* dns: bytes of payload */
	__u8 saddr[16];
	__u8 daddr[16];
	__u8 payload[TSR_DNS_MAX];
};

struct tsr_cgroup {
	struct tsr_hdr h;
	__u64 id;
	__u32 root;         /* hierarchy id */
	__u32 path_len;
	char path[TSR_PATH_MAX];
};

/* A file change. Paths are absolute (relative ones are joined to the cwd or dirfd's path,
 * not normalised). data: path (path_len bytes) then path2 (path2_len bytes): the new path
 * of rename/link, the content of a symlink. */
struct tsr_fchange {
	struct tsr_hdr h;
	__s32 result;       /* 0/fd or -errno */
	__u16 op;           /* enum tsr_op */
	__u16 klass;        /* TSR_W_* bits of the match */
	__u32 mode;         /* chmod/mkdir/create mode */
	__u32 flags;        /* open flags, rename/at flags */
	__u32 uid;          /* chown: new owner, (u32)-1 = unchanged */
	__u32 gid;
	__s64 mtime_sec;    /* utimes: explicit mtime when mtime_set */
	__u32 mtime_nsec;
	__u32 mtime_set;
	__s64 size;         /* truncate: new length */
	__u32 xvalue_len;   /* setxattr: bytes of value (the first 24 kept in xvalue) */
	__u8 xvalue[24];
	__u32 path_len;     /* including NUL */
	__u32 path2_len;    /* including NUL; 0 = none */
	char data[3 * TSR_PATH_MAX];
};

/* Credentials before and after a set*id/capset that gained uid/gid 0 or capabilities.
 * ids: uid euid suid fsuid gid egid sgid fsgid. */
struct tsr_cred {
	struct tsr_hdr h;
	__s32 result;
	__u16 op;
	__u16 _pad;
	__u32 before[8];
	__u32 after[8];
	__u64 cap_eff[2];   /* before, after */
	__u64 cap_perm[2];
};

/* Process and kernel tricks (op says which; see enum tsr_op for what args/strings hold).
 * data: up to three NUL-terminated strings, len[i] bytes each (0 = absent). */
struct tsr_sys {
	struct tsr_hdr h;
	__s64 result;
	__u16 op;
	__u16 _pad;
	__u32 _pad2;
	__u64 arg[4];
	__u32 len[3];
	__u32 _pad3;
	char data[3 * TSR_PATH_MAX];
};

#ifndef __VMLINUX_H__
/* Userspace's names for the values above, indexed by them: the decoder and the sensor's
 * health counters read these, so a value added above is named here and nowhere else. */
static const char *const tsr_counter_names[TSR_C_MAX] = {
	[TSR_C_LOST] = "lost",
	[TSR_C_FILTERED] = "filtered",
	[TSR_C_EVENTS] = "events",
	[TSR_C_SELF] = "self_filtered",
	[TSR_C_PATH_TRUNC] = "path_truncated",
	[TSR_C_CHANGE_FILTERED] = "change_filtered",
	[TSR_C_PRIV_FILTERED] = "priv_filtered",
};

/* The syscall behind each tsr_cred op (threatseer.syscall). */
static const char *const tsr_cred_syscalls[TSR_OP_CAPSET + 1] = {
	[TSR_OP_SETUID] = "setuid",
	[TSR_OP_SETREUID] = "setreuid",
	[TSR_OP_SETRESUID] = "setresuid",
	[TSR_OP_SETFSUID] = "setfsuid",
	[TSR_OP_SETGID] = "setgid",
	[TSR_OP_SETREGID] = "setregid",
	[TSR_OP_SETRESGID] = "setresgid",
	[TSR_OP_SETFSGID] = "setfsgid",
	[TSR_OP_CAPSET] = "capset",
};

/* tsr_cred.before/after, in order. */
#define TSR_CRED_IDS 8
static const char *const tsr_cred_ids[TSR_CRED_IDS] = {
	"uid", "euid", "suid", "fsuid", "gid", "egid", "sgid", "fsgid",
};
#endif

#endif /* THREATSEER_RECORDS_H */
