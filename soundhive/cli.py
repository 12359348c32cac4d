"""`soundhive`: one entry point; each group of subcommands lives in its own module."""

import typer

from soundhive import classify, models

app = typer.Typer(
    name="soundhive",
    help="Live sound-event detection with AudioSet models (YAMNet, VGGish).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
classify.register(app)
models.register(app)


def main() -> None:
    app()
