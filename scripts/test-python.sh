#!/usr/bin/env bash
# Installs what the tests need from PyPI: the official `openai` client, which
# tests/api/inference/sdk.rs drives against a live node (tests/python/openai_client.py).
# Idempotent: skips the install when the pinned version is already there.
#
#   CASTWORK_TEST_VENV  the virtual environment (default .venv-test)
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${CASTWORK_TEST_VENV:-.venv-test}
openai_version=3.57.0

if "$venv/bin/python" -c "import openai, sys; sys.exit(openai.__version__ != '$openai_version')" 2>/dev/null; then
    exit 0
fi
echo "test-python: installing openai $openai_version into $venv"
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check "openai==$openai_version"
