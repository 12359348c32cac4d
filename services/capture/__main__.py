"""`python -m services.capture --source SPEC [--source SPEC ...] [--fast] [--save-path DIR]`;
other settings from the environment (shared/config.py)."""

import argparse
from pathlib import Path

from services.capture.service import main
from services.capture.sources import __doc__ as SOURCES_HELP
from services.capture.sources import parse_sources
from services.runner import run_service
from shared.config import Settings

parser = argparse.ArgumentParser(
    prog="python -m services.capture", description=SOURCES_HELP,
    formatter_class=argparse.RawDescriptionHelpFormatter,
)
parser.add_argument("--source", action="append", required=True,
                    help="mic[:DEVICE], file:PATH or url:URL")
parser.add_argument("--fast", action="store_true", help="replay files as fast as possible")
parser.add_argument("--save-path", type=Path, help="keep the captured audio as WAV files here")
args = parser.parse_args()
run_service(lambda: main(Settings.from_env("capture"), parse_sources(args.source), args.fast,
                         args.save_path))
