"""AudioSet-format TFRecords: written here, read back through the tf.data pipeline."""

import numpy as np
import pytest
import tensorflow as tf

from shared.training import datasets


def test_quantize_is_the_audioset_release_format():
    values = np.array([-3.0, -2.0, 0.0, 1.99, 2.0, 5.0])
    np.testing.assert_array_equal(datasets.quantize(values), [0, 0, 127, 254, 255, 255])
    # dequantised values sit in the middle of each truncation bin (youtube-8m's Dequantize)
    np.testing.assert_allclose(
        datasets.dequantize(np.array([0, 255], np.uint8)), [-2 + 2 / 256, 2 + 2 / 256], rtol=1e-6
    )


def test_record_round_trip_keeps_context_and_both_feature_lists(tmp_path):
    rng = np.random.default_rng(0)
    q = rng.integers(0, 256, size=(3, 128), dtype=np.uint8)
    y = rng.normal(size=(5, 1024)).astype(np.float32)
    clip = datasets.Clip("vid1", [2, 7], 30.0, 40.0, vggish_uint8=q, yamnet=y)
    path = tmp_path / "a.tfrecord"
    datasets.write_records(path, [clip])

    raw = next(iter(tf.data.TFRecordDataset(str(path)))).numpy()
    example = tf.train.SequenceExample.FromString(raw)
    context = example.context.feature
    assert context["video_id"].bytes_list.value == [b"vid1"]
    assert context["labels"].int64_list.value == [2, 7]
    assert context["start_time_seconds"].float_list.value == [30.0]
    assert context["end_time_seconds"].float_list.value == [40.0]
    frames = example.feature_lists.feature_list["audio_embedding"].feature
    assert [len(f.bytes_list.value[0]) for f in frames] == [128] * 3

    vggish = datasets.load_arrays(str(path), "vggish", 10, max_frames=4)
    np.testing.assert_allclose(vggish.frames[0, :3], datasets.dequantize(q), rtol=1e-6)
    assert vggish.frames[0, 3:].max() == 0.0 and vggish.lengths.tolist() == [3]
    np.testing.assert_array_equal(vggish.labels[0], np.isin(np.arange(10), [2, 7]))

    yamnet = datasets.load_arrays(str(path), "yamnet", 10, max_frames=4)
    np.testing.assert_allclose(yamnet.frames[0], y[:4])  # eval keeps the first frames
    assert yamnet.lengths.tolist() == [4]


def test_training_batches_are_padded_and_cropped(tmp_path):
    clips = [
        datasets.Clip(f"v{n}", [n % 3], yamnet=np.full((n, 1024), n + 1.0, np.float32))
        for n in (1, 2, 6)
    ]
    datasets.write_records(tmp_path / "t.tfrecord", clips)
    data = datasets.make_dataset(
        str(tmp_path / "t.tfrecord"), "yamnet", 3, max_frames=4, batch_size=8, training=True
    )
    (frames, lengths), labels = next(iter(data))
    assert frames.shape == (3, 4, 1024) and labels.shape == (3, 3)
    assert sorted(lengths.numpy().tolist()) == [1, 2, 4]


def test_clips_without_the_chosen_features_are_skipped(tmp_path):
    clip = datasets.Clip("v", [0], yamnet=np.ones((2, 1024), np.float32))
    datasets.write_records(tmp_path / "y.tfrecord", [clip])
    with pytest.raises(datasets.DatasetError, match="no clips with 'audio_embedding' frames "
                       r"\(--embedding yamnet reads 'yamnet_embedding'\)"):
        datasets.load_arrays(str(tmp_path / "y.tfrecord"), "vggish", 2, 10)


def test_a_label_beyond_num_classes_is_a_one_line_error(tmp_path):
    clip = datasets.Clip("v", [5], vggish_uint8=np.zeros((2, 128), np.uint8))
    datasets.write_records(tmp_path / "b.tfrecord", [clip])
    with pytest.raises(datasets.DatasetError) as error:
        datasets.load_arrays(str(tmp_path / "b.tfrecord"), "vggish", 3, 10)
    assert str(error.value) == (
        f"{tmp_path / 'b.tfrecord'}: a class index is >= 3, the number of class names"
    )


def test_no_matching_files(tmp_path):
    with pytest.raises(datasets.DatasetError, match="no TFRecord files match"):
        datasets.record_files(str(tmp_path / "*.tfrecord"))


def test_class_names_beside_the_records(tmp_path):
    datasets.write_records(tmp_path / "c.tfrecord",
                           [datasets.Clip("v", [0], yamnet=np.ones((1, 1024)))])
    assert datasets.class_names_beside(str(tmp_path / "*.tfrecord")) is None
    datasets.write_class_names(tmp_path, ["Dog", "Cat"])
    assert datasets.class_names_beside(str(tmp_path / "*.tfrecord")) == ["Dog", "Cat"]
