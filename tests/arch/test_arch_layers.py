"""The architecture holds: one-way layers (import-linter's contract in pyproject.toml) and no
function-level imports of qkv modules that would hide an upward arrow (docs/architecture.md)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "qkv"


def _function_level_imports() -> list[str]:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        if "cli" in path.relative_to(SRC).parts:
            continue  # the CLI is the top layer: importing lazily there only saves start-up
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for sub in ast.walk(node):
                if isinstance(sub, ast.ImportFrom):
                    name = "." * sub.level + (sub.module or "")
                    if sub.level or name == "qkv" or name.startswith("qkv."):
                        found.append(f"{path.relative_to(SRC)}:{sub.lineno} from {name}")
                elif isinstance(sub, ast.Import):
                    for alias in sub.names:
                        if alias.name == "qkv" or alias.name.startswith("qkv."):
                            found.append(
                                f"{path.relative_to(SRC)}:{sub.lineno} import {alias.name}"
                            )
    return found


def test_no_function_level_imports_of_qkv_modules() -> None:
    assert _function_level_imports() == []


def test_layer_contract_holds() -> None:
    pytest.importorskip("importlinter")
    exe = Path(sys.executable).with_name("lint-imports")
    if not exe.exists():
        pytest.skip("lint-imports is not installed next to this python")
    run = subprocess.run(
        [str(exe)], cwd=SRC.parents[1], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "0 broken" in run.stdout


def test_import_qkv_reaches_every_package_lazily() -> None:
    code = (
        "import sys, qkv\n"
        "assert 'qkv.training' not in sys.modules and 'qkv.models' not in sys.modules\n"
        "qkv.models, qkv.generation, qkv.training, qkv.interp, qkv.data, qkv.tasks\n"
        "import qkv.attn.flex as f\n"
        "assert callable(qkv.attention) and f.__name__ == 'qkv.attn.flex'\n"
        "assert qkv.load is qkv.models.load and qkv.from_hf is qkv.interop.from_hf\n"
        "print('ok')\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-2000:]
