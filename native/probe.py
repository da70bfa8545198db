"""Friendly Python API over the Cython reader: the one object the sensor daemon holds.

    from threatseer.native import Probe
    with Probe(sensitive_paths=["/etc/shadow", "/home/*/.ssh/"]) as probe:
        for event in probe.poll(timeout_ms=100):
            ...   # flat ECS dicts

Everything the kernel side needs (ring size, self filter, memory-cgroup hierarchy, path
prefixes) is set here before or right after load; the prefix filters (sensitive opens,
watched file changes) can be changed live.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Iterable
from typing import Any

from threatseer.native._bpf import (
    COMM_MAX,
    COUNTER_NAMES,
    KIND_ANY,
    KIND_DELETED,
    KIND_MEMFD,
    PREFIX_MAX,
    W_LOG,
    W_WATCHED,
    BpfProbe,
    mount_tracefs,
)
from threatseer.native.errors import ProbeError

TRACEFS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
log = logging.getLogger("threatseer.native")
# Past this much pending the kernel always wakes the reader (see Probe's docstring for
# below it): one wakeup per record would cost more CPU than decoding it.
DEFAULT_WAKEUP_BYTES = 256 * 1024
# Legacy syscalls arm64 lacks, newer ones older kernels lack, module syscalls of kernels
# without CONFIG_MODULES.
OPTIONAL_SYSCALLS = (
    "open", "openat2", "creat", "unlink", "rmdir", "rename", "renameat", "link", "symlink",
    "mkdir", "chmod", "fchmodat2", "chown", "lchown", "utime", "utimes", "futimesat",
    "init_module", "finit_module", "setuid", "setgid", "setreuid", "setregid", "setresuid",
    "setresgid", "setfsuid", "setfsgid", "move_mount",
)
OPTIONAL_PROGRAMS = tuple(f"ts_{side}_{name}" for name in OPTIONAL_SYSCALLS
                          for side in ("enter", "exit"))
# Reached only through tail calls from the ts_exit_* programs: never attached themselves.
TAIL_CALL_TARGETS = ("ts_change_exit", "ts_sys_exit")
# raw_syscalls programs that see module-load attempts where the kernel has no init_module/
# finit_module tracepoints (CONFIG_MODULES=n: no module can load, the attempt is still a
# signal). They run on EVERY syscall (a tight openat loop ran at half speed), so they are
# loaded only with Probe(module_fallback=True) and only when the tracepoints are missing.
MODULE_FALLBACK = ("ts_raw_enter_module", "ts_raw_exit_module")
# Programs not loaded by default (SEC("?tp_btf/...")): each is enabled where the kernel has
# its tracepoint (io_uring opens since 5.19's io_uring_submit_req(req), DNS over TCP since
# 6.4's tcp_sendmsg_locked); without them the rest works as before.
TRACEPOINT_PROGRAMS = {
    "ts_io_uring_submit": "io_uring/io_uring_submit_req",
    "ts_tcp_sendmsg": "tcp/tcp_sendmsg_locked",
}
# Under these, a truncation (O_TRUNC open, truncate to 0) is "log-truncate".
DEFAULT_LOG_PATHS = ("/var/log/",)
# In-kernel exec enforcement (bpf/enforce.bpf.c): loaded only when asked for and where the
# kernel lets a tp_btf program call bpf_send_signal; attached before the exec program, whose
# record carries its verdict.
ENFORCE_PROGRAM = "tsr_enforce_exec"
# What an entry of the exec denylist covers (bits of its kill/dry-run kinds).
EXEC_KINDS = {"any": KIND_ANY, "memfd": KIND_MEMFD, "deleted": KIND_DELETED}


def bpf_object_path() -> str:
    """Where the linked BPF object lives (built by setup.py next to this module). A plain
    path, not importlib.resources: that imports tempfile, shutil, bz2 and lzma, ~0.8 MiB of
    the sensor's RSS for one file name (the package is never zipped)."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "threatseer.bpf.o")


def tracefs_mounted(mounts: str = "/proc/self/mounts") -> bool:
    """Whether tracefs is mounted (read from the mount table: its directory may not be
    readable by an unprivileged caller, which deserves the permission error instead)."""
    try:
        with open(mounts) as f:
            if any(line.split()[2:3] == ["tracefs"] for line in f):
                return True
    except OSError:
        pass
    return any(os.path.isdir(os.path.join(p, "events")) for p in TRACEFS)


def ensure_tracefs() -> bool:
    """Make sure tracefs is mounted, mounting it at /sys/kernel/tracing when it is not (the
    sensor runs as root; a fresh machine may not have it mounted). True when this call
    mounted it; ProbeError saying what to do when it is missing and cannot be mounted."""
    if tracefs_mounted():
        return False
    try:
        mount_tracefs(TRACEFS[0])
    except OSError as exc:
        raise ProbeError(exc.errno or errno.ENOENT,
                         f"tracefs is not mounted and mounting it failed ({exc.strerror}): as "
                         f"root, run `mount -t tracefs nodev {TRACEFS[0]}`") from None
    log.info("mounted tracefs at %s (it was not mounted; tracepoints need it)", TRACEFS[0])
    return True


def memory_hierarchy(proc_cgroups: str = "/proc/cgroups") -> int | None:
    """Hierarchy id of the v1 memory controller, or None when it is not mounted as v1."""
    try:
        with open(proc_cgroups) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 4 and parts[0] == "memory":
                    hid = int(parts[1])
                    return hid if hid > 0 and parts[3] == "1" else None
    except OSError:
        return None
    return None


def ring_bytes(kib: int) -> int:
    """Ring size in bytes: a power of two of at least one page (a kernel requirement)."""
    want = max(int(kib), 1) * 1024
    size = os.sysconf("SC_PAGE_SIZE")
    while size < want:
        size *= 2
    return size


def has_syscall_tracepoint(name: str) -> bool:
    """Whether tracefs has the sys_enter tracepoint of syscall name."""
    return has_tracepoint(f"syscalls/sys_enter_{name}")


def has_tracepoint(name: str) -> bool:
    """Whether tracefs has tracepoint ``group/event``."""
    return any(os.path.isdir(os.path.join(p, "events", name)) for p in TRACEFS)


def compile_prefixes(prefixes: Iterable[str], what: str = "sensitive path",
                     ) -> tuple[set[bytes], int]:
    """Validate prefixes; return the trie keys and the wildcard component mask.

    '*' may stand for exactly one whole path component (e.g. "/home/*/.ssh/"), at most
    once per prefix and within the first 7 components, because the kernel retries the
    lookup with that component of the opened path replaced by '*'.
    """
    keys: set[bytes] = set()
    mask = 0
    for prefix in prefixes:
        if not isinstance(prefix, str) or not prefix.startswith("/"):
            raise ValueError(f"{what} must be an absolute path: {prefix!r}")
        raw = prefix.encode()
        if len(raw) > PREFIX_MAX:
            raise ValueError(f"{what} longer than {PREFIX_MAX} bytes: {prefix!r}")
        parts = prefix.split("/")
        stars = [i for i, part in enumerate(parts) if "*" in part]
        if stars:
            if len(stars) > 1 or parts[stars[0]] != "*":
                raise ValueError(
                    f"'*' must be one whole path component, once per prefix: {prefix!r}")
            if not 1 <= stars[0] <= 7:
                raise ValueError(f"'*' only within the first 7 path components: {prefix!r}")
            mask |= 1 << stars[0]
        keys.add(raw)
    return keys, mask


def compile_watched(watched: Iterable[str], log_paths: Iterable[str],
                    ) -> tuple[dict[bytes, int], int]:
    """Watched prefixes as trie entries {key: TSR_W_* bits} and their wildcard mask.

    A log path becomes an entry of its own (watched + log) only where a watched prefix
    covers it, so log_paths never widen what is watched."""
    keys, mask = compile_prefixes(watched, "watched path")
    logs, _ = compile_prefixes(log_paths, "log path")
    entries = dict.fromkeys(keys, W_WATCHED)
    for log in logs:
        if any(log.startswith(k) for k in keys):
            entries[log] = W_WATCHED | W_LOG
    return entries, mask


class Probe:
    """The loaded and attached threatseer BPF programs and their ring-buffer reader.

    Creating one opens, sizes, loads and attaches everything (root or CAP_BPF +
    CAP_PERFMON needed); :meth:`close` detaches and frees it all (also on ``with`` exit).

    Wakeups: the kernel signals :meth:`fileno` for the first record after the reader drained
    the ring, and again once ``wakeup_bytes`` are pending (default: 256 KiB or 1/8 of the
    ring); while the reader says it holds a batch (:meth:`set_hold`) only the latter, so call
    :meth:`poll` on a timer then. ``wakeup_bytes=0`` leaves wakeups to the kernel (the first
    record after a drain).

    ``watched_paths`` are the prefixes (same '*' rule as ``sensitive_paths``) under which file
    changes are reported; none by default (chmod setting setuid/setgid is reported
    anywhere). Under ``log_paths`` covered by a watched prefix, truncation is
    "log-truncate". Both change live with :meth:`set_watched_paths`.

    ``module_fallback=True`` reports module-load attempts on kernels without module
    tracepoints (CONFIG_MODULES=n) through programs that run on every syscall.
    """

    def __init__(
        self,
        ring_buffer_kib: int = 16384,
        sensitive_paths: Iterable[str] = (),
        self_tgid: int | None = None,
        memory_cgroup_hierarchy: int | None = None,
        bpf_object: str | None = None,
        wakeup_bytes: int | None = None,
        watched_paths: Iterable[str] = (),
        log_paths: Iterable[str] = DEFAULT_LOG_PATHS,
        module_fallback: bool = False,
        enforce: bool = False,
    ) -> None:
        self._bpf: BpfProbe | None = None
        # Why in-kernel enforcement is off ("" when it is on; see set_exec_policy).
        self.enforce_refused = "not requested"
        self._denied: dict[bytes, tuple[int, int, tuple[int, int, int]]] = {}
        self._protected: set[bytes] = set()
        ensure_tracefs()
        keys, mask = compile_prefixes(sensitive_paths)
        self.log_paths = list(log_paths)
        watched, watch_mask = compile_watched(watched_paths, self.log_paths)
        path = bpf_object or bpf_object_path()
        if not os.path.exists(path):
            raise ProbeError(errno.ENOENT, f"{path} missing: build it with `make build`")
        self.memory_cgroup_hierarchy = (
            memory_hierarchy() if memory_cgroup_hierarchy is None else memory_cgroup_hierarchy)
        self.self_tgid = os.getpid() if self_tgid is None else int(self_tgid)
        size = ring_bytes(ring_buffer_kib)
        self.wakeup_bytes = (min(DEFAULT_WAKEUP_BYTES, size // 8) if wakeup_bytes is None
                             else max(0, min(int(wakeup_bytes), size // 2)))
        enable = (MODULE_FALLBACK if module_fallback and not has_syscall_tracepoint("finit_module")
                  else ())
        extra = tuple(p for p, tp in TRACEPOINT_PROGRAMS.items() if has_tracepoint(tp))
        optional = OPTIONAL_PROGRAMS + MODULE_FALLBACK + tuple(TRACEPOINT_PROGRAMS)
        args = (path.encode(), size, optional, TAIL_CALL_TARGETS)

        def load(programs: tuple[str, ...], first: tuple[str, ...] = ()) -> BpfProbe:
            try:
                return BpfProbe(*args, programs + extra, first)
            except ProbeError as exc:
                if not extra:
                    raise
                # A kernel whose structures differ from what those programs read: run
                # without.
                log.warning("loading without %s (%s)", ", ".join(extra),
                            str(exc).splitlines()[0])
                return BpfProbe(*args, programs, first)

        if enforce:
            try:
                self._bpf = load((*enable, ENFORCE_PROGRAM), (ENFORCE_PROGRAM,))
                self.enforce_refused = ""
            except ProbeError as exc:
                # e.g. a kernel that refuses bpf_send_signal here: the rest works without it
                self.enforce_refused = str(exc).splitlines()[0]
                log.warning("in-kernel exec enforcement refused by this kernel (%s); denied "
                            "execs are killed through the hub instead",
                            self.enforce_refused)
        if self._bpf is None:
            self._bpf = load(tuple(enable))
        try:
            self._prefixes: set[bytes] = set()
            self._mask = 0
            self._watched: dict[bytes, int] = {}
            self._watch_mask = 0
            self._apply_config()
            self._set_keys(keys, mask)
            self._set_watched(watched, watch_mask)
        except BaseException:
            self.close()
            raise

    @property
    def programs(self) -> list[str]:
        """Names of the attached BPF programs."""
        return list(self._live().attached)

    def _live(self) -> BpfProbe:
        if self._bpf is None:
            raise ProbeError(errno.EBADF, "probe is closed")
        return self._bpf

    def _apply_config(self) -> None:
        self._live().set_config(self.self_tgid, self.memory_cgroup_hierarchy, self._mask,
                                self.wakeup_bytes, self._watch_mask)

    def _set_keys(self, keys: set[bytes], mask: int) -> None:
        bpf = self._live()
        # add first, then widen the mask, then drop stale entries: never a window in which
        # a path matching both the old and the new set is missed
        for key in keys - self._prefixes:
            bpf.prefix_add(key)
        self._mask = mask | self._mask
        self._apply_config()
        for key in self._prefixes - keys:
            bpf.prefix_delete(key)
        self._prefixes = set(keys)
        self._mask = mask
        self._apply_config()

    def _set_watched(self, entries: dict[bytes, int], mask: int) -> None:
        bpf = self._live()
        # same order as _set_keys: add/update, widen the mask, then drop stale entries
        for key, value in entries.items():
            if self._watched.get(key) != value:
                bpf.prefix_add(key, True, value)
        self._watch_mask = mask | self._watch_mask
        self._apply_config()
        for key in self._watched.keys() - entries.keys():
            bpf.prefix_delete(key, True)
        self._watched = dict(entries)
        self._watch_mask = mask
        self._apply_config()

    def set_watched_paths(self, prefixes: Iterable[str],
                          log_paths: Iterable[str] | None = None) -> None:
        """Replace the in-kernel file-change filter without reloading (ValueError on a bad
        entry, leaving the current filter in place). log_paths: where truncation is
        "log-truncate" (default: keep the current ones)."""
        if log_paths is not None:
            log_paths = list(log_paths)
        entries, mask = compile_watched(prefixes, self.log_paths if log_paths is None
                                        else log_paths)
        if log_paths is not None:
            self.log_paths = log_paths
        self._set_watched(entries, mask)

    def set_sensitive_paths(self, prefixes: Iterable[str]) -> None:
        """Replace the in-kernel open filter without reloading (ValueError on a bad entry,
        leaving the current filter in place)."""
        keys, mask = compile_prefixes(prefixes)
        self._set_keys(keys, mask)

    def set_exec_policy(self, entries: dict[str, tuple[int, int, tuple[int, int, int]]],
                        protected: Iterable[str] = (), max_kills: int = 0,
                        window_s: float = 60.0) -> None:
        """Replace the in-kernel exec denylist: ``{path prefix: (kill kinds, dry-run kinds,
        (rule id for any file, for a memfd, for a deleted file))}`` with KIND_* bits;
        ``protected``: process names never killed; at most ``max_kills`` per ``window_s``
        (0: no limit). An empty ``entries`` turns enforcement off. ProbeError when the
        kernel refused the program (:attr:`enforce_refused` says why)."""
        bpf = self._live()
        if self.enforce_refused:
            raise ProbeError(errno.EOPNOTSUPP, f"in-kernel enforcement is off: "
                             f"{self.enforce_refused}")
        keys = {}
        for prefix, value in entries.items():
            raw = prefix.encode()
            if not prefix.startswith("/") or not 0 < len(raw) <= PREFIX_MAX:
                raise ValueError(f"denied exec prefix must be an absolute path of at most "
                                 f"{PREFIX_MAX} bytes: {prefix!r}")
            keys[raw] = value
        names = set()
        for name in protected:
            raw = name.encode()
            if 0 < len(raw) <= COMM_MAX:  # longer names cannot be a comm: never matched
                names.add(raw)
        # off while the tables change, so no exec sees half a policy
        bpf.set_enforce(False, 0, 0)
        for key in self._denied.keys() - keys.keys():
            bpf.deny_delete(key)
        for key, (kill, dry, rules) in keys.items():
            bpf.deny_add(key, kill, dry, rules)
        for name in self._protected - names:
            bpf.protect(name, False)
        for name in names - self._protected:
            bpf.protect(name, True)
        self._denied, self._protected = keys, names
        if keys:
            bpf.set_enforce(True, max_kills, int(window_s * 1e9))

    def poll(self, timeout_ms: int = 100, max_events: int = 4096) -> list[dict[str, Any]]:
        """Up to max_events events as flat ECS dicts; when none is ready, waits up to
        timeout_ms for a wakeup, then returns what is pending (possibly nothing)."""
        return self._live().poll(timeout_ms, max_events)

    def counters(self) -> dict[str, int]:
        """Kernel counters summed over CPUs ("lost", "filtered", "events", "self_filtered",
        "path_truncated", "change_filtered", "priv_filtered") plus "decode_errors" from
        userspace."""
        bpf = self._live()
        out = dict(zip(COUNTER_NAMES, bpf.counters(), strict=True))
        out["decode_errors"] = bpf.decode_errors
        return out

    def set_identity(self, id_prefix: str, next_seq: int = 1) -> None:
        """Stamp every event in kernel order: event.sequence from ``next_seq`` on, event.id
        ``id_prefix`` + it. :meth:`next_sequence` numbers the caller's own events."""
        self._live().set_identity(id_prefix, next_seq)

    def next_sequence(self) -> int:
        return self._live().next_sequence()

    def set_encoding(self, wrap: Any) -> None:
        """Hand out sensitive opens of processes with a registered context (:attr:`contexts`)
        encoded instead of as dicts, each run of consecutive ones as ``wrap(msgpack maps,
        count)`` (None: dicts only)."""
        self._live().set_encoding(wrap)

    def polled(self) -> int:
        """How many events the last :meth:`poll` returned: runs of encoded events (see
        :meth:`set_encoding`) hold several."""
        return self._live().polled()

    def dict_positions(self) -> list[int] | None:
        """The positions of the dicts in what the last :meth:`poll` returned, when some events
        were encoded (None: all are dicts)."""
        return self._live().dict_positions()

    def capture_records(self, into: list[bytes] | None) -> None:
        """Also keep every record's raw bytes in ``into`` (None: stop); for tests that run
        one record through both the dict and the encoding path (:meth:`decode_record`)."""
        self._live().capture = into

    def decode_record(self, record: bytes, encode: bool = True) -> Any:
        """What :meth:`poll` gives for one captured record (``encode=False``: the dict)."""
        return self._live().decode_record(record, encode)

    @property
    def contexts(self) -> Any:
        """Per-process fields to append to encoded events: ``register(pid, ppid, uid, memcg,
        fields_msgpack, n)``, ``forget(pid)``; ``hits``/``misses`` counters."""
        return self._live().contexts

    def ring_fileno(self) -> int:
        """The ring buffer's own fd, for a reader that waits with its own (edge-triggered)
        epoll: readable while records are pending, signalled by the kernel's wakeups."""
        return self._live().ring_fileno()

    def set_hold(self, hold: bool) -> None:
        """``True``: the reader holds a batch and will poll on its own timer, so records below
        ``wakeup_bytes`` do not wake it; ``False`` (the start): the first record after the
        ring was drained wakes it."""
        self._live().set_hold(hold)

    def fileno(self) -> int:
        """The ring buffer's epoll fd (level-triggered: readable while records are pending,
        once a wakeup came; use a timeout with it and call poll() anyway when it expires)."""
        return self._live().fileno()

    def close(self) -> None:
        """Detach every program and free maps and reader; safe to call twice."""
        bpf, self._bpf = self._bpf, None
        if bpf is not None:
            bpf.close()

    def __enter__(self) -> Probe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_bpf", None) is not None:
            self.close()
