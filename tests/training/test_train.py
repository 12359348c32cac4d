"""Training all three heads on data made here, exporting them, and serving them back."""

import json
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from shared import evaluation
from shared.models import ModelError, load_head
from shared.models.frame_models import HeadConfig
from shared.training import datasets, export
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


def permuted_copy(data, clips, folder, order: list[int]) -> str:
    """The eval set's clips again, with class i stored as index order[i] and names to match."""
    for clip in clips:
        clip.labels = sorted(order[label] for label in clip.labels)
    names = [""] * len(order)
    for i, position in enumerate(order):
        names[position] = data.class_names[i]
    folder.mkdir()
    datasets.write_records(folder / "eval.tfrecord", clips)
    datasets.write_class_names(folder, names)
    return str(folder / "eval.tfrecord")


@pytest.fixture(scope="module")
def yamnet_run(yamnet_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("yamnet-run")
    config = HeadConfig("logistic", 4, 1024, 300)
    result = train(TrainOptions(config, yamnet_data.train, yamnet_data.eval, "yamnet",
                                yamnet_data.class_names, out / "run", "y", epochs=2,
                                batch_size=16, learning_rate=0.005))
    return result


def test_window_is_the_longest_training_clip_and_evaluation_reads_whole_clips(
    yamnet_run, yamnet_data
):
    longest = datasets.load_arrays(yamnet_data.train, "yamnet", 4, 300).lengths.max()
    head = load_head(yamnet_run.head)
    assert head.config.max_frames == 300 and head.window == longest < 300
    arrays = datasets.load_arrays(yamnet_data.eval, "yamnet", 4, 300)
    scores = head.score_clips(arrays.frames, arrays.lengths)
    assert evaluation.evaluate(scores, arrays.labels).as_dict() == pytest.approx(
        yamnet_run.final.as_dict(), abs=1e-6)


def test_evaluate_matches_the_data_classes_to_the_head_by_name(
    yamnet_run, yamnet_data, yamnet_eval_clips, tmp_path
):
    permuted = permuted_copy(yamnet_data, yamnet_eval_clips, tmp_path / "p", [2, 0, 3, 1])
    expected = yamnet_run.final.as_dict()
    for data in (yamnet_data.eval, permuted):
        result = runner.invoke(app, ["evaluate", "--head", str(yamnet_run.head), "--data", data,
                                     "--json"])
        assert result.exit_code == 0, result.output
        got = json.loads(result.output)
        assert {k: got[k] for k in expected} == pytest.approx(expected, abs=1e-6)

    (tmp_path / "p" / "class_names.txt").write_text("class 0\nclass 1\nclass 2\nhorse\n")
    result = runner.invoke(app, ["evaluate", "--head", str(yamnet_run.head), "--data", permuted])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert "1 of its classes are not the head's ('horse')" in result.output


def test_train_eval_set_in_another_class_order_is_matched_by_name(
    yamnet_data, yamnet_run, yamnet_eval_clips, tmp_path
):
    permuted = permuted_copy(yamnet_data, yamnet_eval_clips, tmp_path / "p", [3, 2, 1, 0])
    config = HeadConfig("logistic", 4, 1024, 300)
    result = train(TrainOptions(config, yamnet_data.train, permuted, "yamnet",
                                yamnet_data.class_names, tmp_path / "run", "y", epochs=2,
                                batch_size=16, learning_rate=0.005))
    assert result.final.as_dict() == pytest.approx(yamnet_run.final.as_dict(), abs=1e-6)


def test_evaluate_can_count_empty_classes_in_map(yamnet_run, yamnet_eval_clips, tmp_path):
    clips = [c for c in yamnet_eval_clips if 3 not in c.labels]
    datasets.write_records(tmp_path / "e.tfrecord", clips)
    datasets.write_class_names(tmp_path, [f"class {i}" for i in range(4)])
    maps = []
    for extra in ([], ["--include-empty-classes"]):
        result = runner.invoke(app, ["evaluate", "--head", str(yamnet_run.head), "--data",
                                     str(tmp_path / "e.tfrecord"), "--json", *extra])
        assert result.exit_code == 0, result.output
        maps.append(json.loads(result.output)["mAP"])
    assert maps[1] == pytest.approx(maps[0] * 3 / 4)


def test_a_head_of_the_older_format_is_refused_in_one_line(logistic_head, tmp_path):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(logistic_head, old)
    description = json.loads((old / export.HEAD_FILE).read_text())
    (old / export.HEAD_FILE).write_text(json.dumps({**description,
                                                    "format": "soundhive-head/1"}))
    with pytest.raises(ModelError, match="a soundhive-head/1 head from an older soundhive: "
                                         "train it again"):
        load_head(old)


def test_the_real_cli_prints_only_soundhives_own_lines(yamnet_data, tmp_path):
    def soundhive(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "soundhive", *args], capture_output=True,
                              text=True, timeout=120)

    run = tmp_path / "run"
    trained = soundhive("train", "--model", "dbof", "--train", yamnet_data.train, "--eval",
                        yamnet_data.eval, "--out", str(run), "--epochs", "1", "--batch-size",
                        "32", "--cluster-size", "16", "--hidden-size", "8")
    assert trained.returncode == 0, trained.stderr
    # (rich ends its transient progress display off a terminal with an empty line)
    assert [line.split(":")[0] for line in trained.stderr.splitlines() if line] == ["epoch 1"]
    assert trained.stdout.splitlines()[-1] == f"head exported to {run / 'head'}"
    evaluated = soundhive("evaluate", "--head", str(run / "head"), "--data", yamnet_data.eval)
    assert evaluated.returncode == 0 and evaluated.stderr == ""
    assert [line.split(":")[0].strip() for line in evaluated.stdout.splitlines()[1:]] == [
        "hit@1", "PERR", "GAP@20", "mAP"]
