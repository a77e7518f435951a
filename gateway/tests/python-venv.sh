#!/usr/bin/env bash
# Makes the venv $2 hold exactly the packages of the hash-pinned requirements file $1, on a
# Python 3.12 or newer: the orgo SDK 0.0.47 uses 3.12 syntax (though it declares 3.7), and
# Python 3.11.7's ast module fails under threads ("AST constructor recursion depth mismatch",
# CPython gh-106905), which crashed Hypothesis inside schemathesis' workers. A venv made from
# the same file before is reused; a changed file makes it anew.
set -euo pipefail
requirements=$1
venv=$2
new_enough() { "$1" -c 'import sys; assert sys.version_info >= (3, 12)' 2>/dev/null; }
python=
for candidate in $(ls -d "$HOME"/.pyenv/versions/3.1[2-9]*/bin/python3 2>/dev/null | sort -rV) \
    python3.14 python3.13 python3.12 python3; do
  if command -v "$candidate" >/dev/null && new_enough "$candidate"; then
    python=$candidate
    break
  fi
done
if [ -z "$python" ]; then
  echo "python-venv.sh: no Python 3.12 or newer (python3.12+ on PATH or under ~/.pyenv/versions)" >&2
  exit 1
fi
want="$(sha256sum "$requirements" | cut -d' ' -f1) $("$python" -c 'import sys; print(sys.version)' | head -1)"
stamp="$venv/.requirements.sha256"
if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  exit 0
fi
rm -rf "$venv"
"$python" -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check --require-hashes -r "$requirements"
echo "$want" > "$stamp"
