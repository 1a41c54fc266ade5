#!/usr/bin/env bash
# One entry point on a fresh machine: installs frlr into ./.venv (torch first, from its CPU pin),
# then runs the main job (`bash run.sh main`), the test suite (`bash run.sh test`) or builds the
# API reference into site/ (`bash run.sh docs`, warnings as errors).
set -euo pipefail
cd "$(dirname "$0")"
venv=${FRLR_VENV:-.venv}
py="$venv/bin/python"
[ -x "$py" ] || python3 -m venv "$venv"
stamp="$venv/.frlr-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
  "$py" -m pip install -q --disable-pip-version-check torch==2.13.0
  "$py" -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[test,docs]"
  touch "$stamp"
fi
what=${1:-main}
shift || true
case "$what" in
  main) exec "$venv/bin/frlr" "$@" ;;
  test) exec "$py" -m pytest -n 2 "$@" ;;
  lint)
    "$venv/bin/ruff" check src tests benchmarks examples
    exec "$venv/bin/ruff" format --check src tests benchmarks examples ;;
  docs)
    # NO_MKDOCS_2_WARNING: silence mkdocs-material's banner about MkDocs 2, which is not a warning
    # about this site and would otherwise open every build log.
    NO_MKDOCS_2_WARNING=1 exec "$venv/bin/mkdocs" build --strict --site-dir site "$@" ;;
  *) echo "usage: bash run.sh [main|test|lint|docs] [args...]" >&2; exit 2 ;;
esac
