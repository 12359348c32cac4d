"""`soundhive classify` and `soundhive eval-clips`: whole files through a model (the seed's
parse_file.py, grown up)."""

import json
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

import typer

from shared import params
from shared.audio import AudioError, AudioTooLong, find_audio_files
from shared.config import usable_cpus
from shared.hierarchy import LabelTree
from shared.inference import ClipResult, classify_file
from shared.labels import Ontology, read_clip_labels
from shared.models import DEFAULT_MODEL, AudioModel, ModelError, load_model
from shared.models.catalog import models_dir
from shared.ranking import Label, hit_rank, specific_labels, top_labels
from soundhive.console import fail, item_progress, warn

HIT_AT = (1, 3, 5)

FILES_HELP = ("Audio files (WAV, FLAC, Ogg, MP3, or anything FFmpeg reads), folders of them, or "
              "- for audio piped to standard input.")
STDIN = Path("-")
Source = tuple[str, Path]  # the name shown, the file read
MODEL_HELP = "Model to use (see `soundhive models list`)."
HOP_HELP = "Seconds between patch starts (patches are 0.975 s long)."
SPECIFIC_HELP = (
    "Prefer the most specific confident label, by the AudioSet ontology (Dog before Animal)."
)


def register(app: typer.Typer) -> None:
    app.command("classify")(classify)
    app.command("eval-clips")(eval_clips)


def classify(
    paths: list[Path] = typer.Argument(..., help=FILES_HELP, show_default=False),
    top: int = typer.Option(5, "--top", "-k", min=1, help="How many labels to show."),
    threshold: float = typer.Option(
        0.0, "--threshold", "-t", min=0.0, max=1.0, help="Hide labels scoring below this."
    ),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per file per line."),
    timeline: bool = typer.Option(False, "--timeline", help="Also show the top labels per patch."),
    plot: Path | None = typer.Option(
        None, "--plot", help="Write a PNG: log-mel spectrogram over the top labels' scores."
    ),
    model_name: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help=MODEL_HELP),
    hop: float = typer.Option(params.DEFAULT_PATCH_HOP_SECONDS, "--hop", min=0.01, help=HOP_HELP),
    specific: bool = typer.Option(False, "--specific", help=SPECIFIC_HELP),
    max_audio_s: float | None = typer.Option(
        None, "--max-audio-s", min=0.001, show_default="no limit",
        help="Skip a file holding more seconds of audio than this (decoding stops there)."),
) -> None:
    """Print what each file sounds like: `Label: score, ...`, highest first.

    A clip's score for a class is the mean of its per-patch scores. A path that cannot be read
    (or holds more than --max-audio-s) is reported in one line and the others are still
    classified (exit status 2 at the end).
    """
    with ExitStack() as cleanup:
        files, failed = _expand(paths, cleanup)
        if not files:
            raise typer.Exit(2)
        failed = _classify_and_print(files, failed, top, threshold, as_json, timeline, plot,
                                     model_name, hop, specific, max_audio_s)
    if failed:
        raise typer.Exit(2)


def _classify_and_print(files: list[Source], failed: bool, top: int, threshold: float,
                        as_json: bool, timeline: bool, plot: Path | None, model_name: str,
                        hop: float, specific: bool, max_audio_s: float | None) -> bool:
    """Whether any file failed."""
    model = _load(model_name)
    tree = LabelTree(model.class_names, _ontology()) if specific else None
    for name, result in _classify_all(model, files, hop, max_audio_s, plot is not None):
        if result is None:
            failed = True
            continue

        def rank(scores, k=top, result=result):
            if tree is not None:
                return specific_labels(scores, tree, k, threshold)
            return top_labels(scores, result.class_names, k, threshold)

        if as_json:
            typer.echo(json.dumps(result.json_row(rank, timeline)))
        else:
            prefix = f"{name}: " if len(files) > 1 else ""
            typer.echo(prefix + _format(rank(result.clip_scores)))
            if timeline:
                for start, scores in zip(result.patch_times, result.patch_scores, strict=True):
                    typer.echo(f"  {start:7.2f}s  {_format(rank(scores))}")
        if plot is not None:
            _plot(result, _plot_path(plot, Path(name), len(files)), top)
    return failed


def eval_clips(
    folder: Path = typer.Argument(..., help="Folder with audio clips and their labels.jsonl."),
    model_name: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help=MODEL_HELP),
    hop: float = typer.Option(params.DEFAULT_PATCH_HOP_SECONDS, "--hop", min=0.01, help=HOP_HELP),
    specific: bool = typer.Option(
        False, "--specific", help="Also score the ontology's specific view, to compare."
    ),
    details: bool = typer.Option(False, "--details", help="Show each clip's rank and top labels."),
) -> None:
    """Print hit@1, hit@3 and hit@5 over FOLDER/labels.jsonl.

    Each line of labels.jsonl is {"file": "dog.mp3", "accept": ["Dog", "Bark"]}; a clip is a hit
    at k when any accepted name is among its top k clip-level labels.
    """
    labels_file = folder / "labels.jsonl"
    if not labels_file.is_file():
        fail(f"{labels_file}: no such file (eval-clips needs a labels.jsonl beside the clips)")
    try:
        clips = read_clip_labels(labels_file)
    except ValueError as exc:
        fail(str(exc))
    if not clips:
        fail(f"{labels_file} lists no clips")
    model = _load(model_name)
    views: dict[str, LabelTree | None] = {"plain": None}
    if specific:
        views["specific"] = LabelTree(model.class_names, _ontology())
    ranks: dict[str, list[int | None]] = {view: [] for view in views}
    k = max(HIT_AT)
    results = _classify_all(model, [_named(folder / clip.file) for clip in clips], hop)
    for clip, (_, result) in zip(clips, results, strict=True):
        if result is None:
            raise typer.Exit(2)
        for view, tree in views.items():
            scores = result.clip_scores
            if tree is None:
                labels = top_labels(scores, result.class_names, k)
            else:
                labels = specific_labels(scores, tree, k)
            ranks[view].append(hit_rank(labels, clip.accept))
            if details:
                typer.echo(
                    f"{view:8} {clip.file:32} rank {hit_rank(labels, clip.accept) or '-':>2}"
                    f"  {_format(labels[:3])}"
                )
    for view, found in ranks.items():
        figures = "  ".join(
            f"hit@{n} {sum(r is not None and r <= n for r in found) / len(found):.3f}"
            for n in HIT_AT
        )
        typer.echo(f"{view:8} {figures}  ({len(found)} clips, {model.name})")


def _named(path: Path) -> Source:
    return str(path), path


def _expand(paths: list[Path], cleanup: ExitStack) -> tuple[list[Source], bool]:
    """The files to classify, and whether a path was reported as unusable."""
    files: list[Source] = []
    failed = False
    for path in paths:
        if path == STDIN:
            files.append((str(STDIN), _stdin_to_file(cleanup)))
        elif path.is_dir():
            found = find_audio_files(path)
            if not found:
                warn(f"{path}: no audio files in this folder")
                failed = True
            files.extend(map(_named, found))
        elif path.exists():
            files.append(_named(path))
        else:
            warn(f"{path}: no such file or folder")
            failed = True
    return files, failed


def _stdin_to_file(cleanup: ExitStack) -> Path:
    """Standard input kept in a temporary file (decoders need to seek), removed at the end."""
    if sys.stdin.isatty():
        fail("- reads audio from standard input: pipe a file in (e.g. `ffmpeg ... -f wav - | "
             "soundhive classify -`)")
    folder = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="soundhive-stdin-")))
    target = folder / "stdin"
    with target.open("wb") as out:
        shutil.copyfileobj(sys.stdin.buffer, out, 1 << 20)
    return target


def _load(name: str) -> AudioModel:
    try:
        return load_model(name, threads=usable_cpus())
    except ModelError as exc:
        fail(str(exc))


def _ontology() -> Ontology:
    path = models_dir() / "ontology.json"
    if not path.is_file():
        fail(f"{path} is missing (run `soundhive models pull yamnet`)")
    return Ontology.from_json(path)


def _classify_all(
    model: AudioModel, files: list[Source], hop: float, max_audio_s: float | None = None,
    keep_waveform: bool = False,
) -> Iterator[tuple[str, ClipResult | None]]:
    """Each file's name with its result, or None after reporting why it could not be read."""
    with item_progress(disable=len(files) < 2) as progress:
        task = progress.add_task("classifying", total=len(files))
        for name, path in files:
            try:
                result = classify_file(model, path, hop, max_audio_s, keep_waveform)
                yield name, replace(result, source=name)
            except AudioTooLong as exc:
                warn(f"{name}: more than {exc.max_seconds:g} s of audio (--max-audio-s), "
                     "skipped")
                yield name, None
            except AudioError as exc:
                warn(str(exc).replace(str(path), name))
                yield name, None
            progress.advance(task)


def _format(labels: list[Label]) -> str:
    return ", ".join(f"{name}: {score:.2f}" for name, score in labels)


def _plot_path(plot: Path, source: Path, count: int) -> Path:
    """One PNG per file: with several files, each gets the file's name appended."""
    if count == 1:
        return plot
    return plot.with_name(f"{plot.stem}-{source.stem}{plot.suffix or '.png'}")


def _plot(result: ClipResult, target: Path, top: int) -> None:
    from soundhive.plot import plot_clip

    try:
        plot_clip(result, target, top)
    except OSError as exc:
        fail(f"cannot write {target}: {exc.strerror or exc}")
