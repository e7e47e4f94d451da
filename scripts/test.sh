#!/usr/bin/env bash
# Install napari-calc with its test extras into ./.venv (plus, when root, the
# Debian packages for headless Qt/OpenGL, the DICOM validators, and qemu-user
# to run the kernel on emulated CPUs without AVX-512 or AVX) and run the
# whole test suite under a virtual X server. Extra arguments go to pytest.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup-env.sh"
apt_install xvfb xauth libgl1-mesa-dri libglx-mesa0 libegl1 libxkbcommon-x11-0 libxcb-icccm4 \
    libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-xinerama0 \
    libxcb-xfixes0 libxcb-shape0 libxcb-cursor0 libdbus-1-3 libfontconfig1 dcmtk dicom3tools qemu-user
make_venv
# editable: the tests and the CLI run from this checkout, kernel built in place
"$VENV/bin/python" -m pip install -q -e "$ROOT[testing,slicer]"
mkdir -p "$ROOT/test-artifacts"
set +e
if command -v xvfb-run >/dev/null; then
    xvfb-run -a -s "-screen 0 1600x1000x24" "$VENV/bin/python" -m pytest "$@"
else
    echo "napari-calc: xvfb-run not found: GUI tests will be skipped" >&2
    "$VENV/bin/python" -m pytest "$@"
fi
rc=$?
set -e
if [ $rc -eq 5 ]; then
    echo "napari-calc: pytest collected no tests: failing" >&2
    exit 1
fi
exit $rc
