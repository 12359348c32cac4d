"""A head trained with `soundhive train` (a farm-animals head on real YAMNet embeddings) serves
in the classifier service and produces events, and a retrained head replacing it on disk is
picked up without a restart."""

import os
import subprocess
import sys
import time

import numpy as np
import pytest
from pipeline_helpers import REPO, plain_tracker

from services.classifier.service import RELOAD_CHECK_S, Classifier
from services.classifier.settings import ClassifierSettings
from shared import bus, detections, streams
from shared.audio import frame_patches, load_audio
from shared.messages import PATCHES_PER_CHUNK, Embeddings, PcmChunk, Prediction
from shared.models import ModelError, load_embedder, load_head

WINDOW = 4


@pytest.fixture(scope="module")
def clip_embeddings(models_dir, clips_dir) -> dict[str, np.ndarray]:
    embedder = load_embedder("yamnet", models_dir)
    return {
        name: embedder.embed(frame_patches(load_audio(clips_dir / f"{name}.mp3")))
        for name in ("dog", "cow", "duck")
    }


def train_head(embeddings: dict[str, np.ndarray], class_names: list[str], out) -> str:
    """A logistic head on every WINDOW-long run of real YAMNet embeddings of each clip."""
    from shared.models.frame_models import HeadConfig
    from shared.training import datasets
    from shared.training.train import TrainOptions, train

    clips = [
        datasets.Clip(f"{name}-{start}", [class_names.index(name.capitalize())], 0.0, 1.0,
                      yamnet=frames[start : start + WINDOW])
        for name, frames in embeddings.items()
        for start in range(len(frames) - WINDOW + 1)
    ]
    datasets.write_records(out / "train.tfrecord", clips)
    config = HeadConfig("logistic", len(class_names), 1024, WINDOW)
    options = TrainOptions(config, str(out / "train.tfrecord"), None, "yamnet", class_names,
                           out / "run", "farm", epochs=30, batch_size=8, learning_rate=0.05)
    return train(options).head


def replay(classifier: Classifier, source: str, frames: np.ndarray) -> None:
    for seq in range(len(frames) // PATCHES_PER_CHUNK):
        audible = np.full(23280, 0.1, np.float32)  # passes the events' RMS gate
        chunk = PcmChunk.from_samples(source, "s", seq, 0.0, seq * 0.96, audible, False)
        rows = frames[seq * PATCHES_PER_CHUNK : (seq + 1) * PATCHES_PER_CHUNK]
        classifier.handle([bus.Delivery(f"{seq}-0", Embeddings.of(chunk, "yamnet", rows), 1)])


def started_events(client) -> set[tuple[str, str]]:
    return {(e.source, e.label) for e in detections.recent(client, 1000)}


def latest_prediction(client, source: str) -> Prediction:
    for _, fields in client.xrevrange(streams.PREDICTIONS_STREAM):
        prediction = Prediction.decode(fields[streams.MESSAGE_FIELD])
        if prediction.source == source:
            return prediction
    raise AssertionError(f"no prediction for {source}")


def test_trained_head_serves_and_hot_reloads(
    redis_server, clip_embeddings, tmp_path, monkeypatch
):
    from shared.training import export

    monkeypatch.setenv("SOUNDHIVE_MODELS", str(tmp_path / "models"))
    two = {k: clip_embeddings[k] for k in ("dog", "cow")}
    export.install_head(train_head(two, ["Dog", "Cow"], tmp_path / "a"), "farm")

    head = load_head("farm", "yamnet")
    assert head.window == WINDOW and head.class_names == ["Dog", "Cow"]
    client = redis_server.client()
    classifier = Classifier(client, head, plain_tracker(head.class_names),
                            ClassifierSettings(), "farm")
    replay(classifier, "barn-dog", clip_embeddings["dog"])
    replay(classifier, "barn-cow", clip_embeddings["cow"])
    assert latest_prediction(client, "barn-dog").labels[0][0] == "Dog"
    assert latest_prediction(client, "barn-cow").labels[0][0] == "Cow"
    assert latest_prediction(client, "barn-dog").head == "farm"
    assert {("barn-dog", "Dog"), ("barn-cow", "Cow")} <= started_events(client)

    retrained = train_head(clip_embeddings, ["Dog", "Cow", "Duck"], tmp_path / "b")
    export.install_head(retrained, "farm")
    time.sleep(RELOAD_CHECK_S + 0.1)
    replay(classifier, "pond", clip_embeddings["duck"])
    assert classifier.head.class_names == ["Dog", "Cow", "Duck"]
    assert latest_prediction(client, "pond").labels[0][0] == "Duck"
    assert ("pond", "Duck") in started_events(client)


def test_head_for_other_embeddings_is_refused(clip_embeddings, tmp_path, monkeypatch):
    from shared.training import export

    monkeypatch.setenv("SOUNDHIVE_MODELS", str(tmp_path / "models"))
    two = {k: clip_embeddings[k] for k in ("dog", "cow")}
    export.install_head(train_head(two, ["Dog", "Cow"], tmp_path / "a"), "farm")
    with pytest.raises(ModelError, match="SOUNDHIVE_MODEL=yamnet"):
        load_head("farm", "vggish")
    with pytest.raises(ModelError, match="no trained head"):
        load_head("absent", "yamnet")


def test_without_tensorflow_trained_heads_and_vggish_are_one_line_errors(tmp_path):
    from shared.models.catalog import spec

    for model_file in spec("vggish").files:  # present (empty): the import is what fails
        (tmp_path / model_file.name).write_bytes(b"")
    script = (
        "import sys; sys.modules['tensorflow'] = sys.modules['keras'] = None\n"
        "from shared.models import ModelError, load_embedder, load_head\n"
        "for load in (lambda: load_head('farm', 'yamnet'), lambda: load_embedder('vggish')):\n"
        "    try:\n"
        "        load()\n"
        "    except ModelError as exc:\n"
        "        print(exc)\n"
    )
    found = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                           text=True, timeout=60,
                           env={**os.environ, "SOUNDHIVE_MODELS": str(tmp_path)})
    lines = found.stdout.splitlines()
    assert found.returncode == 0, found.stderr
    assert len(lines) == 2 and all("need TensorFlow" in line for line in lines), lines
