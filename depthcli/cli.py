"""The ``depthcli`` Typer app: wiring and the one error boundary.

Each subcommand lives in ``depthcli/commands/<module>.py`` as a plain function
``command`` (thin: parse flags, build a config, call the library, report).
Command modules import only typer and the standard library at import time, so
``depthcli --help`` never loads torch, gsplat, pycolmap or transformers.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import sys
from typing import Optional

import typer

from depthcli import __version__

#: (command name, module under depthcli.commands), in the order ``--help`` lists them.
COMMANDS: list[tuple[str, str]] = [
    ("demo", "demo"),
    ("synth", "synth"),
    ("convert", "convert"),
    ("export", "export"),
    ("splat-train", "splat_train"),
    ("render", "render"),
    ("train", "train"),
    ("predict", "predict"),
    ("align", "align"),
    ("distill", "distill"),
    ("eval", "eval"),
]

app = typer.Typer(
    name="depthcli",
    help="A toolkit for depth data: convert, synthesise, splat-train, estimate and evaluate depth.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"depthcli {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Optional[bool] = typer.Option(
        None, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """depthcli: depth data from capture to evaluation. Set DEPTHCLI_DEBUG=1 for tracebacks."""


def _register() -> None:
    for name, module in COMMANDS:
        full = f"depthcli.commands.{module}"
        if importlib.util.find_spec(full) is None:
            continue
        mod = importlib.import_module(full)
        app.command(name=name, help=getattr(mod, "HELP", None) or mod.command.__doc__)(mod.command)


_register()


def _click_exceptions():
    """Click's exception classes: Typer >= 0.2x vendors Click as ``typer._click``."""
    try:
        from typer._click import exceptions
    except ImportError:  # older Typer: Click itself
        from click import exceptions
    if not hasattr(exceptions, "NoArgsIsHelpError"):  # Click < 8.2 prints the help and exits itself

        class NoArgsIsHelpError(exceptions.UsageError):
            pass

        exceptions.NoArgsIsHelpError = NoArgsIsHelpError  # type: ignore[attr-defined]
    return exceptions


_CLICK = _click_exceptions()


def _debug() -> bool:
    return os.environ.get("DEPTHCLI_DEBUG", "") not in ("", "0", "false", "no")


def main(args: list[str] | None = None) -> int:
    """Run the CLI and return its exit code; the one place errors become messages.

    * :class:`~depthcli.errors.DepthcliError` (bad input): one red line with a
      hint on stderr, exit code 1.
    * usage errors (an unknown flag, a value that does not parse): Click's
      message as one line, exit code 2.
    * a full disk (ENOSPC / EDQUOT anywhere in the exception chain): one line
      naming the file, exit code 1 (outputs are built atomically, so nothing
      half-written stays behind).
    * anything else: one line naming the internal error, exit code 1.
    With ``DEPTHCLI_DEBUG=1`` errors are re-raised with their traceback.
    """
    from depthcli.console import console
    from depthcli.errors import DepthcliError

    try:
        # Not standalone: usage errors come back here and are printed as one line.
        code = app(args=args, prog_name="depthcli", standalone_mode=False)
        return code if isinstance(code, int) else 0
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except _CLICK.NoArgsIsHelpError as exc:  # the help is already printed
        return exc.exit_code
    except _CLICK.UsageError as exc:
        if _debug():
            raise
        command = exc.ctx.command_path if exc.ctx is not None else "depthcli"
        console.print(
            f"[bold red]error:[/bold red] {_escape(exc.format_message())} [dim](see {_escape(command)} --help)[/dim]",
            soft_wrap=True,
        )
        return exc.exit_code
    except _CLICK.ClickException as exc:
        if _debug():
            raise
        console.print(f"[bold red]error:[/bold red] {_escape(exc.format_message())}", soft_wrap=True)
        return exc.exit_code
    except typer.Abort:
        console.print("[red]aborted[/red]")
        return 1
    except KeyboardInterrupt:
        console.print("[red]interrupted[/red] (outputs written so far are complete; long jobs resume with --resume)")
        return 130
    except DepthcliError as exc:
        if _debug():
            raise
        hint = f" [dim]({exc.hint})[/dim]" if exc.hint else ""
        console.print(f"[bold red]error:[/bold red] {_escape(exc.message)}{hint}", soft_wrap=True)
        return 1
    except MemoryError:
        if _debug():
            raise
        console.print("[bold red]error:[/bold red] out of memory [dim](use smaller images, fewer Gaussians or a smaller batch)[/dim]")
        return 1
    except Exception as exc:  # noqa: BLE001 - the boundary
        if _debug():
            raise
        from depthcli.errors import disk_full

        full = disk_full(exc)
        if full is not None:
            # Name the output as the user knows it, not its temporary ``.OUT.partial-*`` folder.
            full = re.sub(r"(^|/)\.([^/]+)\.partial-[^/]*", r"\1\2", full)
            where = f"'{full}'" if full else "the output"
            console.print(
                f"[bold red]error:[/bold red] disk full while writing {_escape(where)} "
                "[dim](free space or choose another output)[/dim]",
                soft_wrap=True,
            )
            return 1
        console.print(
            f"[bold red]internal error:[/bold red] {type(exc).__name__}: {_escape(str(exc))} "
            "[dim](this is a bug in depthcli; re-run with DEPTHCLI_DEBUG=1 for the traceback and report it)[/dim]",
            soft_wrap=True,
        )
        return 1


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text.replace("\n", " "))


def entry() -> None:
    """Console-script entry point."""
    sys.exit(main())
