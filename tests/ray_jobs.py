"""Sending a job to a test cluster, shared by the cluster tests."""

from __future__ import annotations

import subprocess
import time


def submit(cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``ray job submit ...`` (``cmd``), again while the head's job agent is starting."""
    deadline = time.monotonic() + 90
    while True:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        out = done.stdout + done.stderr
        if "No available agent" not in out or time.monotonic() > deadline:
            return done
        time.sleep(3)
