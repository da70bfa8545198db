"""From Sigma's fields and log sources to the sensor's events: a pySigma processing pipeline.

pySigma backends adapt rules to a data source with a processing pipeline (field renames,
added conditions, state), and users extend it with their own pipelines in YAML. The hub does
the same: :func:`default_pipeline` maps each supported log source to the ``event.action``
values of the events that answer it and Sigma's field names to ECS, and a bundle's
``sigma/pipelines/*.yml`` files (pySigma's pipeline format, e.g. ``field_name_mapping`` or
``add_condition`` items) are applied after it (:func:`pipeline_for`). The translator
(:mod:`threatseer.hub.rules.sigma`) then sees ECS names only.

Log sources and the events that answer them:

- ``process_creation``: exec. ``process_termination``: exit.
- ``file_event`` (Sysmon's FileCreate: a file created or overwritten): the file changes the
  sensor reports under ``watched_paths`` (create, write-open, truncate, rename, link, symlink,
  mkdir) and opens with write intent under ``sensitive_paths``.
- ``file_delete``: unlink, rmdir.
- ``network_connection``: connect, accept; and DNS queries for a rule that names
  ``DestinationHostname`` (a host name is only known from them).
- ``service: auditd``: the record types with an equivalent: EXECVE (exec; ``a0..aN`` are the
  arguments, keywords search the command line), SYSCALL (the syscalls the sensor observes;
  ``exe``, ``comm``, ``uid``, ...) and PATH (``name`` is the file of opens and file changes).
  Anything else (audit keys, other record types, other syscalls, a syscall's raw arguments) is
  reported unsupported with the reason.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from sigma.exceptions import SigmaTransformationError
from sigma.processing.condition_expressions import parse_condition_expression
from sigma.processing.conditions import LogsourceCondition, RuleContainsFieldCondition
from sigma.processing.pipeline import ProcessingItem, ProcessingPipeline
from sigma.processing.transformations import (
    AddConditionTransformation,
    FieldMappingTransformation,
    HashesFieldsDetectionItemTransformation,
    SetStateTransformation,
)
from sigma.processing.transformations.base import DetectionItemTransformation
from sigma.rule import SigmaDetection, SigmaDetectionItem
from sigma.types import SigmaNumber, SigmaString

from threatseer.common import ecs

# The pipeline state key naming the field a keyword (field-less) detection searches.
KEYWORD_FIELD = "threatseer_keyword_field"
# Processing item ids of the log source mappings: a rule none of them applied to has a log
# source this hub does not know.
LOGSOURCE_PREFIX = "threatseer-logsource-"

_FILE_CHANGES = [ecs.FILE_CREATE, ecs.FILE_WRITE_OPEN, ecs.FILE_TRUNCATE, ecs.FILE_RENAME,
                 ecs.FILE_LINK, ecs.FILE_SYMLINK, ecs.FILE_MKDIR]
WRITE_INTENT = ["write", "create", "truncate"]
LOGSOURCES: dict[str, list[dict[str, Any]]] = {
    "process_creation": [{"event.action": ecs.EXEC}],
    "process_termination": [{"event.action": ecs.EXIT}],
    "file_event": [{"event.action": _FILE_CHANGES},
                   {"event.action": ecs.OPEN, "threatseer.open.flags": WRITE_INTENT}],
    "file_delete": [{"event.action": [ecs.FILE_UNLINK, ecs.FILE_RMDIR]}],
}
NETWORK = [ecs.CONNECT, ecs.ACCEPT]

# Sysmon-style field -> ECS field(s) (several: any of them matches).
FIELDS: dict[str, str | list[str]] = {
    "Image": "process.executable",
    "CommandLine": "process.command_line",
    "ParentImage": "process.parent.executable",
    "ParentCommandLine": "process.parent.command_line",
    "User": "user.name",
    "ParentUser": "process.parent.user.name",
    "CurrentDirectory": "process.working_directory",
    "ProcessId": "process.pid",
    "ParentProcessId": "process.parent.pid",
    "ProcessGuid": "process.entity_id",
    "ParentProcessGuid": "process.parent.entity_id",
    "LogonId": "threatseer.user.audit.id",
    "TargetFilename": "file.path",
    "DestinationIp": "destination.ip",
    "DestinationPort": "destination.port",
    # a host name is only known from the DNS queries the sensor sees
    "DestinationHostname": "dns.question.name",
    "SourceIp": "source.ip",
    "SourcePort": "source.port",
    "Protocol": "network.transport",
    "sha256": "process.hash.sha256",
    "FileSHA256": "process.hash.sha256",  # Hashes: SHA256=... (below)
}

# auditd record fields with an equivalent.
AUDITD_FIELDS: dict[str, str] = {
    "exe": "process.executable",
    "comm": "process.name",
    "pid": "process.pid",
    "ppid": "process.parent.pid",
    "uid": "user.id",
    "euid": "user.effective.id",
    "gid": "group.id",
    "auid": "threatseer.user.audit.id",
    "cwd": "process.working_directory",
    "name": "file.path",
}
_ARG = re.compile(r"a(\d{1,2})\Z")
# auditd SYSCALL names -> the sensor's actions for them.
SYSCALLS: dict[str, list[str]] = {
    "execve": [ecs.EXEC], "execveat": [ecs.EXEC],
    "memfd_create": [ecs.MEMFD_CREATE], "ptrace": [ecs.PTRACE],
    "process_vm_writev": [ecs.PROCESS_VM_WRITE],
    "init_module": [ecs.MODULE_LOAD], "finit_module": [ecs.MODULE_LOAD], "bpf": [ecs.BPF_LOAD],
    "mount": [ecs.MOUNT], "move_mount": [ecs.MOUNT], "unshare": [ecs.UNSHARE],
    "setns": [ecs.SETNS], "capset": [ecs.CAPSET],
    **{s: [ecs.SETUID] for s in ("setuid", "setreuid", "setresuid", "setfsuid")},
    **{s: [ecs.SETGID] for s in ("setgid", "setregid", "setresgid", "setfsgid")},
    "connect": [ecs.CONNECT], "accept": [ecs.ACCEPT], "accept4": [ecs.ACCEPT],
    "listen": [ecs.LISTEN], "unlink": [ecs.FILE_UNLINK], "unlinkat": [ecs.FILE_UNLINK],
    "rmdir": [ecs.FILE_RMDIR], "rename": [ecs.FILE_RENAME], "renameat": [ecs.FILE_RENAME],
    "renameat2": [ecs.FILE_RENAME], "mkdir": [ecs.FILE_MKDIR], "mkdirat": [ecs.FILE_MKDIR],
    "chmod": [ecs.FILE_CHMOD], "fchmod": [ecs.FILE_CHMOD], "fchmodat": [ecs.FILE_CHMOD],
    "chown": [ecs.FILE_CHOWN], "fchown": [ecs.FILE_CHOWN], "fchownat": [ecs.FILE_CHOWN],
    "lchown": [ecs.FILE_CHOWN], "truncate": [ecs.FILE_TRUNCATE],
    "ftruncate": [ecs.FILE_TRUNCATE], "link": [ecs.FILE_LINK], "linkat": [ecs.FILE_LINK],
    "symlink": [ecs.FILE_SYMLINK], "symlinkat": [ecs.FILE_SYMLINK],
    "setxattr": [ecs.FILE_SETXATTR], "lsetxattr": [ecs.FILE_SETXATTR],
    "fsetxattr": [ecs.FILE_SETXATTR], "open": [ecs.OPEN], "openat": [ecs.OPEN],
    "openat2": [ecs.OPEN], "prctl": [ecs.RENAME_PROCESS],
}
_PATH_ACTIONS = [ecs.OPEN, *_FILE_CHANGES, ecs.FILE_UNLINK, ecs.FILE_RMDIR, ecs.FILE_CHMOD,
                 ecs.FILE_CHOWN, ecs.FILE_UTIMES, ecs.FILE_SETXATTR, ecs.LOG_TRUNCATE]
_RECORD_TYPES = {"EXECVE": [ecs.EXEC], "PATH": _PATH_ACTIONS}
# auditd fields known to have no equivalent, with why.
AUDITD_UNSUPPORTED = {
    "key": "an audit rule's key names a local audit rule, which the sensor does not have",
    "nametype": "PATH records' nametype (CREATE, DELETE, ...) has no equivalent",
    "unit": "systemd unit records (SERVICE_STOP) are not observed by the sensor",
}


def _strings(item: SigmaDetectionItem) -> list[str]:
    out = []
    for v in item.value:
        if isinstance(v, SigmaString) and v.contains_special():
            raise SigmaTransformationError(f"auditd {item.field}: wildcards are not supported")
        if not isinstance(v, SigmaString | SigmaNumber):
            raise SigmaTransformationError(f"auditd {item.field}: {type(v).__name__} values "
                                           "are not supported")
        out.append(str(v))
    return out


@dataclass
class AuditdRecords(DetectionItemTransformation):
    """auditd's record fields onto the sensor's events: ``type`` and ``SYSCALL`` become
    ``event.action`` conditions, EXECVE's ``aN`` the arguments (``process.args[N]``), and the
    process and path fields their ECS names. A record field without an equivalent stops the
    rule with the reason (reported by the bundle loader)."""

    def apply_detection(self, detection: SigmaDetection) -> None:
        types = {str(v).upper() for item in detection.detection_items
                 if isinstance(item, SigmaDetectionItem) and item.field == "type"
                 for v in item.value}
        self._syscall = "SYSCALL" in types  # aN are then the syscall's raw arguments
        super().apply_detection(detection)

    def _rename(self, item: SigmaDetectionItem, field: str) -> None:
        # in place: a new item would apply the (already applied) modifiers again
        item.field = field
        self.processing_item_applied(item)
        return None

    def apply_detection_item(self, item: SigmaDetectionItem) -> SigmaDetectionItem | None:
        field = item.field
        if field is None:
            return None
        if field == "type":
            actions: list[str] = []
            for value in _strings(item):
                found = _RECORD_TYPES.get(value.upper())
                if found is None and value.upper() != "SYSCALL":
                    raise SigmaTransformationError(
                        f"auditd record type {value!r} has no equivalent in the sensor's events")
                actions.extend(found or ())
            if not actions:  # SYSCALL alone: the SYSCALL field names the action
                return SigmaDetectionItem("event.action", [], [SigmaString("*")])
            return SigmaDetectionItem("event.action", [], [SigmaString(a) for a in actions])
        if field == "SYSCALL":
            actions = []
            for value in _strings(item):
                found = SYSCALLS.get(value.lower())
                if found is None:
                    raise SigmaTransformationError(
                        f"auditd syscall {value!r} is not observed by the sensor")
                actions.extend(found)
            return SigmaDetectionItem("event.action", [], [SigmaString(a) for a in actions])
        arg = _ARG.match(field)
        if arg is not None:
            if self._syscall:
                raise SigmaTransformationError(
                    f"auditd SYSCALL {field}: a syscall's raw arguments are not in the "
                    "sensor's events")
            return self._rename(item, f"process.args[{arg.group(1)}]")
        if field in AUDITD_FIELDS:
            return self._rename(item, AUDITD_FIELDS[field])
        reason = AUDITD_UNSUPPORTED.get(field, "no equivalent in the sensor's events")
        raise SigmaTransformationError(f"auditd field {field!r}: {reason}")


def _expression(text: str) -> Any:
    with warnings.catch_warnings():  # pySigma's use of pyparsing's old names
        warnings.simplefilter("ignore", DeprecationWarning)
        return parse_condition_expression(text)


def _item(transformation: Any, ident: str, **kwargs: Any) -> ProcessingItem:
    return ProcessingItem(transformation=transformation, identifier=ident, **kwargs)


def default_pipeline() -> ProcessingPipeline:
    """The mapping every bundle's Sigma rules go through first (priority 10)."""
    items: list[ProcessingItem] = []
    for category, conditions in LOGSOURCES.items():
        items.append(_item(
            AddConditionTransformation(conditions, name="threatseer_logsource"),  # type: ignore[arg-type]
            LOGSOURCE_PREFIX + category,
            rule_conditions=[LogsourceCondition(category=category, product="linux")]))
    for dns, expression in ((True, "net and host"), (False, "net and not host")):
        actions = [*NETWORK, ecs.DNS_QUERY] if dns else NETWORK
        items.append(_item(
            AddConditionTransformation({"event.action": actions}, name="threatseer_logsource"),
            LOGSOURCE_PREFIX + "network_connection" + ("-dns" if dns else ""),
            rule_conditions={
                "net": LogsourceCondition(category="network_connection", product="linux"),
                "host": RuleContainsFieldCondition("DestinationHostname")},
            rule_condition_expression=_expression(expression)))
    items += [
        _item(AuditdRecords(), LOGSOURCE_PREFIX + "auditd",
              rule_conditions=[LogsourceCondition(product="linux", service="auditd")]),
        _item(SetStateTransformation(KEYWORD_FIELD, "process.command_line"),
              "threatseer-auditd-keywords",
              rule_conditions=[LogsourceCondition(product="linux", service="auditd")]),
        _item(HashesFieldsDetectionItemTransformation(valid_hash_algos=["SHA256"],
                                                      field_prefix="File"),
              "threatseer-hashes",
              rule_conditions=[LogsourceCondition(category="process_creation")]),
        _item(FieldMappingTransformation(FIELDS), "threatseer-fields"),
    ]
    return ProcessingPipeline(name="threatseer", priority=10, items=items)


def pipeline_for(user_pipelines: list[ProcessingPipeline]) -> ProcessingPipeline:
    """The default pipeline followed by the bundle's own (each applied in priority order)."""
    out = default_pipeline()
    for extra in sorted(user_pipelines, key=lambda p: p.priority):
        out = out + extra
    return out


def load_user_pipeline(text: str, where: str) -> ProcessingPipeline:
    """A bundle's pipeline file; ValueError naming the file on a bad one."""
    try:
        return ProcessingPipeline.from_yaml(text)
    except Exception as exc:  # pySigma raises its own errors and plain ones for bad YAML
        raise ValueError(f"{PurePosixPath(where)}: not a pySigma processing pipeline: "
                         f"{exc}") from None
