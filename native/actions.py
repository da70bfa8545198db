"""The ``event.action`` values the kernel side produces, and their ECS categorisation.

The decoder (``_bpf.pyx``) names every event it builds with one of these, and the shared
event schema (:mod:`threatseer.common.ecs`) builds on them, adding the actions the sensor
makes itself (health, loss, container start). They live here, at the bottom layer, because
the decoder must not import anything above the kernel side; this module is plain Python, so
importing it loads no libbpf.
"""

from __future__ import annotations

# event.action values, one per kind of kernel record.
EXEC = "exec"
FORK = "fork"
EXIT = "exit"
OPEN = "open"
CONNECT = "connect"
ACCEPT = "accept"
LISTEN = "listen"
DNS_QUERY = "dns-query"
CONTAINER_CREATED = "container-created"
CONTAINER_DESTROYED = "container-destroyed"
# File changes (under watched prefixes; chmod setting setuid/setgid anywhere).
FILE_CREATE = "create"
FILE_WRITE_OPEN = "write-open"
FILE_UNLINK = "unlink"
FILE_RMDIR = "rmdir"
FILE_RENAME = "rename"
FILE_LINK = "link"
FILE_SYMLINK = "symlink"
FILE_MKDIR = "mkdir"
FILE_CHMOD = "chmod"
FILE_CHOWN = "chown"
FILE_UTIMES = "utimes"
FILE_SETXATTR = "setxattr"
FILE_TRUNCATE = "truncate"
LOG_TRUNCATE = "log-truncate"
# Privilege changes that gained uid/gid 0 or capabilities.
SETUID = "setuid"
SETGID = "setgid"
CAPSET = "capset"
# Process and kernel tricks.
PTRACE = "ptrace"
PROCESS_VM_WRITE = "process-vm-write"
PROC_MEM_WRITE = "proc-mem-write"
PROCESS_VM_READ = "process-vm-read"
PROC_MEM_READ = "proc-mem-read"
MEMFD_CREATE = "memfd-create"
MODULE_LOAD = "module-load"
BPF_LOAD = "bpf-load"
RENAME_PROCESS = "rename-process"
MOUNT = "mount"
UNSHARE = "unshare"
SETNS = "setns"

# ECS categorisation per action: (event.category, event.type). Every type must be one ECS
# allows for every category of the pair (ecs_flat.yml's expected_event_types; the schema test
# checks it against the vendored reference).
CATEGORIES: dict[str, tuple[list[str], list[str]]] = {
    EXEC: (["process"], ["start"]),
    FORK: (["process"], ["start"]),
    EXIT: (["process"], ["end"]),
    OPEN: (["file"], ["access"]),
    CONNECT: (["network"], ["connection", "start"]),
    ACCEPT: (["network"], ["connection", "start"]),
    LISTEN: (["network"], ["connection", "info"]),
    DNS_QUERY: (["network"], ["protocol", "info"]),
    # ECS lets "host" events be access, change, end, info or start: a container's cgroup
    # appearing changes the host; its removal ends the container.
    CONTAINER_CREATED: (["host"], ["change"]),
    CONTAINER_DESTROYED: (["host"], ["end"]),
    FILE_CREATE: (["file"], ["creation"]),
    FILE_WRITE_OPEN: (["file"], ["change"]),
    FILE_UNLINK: (["file"], ["deletion"]),
    FILE_RMDIR: (["file"], ["deletion"]),
    FILE_RENAME: (["file"], ["change"]),
    FILE_LINK: (["file"], ["creation"]),
    FILE_SYMLINK: (["file"], ["creation"]),
    FILE_MKDIR: (["file"], ["creation"]),
    FILE_CHMOD: (["file"], ["change"]),
    FILE_CHOWN: (["file"], ["change"]),
    FILE_UTIMES: (["file"], ["change"]),
    FILE_SETXATTR: (["file"], ["change"]),
    FILE_TRUNCATE: (["file"], ["change"]),
    LOG_TRUNCATE: (["file"], ["change", "deletion"]),
    SETUID: (["iam", "process"], ["change"]),
    SETGID: (["iam", "process"], ["change"]),
    CAPSET: (["iam", "process"], ["change"]),
    PTRACE: (["process"], ["access"]),
    PROCESS_VM_WRITE: (["process"], ["change"]),
    PROC_MEM_WRITE: (["process"], ["change"]),
    PROCESS_VM_READ: (["process"], ["access"]),
    PROC_MEM_READ: (["process"], ["access"]),
    MEMFD_CREATE: (["file"], ["creation"]),  # "process" allows no "creation"
    MODULE_LOAD: (["driver"], ["start"]),
    BPF_LOAD: (["driver"], ["start"]),
    RENAME_PROCESS: (["process"], ["change"]),
    MOUNT: (["file", "process"], ["change"]),
    UNSHARE: (["process"], ["change"]),
    SETNS: (["process"], ["change"]),
}
