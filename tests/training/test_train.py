"""Training all three heads on data made here, exporting them, and serving them back."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from shared.models import ModelError
from shared.models.trained import load_head
from shared.training import datasets, export
from shared.training.frame_models import HeadConfig
from shared.training.train import TrainingError, TrainOptions, train
from soundhive.cli import app

runner = CliRunner()
SMALL = {"cluster_size": 64, "hidden_size": 32, "lstm_size": 32, "lstm_layers": 1,
         "sample_frames": 8}


def options(data, embedding: str, model: str, out, **overrides) -> TrainOptions:
    size = datasets.feature_spec(embedding).size
    config = HeadConfig(model, len(data.class_names), size, 8, **SMALL)
    settings = {"epochs": 3, "batch_size": 16, "learning_rate": 0.005}
    settings.update(overrides)
    return TrainOptions(config, data.train, data.eval, embedding, data.class_names, out,
                        f"{embedding}-{model}", **settings)


@pytest.mark.parametrize("model", ["logistic", "dbof", "lstm"])
@pytest.mark.parametrize("embedding", ["vggish", "yamnet"])
def test_each_head_learns_and_beats_the_prior_baseline(
    model, embedding, vggish_data, yamnet_data, tmp_path
):
    data = vggish_data if embedding == "vggish" else yamnet_data
    result = train(options(data, embedding, model, tmp_path / "run"))
    train_losses = [e.train_loss for e in result.epochs]
    assert train_losses == sorted(train_losses, reverse=True), train_losses
    assert train_losses[-1] < 0.9 * train_losses[0], train_losses
    final, baseline = result.final.as_dict(), result.baseline.as_dict()
    for metric in ("hit@1", "GAP@20", "mAP"):
        assert final[metric] > baseline[metric] + 0.2, (metric, final, baseline)

    head = load_head(result.head)
    assert (head.embedding_model, head.window, head.class_names) == (
        embedding, 8, data.class_names)
    arrays = datasets.load_arrays(data.eval, embedding, 4, 8)
    scores = head.score_windows(arrays.frames, arrays.lengths)
    assert scores.shape == (len(arrays.labels), 4) and scores.dtype == np.float32
    assert np.mean(scores.argmax(1) == arrays.labels.argmax(1)) > 0.6
    assert (tmp_path / "run" / "logs" / "train").is_dir()


def test_resume_continues_from_the_last_checkpoint(vggish_data, tmp_path):
    first = train(options(vggish_data, "vggish", "dbof", tmp_path, epochs=1))
    assert [e.epoch for e in first.epochs] == [1]
    with pytest.raises(TrainingError, match="already holds a run"):
        train(options(vggish_data, "vggish", "dbof", tmp_path, epochs=2))
    with pytest.raises(TrainingError, match="config differs"):
        train(options(vggish_data, "vggish", "lstm", tmp_path, epochs=2, resume=True))
    resumed = train(options(vggish_data, "vggish", "dbof", tmp_path, epochs=2, resume=True))
    assert [e.epoch for e in resumed.epochs] == [2]
    assert resumed.epochs[0].train_loss < first.epochs[0].train_loss


@pytest.fixture(scope="module")
def logistic_head(vggish_data, tmp_path_factory):
    return train(options(vggish_data, "vggish", "logistic", tmp_path_factory.mktemp("h"),
                         epochs=1)).head


def test_score_uses_the_trailing_window_ending_at_each_row(logistic_head):
    head = load_head(logistic_head)
    embeddings = np.random.default_rng(3).normal(size=(11, 128)).astype(np.float32)
    scores = head.score(embeddings)
    for row in (0, 4, 10):
        start = max(0, row - head.window + 1)
        window = embeddings[start : row + 1][None]
        expected = head.score_windows(window, [window.shape[1]])[0]
        np.testing.assert_allclose(scores[row], expected, atol=1e-6)
    longer = np.concatenate([embeddings[None, :11], np.zeros((1, 3, 128), np.float32)], axis=1)
    np.testing.assert_allclose(head.score_windows(longer, [11])[0], scores[10], atol=1e-6)
    assert head.score(np.zeros((0, 128), np.float32)).shape == (0, 4)


def test_installed_head_loads_by_name_and_notices_replacement(
    logistic_head, monkeypatch, tmp_path
):
    monkeypatch.setenv("SOUNDHIVE_MODELS", str(tmp_path))
    installed = export.install_head(logistic_head, "farm")
    assert installed == tmp_path / "heads" / "farm"
    head = load_head("farm")
    assert head.name == "farm" and not head.changed_on_disk()
    export.install_head(logistic_head, "farm")
    assert head.changed_on_disk()
    assert not load_head("farm").changed_on_disk()
    with pytest.raises(ModelError, match="no trained head 'pigs'"):
        load_head("pigs")
    with pytest.raises(ModelError, match=r"windows \[n, T, 128\]"):
        head.score_windows(np.zeros((1, 3, 1024), np.float32), [3])
    with pytest.raises(ValueError, match="head name"):
        export.install_head(logistic_head, "../x")


def test_cli_train_then_evaluate(yamnet_data, monkeypatch, tmp_path):
    monkeypatch.setenv("SOUNDHIVE_MODELS", str(tmp_path / "models"))
    args = ["train", "--model", "lstm", "--embedding", "yamnet", "--train", yamnet_data.train,
            "--eval", yamnet_data.eval, "--out", str(tmp_path / "run"), "--epochs", "2",
            "--batch-size", "16", "--max-frames", "8", "--lstm-size", "16", "--lstm-layers",
            "1", "--name", "synthetic"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "prior baseline" in result.output and "installed as" in result.output

    result = runner.invoke(app, ["evaluate", "--head", "synthetic", "--data", yamnet_data.eval,
                                 "--json"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output)
    assert metrics["examples"] == 64 and metrics["hit@1"] > 0.6

    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "already holds a run" in again.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--model", "svm", "--train", "x", "--out", "o"], "--model must be one of"),
        (["train", "--train", "/nonexistent/*.tfrecord", "--out", "o"], "no TFRecord files"),
        (["evaluate", "--head", "nohead", "--data", "x"], "no trained head 'nohead'"),
    ],
)
def test_cli_bad_input_is_one_line_and_status_2(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert message in result.output and len(result.output.strip().splitlines()) == 1
