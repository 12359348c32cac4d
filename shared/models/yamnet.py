"""YAMNet from its int8 TFLite file, run with LiteRT: front end, embedder and AudioSet head.

The file holds one graph: waveform -> STFT magnitudes -> log-mel -> MobileNet -> 521 scores.
In LiteRT its front end (framing, FFT, magnitude) costs about as much as the network, so the
embedder computes the STFT magnitudes in numpy as the graph computes them (shared/frontend.py:
the same float32 and float64 steps) and runs the rest of the graph, from the magnitudes to the
1024-d embedding that feeds the classifier layer, as a model cut from the file when it loads.
Its embeddings equal the whole graph's (tests/test_yamnet.py checks every patch of the clips).
The head is the graph's last two layers (int8 fully-connected, int8 logistic), cut from the
file as a model of their own and run on whole batches, so that split scores equal the whole
graph's scores.

Threads: the graph takes one patch per call, too little work for LiteRT's own threads to share
(on 2 cores, two threads in one interpreter ran 11 % faster than one). So `threads`
single-threaded interpreters each take a share of the patches instead (93 % faster with two):
LiteRT releases the GIL while it runs. bench/runtimes.py measures the choices (docs/benchmarks.md).
"""

import threading
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from shared import params
from shared.audio import hop_samples
from shared.frontend import stft_magnitude
from shared.labels import ClassMap
from shared.models.base import AudioModel, ModelError
from shared.models.tflite import TFLiteFile

if TYPE_CHECKING:
    from ai_edge_litert.interpreter import Interpreter

INPUT_TENSOR = "waveform_binary"
WINDOW_TENSOR = "stft/hann_window/sub_2"
MAGNITUDE_TENSOR = "magnitude_spectrogram"
LOG_MEL_TENSOR = "log_mel_spectrogram"
EMBEDDING_TENSOR = "tower0/network/layer28/reduce_mean"
FC_WEIGHTS_TENSOR = "tower0/network/layer29/fc/MatMul"
SCORES_INT8_TENSOR = "tower0/network/layer32/final_output1"
HEAD_MAX_ROWS = 256  # embeddings scored in one call of the head's interpreter
REQUIRED_TENSORS = (INPUT_TENSOR, WINDOW_TENSOR, MAGNITUDE_TENSOR, LOG_MEL_TENSOR,
                    EMBEDDING_TENSOR, FC_WEIGHTS_TENSOR, SCORES_INT8_TENSOR)


class YamnetTFLite:
    """The embedder (`embed`, `embed_int8`); `whole_model_scores`, `whole_model_embeddings`
    and `log_mel` run the whole graph and its own front end: the references the split path is
    checked against (and measured against in bench/model_peak.py)."""

    name = "yamnet"
    embedding_size = params.YAMNET_EMBEDDING_SIZE
    patch_hop_seconds = params.DEFAULT_PATCH_HOP_SECONDS

    def __init__(self, tflite_path: Path, threads: int = 1, threads_each: int = 1):
        """`threads` interpreters share the patches; `threads_each` are LiteRT's own threads in
        each (1 is fastest for this graph; bench/runtimes.py measures more)."""
        if threads < 1 or threads_each < 1:
            raise ValueError(f"threads must be at least 1, got {threads} and {threads_each}")
        self.file = TFLiteFile(tflite_path, REQUIRED_TENSORS)
        network = self.file.part(MAGNITUDE_TENSOR, EMBEDDING_TENSOR)
        self._interpreters = [_interpreter(network, threads_each) for _ in range(threads)]
        self._input = self._interpreters[0].get_input_details()[0]["index"]
        self._output = self._interpreters[0].get_output_details()[0]["index"]
        self._pool = ThreadPoolExecutor(threads, "yamnet") if threads > 1 else None
        self._busy = threading.Lock()  # one call at a time (the api serves requests in threads)
        self._window = self.file.constant(WINDOW_TENSOR)
        self.embedding_quantization = self.file.quantization(EMBEDDING_TENSOR)

    def embed(self, patches: np.ndarray) -> np.ndarray:
        return self.embedding_quantization.dequantize(self.embed_int8(patches)[0])

    def embed_int8(self, waveforms: np.ndarray, hop_seconds: float | None = None
                   ) -> tuple[np.ndarray, tuple[float, int]]:
        """Waveform rows [n, samples], float32 in [-1, 1] or int16 PCM (params.PCM_FULL_SCALE)
        -> int8 embeddings of each row's patches, every `hop_seconds` from its start (rows of
        one patch when None), [n * patches per row, 1024] in row order, and their (scale,
        zero_point). A row's STFT is computed once for its overlapping patches (a pipeline
        chunk's two); the rows are shared out in contiguous runs among the interpreters."""
        hop_frames = _hop_frames(waveforms, hop_seconds)
        quantization = self.embedding_quantization
        shares = [s for s in np.array_split(waveforms, len(self._interpreters)) if len(s)]
        with self._busy:
            if len(shares) <= 1:
                q = self._embed_share(self._interpreters[0], waveforms, hop_frames)
            else:
                assert self._pool is not None
                q = np.concatenate(list(self._pool.map(
                    self._embed_share, self._interpreters, shares, [hop_frames] * len(shares))))
        return q, (quantization.scale, quantization.zero_point)

    def _embed_share(self, interpreter: "Interpreter", waveforms: np.ndarray, hop_frames: int
                     ) -> np.ndarray:
        per_row = _patches_per_row(waveforms.shape[1], hop_frames)
        rows = np.empty((len(waveforms), per_row, self.embedding_size), np.int8)
        for embeddings, waveform in zip(rows, waveforms, strict=True):
            # A row at a time: a whole batch's float64 FFT took page faults as much as math.
            magnitudes = stft_magnitude(waveform, self._window)
            for i, embedding in enumerate(embeddings):
                start = i * hop_frames
                interpreter.set_tensor(self._input, magnitudes[start:start + params.PATCH_FRAMES])
                interpreter.invoke()
                embedding[:] = interpreter.get_tensor(self._output).reshape(-1)
        return rows.reshape(-1, self.embedding_size)

    def whole_model_scores(self, patches: np.ndarray) -> np.ndarray:
        """The whole graph's scores [n, 521] of float32 patches."""
        return self._reference(self._whole_graph, patches).astype(np.float32)

    def whole_model_embeddings(self, patches: np.ndarray) -> np.ndarray:
        """The graph's int8 embeddings [n, 1024] of float32 patches, from its own front end."""
        return self._reference(self._whole_embedder, patches)

    def log_mel(self, patch: np.ndarray) -> np.ndarray:
        """The graph's own [96, 64] log-mel spectrogram of one patch (to check our front end)."""
        return self._reference(self._front_end, patch[None]).reshape(params.PATCH_FRAMES,
                                                                     params.MEL_BANDS)

    @cached_property
    def _whole_graph(self) -> "Interpreter":
        return _interpreter(self.file.path.read_bytes(), 1)

    @cached_property
    def _whole_embedder(self) -> "Interpreter":
        return _interpreter(self.file.part(INPUT_TENSOR, EMBEDDING_TENSOR), 1)

    @cached_property
    def _front_end(self) -> "Interpreter":
        return _interpreter(self.file.part(INPUT_TENSOR, LOG_MEL_TENSOR), 1)

    def _reference(self, interpreter: "Interpreter", patches: np.ndarray) -> np.ndarray:
        _check_patches(patches)
        rows = []
        with self._busy:
            input_index = interpreter.get_input_details()[0]["index"]
            output_index = interpreter.get_output_details()[0]["index"]
            for patch in patches:
                interpreter.set_tensor(input_index, np.asarray(patch, np.float32))
                interpreter.invoke()
                rows.append(interpreter.get_tensor(output_index).reshape(-1).copy())
        return np.stack(rows)


def _check_patches(patches: np.ndarray) -> None:
    if patches.ndim != 2 or patches.shape[1] != params.PATCH_SAMPLES:
        raise ValueError(f"YAMNet patches are [n, {params.PATCH_SAMPLES}] samples, got "
                         f"{patches.shape}")


def _hop_frames(waveforms: np.ndarray, hop_seconds: float | None) -> int:
    """The patch hop in STFT frames; rows of one patch each when `hop_seconds` is None."""
    if hop_seconds is None:
        _check_patches(waveforms)
        return params.PATCH_FRAMES
    hop = hop_samples(hop_seconds)
    if waveforms.ndim != 2 or waveforms.shape[1] < params.PATCH_SAMPLES \
            or hop % params.STFT_HOP_SAMPLES:
        raise ValueError(f"YAMNet takes waveform rows of at least {params.PATCH_SAMPLES} "
                         f"samples and a hop of whole STFT frames, got {waveforms.shape} and "
                         f"{hop_seconds} s")
    return hop // params.STFT_HOP_SAMPLES


def _patches_per_row(samples: int, hop_frames: int) -> int:
    return (samples - params.PATCH_SAMPLES) // (hop_frames * params.STFT_HOP_SAMPLES) + 1


def _interpreter(model: bytes, threads: int, input_shape: tuple[int, ...] | None = None
                 ) -> "Interpreter":
    from ai_edge_litert.interpreter import Interpreter

    try:
        interpreter = Interpreter(model_content=model, num_threads=threads)
        if input_shape is not None:
            interpreter.resize_tensor_input(interpreter.get_input_details()[0]["index"],
                                            input_shape)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise ModelError(f"cannot load the YAMNet graph: {exc}") from None
    return interpreter


class YamnetHead:
    """YAMNet's AudioSet classifier layer (int8 fully-connected, int8 logistic) cut from the
    TFLite file and run by LiteRT on whole batches: the graph's own scores (LiteRT's int8
    kernels took a third of the CPU of the same sums done exactly in float32 numpy)."""

    def __init__(self, graph: YamnetTFLite, class_names: list[str]):
        self.class_names = class_names
        self._input, self._input_width = graph.embedding_quantization, graph.embedding_size
        self._output = graph.file.quantization(SCORES_INT8_TENSOR)
        self._model = graph.file.part(EMBEDDING_TENSOR, SCORES_INT8_TENSOR)
        self._interpreters: dict[int, Interpreter] = {}  # by batch rows
        self._lock = threading.Lock()  # the api scores requests in threads
        classes = graph.file.constant(FC_WEIGHTS_TENSOR).shape[0]
        if len(class_names) != classes:
            raise ModelError(f"class map has {len(class_names)} classes, the model {classes}")
        # Every batch size's interpreter is the same model: its tensors have the same indices.
        first = _interpreter(self._model, 1, (1, self._input_width))  # a bad cut fails here
        self._interpreters[1] = first
        self._in = first.get_input_details()[0]["index"]
        self._out = first.get_output_details()[0]["index"]

    def score(self, embeddings: np.ndarray) -> np.ndarray:
        """float32 [n, 1024] embeddings -> float32 [n, 521] scores."""
        q = self._input.quantize(np.asarray(embeddings, np.float32)).astype(np.int8)
        scores = np.empty((len(q), len(self.class_names)), np.float32)
        with self._lock:
            for start in range(0, len(q), HEAD_MAX_ROWS):
                rows = q[start:start + HEAD_MAX_ROWS]
                scores[start:start + len(rows)] = self._output.dequantize(self._run(rows))
        return scores

    def _run(self, rows: np.ndarray) -> np.ndarray:
        # Batches come in every size: an interpreter per power of two, the rows zero-padded
        # to it, rather than a resize (and a reallocation) at each new size.
        size = 1 << (len(rows) - 1).bit_length()
        interpreter = self._interpreters.get(size)
        if interpreter is None:
            interpreter = _interpreter(self._model, 1, (size, self._input_width))
            self._interpreters[size] = interpreter
        padded = np.zeros((size, self._input_width), np.int8)
        padded[:len(rows)] = rows
        interpreter.set_tensor(self._in, padded)
        interpreter.invoke()
        return interpreter.get_tensor(self._out)[:len(rows)]


def load(folder: Path, threads: int = 1) -> tuple[YamnetTFLite, AudioModel]:
    graph = YamnetTFLite(folder / "yamnet.tflite", threads)
    class_map = ClassMap.from_csv(folder / "yamnet_class_map.csv")
    return graph, AudioModel("yamnet", graph, YamnetHead(graph, class_map.names))
