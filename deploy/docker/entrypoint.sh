#!/bin/sh
# Container entrypoint of every soundhive image: `entrypoint.sh soundhive serve SERVICE [ARGS]`.
#  - features, classifier, api and edge need a model: `soundhive models pull $SOUNDHIVE_MODEL` fills
#    $SOUNDHIVE_MODELS (a volume) when its files are missing or fail their checksum, and does
#    nothing when they are there (no network then). SOUNDHIVE_PULL_MODELS=0 skips it (a volume
#    filled by an init container or by hand, or an air-gapped host).
set -eu

if [ "${1:-}" = "soundhive" ] && [ "${2:-}" = "serve" ]; then
    service="${3:-}"
    case "$service" in
        features|classifier|api|edge)
            if [ "${SOUNDHIVE_PULL_MODELS:-1}" != "0" ]; then
                soundhive models pull "${SOUNDHIVE_MODEL:-yamnet}" >&2
            fi
            ;;
    esac
fi
exec "$@"
