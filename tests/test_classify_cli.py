"""`soundhive classify` and `soundhive eval-clips`, run as a user runs them."""

import json
import re
import subprocess
import sys

import pytest
from audio_bombs import silent_flac

LABELS_LINE = re.compile(r"^[^:]+: \d\.\d\d(, [^\n]+: \d\.\d\d)*$")
LABEL = re.compile(r"(.+?): (\d\.\d\d)(?:, |$)")


def label_names(line: str) -> list[str]:
    return [name for name, _ in LABEL.findall(line.strip())]


def soundhive(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "soundhive", *args], capture_output=True, text=True, timeout=300
    )


def test_dog_is_among_the_top_labels(clips_dir):
    run = soundhive("classify", str(clips_dir / "dog.mp3"))
    assert run.returncode == 0, run.stderr
    line = run.stdout.strip()
    assert LABELS_LINE.match(line), line
    assert "Dog" in label_names(line)


def test_json_lines_with_the_contract_fields(clips_dir):
    run = soundhive(
        "classify",
        "--json",
        "--top",
        "3",
        str(clips_dir / "dog.mp3"),
        str(clips_dir / "speech.wav"),
    )
    assert run.returncode == 0, run.stderr
    rows = [json.loads(line) for line in run.stdout.splitlines()]
    assert [r["file"].rsplit("/", 1)[-1] for r in rows] == ["dog.mp3", "speech.wav"]
    speech = rows[1]
    assert speech["model"] == "yamnet" and 4.2 < speech["duration_s"] < 4.3
    assert speech["labels"][0]["label"] == "Speech" and len(speech["labels"]) == 3
    scores = [label["score"] for label in speech["labels"]]
    assert scores == sorted(scores, reverse=True)


def test_threshold_and_timeline(clips_dir):
    run = soundhive("classify", "--threshold", "0.5", "--timeline", str(clips_dir / "speech.wav"))
    assert run.returncode == 0, run.stderr
    summary, *rows = run.stdout.splitlines()
    assert label_names(summary) == ["Speech"]  # only Speech reaches 0.5
    assert len(rows) == 8  # 4.27 s: patches every 0.48 s, the tail padded
    assert rows[0].strip().startswith("0.00s") and rows[1].strip().startswith("0.48s")


def test_folder_is_classified_file_by_file(clips_dir):
    run = soundhive("classify", "--top", "1", str(clips_dir))
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert len(lines) == 17  # the 16 labelled clips and two_heads.wav
    assert any(line.endswith("speech.wav: Speech: 0.98") for line in lines)


def test_plot_writes_a_png(clips_dir, tmp_path):
    target = tmp_path / "dog.png"
    run = soundhive("classify", "--plot", str(target), str(clips_dir / "dog.mp3"))
    assert run.returncode == 0, run.stderr
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and target.stat().st_size > 20_000


def test_specific_view_prefers_dog_over_animal(clips_dir):
    run = soundhive("classify", "--specific", "--top", "4", str(clips_dir / "dog.mp3"))
    assert label_names(run.stdout) == ["Bark", "Dog", "Domestic animals, pets", "Animal"]


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "empty file"), (b"hello, not audio" * 100, "not a readable audio file")],
)
def test_bad_files_fail_in_one_line_with_status_2(tmp_path, content, message):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(content)
    run = soundhive("classify", str(bad))
    assert run.returncode == 2
    assert run.stderr.strip().count("\n") == 0 and message in run.stderr
    assert "Traceback" not in run.stderr


def test_good_files_are_still_classified_beside_a_bad_one(clips_dir, tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"")
    run = soundhive("classify", str(bad), str(clips_dir / "speech.wav"))
    assert run.returncode == 2
    assert "Speech" in run.stdout and "empty file" in run.stderr


def test_files_over_max_audio_s_are_skipped_in_one_line_each(clips_dir, tmp_path):
    declared = silent_flac(tmp_path / "declared.flac", 3600)
    undeclared = silent_flac(tmp_path / "undeclared.flac", 3600, declared=False)
    run = soundhive("classify", "--max-audio-s", "60", str(declared), str(clips_dir / "dog.mp3"),
                    str(undeclared))
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        f"error: {path}: more than 60 s of audio (--max-audio-s), skipped"
        for path in (declared, undeclared)]
    assert run.stdout.startswith(f"{clips_dir / 'dog.mp3'}: Animal: 0.92")
    assert run.stdout.count("\n") == 1


def test_a_missing_path_is_one_line_and_the_others_are_classified(clips_dir, tmp_path):
    run = soundhive("classify", str(clips_dir / "dog.mp3"), str(tmp_path / "absent.wav"),
                    str(clips_dir / "speech.wav"))
    assert run.returncode == 2
    assert run.stderr.strip() == f"error: {tmp_path / 'absent.wav'}: no such file or folder"
    assert [line.split(": ")[0] for line in run.stdout.splitlines()] == [
        str(clips_dir / "dog.mp3"), str(clips_dir / "speech.wav")]


def test_audio_piped_to_standard_input(clips_dir):
    def piped(*args: str, audio: bytes) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "soundhive", "classify", *args],
                              input=audio, capture_output=True, timeout=300)

    run = piped("--json", "-", audio=(clips_dir / "dog.mp3").read_bytes())  # MP3: any format
    assert run.returncode == 0, run.stderr
    row = json.loads(run.stdout)
    assert row["file"] == "-" and "Dog" in [label["label"] for label in row["labels"]]
    run = piped("-", audio=b"not audio at all")
    assert run.returncode == 2
    assert run.stderr.decode().startswith("error: -: not a readable audio file")


def test_missing_path_and_unknown_model(clips_dir, tmp_path):
    run = soundhive("classify", str(tmp_path / "absent.ogg"))
    assert run.returncode == 2 and "no such file" in run.stderr
    run = soundhive("classify", "--model", "nope", str(clips_dir / "dog.mp3"))
    assert run.returncode == 2 and "unknown model" in run.stderr


def test_missing_models_point_to_the_pull_command(clips_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("SOUNDHIVE_MODELS", str(tmp_path))
    run = soundhive("classify", str(clips_dir / "dog.mp3"))
    assert run.returncode == 2 and "soundhive models pull yamnet" in run.stderr


def test_eval_clips_reproduces_the_yamnet_reference(clips_dir):
    run = soundhive("eval-clips", "--specific", str(clips_dir))
    assert run.returncode == 0, run.stderr
    plain, specific = run.stdout.splitlines()
    # The reference figures of plain YAMNet TFLite on these 16 clips (../shared/data/clips/README).
    assert "hit@1 0.500  hit@3 0.875  hit@5 0.938" in plain
    hit1 = float(re.search(r"hit@1 (\d\.\d+)", specific)[1])
    assert hit1 > 0.5  # preferring Dog over Animal turns near misses into hits


def test_eval_clips_needs_labels(tmp_path):
    run = soundhive("eval-clips", str(tmp_path))
    assert run.returncode == 2 and "labels.jsonl" in run.stderr
