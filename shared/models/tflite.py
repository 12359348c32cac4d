"""A TFLite file read with LiteRT's own flatbuffer schema: tensors by name, their constants and
int8 quantisation, and parts of its graph cut out as models of their own (YAMNet's embedder
runs its graph from the STFT magnitudes on: shared/models/yamnet.py)."""

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shared.models.base import ModelError

# TFLite's TensorType codes of the constants read here.
_DTYPES = {0: np.float32, 2: np.int32, 9: np.int8}


@dataclass(frozen=True)
class Quantization:
    scale: float
    zero_point: int

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        return ((q.astype(np.float32) - self.zero_point) * self.scale).astype(np.float32)

    def quantize(self, x: np.ndarray) -> np.ndarray:
        return np.clip(round_half_away(x / self.scale) + self.zero_point, -128, 127)


def round_half_away(x: np.ndarray) -> np.ndarray:
    """TFLite's rounding (std::round), not numpy's round-half-to-even."""
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


class TFLiteFile:
    """A one-graph TFLite file as LiteRT's flatbuffer schema reads it: its tensors by name,
    their constants and quantisation, and parts of the graph cut out as models of their own."""

    def __init__(self, path: Path, required: tuple[str, ...] = ()):
        from ai_edge_litert import schema_py_generated as schema

        self.path = path
        try:
            self._model = schema.ModelT.InitFromObj(
                schema.Model.GetRootAsModel(path.read_bytes(), 0))
            self._graph = self._model.subgraphs[0]
            self._index = {t.name.decode(): i for i, t in enumerate(self._graph.tensors)}
        except Exception:  # the generated reader fails in many ways on a file not its format
            raise ModelError(f"cannot load {path}: not a TFLite model") from None
        missing = [name for name in required if name not in self._index]
        if missing:
            raise ModelError(f"{path} is not the expected TFLite graph (no {missing[0]!r})")

    def _tensor(self, name: str) -> Any:
        return self._graph.tensors[self._index[name]]

    def constant(self, name: str) -> np.ndarray:
        tensor = self._tensor(name)
        data = self._model.buffers[tensor.buffer].data
        if data is None or tensor.type not in _DTYPES:
            raise ModelError(f"{self.path}: {name!r} is not a constant this model can read")
        return np.asarray(data, np.uint8).view(_DTYPES[tensor.type]).reshape(tensor.shape)

    def quantization(self, name: str) -> Quantization:
        found = self._tensor(name).quantization
        if found is None or found.scale is None or len(found.scale) != 1:
            raise ModelError(f"{self.path}: {name!r} is not quantised per tensor")
        return Quantization(float(found.scale[0]), int(found.zeroPoint[0]))

    def part(self, first: str, last: str) -> bytes:
        """The graph from tensor `first` (its input) to tensor `last` (its output): the
        operators from the first that reads `first` to the one that writes `last`."""
        import flatbuffers

        start, end = self._index[first], self._index[last]
        operators = self._graph.operators
        begin = next((i for i, op in enumerate(operators) if start in op.inputs), None)
        written = next((i for i, op in enumerate(operators) if end in op.outputs), None)
        if begin is None or written is None or written < begin:
            raise ModelError(f"{self.path}: no operators lead from {first!r} to {last!r}")
        stop = written + 1
        known = {start} | {i for i, t in enumerate(self._graph.tensors)
                           if self._model.buffers[t.buffer].data is not None}
        for op in operators[begin:stop]:
            if any(i >= 0 and i not in known for i in op.inputs):
                raise ModelError(f"{self.path}: {last!r} needs more than {first!r}")
            known.update(op.outputs)
        graph = copy.copy(self._graph)
        graph.inputs, graph.outputs = np.array([start], np.int32), np.array([end], np.int32)
        graph.operators = operators[begin:stop]
        model = copy.copy(self._model)
        model.subgraphs = [graph]
        builder = flatbuffers.Builder(0)
        builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
        return bytes(builder.Output())
