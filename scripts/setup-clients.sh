#!/usr/bin/env bash
# Installs the official OpenAI and Ollama Python clients (pinned) into a venv
# outside the repository; the server's integration tests drive Mori with them.
# Idempotent: does nothing when the venv already has these versions.
set -euo pipefail
VENV="${MORI_CLIENTS_VENV:-$HOME/.cache/mori/venv-clients}"
PKGS=(openai==3.57.0 ollama==0.6.3 httpx==0.28.1)
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" - "${PKGS[@]}" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
for spec in sys.argv[1:]:
    name, want = spec.split("==")
    assert version(name) == want, spec
PY
then
  exit 0
fi
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check "${PKGS[@]}"
echo "installed ${PKGS[*]} into $VENV"
