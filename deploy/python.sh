#!/usr/bin/env bash
# Prints the interpreter `make` builds its virtualenv with (PYTHON=... overrides it).
#
# The distribution's Python 3.11 comes first: Debian's and Ubuntu's are built
# with profile-guided optimisation and link-time optimisation, as is the Docker image's
# (python:3.11-slim, deploy/Dockerfile). A version manager's default build is neither:
# pyenv's, without PYTHON_CONFIGURE_OPTS, ran the same worker ~12% slower on the same
# machine (alternating pairs of `python -m tests.bench.bench --ingest-only`; README,
# "Performance", the tenth pass), so the bench measured an interpreter production never
# runs.
#
# A candidate must be able to make a virtualenv (Debian splits that into python3.11-venv).
set -euo pipefail

candidates=(/usr/bin/python3.11 "$(command -v python3.11 || true)" "$(command -v python3 || true)")
for candidate in "${candidates[@]}"; do
    [[ -n "$candidate" && -x "$candidate" ]] || continue
    if "$candidate" -c 'import ensurepip, venv' >/dev/null 2>&1; then
        echo "$candidate"
        exit 0
    fi
done
echo "python.sh: no python3.11 (or python3) here that can make a virtualenv;" \
    "install Python 3.11 with its venv module (Debian: apt install python3.11-venv)" >&2
exit 1
