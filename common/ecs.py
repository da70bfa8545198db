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

import json
from dataclasses import dataclass
from typing import Any

from threatseer.native.actions import (
    ACCEPT,
    BPF_LOAD,
    CAPSET,
    CONNECT,
    CONTAINER_CREATED,
    CONTAINER_DESTROYED,
    DNS_QUERY,
    EXEC,
    EXIT,
    FILE_CHMOD,
    FILE_CHOWN,
    FILE_CREATE,
    FILE_LINK,
    FILE_MKDIR,
    FILE_RENAME,
    FILE_RMDIR,
    FILE_SETXATTR,
    FILE_SYMLINK,
    FILE_TRUNCATE,
    FILE_UNLINK,
    FILE_UTIMES,
    FILE_WRITE_OPEN,
    FORK,
    LISTEN,
    LOG_TRUNCATE,
    MEMFD_CREATE,
    MODULE_LOAD,
    MOUNT,
    OPEN,
    PROC_MEM_READ,
    PROC_MEM_WRITE,
    PROCESS_VM_READ,
    PROCESS_VM_WRITE,
    PTRACE,
    RENAME_PROCESS,
    SETGID,
    SETNS,
    SETUID,
    UNSHARE,
)
from threatseer.native.actions import (  # noqa: F401 (the schema's own names)
    CATEGORIES as KERNEL_CATEGORIES,
)

# The ECS release the events follow: the reference vendored in tests/data/ecs, which the
# schema tests check every field against.
ECS_VERSION = "9.4.0"


@dataclass(frozen=True, slots=True)
class Field:
    """One field of the schema: its type as Elasticsearch maps it, whether it holds a list."""

    type: str
    array: bool
    description: str


def _table(*rows: tuple[str, str, str]) -> dict[str, Field]:
    return {name: Field(kind.removesuffix("[]"), kind.endswith("[]"), text)
            for name, kind, text in rows}

# Actions the sensor makes itself (the kernel's are in threatseer.native.actions).
CONTAINER_STARTED = "container-started"
SENSOR_HEALTH = "sensor-health"
SENSOR_LOSS = "sensor-loss"
# A response: the sensor killed (or, dry run, would have killed) a process, on the hub's
# command or at exec in the kernel (threatseer.response.source).
KILL = "kill"

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
    KILL: ("process.pid", "event.outcome", "threatseer.response.source"),
    **{a: ("process.pid", "file.path") for a in (
        FILE_CREATE, FILE_WRITE_OPEN, FILE_UNLINK, FILE_RMDIR, FILE_MKDIR, FILE_CHOWN,
        FILE_UTIMES, FILE_SETXATTR, FILE_TRUNCATE, LOG_TRUNCATE)},
    **{a: ("process.pid", "file.path", "threatseer.file.source_path") for a in (
        FILE_RENAME, FILE_LINK)},
    FILE_SYMLINK: ("process.pid", "file.path", "file.target_path"),
    FILE_CHMOD: ("process.pid", "file.path", "file.mode"),
    SETUID: ("process.pid", "user.id", "user.changes.id", "threatseer.capabilities.added"),
    SETGID: ("process.pid", "group.id", "user.changes.group.id"),
    CAPSET: ("process.pid", "threatseer.capabilities.added"),
    PTRACE: ("process.pid", "threatseer.target.pid", "threatseer.ptrace.request"),
    PROCESS_VM_WRITE: ("process.pid", "threatseer.target.pid"),
    PROCESS_VM_READ: ("process.pid", "threatseer.target.pid"),
    PROC_MEM_WRITE: ("process.pid", "file.path"),
    PROC_MEM_READ: ("process.pid", "file.path", "threatseer.target.pid"),
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
    **KERNEL_CATEGORIES,
    CONTAINER_STARTED: (["host"], ["start"]),
    SENSOR_HEALTH: (["host"], ["info"]),
    SENSOR_LOSS: (["host"], ["info"]),  # ECS allows "error" only for database and web
    KILL: (["process"], ["end"]),
}

# Every field an event may carry, with its Elasticsearch/ECS type (``[]``: a list of them) and
# what it means: the sensor's fields, then those the hub adds. docs/events.md and the index
# template are generated from this; a name ending in ``*`` stands for a family of fields.
FIELDS: dict[str, Field] = _table(
    ("@timestamp", "date", "When the kernel saw the event (ISO 8601, UTC, microseconds)."),
    ("event.kind", "keyword", "'event'; the hub sets 'alert' when the score crosses the alert "
     "threshold."),
    ("event.category", "keyword[]", "ECS category list: process, file, network, host, iam, "
     "driver."),
    ("event.type", "keyword[]", "ECS type list, e.g. start/end/access/connection."),
    ("event.action", "keyword", "What happened: exec, fork, exit, open, connect, accept, "
     "listen, dns-query, container-created/started/destroyed, sensor-health, sensor-loss; "
     "file changes: create, write-open, unlink, rmdir, rename, link, symlink, mkdir, chmod, "
     "chown, utimes, setxattr, truncate, log-truncate; privilege: setuid, setgid, capset; "
     "tricks: ptrace, process-vm-write, process-vm-read, proc-mem-write, proc-mem-read, "
     "memfd-create, module-load, bpf-load, rename-process, mount, unshare, setns; response: "
     "kill."),
    ("event.outcome", "keyword", "success or failure (opens, connects); kill: success (killed), "
     "failure (refused or gone: event.reason says why) or unknown (dry run)."),
    ("event.reason", "keyword", "kill: why the process was or was not killed."),
    ("event.id", "keyword", "Unique id: sensor id, boot-local sequence; the key for "
     "de-duplication."),
    ("event.sequence", "long", "Per-sensor event counter."),
    ("process.pid", "long", "Thread-group id of the acting process."),
    ("process.thread.id", "long", "Thread id of the acting thread."),
    ("process.name", "keyword", "Kernel comm (first 15 bytes of the executable name)."),
    ("process.executable", "keyword", "Absolute path of the executable (resolved by the kernel)."),
    ("process.args", "keyword[]", "argv as a list."),
    ("process.args_count", "long", "Number of arguments (before truncation)."),
    ("process.command_line", "wildcard", "argv joined with spaces."),
    ("process.env_vars", "keyword[]", "exec: the dynamic loader's injection variables found in "
     "the new environment (LD_PRELOAD=..., LD_AUDIT=...); nothing else of the environment is "
     "read."),
    ("process.entity_id", "keyword", "Stable id of the process: hash of host id, pid and start "
     "time."),
    ("process.exit_code", "long", "Exit status; 128+signal when killed by a signal."),
    ("process.hash.sha256", "keyword", "SHA-256 of the executable (cached per inode and mtime)."),
    ("process.working_directory", "keyword", "Current directory, when known."),
    ("process.parent.pid", "long", "Parent's thread-group id."),
    ("process.parent.entity_id", "keyword", "Stable id of the parent (as process.entity_id)."),
    ("process.parent.name", "keyword", "Parent's name (from the sensor's process table)."),
    ("process.parent.executable", "keyword", "Parent's executable."),
    ("process.parent.args", "keyword[]", "Parent's argv."),
    ("process.parent.command_line", "wildcard", "Parent's command line."),
    ("process.parent.user.id", "keyword", "exec, fork: the parent's real uid (as seen at its "
     "last exec, or at a later setuid event: a gain of uid 0)."),
    ("process.parent.user.name", "keyword", "exec, fork: the name of the parent's uid."),
    ("process.start", "date", "When the process started (the kernel's start time, reckoned "
     "from the sensor's boot time; not moved by later wall-clock steps)."),
    ("process.session_leader.pid", "long", "exec: the session leader's pid (the session id)."),
    ("process.tty.char_device.major", "long", "exec: the controlling terminal's major number "
     "(absent without a terminal)."),
    ("process.tty.char_device.minor", "long", "exec: the controlling terminal's minor number."),
    ("user.id", "keyword", "Real uid (as a string, ECS's keyword)."),
    ("user.name", "keyword", "Name of the real uid on the host."),
    ("user.effective.id", "keyword", "Effective uid."),
    ("threatseer.user.audit.id", "keyword", "Login uid (auid); 4294967295 when unset."),
    ("group.id", "keyword", "Real gid."),
    ("file.path", "keyword", "The file the event is about: opened, created, changed (rename, "
     "link: the new name)."),
    ("source.ip", "ip", "Source address."),
    ("source.port", "long", "Source port."),
    ("destination.ip", "ip", "Destination address."),
    ("destination.port", "long", "Destination port."),
    ("network.transport", "keyword", "tcp or udp (DNS queries: udp, or tcp for DNS over TCP)."),
    ("network.type", "keyword", "ipv4 or ipv6."),
    ("network.direction", "keyword", "egress (connect, DNS query) or ingress (accept, listen)."),
    ("network.protocol", "keyword", "dns for DNS queries."),
    ("dns.question.name", "keyword", "Queried name."),
    ("container.id", "keyword", "Container id (from the name of the v1 memory cgroup or of the "
     "unified v2 cgroup)."),
    ("container.name", "keyword", "Container name from the runtime's files."),
    ("container.image.name", "keyword", "Container image from the runtime's files."),
    ("container.runtime", "keyword", "docker, containerd, podman when known."),
    ("host.name", "keyword", "Host name of the sensor."),
    ("host.id", "keyword", "Stable host id (/etc/machine-id)."),
    ("host.ip", "ip[]", "The sensor host's addresses (loopback and link-local left out)."),
    ("host.architecture", "keyword", "Machine architecture (uname -m), e.g. x86_64."),
    ("host.os.type", "keyword", "'linux'."),
    ("host.os.kernel", "keyword", "Kernel release (uname -r)."),
    ("host.os.name", "keyword", "Distribution name (os-release NAME)."),
    ("host.os.version", "keyword", "Distribution version (os-release VERSION_ID)."),
    ("host.os.platform", "keyword", "Distribution id (os-release ID), e.g. debian."),
    ("host.os.family", "keyword", "Distribution family (os-release ID_LIKE's first word, else "
     "ID)."),
    ("host.os.full", "keyword", "Distribution's full name (os-release PRETTY_NAME)."),
    ("agent.type", "keyword", "'threatseer'."),
    ("agent.id", "keyword", "Sensor id."),
    ("agent.version", "keyword", "threatseer version."),
    ("ecs.version", "keyword", "The ECS version the event follows."),
    ("threatseer.args_truncated", "boolean", "argv was longer than 4 KiB or 64 arguments."),
    ("threatseer.ancestors", "keyword[]", "Names of up to 4 ancestors, nearest first."),
    ("threatseer.exit_signal", "long", "Signal that killed the process, if any."),
    ("threatseer.open.flags", "keyword[]", "Open intent: read, write, create, truncate."),
    ("threatseer.open.result", "long", "fd, or -errno on failure."),
    ("threatseer.cgroup.id", "unsigned_long", "cgroup v2 id of the process (container-created/"
     "destroyed: of the cgroup made or removed)."),
    ("threatseer.cgroup.memory", "keyword", "Name of the process's v1 memory cgroup."),
    ("threatseer.cgroup.path", "keyword", "container-created/destroyed: path of the cgroup "
     "directory in its hierarchy."),
    ("threatseer.cgroup.hierarchy", "long", "container-created/destroyed: id of the cgroup "
     "hierarchy."),
    ("threatseer.ns.pid", "long", "pid namespace inode."),
    ("threatseer.ns.mnt", "long", "mount namespace inode."),
    ("threatseer.health.*", "float", "Sensor health counters (lost, filtered, events, "
     "change_filtered, priv_filtered, ...)."),
    ("process.title", "keyword", "rename-process: the name the process gave itself (prctl "
     "PR_SET_NAME); process.name is then the name before."),
    ("threatseer.target.pid", "long", "ptrace, process-vm-write/read, proc-mem-write/read: the "
     "process acted upon (ECS has no target process)."),
    ("process.thread.capabilities.effective", "keyword[]", "setuid/setgid/capset: effective "
     "capabilities after."),
    ("process.thread.capabilities.permitted", "keyword[]", "setuid/setgid/capset: permitted "
     "capabilities after."),
    ("user.changes.id", "keyword", "setuid/setgid/capset: real uid after the change (user.id, "
     "user.effective.id and group.id are before)."),
    ("user.changes.group.id", "keyword", "setuid/setgid/capset: real gid after."),
    ("process.user.id", "keyword", "setuid/setgid/capset: effective uid after the change."),
    ("process.real_user.id", "keyword", "setuid/setgid/capset: real uid after."),
    ("process.saved_user.id", "keyword", "setuid/setgid/capset: saved uid after."),
    ("process.group.id", "keyword", "setuid/setgid/capset: effective gid after."),
    ("process.real_group.id", "keyword", "setuid/setgid/capset: real gid after."),
    ("process.saved_group.id", "keyword", "setuid/setgid/capset: saved gid after."),
    ("threatseer.cred.fsuid", "keyword", "setuid/setgid/capset: filesystem uid after."),
    ("threatseer.cred.fsgid", "keyword", "setuid/setgid/capset: filesystem gid after."),
    ("threatseer.cred.before.*", "keyword", "setuid/setgid/capset: uid euid suid fsuid gid egid "
     "sgid fsgid before the change."),
    ("file.target_path", "keyword", "symlink: what the link points to."),
    ("threatseer.file.source_path", "keyword", "rename: the old path; link: the existing file "
     "(file.path is the new name)."),
    ("file.mode", "keyword", "Octal permission bits, e.g. '4755' (chmod, mkdir: requested; "
     "opens: the file's)."),
    ("file.uid", "keyword", "chown: new owner uid (absent when unchanged)."),
    ("file.gid", "keyword", "chown: new group gid (absent when unchanged)."),
    ("file.mtime", "date", "utimes: modification time set explicitly (absent for 'now')."),
    ("file.size", "long", "truncate: new length."),
    ("file.name", "keyword", "memfd-create: the memfd's name."),
    ("threatseer.file.result", "long", "File change syscall result: 0/fd or -errno."),
    ("threatseer.file.setuid", "boolean", "The mode has the setuid bit."),
    ("threatseer.file.setgid", "boolean", "The mode has the setgid bit."),
    ("threatseer.path_truncated", "boolean", "A path was longer than the kernel-side buffer."),
    ("threatseer.xattr.name", "keyword", "setxattr: attribute name (only security.capability is "
     "reported)."),
    ("threatseer.xattr.capabilities.permitted", "keyword[]", "setxattr: file capabilities "
     "granted (names)."),
    ("threatseer.xattr.capabilities.inheritable", "keyword[]", "setxattr: inheritable file "
     "capabilities."),
    ("threatseer.xattr.capabilities.effective", "boolean", "setxattr: the file capability "
     "effective bit."),
    ("threatseer.syscall", "keyword", "The syscall behind the event when several map to one "
     "action; io_uring for opens submitted through io_uring (seen at submission: no result)."),
    ("threatseer.capabilities.added", "keyword[]", "Capabilities (effective or permitted) gained."),
    ("threatseer.ptrace.request", "keyword", "attach, seize, poketext, pokedata, pokeuser, "
     "setregs, ..."),
    ("threatseer.vm_write.bytes", "long", "process-vm-write: bytes written."),
    ("threatseer.vm_read.bytes", "long", "process-vm-read: bytes read."),
    ("threatseer.memfd.flags", "keyword[]", "memfd-create flags: cloexec, allow-sealing, "
     "hugetlb, ..."),
    ("threatseer.module.args", "keyword", "module-load: module parameters."),
    ("threatseer.bpf.prog_type", "keyword", "bpf-load: program type (name, or number)."),
    ("threatseer.bpf.insn_count", "long", "bpf-load: instructions."),
    ("threatseer.bpf.prog_name", "keyword", "bpf-load: program name given by the loader."),
    ("threatseer.mount.target", "keyword", "mount: mount point (absolute)."),
    ("threatseer.mount.source", "keyword", "mount: source (device, directory or fs name)."),
    ("threatseer.mount.fstype", "keyword", "mount: filesystem type."),
    ("threatseer.mount.flags", "long", "mount: MS_* / MOVE_MOUNT_* flags."),
    ("threatseer.ns.flags", "keyword[]", "unshare/setns: namespaces: mnt, uts, ipc, user, pid, "
     "net, cgroup, time."),
    ("threatseer.setns.inode", "long", "setns: inode of the namespace (or pidfd) file joined."),
    ("threatseer.result", "long", "Syscall result of a privilege/trick event: 0, fd, bytes or "
     "-errno."),
    ("threatseer.exec.flags", "keyword[]", "exec: memfd (fileless), deleted, tmp (/tmp, "
     "/var/tmp), dev-shm, hidden-dir (a directory component starting with '.'), stdin-socket, "
     "stdout-socket (stdin/stdout is an IPv4/IPv6 socket), stdin-file, stdout-file (stdin/stdout "
     "is a regular file), stdout-tmp (stdout is a named file directly in /tmp, /var/tmp or /dev/shm)."),
    ("threatseer.enforce.verdict", "keyword", "exec: what in-kernel enforcement did before the "
     "program's first instruction: killed, dry-run, protected, limited, failed."),
    ("threatseer.enforce.rule_id", "long", "exec: the enforcement rule's number in the policy."),
    ("threatseer.enforce.rule", "keyword", "exec: the enforcement rule that matched."),
    ("threatseer.response.source", "keyword", "kill: hub (a rule's action: kill, on the hub's "
     "command) or kernel (in-kernel enforcement at exec)."),
    ("threatseer.response.id", "keyword", "kill and the alert behind it: the hub's command id."),
    ("threatseer.response.event_id", "keyword", "kill: event.id of the alert that asked for it."),
    ("threatseer.response.rule", "keyword", "kill, and an alert with a response: the rule whose "
     "action is kill."),
    ("threatseer.response.dry_run", "boolean", "kill: a dry run (nothing was killed)."),
    ("threatseer.response.action", "keyword", "Hub, on an alert: the response a rule asked for "
     "(kill)."),
    ("threatseer.response.status", "keyword", "Hub, on an alert: what became of the response: "
     "sent, dry-run, refused (threatseer.response.reason says why)."),
    ("threatseer.response.reason", "keyword", "Hub, on an alert: why a response was refused."),
    ("threatseer.loss.events", "long", "Events known to be lost."),
    ("threatseer.loss.reason", "keyword", "Why they were lost."),
    ("threatseer.loss.batches", "long", "Batches known to be lost (a gap in a sensor's sequence)."),
    ("threatseer.loss.counter", "keyword", "The health counter that counted the loss."),
    ("event.risk_score", "float", "Hub: the sum of the indicators' scores."),
    ("threatseer.action", "keyword", "Hub: what the score decided: log or alert (toss is never "
     "emitted)."),
    ("threatseer.indicators", "object[]", "Hub: the engines' findings, one object each: engine, "
     "rule, type, description, score, tags, extra_info."),
    ("threatseer.batch.seq", "long", "Hub: the sequence number of the sensor batch the event "
     "came in."),
    ("threatseer.truncated_fields", "keyword[]", "Hub: fields cut at ingest because they were "
     "longer than the hub takes (strings: ingest.max_field_chars; lists: ingest.max_list_items)."),
    ("data_stream.type", "constant_keyword", "Elasticsearch output (data streams): 'logs'."),
    ("data_stream.dataset", "constant_keyword", "Elasticsearch output: the dataset, "
     "'threatseer.events' unless configured."),
    ("data_stream.namespace", "constant_keyword", "Elasticsearch output: the namespace, "
     "'default' unless configured."),
    ("event.dataset", "keyword", "Elasticsearch output: data_stream.dataset, as ECS asks."),
    ("message", "match_only_text", "Alerts: the rendered output of the highest-scoring rule "
     "(else its description)."),
    ("rule.name", "keyword", "Alerts: the highest-scoring rule (Sigma: its title; static: the "
     "list entry)."),
    ("rule.id", "keyword", "Alerts: its id (Sigma: the rule's UUID; query rules: the name; "
     "else engine:name)."),
    ("rule.uuid", "keyword", "Alerts: a Sigma rule's UUID."),
    ("rule.description", "keyword", "Alerts: the rule's description."),
    ("rule.category", "keyword", "Alerts: the indicator type: sigma, query, sensitive_file, "
     "risky_process, ioc, abnormal_behavior, ..."),
    ("rule.ruleset", "keyword", "Alerts: the rule bundle's name (threatseer-profiles for the "
     "profile engine)."),
    ("rule.version", "keyword", "Alerts: the rule bundle's version."),
    ("rule.reference", "keyword[]", "Alerts: a Sigma rule's references."),
    ("rule.author", "keyword[]", "Alerts: a Sigma rule's authors."),
    ("rule.license", "keyword", "Alerts: a Sigma rule's license, when it names one."),
    ("threat.framework", "keyword", "Alerts: 'MITRE ATT&CK' when a matching rule has ATT&CK "
     "tags."),
    ("threat.tactic.id", "keyword[]", "Alerts: ATT&CK tactics (TA0006, ...) of every matching "
     "rule's attack.<tactic> tags."),
    ("threat.tactic.name", "keyword[]", "Alerts: their names."),
    ("threat.tactic.reference", "keyword[]", "Alerts: their ATT&CK pages."),
    ("threat.technique.id", "keyword[]", "Alerts: ATT&CK techniques (T1003, ...) of every "
     "matching rule's attack.tNNNN tags."),
    ("threat.technique.reference", "keyword[]", "Alerts: their ATT&CK pages."),
    ("threat.technique.subtechnique.id", "keyword[]", "Alerts: sub-techniques (T1003.008, ...)."),
    ("threat.technique.subtechnique.reference", "keyword[]", "Alerts: their ATT&CK pages."),
)

# Fields the hub sets on every event after its schema check, whatever a sensor sent in them:
# the sensor id the hub authenticated, what the scores decided, the indicators.
HUB_FIELDS = frozenset(("agent.id", "event.kind", "event.risk_score", "threatseer.action",
                        "threatseer.indicators", "threatseer.batch.seq"))
# Fields only the hub and its outputs write (on alerts, in Elasticsearch): removed from what a
# sensor sends, so no event carries a rule, a threat or a message the hub did not give it.
HUB_ONLY = ("rule.", "threat.", "message", "data_stream.", "event.dataset")
# event.kind of what is not an alert: ECS 'metric' for health events, else 'event'.
EVENT_KINDS = {SENSOR_HEALTH: "metric"}


_FAMILIES = tuple((name[:-1], f) for name, f in FIELDS.items() if name.endswith("*"))


def field(name: str) -> Field | None:
    """The schema's entry for ``name`` (a family's, for a member of ``name.*``), or None."""
    found = FIELDS.get(name)
    if found is None:
        for prefix, family in _FAMILIES:
            if name.startswith(prefix):
                return family
    return found


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


def to_json(flat: dict[str, Any]) -> str:
    """A flat event as its nested ECS document on one line of JSON: what files, stdout, the
    tap and replay print (values JSON has no type for become strings)."""
    return json.dumps(nest(flat), default=str, separators=(",", ":"))


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
