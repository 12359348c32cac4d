"""Message and state (de)serialisation cost: per message type, the µs to encode and to decode
(with all checks) one typical message, and what the messages of one chunk cost at 700 live
sources (700 chunks/s), in % of one CPU core.

    .venv/bin/python bench/messages_speed.py --label after [--sources 700]

Per chunk of a source the pipeline writes and reads one PcmChunk (capture -> features), one
Embeddings (features -> classifier), one Prediction (classifier -> api) and the classifier's
SourceState (read and written in its transaction); events, statuses and dead letters are rarer
and shown per message only. Merges `{label: figures}` into bench/results/messages_speed.json.
"""

import argparse
import json
import timeit
from collections.abc import Callable
from pathlib import Path

import machine
import numpy as np

from services.classifier.events import OpenEvent, TrackState
from services.classifier.sequencer import SourceState
from shared.messages import (
    CHUNK_SAMPLES,
    DeadLetter,
    Embeddings,
    Event,
    PcmChunk,
    Prediction,
    SinkStatus,
    SourceStatus,
)

RESULTS = Path(__file__).resolve().parent / "results" / "messages_speed.json"
PER_CHUNK = ("PcmChunk", "Embeddings", "Prediction", "SourceState")


def examples() -> dict[str, tuple[Callable[[], bytes], Callable[[bytes], object]]]:
    """name -> (encode one example, decode bytes)."""
    rng = np.random.default_rng(0)
    chunk = PcmChunk.from_samples("mic1", "s1", 7, 1.7e9, 6.72,
                                  rng.uniform(-0.5, 0.5, CHUNK_SAMPLES).astype(np.float32), False)
    embeddings = Embeddings.of(chunk, "yamnet", rng.standard_normal((2, 1024), np.float32))
    prediction = Prediction("mic1", "s1", 7, 1.7e9, 6.72, 0.1, "yamnet",
                            [(f"Label {i}", 0.9 - i / 10) for i in range(5)], 1.7e9 + 1)
    event = Event("mic1/Bark/1700000000500", "mic1", "Bark", "end", 0.91, 6.72, 8.1, 1.7e9,
                  1.7e9 + 1.4, "yamnet", ["Dog", "Domestic animals, pets", "Animal"])
    state = SourceState("s1", next_seq=8, old_sessions=["s0"])
    state.track = TrackState({"Bark": OpenEvent("Bark", "Dog", 6.72, 1.7e9, 7.2, 8.1, 1.7e9 + 1.4,
                                                0.91)}, -52.0, [-50] * 16, {"Bark": 3, "Dog": 3})
    messages = {
        "PcmChunk": chunk, "Embeddings": embeddings, "Prediction": prediction, "Event": event,
        "SourceStatus": SourceStatus("mic1", "running", "", 0.1, 7, 1.7e9),
        "SinkStatus": SinkStatus("mqtt", "connected", "", 1.7e9, 30, 1, 0, 1.7e9),
        "DeadLetter": DeadLetter.now("soundhive:pcm", "features", "1-0", "bad", 1,
                                     chunk.encode()),
    }
    found = {name: (m.encode, type(m).decode) for name, m in messages.items()}
    found["SourceState"] = (state.dumps, SourceState.loads)
    return found


def microseconds(call: Callable[[], object]) -> float:
    """Best of 5 runs of about 0.2 s each, per call."""
    number, _ = timeit.Timer(call).autorange()
    return min(timeit.repeat(call, number=number, repeat=5)) / number * 1e6


def measure(sources: int) -> dict:
    per_type = {}
    for name, (encode, decode) in examples().items():
        raw = encode()
        assert decode(raw) is not None
        per_type[name] = {"bytes": len(raw), "encode_us": round(microseconds(encode), 2),
                          "decode_us": round(microseconds(lambda d=decode, r=raw: d(r)), 2)}
    chunk_us = sum(per_type[n]["encode_us"] + per_type[n]["decode_us"] for n in PER_CHUNK)
    return {"machine": machine.describe(), "commit": machine.git_commit(), "per_type": per_type,
            "per_chunk_us": round(chunk_us, 2), "sources": sources,
            "cpu_percent_at_sources": round(chunk_us * sources / 1e6 * 100, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--label", required=True, help="key of this run in the results file")
    parser.add_argument("--sources", type=int, default=700, help="live sources, 1 chunk/s each")
    args = parser.parse_args()
    figures = measure(args.sources)
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    RESULTS.write_text(json.dumps({**results, args.label: figures}, indent=2) + "\n")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
