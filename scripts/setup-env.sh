# Shared set-up for scripts/demo.sh and scripts/test.sh (sourced, not run).
# Creates ./.venv with Python >= 3.10 and, when run as root on Debian/Ubuntu,
# installs the system packages that are missing.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${NAPARI_CALC_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"

apt_install() {
    # apt_install PKG... : install the missing ones (root + apt only)
    local missing=()
    for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
        echo "napari-calc: please install these system packages: ${missing[*]}" >&2
        return 0
    fi
    echo "napari-calc: apt-get install ${missing[*]}" >&2
    if [ -z "${_NAPARI_CALC_APT_UPDATED:-}" ]; then
        apt-get update -qq >&2
        _NAPARI_CALC_APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

make_venv() {
    # a C compiler and Python headers build the kernel; venv makes the environment
    if command -v dpkg >/dev/null; then
        command -v cc >/dev/null || apt_install gcc libc6-dev
        if [ "$PY" = python3 ] && [ "$(command -v python3)" = /usr/bin/python3 ]; then
            apt_install python3-venv python3-dev
        fi
    fi
    if [ ! -x "$VENV/bin/python" ]; then
        "$PY" -m venv "$VENV"
        "$VENV/bin/python" -m pip install -q --upgrade pip
    fi
}
