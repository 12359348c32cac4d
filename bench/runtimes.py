"""Inference runtimes on the same model and machine, in one run: patches/s, and how far each
one's scores are from the reference.

    .venv/bin/python bench/runtimes.py [--seconds 5] [--out bench/results/runtimes.json]

YAMNet (the int8 .tflite in $SOUNDHIVE_MODELS), on real clips' patches at the 0.48 s hop:
  - LiteRT, one interpreter with 1 and with every core's threads (XNNPACK);
  - LiteRT, one single-thread interpreter per core sharing the patches (the features worker);
  - OpenVINO reading the .tflite directly (latency hint; throughput hint with async requests);
  - ONNX Runtime on a tf2onnx conversion of the .tflite (one session; one session per core).
Each runtime's embeddings go through YAMNet's AudioSet head (the graph's own layers); "score
diff" is the largest absolute difference to the reference scores (LiteRT, one interpreter) over
every patch and class.

VGGish: the full-size network in fp32 TensorFlow against int8 and fp32 LiteRT conversions
(post-training quantisation calibrated on the clips' log-mels). No VGGish checkpoint ships here,
so its weights are seeded He-scaled stand-ins, as the tests write them: the speed is VGGish's, the
int8 error only indicates what real weights would give. VGGish has no AudioSet head, so its
difference is measured on the embeddings (relative error; release uint8 codes that change).

Needs the bench extra (pip install -e '.[bench,tensorflow]'; ./scripts/install.sh installs both).
"""

import argparse
import contextlib
import io
import json
import logging
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import machine
import numpy as np
from machine import CLIPS, REPO

from shared import params
from shared.audio import find_audio_files, frame_patches, load_audio
from shared.config import usable_cpus
from shared.models import ModelError, load_model
from shared.models.catalog import models_dir
from shared.models.yamnet import EMBEDDING_TENSOR, YamnetHead, YamnetTFLite
from shared.native import quiet_native_stderr

CORES = usable_cpus()
Embed = Callable[[np.ndarray], np.ndarray]  # patches [n, 15600] -> embeddings [n, 1024]


def clip_patches(minimum: int) -> np.ndarray:
    patches = np.concatenate([frame_patches(load_audio(path), params.DEFAULT_PATCH_HOP_SECONDS)
                              for path in find_audio_files(CLIPS)])
    return np.concatenate([patches] * -(-minimum // len(patches)))


def rate(embed: Embed, patches: np.ndarray, seconds: float) -> tuple[float, np.ndarray]:
    """Patches/s of `embed` over whole passes (at least one) for about `seconds`, and its
    embeddings (from an untimed first pass, which also warms it up)."""
    out = embed(patches)
    done, started = 0, time.perf_counter()
    while done == 0 or time.perf_counter() - started < seconds:
        embed(patches)
        done += len(patches)
    return done / (time.perf_counter() - started), out


def shared_out(embeds: list[Embed]) -> Embed:
    """Several single-thread engines, each taking a contiguous share of the patches."""
    pool = ThreadPoolExecutor(len(embeds))

    def embed(patches: np.ndarray) -> np.ndarray:
        shares = np.array_split(patches, len(embeds))
        return np.concatenate(list(pool.map(lambda f, s: f(s), embeds, shares)))

    return embed


# --- YAMNet: OpenVINO -----------------------------------------------------------------------

def openvino_model(path: Path):
    """The .tflite read by OpenVINO, with the embedding (the classifier layer's input) as an
    output: the frontend keeps no TFLite tensor names inside the graph, so it is found as the
    first input of the graph's last MatMul."""
    import openvino as ov

    core = ov.Core()
    model = core.read_model(path)
    last_matmul = [op for op in model.get_ordered_ops() if op.get_type_name() == "MatMul"][-1]
    embedding = last_matmul.input(0).get_source_output()
    embedding.get_tensor().set_names({EMBEDDING_TENSOR})
    model.add_outputs([embedding])
    return core, model


def openvino_latency(path: Path, threads: int) -> Embed:
    core, model = openvino_model(path)
    compiled = core.compile_model(model, "CPU", {"PERFORMANCE_HINT": "LATENCY",
                                                 "INFERENCE_NUM_THREADS": threads})
    request = compiled.create_infer_request()
    output = compiled.output(EMBEDDING_TENSOR)

    def embed(patches: np.ndarray) -> np.ndarray:
        return np.stack([request.infer({0: p})[output].reshape(-1).copy() for p in patches])

    return embed


def openvino_throughput(path: Path, threads: int) -> Embed:
    import openvino as ov

    core, model = openvino_model(path)
    compiled = core.compile_model(model, "CPU", {"PERFORMANCE_HINT": "THROUGHPUT",
                                                 "INFERENCE_NUM_THREADS": threads})
    queue = ov.AsyncInferQueue(compiled, compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
    output = compiled.output(EMBEDDING_TENSOR)

    def embed(patches: np.ndarray) -> np.ndarray:
        rows: list[np.ndarray | None] = [None] * len(patches)

        def done(request, index: int) -> None:
            rows[index] = request.get_tensor(output).data.reshape(-1).copy()

        queue.set_callback(done)
        for index, patch in enumerate(patches):
            queue.start_async({0: patch}, index)
        queue.wait_all()
        return np.stack(rows)

    return embed


# --- YAMNet: ONNX Runtime -------------------------------------------------------------------

def onnx_file(path: Path, cache: Path) -> bytes:
    """tf2onnx's conversion of the .tflite (cached), with the embedding as a second output."""
    import onnx

    converted = cache / f"{path.stem}-{path.stat().st_size}.onnx"
    if not converted.exists():
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "tf2onnx.convert", "--tflite", str(path),
                        "--output", str(converted), "--opset", "17"],
                       check=True, capture_output=True)
    model = onnx.load(converted)
    model.graph.output.append(
        onnx.helper.make_tensor_value_info(EMBEDDING_TENSOR, onnx.TensorProto.INT8, None))
    return model.SerializeToString()


def onnxruntime_session(model: bytes, threads: int, quantization) -> Embed:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    source = session.get_inputs()[0].name

    def embed(patches: np.ndarray) -> np.ndarray:
        rows = [session.run([EMBEDDING_TENSOR], {source: p})[0].reshape(-1) for p in patches]
        return quantization.dequantize(np.stack(rows))

    return embed


def yamnet_runtimes(seconds: float, patches: np.ndarray) -> list[dict]:
    path = models_dir() / "yamnet.tflite"
    model = load_model("yamnet")
    head = model.head
    assert isinstance(head, YamnetHead) and isinstance(model.embedder, YamnetTFLite)
    reference = head.score(model.embedder.embed(patches))
    quantization = model.embedder.embedding_quantization
    cache = Path(tempfile.gettempdir()) / "soundhive-bench"
    candidates: list[tuple[str, Callable[[], Embed]]] = [
        ("LiteRT, 1 interpreter x 1 thread", lambda: YamnetTFLite(path).embed),
        (f"LiteRT, 1 interpreter x {CORES} threads",
         lambda: YamnetTFLite(path, threads_each=CORES).embed),
        (f"LiteRT, {CORES} interpreters x 1 thread (features worker)",
         lambda: YamnetTFLite(path, CORES).embed),
        (f"OpenVINO, latency hint, {CORES} threads", lambda: openvino_latency(path, CORES)),
        (f"OpenVINO, throughput hint, {CORES} threads", lambda: openvino_throughput(path, CORES)),
        ("ONNX Runtime, 1 session x 1 thread",
         lambda: onnxruntime_session(onnx_file(path, cache), 1, quantization)),
        (f"ONNX Runtime, 1 session x {CORES} threads",
         lambda: onnxruntime_session(onnx_file(path, cache), CORES, quantization)),
        (f"ONNX Runtime, {CORES} sessions x 1 thread", lambda: shared_out(
            [onnxruntime_session(onnx_file(path, cache), 1, quantization)
             for _ in range(CORES)])),
    ]
    results = []
    for name, make in candidates:
        try:
            embed = make()
        except Exception as exc:  # a runtime that cannot load this model is a result too
            results.append({"runtime": name, "error": f"{type(exc).__name__}: {exc}"[:300]})
            print(f"{name:55s} cannot run: {results[-1]['error']}", file=sys.stderr)
            continue
        patches_per_s, embeddings = rate(embed, patches, seconds)
        scores = head.score(embeddings)
        result = {"runtime": name, "patches_per_s": patches_per_s,
                  "max_score_diff": float(np.abs(scores - reference).max()),
                  "top1_agreement": float(np.mean(scores.argmax(1) == reference.argmax(1)))}
        results.append(result)
        print(f"{name:55s} {patches_per_s:7.0f} patches/s, max score diff "
              f"{result['max_score_diff']:.4f}, same top label {result['top1_agreement']:.1%}",
              file=sys.stderr)
    return results


# --- VGGish: fp32 TensorFlow against LiteRT conversions ------------------------------------

def vggish_stand_in():
    """Full-size VGGish with seeded He-scaled weights (real checkpoints are not on this disk)."""
    import keras

    from shared.models import vggish

    model = vggish.build_vggish()
    kernels = keras.initializers.HeNormal(seed=7)
    biases = keras.initializers.RandomNormal(stddev=0.1, seed=8)
    for name, variable in vggish.checkpoint_variables(model).items():
        init = kernels if name.endswith("/weights") else biases
        variable.assign(init(variable.shape))
    return model


def litert_batched(model_bytes: bytes, threads: int, batch: int) -> Callable:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model_bytes, num_threads=threads)
    source = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(source, [batch, params.PATCH_FRAMES, params.MEL_BANDS, 1])
    interpreter.allocate_tensors()
    target = interpreter.get_output_details()[0]["index"]

    def run(log_mels: np.ndarray) -> np.ndarray:
        out = []
        for start in range(0, len(log_mels), batch):
            part = log_mels[start:start + batch]
            padded = np.zeros((batch, *part.shape[1:], 1), np.float32)
            padded[:len(part), ..., 0] = part
            interpreter.set_tensor(source, padded)
            interpreter.invoke()
            out.append(interpreter.get_tensor(target)[:len(part)].copy())
        return np.concatenate(out)

    return run


def vggish_runtimes(seconds: float, patches: np.ndarray) -> list[dict]:
    import tensorflow as tf

    from shared.models import vggish

    logging.getLogger("absl").setLevel(logging.ERROR)  # the converter's lists of tensors
    tf.get_logger().setLevel(logging.ERROR)
    model = vggish_stand_in()
    log_mels = vggish.log_mel_of_patches(patches)
    tensorflow = vggish.VGGishEmbedder(model, vggish.PcaParams(np.eye(128), np.zeros((128, 1))))
    calibration = log_mels[:: max(1, len(log_mels) // 100)]

    def convert(int8: bool) -> bytes:
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        if int8:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = lambda: ([m[None, ..., None]] for m in calibration)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        with contextlib.redirect_stdout(io.StringIO()):  # it prints the saved model's signature
            return converter.convert()

    candidates: list[tuple[str, Callable[[], Callable]]] = [
        (f"TensorFlow fp32 (batch 64, {CORES} threads)", lambda: tensorflow.network_embeddings),
        (f"LiteRT fp32 (batch 32, {CORES} threads)",
         lambda: litert_batched(convert(False), CORES, 32)),
        (f"LiteRT int8 (batch 32, {CORES} threads)",
         lambda: litert_batched(convert(True), CORES, 32)),
    ]
    reference = tensorflow.network_embeddings(log_mels)
    results = []
    for name, make in candidates:
        patches_per_s, embeddings = rate(make(), log_mels, seconds)
        error = np.linalg.norm(embeddings - reference, axis=1) / np.linalg.norm(reference, axis=1)
        cosine = np.sum(embeddings * reference, 1) / (
            np.linalg.norm(embeddings, axis=1) * np.linalg.norm(reference, axis=1))
        result = {"runtime": name, "patches_per_s": patches_per_s,
                  "max_relative_error": float(error.max()),
                  "min_cosine_similarity": float(cosine.min())}
        results.append(result)
        print(f"{name:55s} {patches_per_s:7.1f} patches/s, relative error max "
              f"{result['max_relative_error']:.4f}, cosine min "
              f"{result['min_cosine_similarity']:.5f}", file=sys.stderr)
    return results


def markdown(rows: list[dict], columns: dict[str, str]) -> str:
    lines = ["| runtime | patches/s | " + " | ".join(columns.values()) + " |",
             "|---|---:|" + "---:|" * len(columns)]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['runtime']} | cannot run: {row['error'][:80]} |")
            continue
        values = " | ".join(f"{row[key]:.4g}" for key in columns)
        lines.append(f"| {row['runtime']} | {row['patches_per_s']:.0f} | {values} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="timing per runtime")
    parser.add_argument("--patches", type=int, default=512, help="YAMNet patches per pass")
    parser.add_argument("--vggish-patches", type=int, default=128)
    parser.add_argument("--no-vggish", action="store_true", help="YAMNet only (no TensorFlow)")
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/runtimes.json",
                        help="write the JSON report here (default: %(default)s)")
    args = parser.parse_args()
    if args.patches < 1 or args.vggish_patches < 1 or args.seconds <= 0:
        parser.error("--patches and --vggish-patches must be at least 1, --seconds positive")
    quiet_native_stderr()
    warnings.simplefilter("ignore")
    patches = clip_patches(args.patches)[:args.patches]
    report = {
        "machine": machine.describe(),
        "yamnet": yamnet_runtimes(args.seconds, patches),
    }
    if not args.no_vggish:
        report["vggish"] = vggish_runtimes(args.seconds, patches[:args.vggish_patches])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(markdown(report["yamnet"], {"max_score_diff": "max score diff",
                                      "top1_agreement": "same top label (fraction)"}))
    if "vggish" in report:
        print(markdown(report["vggish"], {"max_relative_error": "max relative error",
                                          "min_cosine_similarity": "min cosine"}))


if __name__ == "__main__":
    try:
        main()
    except ModelError as exc:
        sys.exit(f"error: {exc}")
    except KeyboardInterrupt:
        sys.exit(130)
