#!/bin/sh
# Install Ringmaster into a virtual environment, in the two steps the image caches
# apart (deploy/Dockerfile runs this script, and so does the image test):
#
#   install.sh deps VENV SRC   the runtime dependencies and the build requirements of
#                              SRC/pyproject.toml: a layer rebuilt only when
#                              pyproject.toml changes
#   install.sh app  VENV SRC   Ringmaster itself from SRC, dependencies untouched and
#                              no download (it builds with what deps installed),
#                              then `pip check` proves nothing is missing
set -eu

usage() {
    echo "usage: $0 deps|app VENV SRC" >&2
    exit 2
}
[ $# -eq 3 ] || usage
step=$1
venv=$2
src=$3
[ -f "$src/pyproject.toml" ] || { echo "$0: no pyproject.toml in $src" >&2; exit 2; }

[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
pip="$venv/bin/python -m pip --disable-pip-version-check"

case "$step" in
deps)
    requirements="$venv/requirements.txt"
    "$venv/bin/python" - "$src/pyproject.toml" >"$requirements" <<'PY'
import sys
import tomllib

with open(sys.argv[1], "rb") as f:
    project = tomllib.load(f)
print("\n".join(project["project"]["dependencies"] + project["build-system"]["requires"]))
PY
    $pip install --quiet -r "$requirements"
    ;;
app)
    $pip install --quiet --no-deps --no-build-isolation "$src"
    $pip check
    ;;
*)
    usage
    ;;
esac
