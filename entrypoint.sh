#!/bin/sh
# The container's entrypoint. Everything else, waiting for the database included,
# is the program's job: see `python -m migrate --help`.
set -eu
exec python -m migrate "$@"
