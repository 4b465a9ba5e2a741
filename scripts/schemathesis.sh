# Sourced by scripts/test: makes the contract tests' fuzzer (schemathesis, the version pinned in
# tests/contract/requirements.txt) available as $SCHEMATHESIS_BIN, in a venv of its own under
# target/ so its dependencies cannot clash with other Python tools on the machine.

ensure_schemathesis() {
  if [ -n "${SCHEMATHESIS_BIN:-}" ] && [ -x "$SCHEMATHESIS_BIN" ]; then
    return 0
  fi
  local venv=target/contract-venv
  if [ ! -x "$venv/bin/schemathesis" ] || ! "$venv/bin/python" -m pip freeze 2>/dev/null \
      | grep -qxF "$(grep -v '^#' tests/contract/requirements.txt)"; then
    echo "==> installing schemathesis into $venv (tests/contract/requirements.txt)" >&2
    python3 -m venv "$venv" >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
      -r tests/contract/requirements.txt >&2
  fi
  SCHEMATHESIS_BIN="$(pwd)/$venv/bin/schemathesis"
  export SCHEMATHESIS_BIN
}
