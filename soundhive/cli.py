"""`soundhive`: one entry point; each group of subcommands lives in its own module."""

import logging
import sys
from importlib.metadata import version
from typing import Any

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from shared.config import ConfigError, ProcessSettings
from shared.native import quiet_native_stderr
from soundhive import classify, models, pipeline, training

VERBOSE_FLAGS = ("-v", "--verbose")


class Argument(TyperArgument):
    """Help as Unix usage lines write it: PATHS..., [FOLDER], not {paths}... or [folder]."""

    @property
    def display_name_raw(self) -> str:
        return self.metavar or (self.name or "").upper()

    def _usage_display_name(self) -> str:
        name = self.display_name_raw + ("..." if self.nargs != 1 else "")
        return name if self.required else f"[{name}]"


class Option(TyperOption):
    """A flag takes no value: no <bool> next to it."""

    def display_type_rich(self, ctx: typer.Context) -> str | None:
        return None if self.is_flag else super().display_type_rich(ctx)


def _conventional(param: Any) -> None:
    if type(param) is TyperArgument:
        param.__class__ = Argument
    elif type(param) is TyperOption:
        param.__class__ = Option


class Group(TyperGroup):
    """The root command: it gives every command and parameter under it the help above."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        _conventional_help(self)


def _conventional_help(command: TyperCommand | TyperGroup) -> None:
    # --help is made on first use and kept (click caches it): made here, it is converted too.
    help_option = command.get_help_option(typer.Context(command))
    for param in [*command.params, *([help_option] if help_option else [])]:
        _conventional(param)
    for sub in getattr(command, "commands", {}).values():
        _conventional_help(sub)


app = typer.Typer(
    name="soundhive",
    cls=Group,
    help="Live sound-event detection with AudioSet models (YAMNet, VGGish).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",  # docstring paragraphs are re-wrapped, not cut at their newlines
    add_completion=False,
)


def _version(show: bool) -> None:
    if show:
        typer.echo(f"soundhive {version('soundhive')}")
        raise typer.Exit()


@app.callback()
def _options(
    show_version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version and exit."
    ),
    verbose: bool = typer.Option(
        False, *VERBOSE_FLAGS,
        help="Also show debug logs and what the native libraries (TensorFlow, LiteRT, ALSA, "
             "FFmpeg) print; by default only soundhive's own lines are shown.",
    ),
) -> None:
    """Live sound-event detection with AudioSet models (YAMNet, VGGish)."""
    if verbose:
        logging.basicConfig(level=logging.DEBUG)


classify.register(app)
models.register(app)
training.register(app)
pipeline.register(app)


def verbose_requested(argv: list[str]) -> bool:
    return ProcessSettings().verbose or any(a in VERBOSE_FLAGS for a in argv)


def main() -> None:
    # Before any native library loads: their chatter must not reach the terminal (native.py).
    try:
        verbose = verbose_requested(sys.argv[1:])
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    if not verbose:
        quiet_native_stderr()
    app()
