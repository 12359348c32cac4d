"""YAMNet: the split embedder -> head path reproduces the whole TFLite graph."""

import numpy as np
import pytest

from shared import params
from shared.audio import find_audio_files, frame_patches, load_audio
from shared.messages import CHUNK_HOP_SAMPLES, CHUNK_SAMPLES, PATCH_HOP_SAMPLES
from shared.models import ModelError, load_embedder, load_model
from shared.models.yamnet import YamnetTFLite

ONE_OUTPUT_STEP = 1 / 256  # the graph's int8 output quantum


@pytest.fixture(scope="module")
def graph(models_dir):
    return YamnetTFLite(models_dir / "yamnet.tflite")


def test_split_path_reproduces_whole_model_on_real_clips(models_dir, clips_dir, graph):
    model = load_model("yamnet", models_dir)
    patches = np.concatenate([frame_patches(load_audio(c)) for c in find_audio_files(clips_dir)])
    whole = graph.whole_model_scores(patches)
    split = model.head.score(model.embedder.embed(patches))
    assert split.shape == whole.shape == (len(patches), 521)
    # Measured on this machine: identical (max difference 0.0).
    assert np.abs(split - whole).max() <= ONE_OUTPUT_STEP


def test_embeddings_equal_the_whole_graphs_from_float_and_pcm_patches(clips_dir, graph):
    """The embedder computes the STFT magnitudes in numpy and runs the graph from there: its
    embeddings are the whole graph's (its own front end), bit for bit, on every patch of the
    clips (the pipeline's int16 PCM patches included). Measured: no patch differs; a numpy
    magnitude off by one float32 step can move an embedding (scores by up to 0.06), which is
    why the front end copies the graph's float steps."""
    patches = np.concatenate([frame_patches(load_audio(c)) for c in find_audio_files(clips_dir)]
                             + [synthetic_patches()])
    pcm = np.clip(np.round(patches * params.PCM_FULL_SCALE), -32768, 32767).astype(np.int16)
    as_float = (pcm / np.float32(params.PCM_FULL_SCALE)).astype(np.float32)
    assert np.array_equal(graph.embed_int8(patches)[0], graph.whole_model_embeddings(patches))
    assert np.array_equal(graph.embed_int8(pcm)[0], graph.whole_model_embeddings(as_float))


def synthetic_patches() -> np.ndarray:
    """Tones (whose near-zero bins are where two float64 FFTs round differently), a square
    wave, clicks and silence, at several levels."""
    t = np.arange(params.PATCH_SAMPLES) / params.SAMPLE_RATE
    signals = [level * np.sin(2 * np.pi * hz * t) for hz in (50, 440, 1000, 3150, 7900)
               for level in (1.0, 0.01)]
    signals += [0.3 * np.sign(np.sin(2 * np.pi * 220 * t)), 0.5 * (t * 1000 % 97 < 0.1),
                np.zeros_like(t)]
    return np.stack(signals).astype(np.float32)


def test_a_chunks_patches_share_its_stft_and_equal_the_whole_graphs(models_dir, clips_dir,
                                                                     graph):
    """The features worker's call: chunks of int16 PCM, two patches each from one STFT, shared
    among interpreters by chunk."""
    audio = np.concatenate([load_audio(c) for c in find_audio_files(clips_dir)])
    pcm = np.clip(np.round(audio * params.PCM_FULL_SCALE), -32768, 32767).astype(np.int16)
    chunks = np.stack([pcm[start:start + CHUNK_SAMPLES]
                       for start in range(0, len(pcm) - CHUNK_SAMPLES + 1, CHUNK_HOP_SAMPLES)])
    hop = PATCH_HOP_SAMPLES
    patches = np.stack([chunk[offset:offset + params.PATCH_SAMPLES]
                        for chunk in chunks for offset in (0, hop)])
    reference = graph.whole_model_embeddings(patches / np.float32(params.PCM_FULL_SCALE))
    assert np.array_equal(graph.embed_int8(chunks, 0.48)[0], reference)
    threaded = YamnetTFLite(models_dir / "yamnet.tflite", threads=3)
    assert np.array_equal(threaded.embed_int8(chunks[:5], 0.48)[0], reference[:10])


def test_patches_of_another_length_or_hop_are_refused(graph):
    with pytest.raises(ValueError, match="15600"):
        graph.embed(np.zeros((2, 16000), np.float32))
    with pytest.raises(ValueError, match="whole STFT frames"):
        graph.embed_int8(np.zeros((2, CHUNK_SAMPLES), np.int16), 0.4805)


def test_threads_share_the_patches_and_give_the_same_embeddings(models_dir, clips_dir, graph):
    patches = np.concatenate([frame_patches(load_audio(c)) for c in find_audio_files(clips_dir)])
    threaded = YamnetTFLite(models_dir / "yamnet.tflite", threads=3)
    one = graph.embed(patches)
    # Any count of patches, fewer than the interpreters included, keeps the order.
    for count in (len(patches), 7, 2, 1):
        assert np.array_equal(threaded.embed(patches[:count]), one[:count])


def test_embed_is_safe_to_call_from_several_threads(models_dir, clips_dir):
    from concurrent.futures import ThreadPoolExecutor

    patches = frame_patches(load_audio(find_audio_files(clips_dir)[0]))
    embedder = YamnetTFLite(models_dir / "yamnet.tflite", threads=2)
    alone = embedder.embed(patches)
    with ThreadPoolExecutor(4) as callers:
        results = list(callers.map(lambda _: embedder.embed(patches), range(8)))
    assert all(np.array_equal(r, alone) for r in results)


def test_embeddings_are_1024_floats(models_dir):
    embedder = load_embedder("yamnet", models_dir)
    embeddings = embedder.embed(np.zeros((3, params.PATCH_SAMPLES), np.float32))
    assert embeddings.shape == (3, 1024) and embeddings.dtype == np.float32
    assert embedder.embed(np.zeros((0, params.PATCH_SAMPLES), np.float32)).shape == (0, 1024)


def test_class_names_come_from_the_class_map(models_dir):
    names = load_model("yamnet", models_dir).class_names
    assert len(names) == 521 and names[0] == "Speech" and "Dog" in names


def test_a_part_of_the_graph_must_be_computable_from_its_input(graph):
    from shared.models.yamnet import EMBEDDING_TENSOR, INPUT_TENSOR, LOG_MEL_TENSOR

    with pytest.raises(ModelError, match="needs more than"):
        graph.file.part("add", LOG_MEL_TENSOR)  # the mel bias: the magnitudes come before it
    with pytest.raises(ModelError, match="no operators lead"):
        graph.file.part(EMBEDDING_TENSOR, INPUT_TENSOR)


def test_a_file_that_is_not_yamnet_is_refused(tmp_path):
    fake = tmp_path / "yamnet.tflite"
    fake.write_bytes(b"not a flatbuffer")
    with pytest.raises(ModelError):
        YamnetTFLite(fake)


def test_missing_model_files_name_the_pull_command(tmp_path):
    with pytest.raises(ModelError, match="soundhive models pull yamnet"):
        load_model("yamnet", tmp_path)


def test_vggish_has_no_audioset_head_yet(tmp_path):
    with pytest.raises(ModelError):
        load_model("vggish", tmp_path)


def test_the_heads_scores_do_not_depend_on_the_batch(models_dir, clips_dir):
    """The head runs batches padded to a power of two, 256 rows at most a call: each row's
    scores are those it gets alone, at sizes across the padding and the split."""
    model = load_model("yamnet", models_dir)
    patches = np.concatenate([frame_patches(load_audio(c)) for c in find_audio_files(clips_dir)])
    embeddings = model.embedder.embed(patches)
    embeddings = np.concatenate([embeddings] * -(-300 // len(embeddings)))[:300]
    alone = np.concatenate([model.head.score(row[None]) for row in embeddings])
    for size in (1, 2, 3, 255, 256, 257, 300):
        assert np.array_equal(model.head.score(embeddings[:size]), alone[:size]), size
    assert model.head.score(embeddings[:0]).shape == (0, len(model.class_names))
