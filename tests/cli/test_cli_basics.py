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


def _actions(parser):
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _actions(sub)
        elif not isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            yield parser.prog, action


def test_every_train_flag_has_help_and_shows_its_default():
    from qkv.cli import build_parser

    parser = build_parser()
    train = next(a for a in parser._actions if hasattr(a, "choices") and a.choices)
    train = train.choices["train"]
    missing = []
    for _, action in _actions(train):
        text = action.help or ""
        boolean = action.nargs == 0  # --resume, --progress/--no-progress
        shows_default = "default" in text or "(default" in text
        if not text or (
            not boolean
            and not shows_default
            and action.option_strings != ["--out"]
            and action.default is not None
        ):
            missing.append("/".join(action.option_strings) or action.dest)
    assert not missing, missing
    # the one source of defaults: each TrainConfig field's flag says its default
    from qkv.training import TrainConfig
    from qkv.training.config import flag_of

    helptext = train.format_help()
    for name in TrainConfig().to_dict():
        flag = flag_of(name)
        assert flag in helptext, flag
    assert "--save-every" in helptext and "0 = no step schedule" in " ".join(helptext.split())


def test_every_flag_of_every_command_has_help():
    from qkv.cli import build_parser

    bare = [f"{prog} {'/'.join(a.option_strings) or a.dest}" for prog, a in _actions(build_parser())
            if not a.help and a.dest not in ("command", "benchmark")]  # fmt: skip
    assert not bare, bare
