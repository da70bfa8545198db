"""Standard output: one nested ECS JSON document, or one readable line, per event."""

from __future__ import annotations

import sys
from typing import Any, TextIO

from threatseer.common.ecs import to_json

from ..config import OutputConfig, StdoutOptions
from ..events import to_text
from .base import SendResult, Sink


class StdoutSink(Sink):
    def __init__(self, cfg: OutputConfig, opts: StdoutOptions, stream: TextIO | None = None) -> None:
        self._format = to_json if opts.format == "json" else to_text
        self._stream = stream

    def send(self, events: list[dict[str, Any]]) -> SendResult:
        stream = self._stream or sys.stdout  # looked up late: tests and daemons swap it
        stream.write("".join(self._format(e) + "\n" for e in events))
        stream.flush()
        return SendResult(sent=len(events))

    def disconnect(self) -> None:
        pass
