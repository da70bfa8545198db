"""The kernel-level tricks, each from a real action: ptrace, process_vm_writev, /proc/PID/mem
writes, memfd_create and fileless exec, exec of deleted files and from /tmp, /dev/shm and
hidden directories, module loads, bpf() program loads, prctl(PR_SET_NAME), mount in a
private mount namespace, unshare and setns."""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

SYS_PTRACE, SYS_PROCESS_VM_WRITEV, SYS_INIT_MODULE, SYS_FINIT_MODULE, SYS_BPF = (
    101, 311, 175, 313, 321)
PTRACE_POKEDATA, PTRACE_ATTACH, PTRACE_DETACH = 5, 16, 17
CLONE_NEWNS, CLONE_NEWUTS = 0x20000, 0x04000000
MS_REC, MS_PRIVATE = 0x4000, 1 << 18
TRUE = shutil.which("true")

if os.uname().machine != "x86_64":
    pytest.skip("syscall numbers here are x86_64's", allow_module_level=True)


def mine(action: str, pid: int | None = None) -> Callable[[dict], bool]:
    want = os.getpid() if pid is None else pid
    return lambda e: e["event.action"] == action and e["process.pid"] == want


def syscall(*args) -> int:
    ret = libc.syscall(*args)
    return -ctypes.get_errno() if ret == -1 else ret


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen]:
    proc = subprocess.Popen(["sleep", "60"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_ptrace_attach_and_poke(events, sleeper):
    pid = sleeper.pid
    assert syscall(SYS_PTRACE, PTRACE_ATTACH, pid, 0, 0) == 0
    try:
        os.waitpid(pid, 0)   # the attach stop
        poke = syscall(SYS_PTRACE, PTRACE_POKEDATA, pid, ctypes.c_void_p(8), 0)
        assert poke < 0      # address 8 is not mapped: the attempt is still the event
    finally:
        syscall(SYS_PTRACE, PTRACE_DETACH, pid, 0, 0)
    (att,) = events.wait(lambda e: mine("ptrace")(e)
                         and e["threatseer.ptrace.request"] == "attach")
    assert att["threatseer.target.pid"] == pid
    assert att["event.outcome"] == "success" and att["threatseer.result"] == 0
    assert att["event.category"] == ["process"] and att["event.type"] == ["access"]
    (pk,) = events.wait(lambda e: mine("ptrace")(e)
                        and e["threatseer.ptrace.request"] == "pokedata")
    assert pk["threatseer.target.pid"] == pid
    assert pk["event.outcome"] == "failure" and pk["threatseer.result"] == poke


class IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


def test_process_vm_writev_into_a_child(events):
    buf = ctypes.create_string_buffer(b"original", 16)   # same address in the forked child
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(ready_w, b"r")
        os.read(go_r, 1)
        os._exit(0 if buf.value == b"patched!" else 1)
    try:
        os.read(ready_r, 1)
        payload = ctypes.create_string_buffer(b"patched!", 8)
        local = IoVec(ctypes.addressof(payload), 8)
        remote = IoVec(ctypes.addressof(buf), 8)
        n = syscall(SYS_PROCESS_VM_WRITEV, pid, ctypes.byref(local), 1, ctypes.byref(remote),
                    1, 0)
        assert n == 8
    finally:
        os.write(go_w, b"g")
        _, status = os.waitpid(pid, 0)
        for fd in (ready_r, ready_w, go_r, go_w):
            os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0   # the write really landed
    (ev,) = events.wait(mine("process-vm-write"))
    assert ev["threatseer.target.pid"] == pid
    assert ev["threatseer.vm_write.bytes"] == 8 and ev["threatseer.result"] == 8
    assert ev["event.outcome"] == "success"


def test_proc_pid_mem_opened_for_write(events, sleeper):
    fd = os.open(f"/proc/{sleeper.pid}/mem", os.O_RDWR)
    os.close(fd)
    os.close(os.open(f"/proc/{sleeper.pid}/mem", os.O_RDONLY))   # reading: not reported
    (ev,) = events.wait(mine("proc-mem-write"))
    assert ev["file.path"] == f"/proc/{sleeper.pid}/mem"
    assert ev["threatseer.target.pid"] == sleeper.pid
    assert ev["threatseer.open.flags"] == ["read", "write"]
    assert ev["event.category"] == ["process"] and ev["threatseer.file.result"] == fd
    events.settle(0.2)
    assert len([e for e in events.events if mine("proc-mem-write")(e)]) == 1


def exec_child(target, argv: list[str]) -> int:
    """fork + execve(target) (a path or an fd: fexecve); returns the exited child's pid."""
    pid = os.fork()
    if pid == 0:
        try:
            os.execve(target, argv, {})
        finally:
            os._exit(127)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return pid


def place_flags(ex: dict) -> list[str]:
    """The exec flags about the executable (the stdio ones depend on how pytest captures
    output: tests/native/test_native_visibility.py checks them)."""
    return [f for f in ex["threatseer.exec.flags"] if not f.startswith(("stdin-", "stdout-"))]


def copy_true(dst: Path) -> Path:
    shutil.copyfile(TRUE, dst)
    dst.chmod(0o755)
    return dst


def test_memfd_create_and_fileless_exec(events):
    name = f"ts-fileless-{uuid.uuid4().hex[:6]}"
    fd = os.memfd_create(name, 0)
    try:
        with open(TRUE, "rb") as src:
            os.write(fd, src.read())
        pid = exec_child(fd, ["fileless"])
    finally:
        os.close(fd)
    (mk,) = events.wait(lambda e: mine("memfd-create")(e) and e["file.name"] == name)
    assert mk["threatseer.memfd.flags"] == [] and mk["threatseer.result"] == fd
    assert mk["event.category"] == ["file"] and mk["event.type"] == ["creation"]
    (ex,) = events.wait(mine("exec", pid))
    assert place_flags(ex) == ["memfd"]
    assert ex["process.executable"].startswith(f"/memfd:{name}")
    assert ex["process.args"] == ["fileless"]


def test_exec_of_a_deleted_file_in_tmp(events, tmp_path):
    exe = copy_true(tmp_path / "gone")
    fd = os.open(exe, os.O_RDONLY)
    try:
        exe.unlink()
        pid = exec_child(fd, ["gone"])
    finally:
        os.close(fd)
    (ex,) = events.wait(mine("exec", pid))
    assert place_flags(ex) == ["deleted", "tmp"]
    assert ex["process.executable"] == str(exe)


def test_exec_from_dev_shm_and_a_hidden_dir(events, tmp_path):
    shm = Path(f"/dev/shm/ts-test-{uuid.uuid4().hex[:8]}")
    try:
        pid = exec_child(str(copy_true(shm)), ["shm"])
    finally:
        shm.unlink(missing_ok=True)
    (ex,) = events.wait(mine("exec", pid))
    assert place_flags(ex) == ["dev-shm"]
    assert ex["process.executable"] == str(shm)

    hidden = tmp_path / ".cache" / "bin"
    hidden.mkdir(parents=True)
    pid = exec_child(str(copy_true(hidden / "tool")), ["tool"])
    (ex,) = events.wait(mine("exec", pid))
    assert place_flags(ex) == ["tmp", "hidden-dir"]

    pid = exec_child(TRUE, ["true"])
    (ex,) = events.wait(mine("exec", pid))
    assert place_flags(ex) == []


def test_module_load_attempts_are_reported_with_their_error(events, tmp_path):
    bogus = tmp_path / "bogus.ko"
    bogus.write_bytes(b"\x7fELF not really a module")
    fd = os.open(bogus, os.O_RDONLY)
    try:
        ret = syscall(SYS_FINIT_MODULE, fd, b"debug=1", 0)
    finally:
        os.close(fd)
    assert ret < 0   # ENOSYS without CONFIG_MODULES, ENOEXEC/EPERM otherwise
    (ev,) = events.wait(lambda e: mine("module-load")(e)
                        and e["threatseer.syscall"] == "finit_module")
    assert ev["file.path"] == str(bogus)
    assert ev["threatseer.module.args"] == "debug=1"
    assert ev["event.outcome"] == "failure" and ev["threatseer.result"] == ret
    assert ev["event.category"] == ["driver"] and ev["event.type"] == ["start"]

    image = ctypes.create_string_buffer(b"\x7fELF", 64)
    ret = syscall(SYS_INIT_MODULE, image, 64, b"")
    assert ret < 0
    (ev,) = events.wait(lambda e: mine("module-load")(e)
                        and e["threatseer.syscall"] == "init_module")
    assert ev["threatseer.result"] == ret and "file.path" not in ev


def load_socket_filter(name: bytes) -> int:
    """bpf(BPF_PROG_LOAD) of "r0 = 0; exit" as a socket filter; returns the fd or -errno."""
    insns = (ctypes.c_uint64 * 2)(0xb7, 0x95)   # mov64 r0, 0 ; exit (little-endian)
    license_ = ctypes.create_string_buffer(b"GPL")
    attr = ctypes.create_string_buffer(128)
    ctypes.memmove(ctypes.addressof(attr), (ctypes.c_uint32 * 2)(1, 2), 8)
    ctypes.memmove(ctypes.addressof(attr) + 8, (ctypes.c_uint64 * 2)(
        ctypes.addressof(insns), ctypes.addressof(license_)), 16)
    ctypes.memmove(ctypes.addressof(attr) + 48, name, len(name))
    return syscall(SYS_BPF, 5, attr, 128)


def test_bpf_program_load_but_not_the_sensors_own(events, probe):
    fd = load_socket_filter(b"ts_test_prog")
    assert fd >= 0, fd
    os.close(fd)
    (ev,) = events.wait(mine("bpf-load"))
    assert ev["threatseer.bpf.prog_type"] == "socket_filter"
    assert ev["threatseer.bpf.insn_count"] == 2
    assert ev["threatseer.bpf.prog_name"] == "ts_test_prog"
    assert ev["event.outcome"] == "success" and ev["threatseer.result"] == fd

    # the same load by "the sensor" (this process as the self-filtered tgid) is not seen
    before = probe.counters()["self_filtered"]
    probe.self_tgid = os.getpid()
    probe._apply_config()
    try:
        fd = load_socket_filter(b"ts_self_prog")
        os.close(fd)
    finally:
        probe.self_tgid = 0
        probe._apply_config()
    events.settle(0.2)
    assert [e for e in events.events if e.get("threatseer.bpf.prog_name") == "ts_self_prog"] == []
    assert probe.counters()["self_filtered"] > before


def test_prctl_set_name_of_a_process_not_of_a_thread(events):
    old = Path("/proc/self/comm").read_text().strip()

    def thread_rename():
        libc.prctl(15, b"ts-thread-name", 0, 0, 0)

    t = threading.Thread(target=thread_rename)
    t.start()
    t.join()
    pid = os.fork()
    if pid == 0:
        libc.prctl(15, b"kworker/0:1", 0, 0, 0)
        os._exit(0)
    os.waitpid(pid, 0)
    (ev,) = events.wait(mine("rename-process", pid))
    assert ev["process.title"] == "kworker/0:1"
    assert ev["process.name"] == old[:15]
    assert ev["event.outcome"] == "success"
    assert [e for e in events.events if e.get("process.title") == "ts-thread-name"] == []


def test_unshare_and_mount_in_a_private_namespace(events, tmp_path):
    target = tmp_path / "mnt"
    target.mkdir()

    def child() -> None:
        if libc.unshare(CLONE_NEWNS) != 0:
            os._exit(2)
        if libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) != 0:
            os._exit(3)
        if libc.mount(b"ts-tmpfs", str(target).encode(), b"tmpfs", 0, b"size=1m") != 0:
            os._exit(4)
        os._exit(0 if os.path.ismount(target) else 5)

    pid = os.fork()
    if pid == 0:
        child()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert not os.path.ismount(target)   # it lived and died in the child's namespace
    (un,) = events.wait(mine("unshare", pid))
    assert un["threatseer.ns.flags"] == ["mnt"] and un["event.outcome"] == "success"
    evs = events.wait(mine("mount", pid), count=2)
    priv, tmpfs = sorted(evs, key=lambda e: e["threatseer.mount.target"])
    assert priv["threatseer.mount.target"] == "/"
    assert priv["threatseer.mount.flags"] == MS_REC | MS_PRIVATE
    assert tmpfs["threatseer.mount.target"] == str(target)
    assert tmpfs["threatseer.mount.source"] == "ts-tmpfs"
    assert tmpfs["threatseer.mount.fstype"] == "tmpfs"
    assert tmpfs["event.outcome"] == "success" and tmpfs["threatseer.syscall"] == "mount"
    # the mount came from inside the new namespace
    assert tmpfs["threatseer.ns.mnt"] != os.stat("/proc/self/ns/mnt").st_ino


def test_setns_back_into_a_namespace(events):
    uts = os.stat("/proc/self/ns/uts").st_ino
    fd = os.open("/proc/self/ns/uts", os.O_RDONLY)
    try:
        pid = os.fork()
        if pid == 0:
            ok = libc.unshare(CLONE_NEWUTS) == 0 and libc.setns(fd, CLONE_NEWUTS) == 0
            os._exit(0 if ok and os.stat("/proc/self/ns/uts").st_ino == uts else 1)
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0
    (un,) = events.wait(mine("unshare", pid))
    assert un["threatseer.ns.flags"] == ["uts"]
    (ev,) = events.wait(mine("setns", pid))
    assert ev["threatseer.ns.flags"] == ["uts"]
    assert ev["threatseer.setns.inode"] == uts
    assert ev["event.outcome"] == "success" and ev["threatseer.result"] == 0


def test_unshare_without_namespaces_is_not_reported(events):
    pid = os.fork()
    if pid == 0:
        libc.unshare(0x200)   # CLONE_FILES only
        os._exit(0)
    os.waitpid(pid, 0)
    events.wait(mine("exit", pid))
    assert [e for e in events.events if mine("unshare", pid)(e)] == []

