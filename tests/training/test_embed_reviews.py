"""`soundhive embed --from-reviews`: reviewed event clips (as the recorder keeps them, in a real
Redis) become training data; a detection marked wrong is a negative of its label."""

from pathlib import Path

import soundfile
from typer.testing import CliRunner

from shared import clips, reviews
from shared.audio import load_audio
from shared.messages import Clip, Event
from shared.training import datasets
from soundhive.cli import app

runner = CliRunner()


def kept_clip(client, folder: Path, audio: Path, event_id: str, label: str) -> Event:
    """A ready clip of `audio` for a detection of `label`, as the recorder records it."""
    stem = clips.file_stem(event_id)
    (folder / stem).parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(folder / f"{stem}.ogg", load_audio(audio), 16000, "OPUS", format="OGG")
    clips.record(client, Clip(event_id, "yard", label, "ready", "", f"{stem}.ogg",
                              f"{stem}.png", 0.0, 5.0, 1000, 0.0))
    return Event(event_id, "yard", label, "end", 0.9, 0.0, 5.0, 0.0, 5.0, "yamnet")


def test_reviewed_clips_become_examples_and_negatives(redis_server, clips_dir: Path,
                                                      tmp_path: Path):
    client = redis_server.client()
    folder = tmp_path / "clips"
    dog = kept_clip(client, folder, clips_dir / "dog.mp3", "yard/Bark/1", "Bark")
    cat = kept_clip(client, folder, clips_dir / "cat.mp3", "yard/Bark/2", "Bark")
    gone = kept_clip(client, folder, clips_dir / "cow.mp3", "yard/Moo/3", "Moo")
    kept_clip(client, folder, clips_dir / "duck.mp3", "yard/Quack/4", "Quack")  # not reviewed
    reviews.write(client, dog, "correct", 1.0)
    reviews.write(client, cat, "wrong", 2.0)  # a cat taken for a bark
    reviews.write(client, gone, "correct", 3.0)
    (folder / clips.read(client, gone.id).audio).unlink()  # expired meanwhile
    out = tmp_path / "reviews.tfrecord"
    result = runner.invoke(app, ["embed", str(folder), "--from-reviews", "--out", str(out)],
                           env={"REDIS_URL": redis_server.url})
    assert result.exit_code == 0, result.output
    assert (tmp_path / "class_names.txt").read_text().split("\n")[0] == "Bark"
    arrays = datasets.load_arrays(str(out), "yamnet", 1, 20)
    assert sorted(arrays.labels.tolist()) == [[0], [1]]  # the cat: a negative of Bark


def test_from_reviews_says_what_is_missing(redis_server, tmp_path: Path):
    args = ["embed", str(tmp_path), "--from-reviews", "--out", str(tmp_path / "x.tfrecord")]
    none = runner.invoke(app, args, env={"REDIS_URL": redis_server.url})
    assert none.exit_code == 2 and "no reviewed clips" in none.output
    no_redis = runner.invoke(app, args, env={"REDIS_URL": ""})
    assert no_redis.exit_code == 2 and "--redis-url or set REDIS_URL" in no_redis.output
