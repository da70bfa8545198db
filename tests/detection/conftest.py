"""One real sensor and hub for the whole detection corpus (started once per session)."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sandbox, corpus, harness

from harness import DetectionPipeline, pipeline_workdir  # noqa: E402


@pytest.fixture(scope="session")
def detection(threatseer_cmd: list[str]) -> Iterator[DetectionPipeline]:
    if os.geteuid() != 0:
        pytest.skip("the sensor and the sandbox need root")
    workdir = pipeline_workdir()
    pipe = DetectionPipeline(workdir, threatseer=threatseer_cmd)
    try:
        yield pipe
    finally:
        pipe.close()
        shutil.rmtree(workdir, ignore_errors=True)
