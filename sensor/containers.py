"""Container identity: the id from the cgroup name, name and image from the runtime's files.

A container's id shows in the name of its cgroup: ``<id>``, ``docker-<id>.scope``,
``cri-containerd-<id>.scope``, ``libpod-<id>.scope``, ``crio-<id>.scope``. Every event carries
two cgroup facts from the kernel: the name of the process's v1 memory cgroup (on v1/v2 hybrid
hosts, where runtimes often place containers only in the v1 controllers) and the id of its
unified (v2) cgroup (``threatseer.cgroup.id``). On v2-only hosts -- most current distributions
-- there is no v1 memory cgroup: :class:`ContainerCgroups` knows which v2 cgroup ids are
containers, from the kernel's cgroup mkdir/rmdir events and, for an id never seen before, by
opening the cgroup from its id. Names and images are read from the files docker, containerd and podman keep on
disk, once per container.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from threatseer.native._bpf import open_kernfs_id

ID_RE = re.compile(r"(?:^|[-_/])([0-9a-f]{64})(?:\.scope)?$")
# A container's id in any component of a cgroup path (the deepest wins): processes of a
# container may sit in sub-cgroups of its own (systemd inside a container, nested runtimes).
PATH_ID_RE = re.compile(r"(?:^|[-_/])([0-9a-f]{64})(?:\.scope)?(?=/|$)")


@dataclass(frozen=True, slots=True)
class ContainerInfo:
    id: str
    name: str = ""
    image: str = ""
    runtime: str = ""


def container_id(memcg_name: str) -> str:
    """The 64-hex container id in a memory-cgroup name or path, or ''."""
    if not memcg_name:
        return ""
    m = ID_RE.search(memcg_name)
    return m.group(1) if m else ""


def container_id_in_path(path: str) -> str:
    """The 64-hex container id of the deepest container cgroup in ``path``, or ''."""
    found = PATH_ID_RE.findall(path) if path else ()
    return found[-1] if found else ""


def cgroup2_mount(mounts: str = "/proc/self/mounts") -> str:
    """Where the unified (v2) hierarchy is mounted ('' when it is not)."""
    try:
        with open(mounts) as f:
            for line in f:
                parts = line.split()
                if len(parts) > 2 and parts[2] == "cgroup2":
                    return parts[1]
    except OSError:
        pass
    return ""


class ContainerCgroups:
    """Which unified (v2) cgroup ids belong to which container.

    A cgroup's id is its kernfs node id, so ``open_by_handle_at`` on the cgroup2 mount opens
    it and /proc/self/fd tells its path (what systemd and bpftool do): an id never seen before
    is resolved once and remembered, container or not, so processes in containers that
    existed before the sensor, or whose cgroup-creation record was lost, are still known.
    :meth:`created` and :meth:`removed` follow the kernel's cgroup events. At most
    :attr:`MAX` ids are remembered (then the memory starts afresh).
    """

    MAX = 65536

    def __init__(self, mount: str | None = None) -> None:
        self.by_id: dict[int, str] = {}
        self.mount = cgroup2_mount() if mount is None else mount
        self._mount_fd: int | None = None
        self.resolve_errors = 0

    def get(self, cgroup_id: object) -> str:
        cid = self.by_id.get(cgroup_id)  # type: ignore[call-overload]
        if cid is None:
            cid = self._resolve(cgroup_id)
        return cid

    def _resolve(self, cgroup_id: object) -> str:
        if type(cgroup_id) is not int:
            return ""
        if cgroup_id <= 1 or not self.mount:  # the root (a hybrid host's usual), or no v2
            self._remember(cgroup_id, "")
            return ""
        path = self.path_of(cgroup_id)
        cid = container_id_in_path(path) if path else ""
        self._remember(cgroup_id, cid)
        return cid

    def path_of(self, cgroup_id: int) -> str:
        """The cgroup's directory, from its id ('' when it cannot be opened)."""
        try:
            if self._mount_fd is None:
                self._mount_fd = os.open(self.mount, os.O_RDONLY | os.O_DIRECTORY)
            fd = open_kernfs_id(self._mount_fd, cgroup_id, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            self.resolve_errors += 1
            return ""
        if fd < 0:  # gone already, or no CAP_DAC_READ_SEARCH
            self.resolve_errors += 1
            return ""
        try:
            return os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            return ""
        finally:
            os.close(fd)

    def _remember(self, cgroup_id: int, cid: str) -> None:
        if len(self.by_id) >= self.MAX:
            self.by_id.clear()
        self.by_id[cgroup_id] = cid

    def created(self, cgroup_id: int, path: str) -> str:
        """Note a new cgroup at ``path`` (relative to the hierarchy's root); its container
        id, or ''."""
        cid = container_id_in_path(path)
        self._remember(cgroup_id, cid)
        return cid

    def removed(self, cgroup_id: int) -> None:
        self.by_id.pop(cgroup_id, None)

    def close(self) -> None:
        if self._mount_fd is not None:
            os.close(self._mount_fd)
            self._mount_fd = None


class ContainerDirectory:
    """Looks up container names and images in the runtimes' state directories.

    ``root`` lets tests and chroot'ed sensors point at another filesystem root.
    """

    # A container whose runtime files are not (yet) there is looked for again at most this
    # often: per event, three failed file reads cost more than the rest of the sensor.
    RETRY_S = 1.0

    def __init__(self, root: str = "/") -> None:
        self.root = Path(root)
        self._cache: dict[str, ContainerInfo] = {}
        self._missing_since: dict[str, float] = {}

    def lookup(self, cid: str) -> ContainerInfo:
        info = self._cache.get(cid)
        if info is not None and info.runtime:
            return info
        now = time.monotonic()
        if info is not None and now - self._missing_since.get(cid, 0.0) < self.RETRY_S:
            return info
        info = self._docker(cid) or self._podman(cid) or self._containerd(cid)
        info = info or ContainerInfo(cid)
        if len(self._cache) > 4096:
            self._cache.clear()
            self._missing_since.clear()
        self._cache[cid] = info
        if info.runtime:
            self._missing_since.pop(cid, None)
        else:
            self._missing_since[cid] = now
        return info

    def forget(self, cid: str) -> None:
        self._cache.pop(cid, None)
        self._missing_since.pop(cid, None)

    def _read_json(self, path: Path) -> dict | list | None:
        try:
            with open(path) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def _docker(self, cid: str) -> ContainerInfo | None:
        doc = self._read_json(self.root / "var/lib/docker/containers" / cid / "config.v2.json")
        if not isinstance(doc, dict):
            return None
        config = doc.get("Config") or {}
        return ContainerInfo(cid, str(doc.get("Name", "")).lstrip("/"),
                             str(config.get("Image", "")), "docker")

    def _podman(self, cid: str) -> ContainerInfo | None:
        for base in ("var/lib/containers/storage", "run/containers/storage"):
            doc = self._read_json(self.root / base / "overlay-containers/containers.json")
            if isinstance(doc, list):
                for entry in doc:
                    if isinstance(entry, dict) and entry.get("id") == cid:
                        names = entry.get("names") or [""]
                        meta = self._metadata(entry.get("metadata"))
                        image = meta.get("image-name") or meta.get("image") or ""
                        return ContainerInfo(cid, str(names[0]), str(image), "podman")
        return None

    @staticmethod
    def _metadata(raw: object) -> dict:
        if isinstance(raw, str):
            try:
                value = json.loads(raw)
            except ValueError:
                return {}
            return value if isinstance(value, dict) else {}
        return raw if isinstance(raw, dict) else {}

    def _containerd(self, cid: str) -> ContainerInfo | None:
        tasks = self.root / "run/containerd/io.containerd.runtime.v2.task"
        try:
            namespaces = os.listdir(tasks)
        except OSError:
            return None
        for ns in namespaces:
            doc = self._read_json(tasks / ns / cid / "config.json")
            if isinstance(doc, dict):
                ann = doc.get("annotations") or {}
                name = ann.get("io.kubernetes.cri.container-name") or ann.get(
                    "nerdctl/name", "")
                image = ann.get("io.kubernetes.cri.image-name") or ann.get(
                    "org.opencontainers.image.ref.name", "")
                return ContainerInfo(cid, str(name), str(image), "containerd")
        return None
