# Sourced by scripts/test: installs the contract tests' tools — schemathesis (the fuzzer) and
# openapi-python-client (the client generator), the versions pinned in
# tests/contract/requirements.txt — into a venv of their own under target/, so their
# dependencies cannot clash with other Python tools on the machine, and exports its bin
# directory as $CONTRACT_TOOLS_BIN.

ensure_contract_tools() {
  local venv=target/contract-venv
  local wanted
  wanted=$(grep -v '^#' tests/contract/requirements.txt | sort)
  if [ ! -x "$venv/bin/python" ] \
      || [ "$(comm -23 <(printf '%s\n' "$wanted") <("$venv/bin/python" -m pip freeze 2>/dev/null | sort))" != "" ]; then
    echo "==> installing the contract tools into $venv (tests/contract/requirements.txt)" >&2
    python3 -m venv "$venv" >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
      -r tests/contract/requirements.txt >&2
  fi
  CONTRACT_TOOLS_BIN="$(pwd)/$venv/bin"
  export CONTRACT_TOOLS_BIN
}
