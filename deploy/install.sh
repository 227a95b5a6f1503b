#!/usr/bin/env bash
# Set up pacsnode on a fresh machine: system tools (dcmtk, Orthanc for the end-to-end
# tests, PostgreSQL for the database tests), a virtual environment in .venv, CPU PyTorch,
# and the package with its test extras.
#
#   bash deploy/install.sh            # everything
#   bash deploy/install.sh --no-system   # skip apt-get (no root, or tools already there)
#   bash deploy/install.sh --cuda        # a CUDA build of torch, for [analysis] device = "cuda"
#                                        # (index: $TORCH_CUDA_INDEX, default CUDA 12.8)
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
with_system=1
with_cuda=0
TORCH_CUDA_INDEX="${TORCH_CUDA_INDEX:-https://download.pytorch.org/whl/cu128}"
for arg in "$@"; do
    case "$arg" in
        --no-system) with_system=0 ;;
        --cuda) with_cuda=1 ;;
        -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown option $arg" >&2; exit 2 ;;
    esac
done

if [[ $with_system == 1 ]]; then
    if command -v apt-get >/dev/null && [[ $(id -u) == 0 ]]; then
        echo "==> system packages: dcmtk orthanc postgresql"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends dcmtk orthanc postgresql >/dev/null
        # The Debian packages start a system Orthanc on 4242/8042 and a PostgreSQL cluster
        # on 5432; tests run their own of each.
        for daemon in orthanc postgresql; do
            if command -v systemctl >/dev/null; then systemctl disable --now "$daemon" >/dev/null 2>&1 || true; fi
            service "$daemon" stop >/dev/null 2>&1 || true
        done
    else
        echo "==> skipping apt-get (not root or no apt): install dcmtk, orthanc and postgresql yourself" >&2
    fi
fi

echo "==> virtual environment in $VENV"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
if [[ $with_cuda == 1 ]]; then
    # The same torch version, built for CUDA, from PyTorch's own index; needs an NVIDIA
    # driver new enough for that CUDA (nvidia-smi shows it). Check with:
    #   .venv/bin/python -c 'import torch; print(torch.version.cuda, torch.cuda.is_available())'
    echo "==> torch==2.13.0 (CUDA, from $TORCH_CUDA_INDEX)"
    "$VENV/bin/python" -m pip install -q torch==2.13.0 --index-url "$TORCH_CUDA_INDEX"
else
    # torch first, spelled exactly so: this machine's CPU build; any other spelling pulls CUDA.
    echo "==> torch==2.13.0 (CPU)"
    "$VENV/bin/python" -m pip install -q torch==2.13.0
fi
echo "==> pacsnode with test extras"
"$VENV/bin/python" -m pip install -q -e '.[test]'
echo "==> done: run the node with '$VENV/bin/pacsnode', the tests with '$VENV/bin/python -m pytest'"
