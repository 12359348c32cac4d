"""`soundhive`: one entry point; each group of subcommands lives in its own module."""

from importlib.metadata import version

import typer

from soundhive import classify, models, pipeline, training

app = typer.Typer(
    name="soundhive",
    help="Live sound-event detection with AudioSet models (YAMNet, VGGish).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
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
) -> None:
    """Live sound-event detection with AudioSet models (YAMNet, VGGish)."""


classify.register(app)
models.register(app)
training.register(app)
pipeline.register(app)


def main() -> None:
    app()
