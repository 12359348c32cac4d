"""`soundhive models list|pull`: which models are here, and fetching them from their sources."""

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from shared.download import DownloadError, download, sha256_of
from shared.models import MODELS, ModelError
from shared.models.catalog import ModelFile, models_dir, spec
from soundhive.console import byte_progress, fail

models_app = typer.Typer(help="List and download models.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")


def file_status(file: ModelFile, folder: Path) -> str:
    path = folder / file.name
    if not path.is_file():
        return "missing"
    if file.sha256 and sha256_of(path) != file.sha256:
        return "checksum mismatch"
    return "ok"


@models_app.command("list")
def list_models(
    as_json: bool = typer.Option(False, "--json", help="One JSON object per model per line: "
                                 "name, ready, problems (file -> what is wrong), description."),
) -> None:
    """Show each model and whether its files are present and verified."""
    folder = models_dir()
    table = Table(title=f"models in {folder}  (set SOUNDHIVE_MODELS to change)")
    for column in ("model", "status", "description"):
        table.add_column(column)
    for model in MODELS.values():
        problems = {
            f.name: status for f in model.files if (status := file_status(f, folder)) != "ok"
        }
        if as_json:
            typer.echo(json.dumps({"name": model.name, "ready": not problems,
                                   "problems": problems, "description": model.description,
                                   "folder": str(folder)}))
            continue
        status = (
            "[green]ready[/]"
            if not problems
            else "[red]" + ", ".join(f"{name} {what}" for name, what in problems.items()) + "[/]"
        )
        table.add_row(model.name, status, model.description)
    if not as_json:
        Console().print(table)


@models_app.command("pull")
def pull(
    name: str = typer.Argument(..., help=f"Model to download: {', '.join(MODELS)}."),
    force: bool = typer.Option(False, "--force", help="Download again even if files are present."),
) -> None:
    """Download a model's files from their official sources into SOUNDHIVE_MODELS, verifying
    checksums where they are published."""
    try:
        model = spec(name)
    except ModelError as exc:
        fail(str(exc))
    folder = models_dir()
    for file in model.files:
        if not force and file_status(file, folder) == "ok":
            typer.echo(f"{file.name}: present")
            continue
        with byte_progress() as progress:
            task = progress.add_task(file.name, total=None)
            try:
                download(
                    file.url,
                    folder / file.name,
                    file.sha256,
                    lambda done, total, task=task: progress.update(
                        task, completed=done, total=total
                    ),
                )
            except DownloadError as exc:
                fail(str(exc))
        verified = "sha256 verified" if file.sha256 else "no published checksum"
        typer.echo(f"{file.name}: downloaded ({verified})")
    typer.echo(f"{name} is ready in {folder}")
