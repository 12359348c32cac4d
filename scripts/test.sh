#!/usr/bin/env bash
# Lint, then the whole test suite against the real models (SOUNDHIVE_MODELS, by default the
# ../shared/models folder beside the repository). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
export SOUNDHIVE_MODELS="${SOUNDHIVE_MODELS:-$(cd .. && pwd)/shared/models}"
.venv/bin/ruff check .
# pytest exits non-zero when a test fails and also when no test ran at all (status 5).
exec .venv/bin/python -m pytest "$@"
