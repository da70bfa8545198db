"""The event schema: which Elastic Common Schema (ECS) fields each kind of event carries.

Events travel and are scored as *flat* dicts keyed by dotted ECS names
(``{"process.pid": 42, "event.action": "exec", ...}``): one dict lookup per field for the
rule engines, compact on the wire. :func:`nest` turns one into the nested document that
Elasticsearch, files and ``--stdout`` show. Fields ECS has no name for live under
``threatseer.*``.

This module is the one definition of the schema: the native decoder fills these names, the
sensor's enrichment adds to them, the hub validates against :data:`REQUIRED`.
"""

from __future__ import annotations

from typing import Any

ECS_VERSION = "8.11.0"

# event.action values, one per kind of record the sensor produces.
EXEC = "exec"
FORK = "fork"
EXIT = "exit"
OPEN = "open"
CONNECT = "connect"
ACCEPT = "accept"
LISTEN = "listen"
DNS_QUERY = "dns-query"
CONTAINER_CREATED = "container-created"
CONTAINER_STARTED = "container-started"
CONTAINER_DESTROYED = "container-destroyed"
SENSOR_HEALTH = "sensor-health"
SENSOR_LOSS = "sensor-loss"
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
MEMFD_CREATE = "memfd-create"
MODULE_LOAD = "module-load"
BPF_LOAD = "bpf-load"
RENAME_PROCESS = "rename-process"
MOUNT = "mount"
UNSHARE = "unshare"
SETNS = "setns"

# Every event carries these.
COMMON = ("@timestamp", "event.kind", "event.category", "event.type", "event.action")

# Fields each action must carry (beyond COMMON) for the hub to accept it.
REQUIRED: dict[str, tuple[str, ...]] = {
    EXEC: ("process.pid", "process.executable", "process.args", "process.parent.pid"),
    FORK: ("process.pid", "process.parent.pid"),
    EXIT: ("process.pid",),
    OPEN: ("process.pid", "file.path"),
    CONNECT: ("process.pid", "destination.ip", "destination.port", "network.transport"),
    ACCEPT: ("process.pid", "source.ip", "source.port", "network.transport"),
    LISTEN: ("process.pid", "destination.ip", "destination.port", "network.transport"),
    DNS_QUERY: ("process.pid", "dns.question.name"),
    CONTAINER_CREATED: ("container.id",),
    CONTAINER_STARTED: ("container.id", "process.pid"),
    CONTAINER_DESTROYED: ("container.id",),
    SENSOR_HEALTH: (),
    SENSOR_LOSS: ("threatseer.loss.events",),
    **{a: ("process.pid", "file.path") for a in (
        FILE_CREATE, FILE_WRITE_OPEN, FILE_UNLINK, FILE_RMDIR, FILE_MKDIR, FILE_CHOWN,
        FILE_UTIMES, FILE_SETXATTR, FILE_TRUNCATE, LOG_TRUNCATE)},
    **{a: ("process.pid", "file.path", "file.target_path") for a in (
        FILE_RENAME, FILE_LINK, FILE_SYMLINK)},
    FILE_CHMOD: ("process.pid", "file.path", "file.mode"),
    SETUID: ("process.pid", "user.id", "user.changes.id", "threatseer.capabilities.added"),
    SETGID: ("process.pid", "group.id", "user.changes.group.id"),
    CAPSET: ("process.pid", "threatseer.capabilities.added"),
    PTRACE: ("process.pid", "process.target.pid", "threatseer.ptrace.request"),
    PROCESS_VM_WRITE: ("process.pid", "process.target.pid"),
    PROC_MEM_WRITE: ("process.pid", "file.path"),
    MEMFD_CREATE: ("process.pid", "file.name"),
    MODULE_LOAD: ("process.pid", "threatseer.syscall"),
    BPF_LOAD: ("process.pid", "threatseer.bpf.prog_type"),
    RENAME_PROCESS: ("process.pid", "process.title"),
    MOUNT: ("process.pid", "threatseer.mount.target"),
    UNSHARE: ("process.pid", "threatseer.ns.flags"),
    SETNS: ("process.pid", "threatseer.ns.flags"),
}

# ECS categorisation per action: (event.category, event.type).
CATEGORIES: dict[str, tuple[list[str], list[str]]] = {
    EXEC: (["process"], ["start"]),
    FORK: (["process"], ["start"]),
    EXIT: (["process"], ["end"]),
    OPEN: (["file"], ["access"]),
    CONNECT: (["network"], ["connection", "start"]),
    ACCEPT: (["network"], ["connection", "start"]),
    LISTEN: (["network"], ["connection", "info"]),
    DNS_QUERY: (["network"], ["protocol", "info"]),
    CONTAINER_CREATED: (["host"], ["creation"]),
    CONTAINER_STARTED: (["host"], ["start"]),
    CONTAINER_DESTROYED: (["host"], ["deletion"]),
    SENSOR_HEALTH: (["host"], ["info"]),
    SENSOR_LOSS: (["host"], ["error"]),
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
    MEMFD_CREATE: (["file", "process"], ["creation"]),
    MODULE_LOAD: (["driver"], ["start"]),
    BPF_LOAD: (["driver"], ["start"]),
    RENAME_PROCESS: (["process"], ["change"]),
    MOUNT: (["file", "process"], ["change"]),
    UNSHARE: (["process"], ["change"]),
    SETNS: (["process"], ["change"]),
}

# Documentation of every field the sensor emits (also the reference in docs/).
FIELDS: dict[str, str] = {
    "@timestamp": "When the kernel saw the event (ISO 8601, UTC, microseconds).",
    "event.kind": "'event'; the hub sets 'alert' when the score crosses the alert threshold.",
    "event.category": "ECS category list: process, file, network, host, iam, driver.",
    "event.type": "ECS type list, e.g. start/end/access/connection.",
    "event.action": "What happened: exec, fork, exit, open, connect, accept, listen, dns-query, "
    "container-created/started/destroyed, sensor-health, sensor-loss; file changes: create, "
    "write-open, unlink, rmdir, rename, link, symlink, mkdir, chmod, chown, utimes, setxattr, "
    "truncate, log-truncate; privilege: setuid, setgid, capset; tricks: ptrace, "
    "process-vm-write, proc-mem-write, memfd-create, module-load, bpf-load, rename-process, "
    "mount, unshare, setns.",
    "event.outcome": "success or failure (opens, connects).",
    "event.id": "Unique id: sensor id, boot-local sequence; the key for de-duplication.",
    "event.sequence": "Per-sensor event counter.",
    "process.pid": "Thread-group id of the acting process.",
    "process.name": "Kernel comm (first 15 bytes of the executable name).",
    "process.executable": "Absolute path of the executable (resolved by the kernel).",
    "process.args": "argv as a list.",
    "process.args_count": "Number of arguments (before truncation).",
    "process.command_line": "argv joined with spaces.",
    "process.entity_id": "Stable id of the process: hash of host id, pid and start time.",
    "process.exit_code": "Exit status; 128+signal when killed by a signal.",
    "process.hash.sha256": "SHA-256 of the executable (cached per inode and mtime).",
    "process.working_directory": "Current directory, when known.",
    "process.parent.pid": "Parent's thread-group id.",
    "process.parent.name": "Parent's name (from the sensor's process table).",
    "process.parent.executable": "Parent's executable.",
    "process.parent.args": "Parent's argv.",
    "process.parent.command_line": "Parent's command line.",
    "user.id": "Real uid.",
    "user.name": "Name of the real uid on the host.",
    "user.effective.id": "Effective uid.",
    "user.audit.id": "Login uid (auid); 4294967295 when unset.",
    "group.id": "Real gid.",
    "file.path": "Path opened.",
    "source.ip": "Source address.",
    "source.port": "Source port.",
    "destination.ip": "Destination address.",
    "destination.port": "Destination port.",
    "network.transport": "tcp or udp.",
    "network.type": "ipv4 or ipv6.",
    "network.direction": "egress (connect), ingress (accept), or listening.",
    "network.protocol": "dns for DNS queries.",
    "dns.question.name": "Queried name.",
    "container.id": "Container id (from the v1 memory cgroup name).",
    "container.name": "Container name from the runtime's files.",
    "container.image.name": "Container image from the runtime's files.",
    "container.runtime": "docker, containerd, podman when known.",
    "host.name": "Host name of the sensor.",
    "host.id": "Stable host id (/etc/machine-id).",
    "agent.type": "'threatseer'.",
    "agent.id": "Sensor id.",
    "agent.version": "threatseer version.",
    "threatseer.args_truncated": "argv was longer than 4 KiB or 64 arguments.",
    "threatseer.ancestors": "Names of up to 4 ancestors, nearest first.",
    "threatseer.exit_signal": "Signal that killed the process, if any.",
    "threatseer.open.flags": "Open intent: read, write, create, truncate.",
    "threatseer.open.result": "fd, or -errno on failure.",
    "threatseer.cgroup.id": "cgroup v2 id of the process.",
    "threatseer.cgroup.memory": "Name of the process's v1 memory cgroup.",
    "threatseer.ns.pid": "pid namespace inode.",
    "threatseer.ns.mnt": "mount namespace inode.",
    "threatseer.process.start_ns": "Process start time (boot clock, ns).",
    "threatseer.health.*": "Sensor health counters (lost, filtered, events, change_filtered, "
    "priv_filtered, ...).",
    "process.title": "rename-process: the name the process gave itself (prctl PR_SET_NAME); "
    "process.name is then the name before.",
    "process.target.pid": "ptrace, process-vm-write, proc-mem-write: the process acted upon.",
    "process.thread.capabilities.effective": "setuid/setgid/capset: effective capabilities after.",
    "process.thread.capabilities.permitted": "setuid/setgid/capset: permitted capabilities after.",
    "user.changes.id": "setuid/setgid/capset: real uid after the change (user.id is before).",
    "user.changes.group.id": "setuid/setgid/capset: real gid after (group.id is before).",
    "file.target_path": "rename/link: the new path; symlink: what the link points to.",
    "file.mode": "Octal permission bits, e.g. '4755' (chmod, mkdir: requested; opens: the "
    "file's).",
    "file.uid": "chown: new owner uid (absent when unchanged).",
    "file.gid": "chown: new group gid (absent when unchanged).",
    "file.mtime": "utimes: modification time set explicitly (absent for 'now').",
    "file.size": "truncate: new length.",
    "file.name": "memfd-create: the memfd's name.",
    "threatseer.file.result": "File change syscall result: 0/fd or -errno.",
    "threatseer.file.setuid": "The mode has the setuid bit.",
    "threatseer.file.setgid": "The mode has the setgid bit.",
    "threatseer.path_truncated": "A path was longer than the kernel-side buffer.",
    "threatseer.xattr.name": "setxattr: attribute name (only security.capability is reported).",
    "threatseer.xattr.capabilities.permitted": "setxattr: file capabilities granted (names).",
    "threatseer.xattr.capabilities.inheritable": "setxattr: inheritable file capabilities.",
    "threatseer.xattr.capabilities.effective": "setxattr: the file capability effective bit.",
    "threatseer.syscall": "The syscall behind the event when several map to one action.",
    "threatseer.cred.before.*": "uid euid suid fsuid gid egid sgid fsgid before the change.",
    "threatseer.cred.after.*": "The same ids after the change.",
    "threatseer.capabilities.added": "Capabilities (effective or permitted) gained.",
    "threatseer.ptrace.request": "attach, seize, poketext, pokedata, pokeuser, setregs, ...",
    "threatseer.vm_write.bytes": "process-vm-write: bytes written.",
    "threatseer.memfd.flags": "memfd-create flags: cloexec, allow-sealing, hugetlb, ...",
    "threatseer.module.args": "module-load: module parameters.",
    "threatseer.bpf.prog_type": "bpf-load: program type (name, or number).",
    "threatseer.bpf.insn_count": "bpf-load: instructions.",
    "threatseer.bpf.prog_name": "bpf-load: program name given by the loader.",
    "threatseer.mount.target": "mount: mount point (absolute).",
    "threatseer.mount.source": "mount: source (device, directory or fs name).",
    "threatseer.mount.fstype": "mount: filesystem type.",
    "threatseer.mount.flags": "mount: MS_* / MOVE_MOUNT_* flags.",
    "threatseer.ns.flags": "unshare/setns: namespaces: mnt, uts, ipc, user, pid, net, cgroup, "
    "time.",
    "threatseer.setns.inode": "setns: inode of the namespace (or pidfd) file joined.",
    "threatseer.result": "Syscall result of a privilege/trick event: 0, fd, bytes or -errno.",
    "threatseer.exec.flags": "exec: memfd (fileless), deleted, tmp (/tmp, /var/tmp), dev-shm, "
    "hidden-dir (a directory component starting with '.').",
    "threatseer.loss.events": "Events known to be lost.",
    "threatseer.loss.reason": "Why they were lost.",
    "threatseer.loss.batches": "Batches known to be lost (a gap in a sensor's sequence).",
    "threatseer.loss.counter": "The health counter that counted the loss.",
}


def missing_fields(event: dict[str, Any]) -> list[str]:
    """Names of the fields ``event`` must carry but does not (empty when it is valid)."""
    missing = [f for f in COMMON if f not in event]
    action = event.get("event.action")
    if not isinstance(action, str):
        return missing or ["event.action"]
    required = REQUIRED.get(action)
    if required is None:
        return missing
    return missing + [f for f in required if f not in event]


def nest(flat: dict[str, Any]) -> dict[str, Any]:
    """Turn a flat dotted-key event into a nested ECS document."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        parts = key.split(".")
        node = out
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[parts[-1]] = value
    return out


def flatten(doc: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Inverse of :func:`nest`: a nested ECS document into dotted keys (lists kept as values)."""
    out: dict[str, Any] = {}
    for key, value in doc.items():
        dotted = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict) and value:
            out.update(flatten(value, dotted))
        else:
            out[dotted] = value
    return out
