# C declarations of native/include/records.h: the record layouts, enums and name tables
# shared with the BPF programs. Flexible tails (paths, argv) are declared with length 1:
# Cython only needs their address; the header has the real bounds.
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t

cdef extern from "records.h":
    enum:
        TSR_EXEC
        TSR_FORK
        TSR_EXIT
        TSR_OPEN
        TSR_CONNECT
        TSR_ACCEPT
        TSR_LISTEN
        TSR_DNS
        TSR_CGROUP_MKDIR
        TSR_CGROUP_RMDIR
        TSR_FCHANGE
        TSR_CRED
        TSR_SYS
        TSR_OP_CREATE
        TSR_OP_WRITE_OPEN
        TSR_OP_TRUNC_OPEN
        TSR_OP_PROC_MEM
        TSR_OP_UNLINK
        TSR_OP_RMDIR
        TSR_OP_RENAME
        TSR_OP_LINK
        TSR_OP_SYMLINK
        TSR_OP_MKDIR
        TSR_OP_CHMOD
        TSR_OP_CHOWN
        TSR_OP_UTIMES
        TSR_OP_SETXATTR
        TSR_OP_TRUNCATE
        TSR_OP_PROC_MEM_READ
        TSR_OP_SETUID
        TSR_OP_SETREUID
        TSR_OP_SETRESUID
        TSR_OP_SETFSUID
        TSR_OP_SETGID
        TSR_OP_SETREGID
        TSR_OP_SETRESGID
        TSR_OP_SETFSGID
        TSR_OP_CAPSET
        TSR_OP_PTRACE
        TSR_OP_VM_WRITE
        TSR_OP_MEMFD
        TSR_OP_INIT_MODULE
        TSR_OP_FINIT_MODULE
        TSR_OP_BPF_LOAD
        TSR_OP_SET_NAME
        TSR_OP_MOUNT
        TSR_OP_MOVE_MOUNT
        TSR_OP_UNSHARE
        TSR_OP_SETNS
        TSR_OP_VM_READ
        TSR_W_WATCHED
        TSR_W_LOG
        TSR_W_SETID
        TSR_F_EXE_DELETED
        TSR_F_EXE_MEMFD
        TSR_F_STDIN_SOCK
        TSR_F_STDOUT_SOCK
        TSR_F_IO_URING
        TSR_F_STDIN_FILE
        TSR_F_STDOUT_FILE
        TSR_F_STDOUT_TMP
        TSR_C_MAX
        TSR_F_ARGS_TRUNC
        TSR_F_PATH_USER
        TSR_F_PATH_TRUNC
        TSR_COMM_LEN
        TSR_MEMCG_LEN
        TSR_PREFIX_MAX
        TSR_ARGS_MAXCOUNT
        TSR_NO_HIERARCHY
        TSR_READER_HOLD
        TSR_KIND_ANY
        TSR_KIND_MEMFD
        TSR_KIND_DELETED
        TSR_KINDS
        TSR_V_NONE
        TSR_V_KILLED
        TSR_V_DRY_RUN
        TSR_V_PROTECTED
        TSR_V_LIMITED
        TSR_V_FAILED
        TSR_CRED_IDS

    struct tsr_config:
        uint32_t self_tgid
        uint32_t memcg_hierarchy
        uint32_t wild_mask
        uint32_t wakeup_bytes
        uint32_t watch_wild_mask

    struct tsr_prefix_key:
        uint32_t prefixlen
        char data[1]

    struct tsr_task:
        uint64_t ts_ns
        uint64_t start_ns
        uint64_t cgroup_id
        uint32_t pid
        uint32_t tid
        uint32_t ppid
        uint32_t uid
        uint32_t gid
        uint32_t euid
        uint32_t auid
        uint32_t pidns
        uint32_t mntns
        uint32_t sid
        uint32_t tty
        char comm[1]
        char memcg[1]

    struct tsr_hdr:
        uint16_t kind
        uint16_t flags
        uint32_t size
        tsr_task task

    struct tsr_exec:
        tsr_hdr h
        uint32_t argc
        uint32_t path_len
        uint32_t args_len
        uint32_t env_len
        uint16_t verdict
        uint16_t rule
        char data[1]

    struct tsr_deny:
        uint8_t kill
        uint8_t dry
        uint16_t rule[3]

    struct tsr_enforce_config:
        uint32_t enabled
        uint32_t max_kills
        uint64_t window_ns

    struct tsr_exit:
        tsr_hdr h
        uint32_t exit_code

    struct tsr_open:
        tsr_hdr h
        int32_t result
        uint32_t flags
        uint32_t path_len
        char path[1]

    struct tsr_net:
        tsr_hdr h
        int32_t result
        uint16_t family
        uint16_t protocol
        uint16_t sport
        uint16_t dport
        uint32_t payload_len
        uint8_t saddr[16]
        uint8_t daddr[16]
        uint8_t payload[1]

    struct tsr_cgroup:
        tsr_hdr h
        uint64_t id
        uint32_t root
        uint32_t path_len
        char path[1]

    struct tsr_fchange:
        tsr_hdr h
        int32_t result
        uint16_t op
        uint16_t klass
        uint32_t mode
        uint32_t flags
        uint32_t uid
        uint32_t gid
        int64_t mtime_sec
        uint32_t mtime_nsec
        uint32_t mtime_set
        int64_t size
        uint32_t xvalue_len
        uint8_t xvalue[24]
        uint32_t path_len
        uint32_t path2_len
        char data[1]

    struct tsr_cred:
        tsr_hdr h
        int32_t result
        uint16_t op
        uint32_t before[8]
        uint32_t after[8]
        uint64_t cap_eff[2]
        uint64_t cap_perm[2]

    struct tsr_sys:
        tsr_hdr h
        int64_t result
        uint16_t op
        uint64_t arg[4]
        uint32_t len[3]
        char data[1]

    # name tables (userspace part of the header), indexed by the values above
    const char *tsr_counter_names[1]
    const char *tsr_cred_syscalls[1]
    const char *tsr_cred_ids[1]
