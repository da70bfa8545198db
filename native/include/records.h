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
};

/* Per-CPU counters (index into the "counters" map); userspace sums them over CPUs. */
enum tsr_counter {
	TSR_C_LOST = 0,        /* ring-buffer reserve/output failed: record dropped */
	TSR_C_FILTERED = 1,    /* open dropped by the sensitive-prefix filter */
	TSR_C_EVENTS = 2,      /* records written to the ring buffer */
	TSR_C_SELF = 3,        /* records of the sensor's own process, dropped */
	TSR_C_PATH_TRUNC = 4,  /* path longer than the walk depth/buffer: truncated */
	TSR_C_MAX = 5,
};

/* Record flags (tsr_hdr.flags). */
#define TSR_F_ARGS_TRUNC 0x1   /* exec: argv longer than TSR_ARGS_MAX bytes */
#define TSR_F_PATH_USER 0x2    /* path is the user's string, not resolved by the kernel */
#define TSR_F_PATH_TRUNC 0x4   /* path truncated */

/* Config map (array, one entry) written by userspace. */
#define TSR_NO_HIERARCHY 0xffffffffu
struct tsr_config {
	__u32 self_tgid;         /* sensor's own process: filtered in the kernel (0 = none) */
	__u32 memcg_hierarchy;   /* v1 memory controller hierarchy id, TSR_NO_HIERARCHY = off */
	__u32 wild_mask;         /* bit k: some prefix has '*' as path component k (1-based) */
	__u32 wakeup_bytes;      /* 0: wake the reader per record; else only once this much is
				  * pending (the reader then relies on its poll timeout) */
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

struct tsr_exec {
	struct tsr_hdr h;
	__u32 argc;         /* bprm->argc: arguments before truncation */
	__u32 path_len;     /* bytes of path in data, including its NUL */
	__u32 args_len;     /* bytes of NUL-separated argv after the path */
	__u32 _pad;
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

/* connect, accept, listen, dns: addresses in network byte order, ports in host order. */
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

#endif /* THREATSEER_RECORDS_H */
