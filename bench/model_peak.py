"""The bare YAMNet embedder against this CPU's int8 peak: multiply-accumulates per patch (counted
from the .tflite's convolutions and fully connected layers), one single-thread interpreter's CPU
time per patch (as the features worker runs one per core), and what fraction of the core's
nominal int8 peak that is. In the same run, alternating: the embedder on float32 patches, and on
int16 PCM chunks of two patches sharing one STFT (the features worker's call), and the whole
graph with its own front end (LiteRT's framing, FFT and magnitude: what the embedder ran before
it computed them in numpy).

    .venv/bin/python bench/model_peak.py [--seconds 10]
                                         [--out bench/results/issue20/model_peak.json]

The peak is an estimate from /proc/cpuinfo: the nominal clock ("cpu MHz", not the turbo) times
int8 multiply-accumulates per cycle per core: AVX512-VNNI 128 (two 512-bit VPDPBUSD a cycle),
AVX-VNNI or AVX2 64, AMX-INT8 1,024 (Intel's figure for a tile multiply unit). CPU time, not wall
time, is the measure (less moved by other work on a shared machine, not unmoved); the load
average is recorded. Needs SOUNDHIVE_MODELS.
"""

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import machine
import numpy as np
from machine import REPO
from runtimes import clip_patches

from shared import params
from shared.messages import PATCH_HOP_SAMPLES, PATCH_HOP_SECONDS
from shared.models import ModelError
from shared.models.catalog import models_dir
from shared.models.yamnet import YamnetTFLite
from shared.native import quiet_native_stderr

MACS_PER_CYCLE = {"avx512_vnni": 128, "avx_vnni": 64, "avx2": 64, "amx_int8": 1024}


def model_macs(path: Path) -> dict[str, int]:
    """Multiply-accumulates of one patch, by operator kind."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    # Without delegates: every operator stays listed as itself.
    interpreter = Interpreter(
        model_path=str(path),
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    shape = {t["index"]: t["shape"] for t in interpreter.get_tensor_details()}
    macs: dict[str, int] = {}
    for op in interpreter._get_ops_details():  # LiteRT's only listing of them
        kind = op["op_name"]
        if kind not in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            continue
        out, weights = shape[op["outputs"][0]], shape[op["inputs"][1]]
        if kind == "CONV_2D":  # out [1, h, w, c], weights [c, kh, kw, in]
            count = np.prod(out[1:]) * np.prod(weights[1:])
        elif kind == "DEPTHWISE_CONV_2D":  # weights [1, kh, kw, c]
            count = np.prod(out[1:]) * weights[1] * weights[2]
        else:  # weights [out, in]
            count = np.prod(weights) * (out[0] if len(out) > 1 else 1)
        macs[kind] = macs.get(kind, 0) + int(count)
    return macs


def peak_per_core() -> dict[str, float]:
    """Nominal int8 multiply-accumulates per second of one core, by instruction set present."""
    info = Path("/proc/cpuinfo").read_text().splitlines()
    mhz = float(next(line.split(":")[1] for line in info if line.startswith("cpu MHz")))
    flags = set(next(line for line in info if line.startswith("flags")).split(":")[1].split())
    return {"cpu_mhz": mhz, **{name: mhz * 1e6 * per_cycle
                                for name, per_cycle in MACS_PER_CYCLE.items() if name in flags}}


ROUNDS = 3


def cpu_per_patch(seconds: float) -> dict[str, float]:
    """CPU seconds per patch of one single-thread interpreter, over whole passes, of each way
    of running the model: the best of ROUNDS rounds taken in turn."""
    model = YamnetTFLite(models_dir() / "yamnet.tflite")
    patches = clip_patches(64)
    pcm = np.clip(np.round(patches * params.PCM_FULL_SCALE), -32768, 32767).astype(np.int16)
    # Chunks as capture cuts them: a patch and the first half of the next.
    pairs = pcm[:len(pcm) // 2 * 2]
    chunks = np.concatenate([pairs[0::2], pairs[1::2, -PATCH_HOP_SAMPLES:]], axis=1)
    ways: dict[str, Callable[[], object]] = {
        "embedder, float32 patches": lambda: model.embed_int8(patches),
        "embedder, int16 PCM chunks": lambda: model.embed_int8(chunks, PATCH_HOP_SECONDS),
        "whole graph, its own front end": lambda: model.whole_model_embeddings(patches),
    }
    best = {name: float("inf") for name in ways}
    for _ in range(ROUNDS):
        for name, run in ways.items():
            run()  # warm-up
            done, cpu, started = 0, time.process_time(), time.perf_counter()
            while done == 0 or time.perf_counter() - started < seconds / ROUNDS:
                run()
                done += len(patches)
            best[name] = min(best[name], (time.process_time() - cpu) / done)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/issue20/model_peak.json",
                        help="write the JSON report here (default: %(default)s)")
    args = parser.parse_args()
    quiet_native_stderr()
    macs = model_macs(models_dir() / "yamnet.tflite")
    per_patch = sum(macs.values())
    ways = cpu_per_patch(args.seconds)
    cpu = ways["embedder, int16 PCM chunks"]
    achieved = per_patch / cpu  # MAC/s of one core
    peaks = peak_per_core()
    report = {"machine": machine.describe(),
              "command": {"argv": sys.argv[1:], "commit": machine.git_commit()},
              "macs_per_patch": per_patch, "macs_by_op": macs,
              "cpu_ms_per_patch": 1000 * cpu, "patches_per_core_s": 1 / cpu,
              "cpu_ms_per_patch_by_way": {name: 1000 * value for name, value in ways.items()},
              "achieved_gmacs_per_core": achieved / 1e9, "peak_gmacs_per_core": {
                  name: value / 1e9 for name, value in peaks.items() if name != "cpu_mhz"},
              "cpu_mhz": peaks["cpu_mhz"],
              "fraction_of_peak": {name: achieved / value for name, value in peaks.items()
                                   if name != "cpu_mhz"},
              "load_average": [round(x, 2) for x in os.getloadavg()]}
    print(f"YAMNet: {per_patch / 1e6:.1f} M MACs per patch; {1000 * cpu:.2f} ms of CPU per patch "
          f"(1 thread) = {achieved / 1e9:.0f} GMAC/s per core; of the nominal int8 peak: "
          + ", ".join(f"{name} {fraction:.0%}"
                      for name, fraction in report["fraction_of_peak"].items())
          + f"; load {report['load_average'][0]:.1f}", file=sys.stderr)
    for name, value in ways.items():
        print(f"  {name}: {1000 * value:.3f} ms of CPU per patch", file=sys.stderr)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    try:
        main()
    except ModelError as exc:
        sys.exit(f"error: {exc}")
