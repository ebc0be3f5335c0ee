"""The CLI shell: version, help without heavy imports, one error boundary."""

import os
import subprocess
import sys

import pytest

from depthcli import __version__


def test_version(run_cli):
    code, out, _ = run_cli("--version")
    assert code == 0 and out.strip() == f"depthcli {__version__}"


def test_help_does_not_import_heavy_packages():
    code = (
        "import sys; from depthcli.cli import main; rc = main(['--help']);"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'torch', 'cv2', 'pycolmap', 'transformers', 'gsplat', 'matplotlib', 'scipy', 'numba'});"
        "print('HEAVY', heavy, rc)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "HEAVY [] 0" in res.stdout, res.stdout


def test_every_command_has_help(run_cli):
    from depthcli.cli import COMMANDS
    import importlib.util

    for name, module in COMMANDS:
        if importlib.util.find_spec(f"depthcli.commands.{module}") is None:
            continue
        code, out, _ = run_cli(name, "--help")
        assert code == 0 and "Usage" in out, name


def test_usage_error_exit_code_2(run_cli):
    code, _, err = run_cli("no-such-command")
    assert code == 2 and "No such command" in err


def test_error_boundary_one_line_and_debug_traceback():
    """A DepthcliError from a command is one line without traceback; DEPTHCLI_DEBUG=1 shows it."""
    script = (
        "import typer, sys\n"
        "from depthcli import cli\n"
        "from depthcli.errors import DepthcliError\n"
        "@cli.app.command('boom')\n"
        "def boom():\n"
        "    raise DepthcliError('the thing is wrong', 'do the other thing')\n"
        "sys.exit(cli.main(['boom']))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "DEPTHCLI_DEBUG"}
    env["COLUMNS"] = "200"
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert res.returncode == 1
    lines = [l for l in res.stderr.splitlines() if l.strip()]
    assert lines == ["error: the thing is wrong (do the other thing)"], res.stderr
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=dict(env, DEPTHCLI_DEBUG="1"))
    assert res.returncode == 1 and "Traceback" in res.stderr


@pytest.mark.parametrize("debug", ["", "1"])
def test_unexpected_exception_is_named(debug):
    script = (
        "import sys\n"
        "from depthcli import cli\n"
        "@cli.app.command('crash')\n"
        "def crash():\n"
        "    raise ZeroDivisionError('x')\n"
        "sys.exit(cli.main(['crash']))\n"
    )
    env = dict(os.environ, DEPTHCLI_DEBUG=debug, COLUMNS="200")
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert res.returncode == 1
    assert ("Traceback" in res.stderr) == bool(debug)
    assert "ZeroDivisionError" in res.stderr
