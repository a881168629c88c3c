"""One measurement in a fresh subprocess (so that its peak memory is its own): the parent
sends a JSON spec on stdin, the child answers one ``QKV-BENCH-RESULT {json}`` line. Used by
``qkv bench attention``, ``qkv bench long`` and the memory columns of ``qkv bench train``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

MARK = "QKV-BENCH-RESULT "


def _failed(status: str, reason: str) -> dict[str, Any]:
    return {"status": status, "reason": reason, "times": [], "peak_bytes": None}


def serve(measure: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    """The child's side: read the spec from stdin, print ``measure(spec)`` as the result
    line (an exception is reported as an ``error`` result: one failure must not end the
    benchmark)."""
    spec = json.loads(sys.stdin.read())
    try:
        result = measure(spec)
    except Exception as e:
        result = _failed("error", f"{type(e).__name__}: {e}")
    print(MARK + json.dumps(result))


def run_isolated(
    module: str, spec: dict[str, Any], timeout: float, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """The parent's side: run ``module._worker()`` (which calls :func:`serve`) in a fresh
    interpreter with ``spec`` (and ``env`` added to this process's environment, e.g.
    :data:`qkv.bench._memory.MMAP_ENV`); a timeout gives an ``n/a`` result, a crash an
    ``error`` one."""
    cmd = [sys.executable, "-c", f"from {module} import _worker; _worker()"]
    try:
        r = subprocess.run(
            cmd,
            input=json.dumps(spec),
            capture_output=True,
            text=True,
            timeout=timeout,
            env=None if env is None else {**os.environ, **env},
        )
    except subprocess.TimeoutExpired:
        return _failed("n/a", f"took longer than {timeout:.0f} s")
    for line in reversed(r.stdout.splitlines()):
        if line.startswith(MARK):
            return json.loads(line[len(MARK) :])  # type: ignore[no-any-return]
    tail = (r.stderr.strip().splitlines() or ["no output"])[-1]
    why = "killed (out of memory?)" if r.returncode < 0 else tail
    return _failed("error", f"worker exited with {r.returncode}: {why}")


__all__ = ["MARK", "run_isolated", "serve"]
