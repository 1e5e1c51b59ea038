# tests/lib/cli-check.sh - sourced by the tests/cli_*.sh programs.
# check DESCRIPTION EXPECTED_RC PATTERN -- COMMAND...: runs COMMAND, expects its exit status
# (a number or "nonzero") and a line of its output (stdout + stderr) matching PATTERN; on a
# mismatch prints FAIL and sets fail=1.
check() {
  local what=$1 want_rc=$2 pattern=$3; shift 4
  local out rc
  out=$("$@" 2>&1); rc=$?
  if [ "$want_rc" = nonzero ]; then [ $rc -ne 0 ] || { echo "FAIL $what: exit 0"; fail=1; }
  elif [ $rc -ne "$want_rc" ]; then echo "FAIL $what: exit $rc, expected $want_rc"; fail=1; fi
  if ! grep -qE -- "$pattern" <<<"$out"; then echo "FAIL $what: output lacks /$pattern/:"; echo "$out" | head -5; fail=1; fi
}
