"""Container identity: the id from the cgroup name, name and image from the runtime's files.

On this kind of host (cgroup v1/v2 hybrid) every process sits in the v2 root, and a container's
id shows in the name of its v1 memory cgroup: ``<id>``, ``docker-<id>.scope``,
``cri-containerd-<id>.scope``, ``libpod-<id>.scope``, ``crio-<id>.scope``. Names and images are
read from the files docker, containerd and podman keep on disk, once per container.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

ID_RE = re.compile(r"(?:^|[-_/])([0-9a-f]{64})(?:\.scope)?$")


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
