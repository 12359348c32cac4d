"""What every command shares: one-line errors with exit status 2, and progress bars on stderr."""

from typing import NoReturn

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.text import Text

USAGE_ERROR = 2

stderr = Console(stderr=True)


def fail(message: str) -> NoReturn:
    """Report a user mistake (bad input, missing model) in one line and exit with status 2."""
    warn(message)
    raise typer.Exit(USAGE_ERROR)


def warn(message: str) -> None:
    stderr.print(Text.assemble(("error: ", "bold red"), message), soft_wrap=True)


def item_progress(disable: bool = False) -> Progress:
    """A bar for counting through files or steps."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=stderr,
        transient=True,
        disable=disable,
    )


def byte_progress() -> Progress:
    """A bar for downloads, gone when it stops: a failure leaves its one-line error alone."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=stderr,
        transient=True,
    )
