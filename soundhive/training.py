"""`soundhive embed | train | evaluate | datasets pull`: YouTube-8M frame-level heads.

TensorFlow is imported inside the commands so that `soundhive --help` stays fast.
"""

import importlib.util
import json
import logging
import os
import sys
import tarfile
import warnings
from pathlib import Path

import redis
import typer

from shared.redact import where
from soundhive.console import byte_progress, fail, item_progress, stderr

AUDIOSET_FEATURES_URL = (
    "http://storage.googleapis.com/us_audioset/youtube_corpus/v1/features/features.tar.gz"
)
AUDIOSET_FEATURES_SHA256 = "cd95d500ab2422d4233cb822e25cf73033633e2068eab64d39024e85125cb760"
AUDIOSET_CLASSES = 527
DEFAULT_DATASETS_DIR = Path("~/.cache/soundhive/datasets")

datasets_app = typer.Typer(help="Download public training data sets.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command("embed")(embed)
    app.command("train")(train)
    app.command("evaluate")(evaluate)
    app.add_typer(datasets_app, name="datasets")


DEFAULT_EMBEDDING = "yamnet"  # embed's --model and train's --embedding: the working default


def _quiet_tensorflow() -> None:
    """Without TensorFlow, one line saying which extra to install. Unless --verbose: no
    TensorFlow, Keras or absl chatter. The C++ side (start-up notices, oneDNN) is kept off by
    TF_CPP_MIN_LOG_LEVEL (a value the user set is kept) and the CLI's quiet fd 2; the Python side
    (absl and `tensorflow` loggers, Python warnings) is turned down here."""
    from shared.models import tensorflow_missing
    from soundhive.cli import verbose_requested

    if importlib.util.find_spec("tensorflow") is None:
        fail(tensorflow_missing("Training, embedding and evaluating"))
    if verbose_requested(sys.argv[1:]):
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    warnings.filterwarnings("ignore")
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.ERROR)
    import tensorflow as tf

    tf.get_logger().setLevel(logging.ERROR)
    tf.autograph.set_verbosity(0)


def _read_lines(path: Path) -> list[str]:
    try:
        return [line for line in path.read_text(encoding="utf-8").splitlines() if line]
    except OSError as exc:
        fail(f"{path}: {exc.strerror}")


# --- embed -----------------------------------------------------------------------------------


def embed(
    folder: Path = typer.Argument(
        ..., help="Audio folder: one sub-folder per label, or see --labels; with "
        "--from-reviews, the clips folder (SOUNDHIVE_CLIPS_DIR)."
    ),
    out: Path = typer.Option(
        ..., "--out", help="TFRecord file to write; class_names.txt goes beside it."
    ),
    model: str = typer.Option(
        DEFAULT_EMBEDDING, "--model", help="Embedding model: yamnet or vggish."
    ),
    labels: Path | None = typer.Option(
        None, "--labels", help="CSV of file,labels (files relative to FOLDER; labels split by ';')."
    ),
    class_names: Path | None = typer.Option(
        None,
        "--class-names",
        help="Use this class list (one per line), e.g. a train set's, so indices match.",
    ),
    augment: int = typer.Option(
        0, "--augment", min=0, help="Augmented variants per file (gain, time shift, noise)."
    ),
    hop: float | None = typer.Option(
        None,
        "--hop",
        min=0.01,
        help="Seconds between embeddings (default: vggish 0.96 with the incomplete tail dropped, "
        "as the AudioSet release; yamnet 0.48, as the features service).",
    ),
    seed: int = typer.Option(0, "--seed", help="Augmentation random seed."),
    from_reviews: bool = typer.Option(
        False, "--from-reviews", help="Take the event clips users reviewed: one marked correct "
        "is an example of its label, one marked wrong a negative of it (needs the pipeline's "
        "Redis: --redis-url or REDIS_URL, or REDIS_URLS; SOUNDHIVE_REDIS_CLUSTER=1 for a "
        "cluster)."),
    redis_url: str | None = typer.Option(
        None, "--redis-url", envvar="REDIS_URL", show_envvar=False,
        help="Redis of the pipeline whose reviews --from-reviews reads (default: $REDIS_URL)."),
) -> None:
    """Embed a folder of labelled audio, or the reviewed event clips, into AudioSet-format
    TFRecords for `soundhive train`."""
    _quiet_tensorflow()
    from shared.audio import AudioError
    from shared.models import ModelError, load_embedder
    from shared.training import datasets
    from shared.training.embed import class_list, embed_files, from_csv, from_folders

    if model not in datasets.FEATURES:
        fail(f"--model must be one of {', '.join(datasets.FEATURES)}, got {model!r}")
    if not folder.is_dir():
        fail(f"{folder}: not a folder")
    try:
        files = _reviewed(redis_url, folder) if from_reviews else \
            from_csv(labels, folder) if labels else from_folders(folder)
        names = class_list(files, _read_lines(class_names) if class_names else None)
        embedder = load_embedder(model)
        short: list[Path] = []
        with item_progress() as progress:
            task = progress.add_task(f"embedding with {model}", total=len(files))
            count = datasets.write_records(
                out,
                embed_files(
                    files,
                    names,
                    embedder,
                    augment,
                    hop,
                    seed,
                    done=lambda f: progress.advance(task),
                    skipped=lambda f: short.append(f.path),
                ),
            )
    except (datasets.DatasetError, AudioError, ModelError) as exc:
        Path(out).unlink(missing_ok=True)
        fail(str(exc))
    if count == 0:
        Path(out).unlink(missing_ok=True)
        fail(f"{folder}: every file is shorter than one {model} patch (0.975 s)")
    datasets.write_class_names(out.parent, names)
    used = len(files) - len(short)
    typer.echo(f"{out}: {count} clips from {used} files, {len(names)} classes ({model})")
    if short:
        stderr.print(f"skipped {len(short)} files shorter than one {model} patch (0.975 s), "
                     f"e.g. {short[0]}", soft_wrap=True, highlight=False)


def _reviewed(redis_url: str | None, folder: Path) -> list:
    """The reviewed clips (shared/training/embed.from_reviews) of the Redis at redis_url."""
    from shared.config import ConfigError, RedisSettings
    from shared.topology import Topology
    from shared.training.embed import from_reviews

    try:  # REDIS_URLS, SOUNDHIVE_REDIS_CLUSTER: read as the pipeline's services read them
        settings = RedisSettings(**({"redis_url": redis_url} if redis_url else {}))
        if not (redis_url or settings.redis_urls):
            fail("--from-reviews reads the pipeline's Redis: give --redis-url or set REDIS_URL")
        topology = Topology.connect(settings)
    except ConfigError as exc:
        fail(str(exc))
    try:
        return from_reviews(topology, folder)
    except redis.RedisError as exc:
        fail(f"cannot read the reviews from {where(redis_url or settings.redis_urls[0])}: {exc}")
    finally:
        topology.close()


# --- train -----------------------------------------------------------------------------------


def _class_names(names_file: Path | None, pattern: str, num_classes: int | None) -> list[str]:
    from shared.labels import ClassMap
    from shared.models.catalog import models_dir
    from shared.training import datasets

    if names_file:
        return _read_lines(names_file)
    beside = datasets.class_names_beside(pattern)
    if beside:
        return beside
    audioset = models_dir() / "class_labels_indices.csv"
    if num_classes == AUDIOSET_CLASSES and audioset.is_file():
        return ClassMap.from_csv(audioset).names
    fail(f"no class names: give --class-names, or put class_names.txt beside {pattern}")


def train(
    model: str = typer.Option("logistic", "--model", help="logistic, dbof or lstm."),
    train_data: str = typer.Option(..., "--train", help="Training TFRecords (glob pattern)."),
    eval_data: str | None = typer.Option(
        None,
        "--eval",
        help="Evaluation TFRecords (glob pattern); their class_names.txt is matched to the "
        "training classes by name.",
    ),
    out: Path = typer.Option(..., "--out", help="Run folder: checkpoints, logs/, head/."),
    embedding: str = typer.Option(
        DEFAULT_EMBEDDING,
        "--embedding",
        help="Features to read: yamnet (yamnet_embedding, what embed writes by default) or "
        "vggish (audio_embedding, the AudioSet release's).",
    ),
    num_classes: int | None = typer.Option(
        None, "--num-classes", min=2, help="Classes (default: the number of class names)."
    ),
    class_names: Path | None = typer.Option(
        None,
        "--class-names",
        help="Class names, one per line (default: class_names.txt beside the data, "
        "or AudioSet's when --num-classes is 527).",
    ),
    epochs: int = typer.Option(10, "--epochs", min=1),
    batch_size: int = typer.Option(64, "--batch-size", min=1),
    learning_rate: float = typer.Option(0.01, "--learning-rate", min=0.0),
    decay: float = typer.Option(
        0.95, "--decay", min=0.0, max=1.0, help="Learning-rate decay factor..."
    ),
    decay_examples: int = typer.Option(
        4_000_000, "--decay-examples", min=1, help="...applied every this many examples."
    ),
    loss: str = typer.Option("cross_entropy", "--loss", help="cross_entropy, hinge or softmax."),
    max_frames: int = typer.Option(
        300,
        "--max-frames",
        min=1,
        help="Frames read per clip, as youtube-8m's reader (the served head's window is the "
        "longest training clip, at most this).",
    ),
    cluster_size: int = typer.Option(8192, "--cluster-size", min=1, help="DBoF cluster layer."),
    hidden_size: int = typer.Option(1024, "--hidden-size", min=1, help="DBoF hidden layer."),
    sample_frames: int = typer.Option(
        30, "--sample-frames", min=1, help="DBoF frames sampled per clip in training."
    ),
    dbof_activation: str = typer.Option(
        "sigmoid", "--dbof-activation", help="DBoF cluster and hidden activation: sigmoid or relu6."
    ),
    lstm_size: int = typer.Option(1024, "--lstm-size", min=1),
    lstm_layers: int = typer.Option(2, "--lstm-layers", min=1),
    mixtures: int = typer.Option(2, "--mixtures", min=1, help="Mixture-of-experts experts."),
    name: str | None = typer.Option(
        None, "--name", help="Also install the head as $SOUNDHIVE_MODELS/heads/NAME."
    ),
    resume: bool = typer.Option(
        False, "--resume", help="Continue the run in --out from its last checkpoint."
    ),
    seed: int = typer.Option(0, "--seed"),
    json_output: bool = typer.Option(False, "--json", help="Print the run summary as JSON."),
) -> None:
    """Train a YouTube-8M frame-level head on AudioSet-format TFRecords and export it."""
    _quiet_tensorflow()
    from shared.models.frame_models import DBOF_ACTIVATIONS, MODEL_NAMES, HeadConfig
    from shared.training import datasets, export, losses
    from shared.training import train as training

    if model not in MODEL_NAMES:
        fail(f"--model must be one of {', '.join(MODEL_NAMES)}, got {model!r}")
    if loss not in losses.LOSSES:
        fail(f"--loss must be one of {', '.join(losses.LOSSES)}, got {loss!r}")
    if dbof_activation not in DBOF_ACTIVATIONS:
        fail(f"--dbof-activation must be one of {', '.join(DBOF_ACTIVATIONS)}, "
             f"got {dbof_activation!r}")
    try:
        spec = datasets.feature_spec(embedding)
        names = _class_names(class_names, train_data, num_classes)
    except datasets.DatasetError as exc:
        fail(str(exc))
    config = HeadConfig(
        model,
        num_classes or len(names),
        spec.size,
        max_frames,
        cluster_size,
        hidden_size,
        sample_frames,
        lstm_size,
        lstm_layers,
        mixtures,
        dbof_activation=dbof_activation,
    )
    options = training.TrainOptions(
        config,
        train_data,
        eval_data,
        embedding,
        names,
        out,
        name or out.name,
        loss,
        epochs,
        batch_size,
        learning_rate,
        decay,
        decay_examples,
        seed=seed,
        resume=resume,
    )
    try:
        result = _train_with_progress(options)
        installed = export.install_head(result.head, name) if name else None
    except (training.TrainingError, datasets.DatasetError, ValueError) as exc:
        fail(str(exc))
    if json_output:
        typer.echo(json.dumps(training.run_summary(result)))
        return
    _print_result(result, installed)


def _train_with_progress(options):  # -> training.RunResult (TensorFlow imported lazily)
    from shared.training import train as training

    with item_progress() as progress:
        task = progress.add_task("training", total=None)
        state = {"per_epoch": None}

        def started(epoch: int, epochs: int) -> None:
            progress.reset(task, total=state["per_epoch"], description=f"epoch {epoch}/{epochs}")

        def step(examples: int, loss: float) -> None:
            progress.update(
                task,
                completed=examples,
                description=progress.tasks[0].description.split(" loss")[0] + f" loss {loss:.4f}",
            )

        def epoch_done(result: "training.EpochResult") -> None:
            state["per_epoch"] = progress.tasks[0].completed
            metrics = "  ".join(f"{k} {v:.4f}" for k, v in result.metrics.items())
            eval_loss = (
                f"  eval loss {result.eval_loss:.4f}" if result.eval_loss is not None else ""
            )
            progress.console.print(
                f"epoch {result.epoch}: train loss {result.train_loss:.4f}{eval_loss}  {metrics}",
                soft_wrap=True, highlight=False,
            )

        return training.train(options, training.Reporter(started, step, epoch_done))


def _print_result(result, installed: Path | None) -> None:
    if result.final and result.baseline:
        typer.echo(
            _metrics_table(
                {"head": result.final.as_dict(), "prior baseline": result.baseline.as_dict()}
            )
        )
    typer.echo(f"head exported to {result.head}")
    if installed:
        typer.echo(f"installed as {installed}")


def _metrics_table(rows: dict[str, dict[str, float]]) -> str:
    keys = list(next(iter(rows.values())))
    width = max(len(r) for r in rows)
    lines = [" " * width + "".join(f"{k:>9}" for k in keys)]
    lines += [f"{r:<{width}}" + "".join(f"{m[k]:>9.4f}" for k in keys) for r, m in rows.items()]
    return "\n".join(lines)


# --- evaluate --------------------------------------------------------------------------------


def evaluate(
    head: str = typer.Option(
        ..., "--head", help="Head name (in $SOUNDHIVE_MODELS/heads) or folder."
    ),
    data: str = typer.Option(..., "--data", help="TFRecords to evaluate on (glob pattern)."),
    class_names: Path | None = typer.Option(
        None,
        "--class-names",
        help="The data's class names, one per line (default: class_names.txt beside the data, "
        "or AudioSet's for a 527-class head); matched to the head's by name.",
    ),
    include_empty_classes: bool = typer.Option(
        False,
        "--include-empty-classes",
        help="mAP over every class, a class without positives counting 0 (default: over the "
        "classes with a positive, as youtube-8m).",
    ),
    json_output: bool = typer.Option(False, "--json", help="Print the metrics as JSON."),
) -> None:
    """Print hit@1, PERR, GAP@20 and mAP of a trained head on labelled TFRecords."""
    _quiet_tensorflow()
    from shared import evaluation
    from shared.models import ModelError
    from shared.models.trained import TrainedHead
    from shared.training import datasets

    try:
        loaded = TrainedHead(head)
        names = _class_names(class_names, data, len(loaded.class_names))
        arrays = datasets.load_arrays(
            data, loaded.embedding_model, len(names), loaded.config.max_frames
        )
        labels = datasets.align_labels(arrays.labels, names, loaded.class_names, data)
    except (ModelError, datasets.DatasetError) as exc:
        fail(str(exc))
    predictions = loaded.score_clips(arrays.frames, arrays.lengths)
    metrics = evaluation.evaluate(predictions, labels, include_empty_classes=include_empty_classes)
    if json_output:
        typer.echo(
            json.dumps({"head": loaded.name, "examples": metrics.num_examples, **metrics.as_dict()})
        )
        return
    typer.echo(f"{loaded.name} on {metrics.num_examples} clips of {data}")
    for key, value in metrics.as_dict().items():
        typer.echo(f"{key:>7}: {value:.4f}")


# --- datasets pull ---------------------------------------------------------------------------


@datasets_app.command("pull")
def pull(
    dataset: str = typer.Argument(..., help="Data set: audioset (Google's released features)."),
    out: Path = typer.Option(DEFAULT_DATASETS_DIR, "--out", help="Folder to download into."),
    url: str = typer.Option(AUDIOSET_FEATURES_URL, "--url", help="Mirror of features.tar.gz."),
    sha256: str = typer.Option(AUDIOSET_FEATURES_SHA256, "--sha256", help="Expected checksum."),
    extract: bool = typer.Option(True, "--extract/--no-extract", help="Unpack the archive."),
) -> None:
    """Download AudioSet's released VGGish features (bal_train, eval, unbal_train TFRecords)."""
    if dataset != "audioset":
        fail(f"unknown data set {dataset!r} (known: audioset)")
    folder = out.expanduser() / "audioset"
    archive = folder / "features.tar.gz"
    from shared.download import sha256_of

    if not archive.is_file():
        error = _download(url, archive, sha256)
        if error:
            fail(error)
    elif sha256_of(archive) != sha256:
        fail(f"{archive} exists but its sha256 is not {sha256}: delete it and pull again")
    typer.echo(f"{archive}: sha256 verified")
    if extract:
        _extract(archive, folder)
        typer.echo(
            f"features in {folder} "
            f"(e.g. --train '{folder}/audioset_v1_embeddings/bal_train/*.tfrecord')"
        )


def _download(url: str, archive: Path, sha256: str) -> str | None:
    """Download with a progress bar (transient); returns the error, if any."""
    from shared.download import DownloadError, download

    with byte_progress() as progress:
        task = progress.add_task(archive.name, total=None)
        try:
            download(
                url,
                archive,
                sha256,
                lambda done, total: progress.update(task, completed=done, total=total),
            )
        except DownloadError as exc:
            return str(exc)
    return None


def _extract(archive: Path, folder: Path) -> None:
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            with item_progress() as progress:
                task = progress.add_task("extracting", total=len(members))
                for member in members:
                    tar.extract(member, folder, filter="data")
                    progress.advance(task)
    except (tarfile.TarError, OSError) as exc:
        fail(f"{archive}: cannot extract ({exc})")
    stderr.print(f"extracted {len(members)} entries")
