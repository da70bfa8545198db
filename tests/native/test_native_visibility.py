"""What the probe sees beyond opens, execs and connects: memory reads of other processes, DNS
over TCP, opens through io_uring, the loader's injection variables and socket/file stdio at
exec. Each is caused here, for real, and picked out by pid or a unique value."""

from __future__ import annotations

import os
import secrets
import socket
import struct
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from threatseer.native.probe import TRACEPOINT_PROGRAMS, has_tracepoint

IO_URING_OPEN = r"""
#include <linux/io_uring.h>
#include <sys/syscall.h>
#include <sys/mman.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
/* Open argv[1] with IORING_OP_OPENAT (raw syscalls: no liburing needed). */
int main(int argc, char **argv) {
    struct io_uring_params p; memset(&p, 0, sizeof p);
    int fd = syscall(__NR_io_uring_setup, 4, &p);
    if (fd < 0) { perror("io_uring_setup"); return 2; }
    char *sq = mmap(0, p.sq_off.array + p.sq_entries * sizeof(unsigned), PROT_READ|PROT_WRITE,
                    MAP_SHARED|MAP_POPULATE, fd, IORING_OFF_SQ_RING);
    char *cq = mmap(0, p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe),
                    PROT_READ|PROT_WRITE, MAP_SHARED|MAP_POPULATE, fd, IORING_OFF_CQ_RING);
    struct io_uring_sqe *sqes = mmap(0, p.sq_entries * sizeof(struct io_uring_sqe),
                                     PROT_READ|PROT_WRITE, MAP_SHARED|MAP_POPULATE, fd,
                                     IORING_OFF_SQES);
    if (sq == MAP_FAILED || cq == MAP_FAILED || sqes == MAP_FAILED) { perror("mmap"); return 2; }
    unsigned *tail = (unsigned *)(sq + p.sq_off.tail), *mask = (unsigned *)(sq + p.sq_off.ring_mask);
    unsigned *array = (unsigned *)(sq + p.sq_off.array), idx = *tail & *mask;
    struct io_uring_sqe *e = &sqes[idx]; memset(e, 0, sizeof *e);
    e->opcode = IORING_OP_OPENAT; e->fd = AT_FDCWD; e->addr = (unsigned long)argv[1];
    e->open_flags = O_RDONLY;
    array[idx] = idx;
    __atomic_store_n(tail, *tail + 1, __ATOMIC_RELEASE);
    if (syscall(__NR_io_uring_enter, fd, 1, 1, IORING_ENTER_GETEVENTS, NULL, 0) < 0) {
        perror("io_uring_enter"); return 2; }
    unsigned head = *(unsigned *)(cq + p.cq_off.head), cmask = *(unsigned *)(cq + p.cq_off.ring_mask);
    struct io_uring_cqe *c = (struct io_uring_cqe *)(cq + p.cq_off.cqes) + (head & cmask);
    printf("%d\n", c->res);
    return c->res < 0;
}
"""


@pytest.fixture
def victim():
    proc = subprocess.Popen(["sleep", "30"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def _child(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=20)


def test_reads_of_another_process_memory_are_seen_and_own_reads_are_not(events, victim):
    proc = _child(f"open('/proc/{victim.pid}/mem', 'rb').close(); "
                  "open('/proc/self/mem', 'rb').close(); print(__import__('os').getpid())")
    pid = int(proc.stdout)
    (read,) = events.wait(lambda e: e["event.action"] == "proc-mem-read"
                          and e["process.pid"] == pid)
    assert read["threatseer.target.pid"] == victim.pid
    assert read["file.path"] == f"/proc/{victim.pid}/mem"
    assert read["threatseer.open.flags"] == ["read"] and read["event.category"] == ["process"]
    events.settle()
    assert [e for e in events.events if e["event.action"] == "proc-mem-read"
            and e["process.pid"] == pid] == [read]  # its own /proc/self/mem: nothing


def test_process_vm_readv_of_another_process_is_seen(events, victim):
    code = f"""
import ctypes, os
class iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
libc = ctypes.CDLL(None, use_errno=True)
buf = ctypes.create_string_buffer(8)
local, remote = iovec(ctypes.addressof(buf), 8), iovec(ctypes.addressof(buf), 8)
libc.process_vm_readv(os.getpid(), ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
libc.process_vm_readv({victim.pid}, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
print(os.getpid())
"""
    pid = int(_child(code).stdout)
    (read,) = events.wait(lambda e: e["event.action"] == "process-vm-read"
                          and e["process.pid"] == pid)
    assert read["threatseer.target.pid"] == victim.pid


@pytest.mark.skipif(not has_tracepoint(TRACEPOINT_PROGRAMS["ts_tcp_sendmsg"]),
                    reason="kernel without tcp_sendmsg_locked")
def test_dns_over_tcp_is_decoded(events, probe):
    assert "ts_tcp_sendmsg" in probe.programs
    name = f"{secrets.token_hex(20)}.tcp-test.example"
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.53", 53))  # port 53 on loopback: root only, this test's address
    listener.listen(1)

    def serve() -> None:
        conn, _ = listener.accept()
        conn.recv(512)
        conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    question = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0\0\1\0\1"
    query = struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + question
    with socket.create_connection(("127.0.0.53", 53)) as c:
        c.sendall(struct.pack("!H", len(query)) + query)  # length prefix and message at once
    t.join(5)
    listener.close()
    (dns,) = events.wait(lambda e: e["event.action"] == "dns-query"
                         and e.get("dns.question.name") == name)
    assert dns["network.transport"] == "tcp" and dns["destination.port"] == 53
    assert dns["process.pid"] == os.getpid()


@pytest.mark.skipif(not has_tracepoint(TRACEPOINT_PROGRAMS["ts_io_uring_submit"]),
                    reason="kernel without io_uring_submit_req")
def test_opens_through_io_uring_pass_the_same_filter(events, probe, tmp_path):
    if Path("/proc/sys/kernel/io_uring_disabled").read_text().strip() == "2":
        pytest.skip("io_uring is disabled on this machine")
    assert "ts_io_uring_submit" in probe.programs
    exe = tmp_path / "io_uring_open"
    (tmp_path / "io_uring_open.c").write_text(IO_URING_OPEN)
    subprocess.run(["gcc", "-O2", "-o", str(exe), str(tmp_path / "io_uring_open.c")], check=True)
    secret = tmp_path / "secret.key"
    secret.write_text("x")
    probe.set_sensitive_paths(["/etc/shadow", str(tmp_path) + "/"])
    proc = subprocess.run([str(exe), "secret.key"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    (op,) = events.wait(lambda e: e["event.action"] == "open"
                        and e.get("threatseer.syscall") == "io_uring"
                        and e["file.path"] == str(secret))
    assert op["process.name"] == "io_uring_open" and op["event.outcome"] == "unknown"
    assert op["threatseer.open.flags"] == ["read"]
    subprocess.run([str(exe), "/etc/hostname"], check=True, capture_output=True)
    events.settle()
    assert not [e for e in events.events if e.get("threatseer.syscall") == "io_uring"
                and e["file.path"] == "/etc/hostname"]  # outside the prefixes: filtered


def test_loader_injection_variables_are_kept_and_nothing_else(events):
    tag = secrets.token_hex(6)
    subprocess.run(["/usr/bin/env", f"LD_PRELOAD=/tmp/{tag}.so", f"LD_AUDIT=/tmp/{tag}a.so",
                    f"SECRET_TOKEN={tag}", "/bin/true", tag], stderr=subprocess.DEVNULL)
    (ex,) = events.wait(lambda e: e["event.action"] == "exec"
                        and e["process.args"] == ["/bin/true", tag])
    assert ex["process.env_vars"] == [f"LD_PRELOAD=/tmp/{tag}.so", f"LD_AUDIT=/tmp/{tag}a.so"]
    subprocess.run(["/bin/true", tag, "plain"])
    (plain,) = events.wait(lambda e: e["event.action"] == "exec"
                           and e["process.args"] == ["/bin/true", tag, "plain"])
    assert "process.env_vars" not in plain


def test_socket_and_file_stdio_are_exec_flags(events, tmp_path):
    tag = secrets.token_hex(6)
    a, b = socket.socketpair(socket.AF_UNIX)  # not a network socket: no flag
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    tcp = socket.create_connection(srv.getsockname())
    peer, _ = srv.accept()
    try:
        subprocess.run(["/bin/true", tag, "tcp"], stdin=tcp, stdout=tcp)
        subprocess.run(["/bin/true", tag, "unix"], stdin=a, stdout=a)
        f = tmp_path / "in.txt"
        f.write_text("x")
        with open(f) as fh:
            subprocess.run(["/bin/true", tag, "file"], stdin=fh, stdout=subprocess.DEVNULL)
        with open(tmp_path / "out.txt", "w") as fh:
            subprocess.run(["/bin/true", tag, "outfile"], stdin=subprocess.DEVNULL, stdout=fh)
        # /tmp, and /dev/shm: the root of a tmpfs of its own (named after its mount point)
        for where, name in (("/tmp", "tmpfile"), ("/dev/shm", "shmfile")):
            with tempfile.NamedTemporaryFile("w", dir=where, prefix=f"ts-{tag}-") as loot:
                subprocess.run(["/bin/true", tag, name], stdin=subprocess.DEVNULL, stdout=loot)
        # an unnamed scratch file in /tmp (O_TMPFILE, as pytest captures output): no stdout-tmp
        with tempfile.TemporaryFile("w", dir="/tmp") as scratch:
            subprocess.run(["/bin/true", tag, "scratch"], stdin=subprocess.DEVNULL, stdout=scratch)
    finally:
        for s in (a, b, srv, tcp, peer):
            s.close()
    found = {e["process.args"][2]: e["threatseer.exec.flags"] for e in events.wait(
        lambda e: e["event.action"] == "exec" and e["process.args"][1:2] == [tag], count=7)}
    assert found == {"tcp": ["stdin-socket", "stdout-socket"], "unix": [], "file": ["stdin-file"],
                     "outfile": ["stdout-file"], "tmpfile": ["stdout-file", "stdout-tmp"],
                     "shmfile": ["stdout-file", "stdout-tmp"], "scratch": ["stdout-file"]}


