#!/usr/bin/env bash
# The package as users get it: build the sdist and the wheel, check that the sdist carries a
# runnable test tree, install the wheel alone into a fresh venv and send a cell with it, then add
# the [demo] extra and run `smtp-magic demo` from an empty folder (no clone involved).
#   usage: bash scripts/test-package.sh [VENV]      (VENV: where `build` is installed; default .venv)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=$(cd "${1:-${VENV:-.venv}}" && pwd)
WORK=$(mktemp -d /tmp/smtp-magic-package.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
say() { printf -- '-- %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

say "building the sdist and the wheel"
"$VENV/bin/python" -m build --outdir "$WORK/dist" . >"$WORK/build.log" 2>&1 \
  || { cat "$WORK/build.log" >&2; fail "python -m build"; }
sdist=$(ls "$WORK"/dist/*.tar.gz)
wheel=$(ls "$WORK"/dist/*.whl)

say "the sdist has every test module and its helpers, and no node_modules"
tar tzf "$sdist" | sed 's|^[^/]*/||' | sort >"$WORK/sdist.txt"
for f in $(git ls-files tests | grep -E '\.(py|mjs|json|cfg)$'); do
  grep -qxF "$f" "$WORK/sdist.txt" || fail "the sdist lacks $f"
done
! grep -q node_modules "$WORK/sdist.txt" || fail "the sdist carries node_modules"
"$VENV/bin/python" -c "import sys, zipfile; sys.exit('smtp_magic/notebooks/quickstart.ipynb' \
  not in zipfile.ZipFile(sys.argv[1]).namelist())" "$wheel" || fail "the wheel lacks the quickstart"

say "a fresh venv with the wheel alone: a cell goes out (pip install smtp-magic is enough)"
python3 -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip install -q "$wheel" 2>&1 | grep -v "is ignored" || true
mkdir -p "$WORK/empty"
(
  cd "$WORK/empty"
  export XDG_DATA_HOME=$WORK/data IPYTHONDIR=$WORK/ipython SMTP_MAGIC_CAPTURE_DIR=$WORK/capture
  "$WORK/venv/bin/python" - <<'PY'
from IPython.core.interactiveshell import InteractiveShell

ip = InteractiveShell.instance()
ip.run_line_magic("load_ext", "smtp_magic")
ip.run_line_magic("smtp_config", "--local --from me@example.org")
result = ip.run_cell("%%smtp_send --to team@example.org --subject 'From the wheel' --sync\n"
                     "Hi team,\n\n{{ 6 * 7 }} is the answer.\n")
assert result.success, result.error_in_exec
from smtp_magic.server import messages

(msg,) = messages()
text = msg.message.get_body(("plain",)).get_content()
assert msg.subject == "From the wheel" and "42 is the answer." in text, (msg.subject, text)
print(f"-- delivered {msg.subject!r} with only the required dependencies")
PY
) || fail "sending a cell from the plain wheel"

say "the [demo] extra, then smtp-magic demo from an empty folder"
"$WORK/venv/bin/python" -m pip install -q "$wheel[demo]" 2>&1 | grep -v "is ignored" || true
"$WORK/venv/bin/python" -m ipykernel install --sys-prefix --name python3 >/dev/null
(
  cd "$WORK/empty"
  export XDG_DATA_HOME=$WORK/data2 IPYTHONDIR=$WORK/ipython2 MPLBACKEND=Agg
  export JUPYTER_CONFIG_DIR=$WORK/jconfig JUPYTER_DATA_DIR=$WORK/jdata
  unset SMTP_MAGIC_CAPTURE_DIR JUPYTER_PATH
  "$WORK/venv/bin/smtp-magic" demo >"$WORK/demo.log" 2>&1
) || { cat "$WORK/demo.log" >&2; fail "smtp-magic demo from the wheel"; }
grep -q "Delivered 3 message(s)" "$WORK/demo.log" || { cat "$WORK/demo.log" >&2; fail "demo output"; }
say "$(grep -m1 'Delivered' "$WORK/demo.log") (smtp-magic demo from the installed wheel)"
say "package: all passed"
