import subprocess
import sys

import qkv
from qkv.cli import main


def test_version_and_help(capsys):
    try:
        main(["--version"])
    except SystemExit as e:
        assert e.code == 0
    assert capsys.readouterr().out.strip() == f"qkv {qkv.__version__}"
    assert main([]) == 0
    assert "COMMAND" in capsys.readouterr().out


def test_module_entry_point_runs():
    r = subprocess.run([sys.executable, "-m", "qkv", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "usage: qkv" in r.stdout
