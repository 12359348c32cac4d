"""YAMNet from its int8 TFLite file, run with LiteRT, split into embedder and AudioSet head.

The file holds one graph (waveform -> 521 scores). The embedder runs that graph and reads the
1024-d embedding tensor that feeds the classifier layer; the head re-does the last two layers
(int8 fully-connected, int8 logistic) in numpy with the file's own weights and quantisation, so
that split scores equal the whole graph's scores exactly.

Threads: the graph takes one patch per call, too little work for LiteRT's own threads to share
(on 2 cores, two threads in one interpreter ran 11 % faster than one). So `threads`
single-threaded interpreters each take a share of the patches instead (93 % faster with two):
LiteRT releases the GIL while it runs. bench/runtimes.py measures the choices (docs/benchmarks.md).
"""

import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from shared import params
from shared.labels import ClassMap
from shared.models.base import AudioModel, ModelError

if TYPE_CHECKING:
    from ai_edge_litert.interpreter import Interpreter

INPUT_TENSOR = "waveform_binary"
LOG_MEL_TENSOR = "log_mel_spectrogram"
EMBEDDING_TENSOR = "tower0/network/layer28/reduce_mean"
FC_WEIGHTS_TENSOR = "tower0/network/layer29/fc/MatMul"
FC_BIAS_TENSOR = "network/layer29/fc/biases"
FC_OUTPUT_TENSOR = "tower0/network/layer29/fc/MatMul;tower0/network/layer29/fc/BiasAdd"
SCORES_INT8_TENSOR = "tower0/network/layer32/final_output1"


@dataclass(frozen=True)
class Quantization:
    scale: float
    zero_point: int

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        return ((q.astype(np.float32) - self.zero_point) * self.scale).astype(np.float32)

    def quantize(self, x: np.ndarray) -> np.ndarray:
        return np.clip(_round_half_away(x / self.scale) + self.zero_point, -128, 127)


def _round_half_away(x: np.ndarray) -> np.ndarray:
    """TFLite's rounding (std::round), not numpy's round-half-to-even."""
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


class YamnetTFLite:
    """The whole TFLite graph. `embed` is the Embedder; `whole_model_scores` is the reference."""

    name = "yamnet"
    embedding_size = params.YAMNET_EMBEDDING_SIZE
    patch_hop_seconds = params.DEFAULT_PATCH_HOP_SECONDS

    def __init__(self, tflite_path: Path, threads: int = 1, threads_each: int = 1):
        """`threads` interpreters share the patches; `threads_each` are LiteRT's own threads in
        each (1 is fastest for this graph; bench/runtimes.py measures more)."""
        if threads < 1 or threads_each < 1:
            raise ValueError(f"threads must be at least 1, got {threads} and {threads_each}")
        self._interpreters = [_interpreter(tflite_path, threads_each) for _ in range(threads)]
        self._interpreter = self._interpreters[0]  # constants, the head's weights, checks
        self._pool = ThreadPoolExecutor(threads, "yamnet") if threads > 1 else None
        self._busy = threading.Lock()  # one call at a time (the api serves requests in threads)
        self._tensors = {t["name"]: t for t in self._interpreter.get_tensor_details()}
        for required in (INPUT_TENSOR, EMBEDDING_TENSOR, FC_WEIGHTS_TENSOR, SCORES_INT8_TENSOR):
            if required not in self._tensors:
                raise ModelError(f"{tflite_path} is not the YAMNet classification TFLite")
        self._input = self._tensors[INPUT_TENSOR]["index"]
        self._output = self._interpreter.get_output_details()[0]["index"]
        self.embedding_quantization = self.quantization(EMBEDDING_TENSOR)

    def quantization(self, tensor_name: str) -> Quantization:
        scale, zero_point = self._tensors[tensor_name]["quantization"]
        return Quantization(float(scale), int(zero_point))

    def constant(self, tensor_name: str) -> np.ndarray:
        return self._interpreter.get_tensor(self._tensors[tensor_name]["index"])

    def _run(self, interpreter: "Interpreter", patch: np.ndarray) -> None:
        if patch.shape != (params.PATCH_SAMPLES,):
            raise ValueError(f"a YAMNet patch is {params.PATCH_SAMPLES} samples, got {patch.shape}")
        interpreter.set_tensor(self._input, patch.astype(np.float32, copy=False))
        interpreter.invoke()

    def _each_patch(self, patches: np.ndarray, tensor_name: str) -> np.ndarray:
        """The tensor's value for every patch, [n, size]; the patches are shared out in
        contiguous runs among the interpreters."""
        if len(patches) == 0:
            return np.empty((0, 0))
        shares = [s for s in np.array_split(patches, len(self._interpreters)) if len(s)]
        with self._busy:
            if len(shares) == 1:
                return self._share(self._interpreter, shares[0], tensor_name)
            assert self._pool is not None
            runs = self._pool.map(self._share, self._interpreters, shares,
                                  [tensor_name] * len(shares))
            return np.concatenate(list(runs))

    def _share(self, interpreter: "Interpreter", patches: np.ndarray, tensor_name: str
               ) -> np.ndarray:
        index = self._tensors[tensor_name]["index"]
        rows = []
        for patch in patches:
            self._run(interpreter, patch)
            rows.append(interpreter.get_tensor(index).reshape(-1).copy())
        return np.stack(rows)

    def embed(self, patches: np.ndarray) -> np.ndarray:
        return self.embedding_quantization.dequantize(self.embed_int8(patches)[0])

    def embed_int8(self, patches: np.ndarray) -> tuple[np.ndarray, tuple[float, int]]:
        q = self._each_patch(patches, EMBEDDING_TENSOR)
        if q.size == 0:
            q = np.empty((0, self.embedding_size), np.int8)
        quantization = self.embedding_quantization
        return q, (quantization.scale, quantization.zero_point)

    def whole_model_scores(self, patches: np.ndarray) -> np.ndarray:
        with self._busy:
            rows = []
            for patch in patches:
                self._run(self._interpreter, patch)
                rows.append(self._interpreter.get_tensor(self._output)[0].copy())
        return np.stack(rows).astype(np.float32)

    def log_mel(self, patch: np.ndarray) -> np.ndarray:
        """The graph's own [96, 64] log-mel spectrogram of one patch (to check our front end)."""
        return self._each_patch(patch[None], LOG_MEL_TENSOR).reshape(
            params.PATCH_FRAMES, params.MEL_BANDS
        )


def _interpreter(tflite_path: Path, threads: int) -> "Interpreter":
    from ai_edge_litert.interpreter import Interpreter

    try:
        with warnings.catch_warnings():
            # Reading the embedding tensor needs intermediate tensors kept; YAMNet is small.
            warnings.simplefilter("ignore", UserWarning)
            interpreter = Interpreter(model_path=str(tflite_path), num_threads=threads,
                                      experimental_preserve_all_tensors=True)
            interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise ModelError(f"cannot load {tflite_path}: {exc}") from None
    return interpreter


class YamnetHead:
    """YAMNet's AudioSet classifier layer, integer-exact, from the TFLite file's weights."""

    def __init__(self, graph: YamnetTFLite, class_names: list[str]):
        self.class_names = class_names
        self._input = graph.embedding_quantization
        # The int8 products are summed exactly by BLAS in float32 (20x faster than numpy's
        # int64 matmul; float64 read twice the bytes, most of the cost of a chunk's two
        # patches): over parts of the embedding short enough that every partial sum is an
        # integer float32 holds exactly (|x - zero point| <= 255, so |sum| <= 2**24), the
        # parts' sums then added in float64.
        weights = graph.constant(FC_WEIGHTS_TENSOR).astype(np.float64)  # [C, D]
        weights_t = (weights - graph.quantization(FC_WEIGHTS_TENSOR).zero_point).T
        part = 2**24 // (255 * max(1, int(np.abs(weights_t).max())))
        self._parts = [(start, np.ascontiguousarray(weights_t[start:start + part], np.float32))
                       for start in range(0, len(weights_t), part)]
        self._bias = graph.constant(FC_BIAS_TENSOR).astype(np.float64)
        fc_out = graph.quantization(FC_OUTPUT_TENSOR)
        self._fc_out = fc_out
        self._requantize = (
            self._input.scale * graph.quantization(FC_WEIGHTS_TENSOR).scale / fc_out.scale
        )
        # int8 logistic is a lookup table over the 256 possible inputs, as in TFLite.
        levels = np.arange(-128, 128)
        probabilities = 1.0 / (1.0 + np.exp(-fc_out.dequantize(levels).astype(np.float64)))
        out = graph.quantization(SCORES_INT8_TENSOR)
        self._logistic = out.dequantize(out.quantize(probabilities))
        if len(class_names) != weights.shape[0]:
            raise ModelError(
                f"class map has {len(class_names)} classes, the model {weights.shape[0]}"
            )

    def score(self, embeddings: np.ndarray) -> np.ndarray:
        x = self._input.quantize(np.asarray(embeddings, np.float32)).astype(np.float32) \
            - np.float32(self._input.zero_point)
        acc = np.broadcast_to(self._bias, (len(x), len(self._bias))).copy()
        for start, weights in self._parts:
            acc += x[:, start:start + len(weights)] @ weights
        logits_q = np.clip(
            _round_half_away(acc * self._requantize) + self._fc_out.zero_point, -128, 127
        ).astype(np.int64)
        return self._logistic[logits_q + 128].astype(np.float32)


def load(folder: Path, threads: int = 1) -> tuple[YamnetTFLite, AudioModel]:
    graph = YamnetTFLite(folder / "yamnet.tflite", threads)
    class_map = ClassMap.from_csv(folder / "yamnet_class_map.csv")
    return graph, AudioModel("yamnet", graph, YamnetHead(graph, class_map.names))
