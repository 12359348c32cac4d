"""`soundhive`: one entry point; each group of subcommands lives in its own module."""

import logging
import sys
from importlib.metadata import version

import typer

from shared.config import ConfigError, ProcessSettings
from shared.native import quiet_native_stderr
from soundhive import classify, models, pipeline, training

VERBOSE_FLAGS = ("-v", "--verbose")

app = typer.Typer(
    name="soundhive",
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
