"""Static engine: the bundle's lists of risky processes, sensitive files and IOCs.

Everything is indexed once per bundle (dicts, sets, one combined regex for the globs, CIDRs
grouped by prefix length) so the per-event cost is a handful of dict lookups whatever the size
of the lists.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from typing import Any

from threatseer.hub.engines._static import WRITE_FLAGS, is_write, scan
from threatseer.hub.indicators import Indicator
from threatseer.hub.rules.model import SensitiveFile, StaticData

__all__ = ["IOC_SCORE", "WRITE_FLAGS", "StaticEngine", "is_write"]

ENGINE = "static"
# The bundle's IOC lists carry descriptions only; a hit on a known-bad indicator weighs this.
IOC_SCORE = 100
_CACHE_MAX = 100_000


class StaticEngine:
    name = ENGINE

    def __init__(self, static: StaticData) -> None:
        self.risky: dict[str, dict[str, Any]] = {
            name: Indicator(ENGINE, f"risky_process:{name}", "risky_process", rp.reason,
                            rp.score, tuple(rp.tags), {"process": name}).as_dict()
            for name, rp in static.risky_processes.items()
        }
        self.exact_files: dict[str, list[SensitiveFile]] = {}
        globbed: list[SensitiveFile] = []
        for sf in static.sensitive_files:
            if any(c in sf.glob for c in "*?["):
                globbed.append(sf)
            else:
                self.exact_files.setdefault(sf.glob, []).append(sf)
        self.glob_rules = [(re.compile(fnmatch.translate(sf.glob)), sf) for sf in globbed]
        self.any_glob = (
            re.compile("|".join(f"(?:{fnmatch.translate(sf.glob)})" for sf in globbed))
            if globbed else None
        )
        iocs = static.iocs
        self.sha256 = {h.lower(): d for h, d in iocs.sha256.items()}
        self.domains = {d.lower().rstrip("."): desc for d, desc in iocs.domains.items()}
        self.exact_ips: dict[str, tuple[str, str]] = {}
        nets: dict[tuple[int, int], dict[int, tuple[str, str]]] = {}
        for spec, desc in iocs.networks.items():
            net = ipaddress.ip_network(spec, strict=False)
            if net.prefixlen == net.max_prefixlen:
                self.exact_ips[str(net.network_address)] = (spec, desc)
            else:
                shift = net.max_prefixlen - net.prefixlen
                key = (net.version, shift)
                nets.setdefault(key, {})[int(net.network_address) >> shift] = (spec, desc)
        self.nets = sorted(nets.items(), key=lambda kv: kv[0][1])  # most specific first
        self._path_cache: dict[str, list[SensitiveFile]] = {}
        self._file_indicators: dict[tuple[int, bool], dict[str, Any]] = {}
        self._ip_cache: dict[str, tuple[str, str] | None] = {}
        self._domain_cache: dict[str, tuple[str, str] | None] = {}
        self.errors = 0

    def _file_indicator(self, sf: SensitiveFile, write: bool) -> dict[str, Any]:
        """The indicator of ``sf`` without its per-event extra_info, made once."""
        key = (id(sf), write)
        ind = self._file_indicators.get(key)
        if ind is None:
            ind = self._file_indicators[key] = Indicator(
                ENGINE, sf.glob, "sensitive_file", sf.reason,
                sf.write_score if write else sf.read_score, tuple(sf.tags)).as_dict()
        return ind

    # -- lookups -------------------------------------------------------------------------
    def files_matching(self, path: str) -> list[SensitiveFile]:
        hit = self._path_cache.get(path)
        if hit is not None:
            return hit
        hit = list(self.exact_files.get(path, ()))
        if self.any_glob is not None and self.any_glob.match(path):
            hit.extend(sf for rx, sf in self.glob_rules if rx.match(path))
        if len(self._path_cache) >= _CACHE_MAX:
            self._path_cache.clear()
        self._path_cache[path] = hit
        return hit

    def ip_ioc(self, ip: str) -> tuple[str, str] | None:
        if ip in self._ip_cache:
            return self._ip_cache[ip]
        hit = self.exact_ips.get(ip)
        if hit is None and self.nets:
            try:
                addr = ipaddress.ip_address(ip)
            except ValueError:
                addr = None
            if addr is not None:
                value = int(addr)
                for (version, shift), table in self.nets:
                    if version == addr.version:
                        hit = table.get(value >> shift)
                        if hit is not None:
                            break
        if len(self._ip_cache) >= _CACHE_MAX:
            self._ip_cache.clear()
        self._ip_cache[ip] = hit
        return hit

    def domain_ioc(self, name: str) -> tuple[str, str] | None:
        """(listed domain, description) for ``name`` or one of its parent domains; cached
        per name (a fleet asks for the same few thousand names all day)."""
        cache = self._domain_cache
        if name in cache:
            return cache[name]
        hit = None
        key = name.lower().rstrip(".")
        while key:
            desc = self.domains.get(key)
            if desc is not None:
                hit = key, desc
                break
            _, _, key = key.partition(".")
        if len(cache) >= _CACHE_MAX:
            cache.clear()
        cache[name] = hit
        return hit

    # -- the engine ----------------------------------------------------------------------
    def process(self, events: list[dict[str, Any]], now: float = 0.0) -> None:
        """Add the indicators of every list the bundle has to ``events``. The loop is native
        (native/_static.pyx): per event it picks the check of its action and looks the value
        up in this engine's caches, calling back here only on a cache miss or a hit."""
        self.errors += scan(self, events)

    def _sha256_indicator(self, ev: dict[str, Any], digest: str) -> None:
        ev["threatseer.indicators"].append(Indicator(
            ENGINE, f"sha256:{digest}", "ioc", self.sha256[digest], IOC_SCORE, ("ioc",),
            {"sha256": digest}).as_dict())

    def _ip_indicator(self, ev: dict[str, Any], ip: str, hit: tuple[str, str]) -> None:
        ev["threatseer.indicators"].append(Indicator(
            ENGINE, hit[0], "ioc", hit[1], IOC_SCORE, ("ioc", "network"), {"ip": ip}).as_dict())

    def _dns_indicator(self, ev: dict[str, Any], name: str, hit: tuple[str, str]) -> None:
        ev["threatseer.indicators"].append(Indicator(
            ENGINE, hit[0], "ioc", hit[1], IOC_SCORE, ("ioc", "dns"), {"name": name}).as_dict())
