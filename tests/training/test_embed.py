"""`soundhive embed` on real clips with real YAMNet, and the augmentation it uses."""

import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from shared import params
from shared.training import datasets
from shared.training.augment import Augmentation
from shared.training.embed import LabelledFile, embed_files
from soundhive.cli import app

runner = CliRunner()
CLIPS = {"dog": "dog.mp3", "cat": "cat.mp3", "sheep": "sheep.mp3"}


@pytest.fixture
def labelled_folder(clips_dir, tmp_path):
    root = tmp_path / "audio"
    for label, name in CLIPS.items():
        (root / label).mkdir(parents=True)
        shutil.copy(clips_dir / name, root / label / name)
    return root


def test_embed_folder_with_augmentation_then_train_and_evaluate(labelled_folder, tmp_path):
    out = tmp_path / "data" / "farm.tfrecord"
    result = runner.invoke(app, ["embed", str(labelled_folder), "--out", str(out),
                                 "--augment", "2"])
    assert result.exit_code == 0, result.output
    assert "9 clips from 3 files, 3 classes (yamnet)" in result.output
    assert datasets.class_names_beside(str(out)) == ["cat", "dog", "sheep"]
    arrays = datasets.load_arrays(str(out), "yamnet", 3, max_frames=30)
    assert arrays.frames.shape[2] == params.YAMNET_EMBEDDING_SIZE
    assert arrays.labels.sum(axis=0).tolist() == [3, 3, 3]
    # a 6 s clip at a 0.48 s hop gives 11 embeddings; augmented copies differ from it
    assert arrays.lengths.max() >= 11
    assert not np.allclose(arrays.frames[3], arrays.frames[4])

    run = tmp_path / "run"
    trained = runner.invoke(app, ["train", "--embedding", "yamnet", "--train", str(out),
                                  "--eval", str(out), "--out", str(run), "--epochs", "3",
                                  "--batch-size", "4", "--max-frames", "10"])
    assert trained.exit_code == 0, trained.output
    evaluated = runner.invoke(app, ["evaluate", "--head", str(run / "head"), "--data", str(out)])
    assert evaluated.exit_code == 0, evaluated.output
    assert "hit@1" in evaluated.output and "GAP@20" in evaluated.output


def test_embed_with_a_csv_of_labels_and_a_given_class_list(clips_dir, tmp_path):
    table = tmp_path / "labels.csv"
    table.write_text("file,labels\ndog.mp3,Dog;Animal\nsheep.mp3,Animal\n")
    names = tmp_path / "names.txt"
    names.write_text("Animal\nCat\nDog\n")
    out = tmp_path / "x.tfrecord"
    result = runner.invoke(app, ["embed", str(clips_dir), "--labels", str(table), "--out",
                                 str(out), "--class-names", str(names)])
    assert result.exit_code == 0, result.output
    arrays = datasets.load_arrays(str(out), "yamnet", 3, 20)
    assert arrays.labels.tolist() == [[1, 0, 1], [1, 0, 0]]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--model", "openl3"], "--model must be one of"),
        (["--class-names", "{names}"], "labels not in the class list: dog, sheep"),
    ],
)
def test_embed_bad_input(labelled_folder, tmp_path, extra, message):
    (tmp_path / "names.txt").write_text("cat\n")
    extra = [e.format(names=tmp_path / "names.txt") for e in extra]
    result = runner.invoke(app, ["embed", str(labelled_folder), "--out",
                                 str(tmp_path / "o.tfrecord"), *extra])
    assert result.exit_code == 2 and message in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_embed_with_vggish_needs_its_checkpoint(labelled_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("SOUNDHIVE_MODELS", str(tmp_path / "empty"))
    out = tmp_path / "v.tfrecord"
    result = runner.invoke(app, ["embed", str(labelled_folder), "--out", str(out), "--model",
                                 "vggish"])
    assert result.exit_code == 2 and "vggish_model.ckpt" in result.output
    assert not out.exists()


def test_augmentation_changes_gain_shift_and_noise():
    rng = np.random.default_rng(0)
    tone = (0.3 * np.sin(np.arange(16000) / 5)).astype(np.float32)
    variant = Augmentation()(tone, rng)
    shift = len(variant) - len(tone)
    assert 0 <= shift <= params.DEFAULT_PATCH_HOP_SECONDS * params.SAMPLE_RATE
    assert variant.dtype == np.float32 and np.abs(variant).max() <= 1.0
    residual = variant[shift:] - tone * (variant[shift:] @ tone / (tone @ tone))
    snr = 10 * np.log10(np.mean(variant[shift:] ** 2) / np.mean(residual**2))
    assert 8 < snr < 32


class CountingVGGish:
    """Stands in for VGGish (its checkpoint cannot be had here): one embedding per patch, whose
    first byte is the patch's start in 10 ms frames, so the framing can be read back."""

    name = "vggish"

    def __init__(self, waveform: np.ndarray):
        self.waveform = waveform

    def embed_quantized(self, patches: np.ndarray) -> np.ndarray:
        starts = [np.flatnonzero(self.waveform == p[0])[0] // 160 for p in patches]
        out = np.zeros((len(patches), 128), np.uint8)
        out[:, 0] = starts
        return out


def test_vggish_clips_follow_the_audioset_release_framing(tmp_path):
    import soundfile

    rng = np.random.default_rng(0)
    waveform = rng.uniform(-0.5, 0.5, 48000).astype(np.float32)  # 3 s
    soundfile.write(tmp_path / "long.wav", waveform, 16000, subtype="FLOAT")
    soundfile.write(tmp_path / "short.wav", waveform[:15000], 16000, subtype="FLOAT")
    files = [LabelledFile(tmp_path / "long.wav", ("a",)), LabelledFile(tmp_path / "short.wav",
                                                                          ("a",))]
    skipped = []
    clips = list(embed_files(files, ["a"], CountingVGGish(waveform), skipped=skipped.append))
    assert [c.video_id for c in clips] == [str(tmp_path / "long.wav")]
    # one embedding every 0.96 s (96 frames), the incomplete tail dropped: 3 s give 3
    assert clips[0].vggish_uint8[:, 0].tolist() == [0, 96, 192]
    assert skipped == [files[1]]
