#!/usr/bin/env bash
# run-fuzz.sh HARNESS SEED_DIR WORK_CORPUS SECONDS
# Copies the committed seeds into a scratch corpus and fuzzes for a bounded time.
# Fails (non-zero) when libFuzzer finds a crash, leak, timeout or sanitizer report.
set -euo pipefail
harness=$1 seeds=$2 corpus=$3 secs=$4
rm -rf "$corpus"; mkdir -p "$corpus"
[ -d "$seeds" ] && cp -r "$seeds"/. "$corpus"/
# seeds made at test time (binary inputs are not committed): SEED_DIR/make-seeds.sh QSTREAM CORPUS
if [ -x "$corpus/make-seeds.sh" ]; then
  "$corpus/make-seeds.sh" "${QS_BIN:?make-seeds.sh needs QS_BIN}" "$corpus"
  rm "$corpus/make-seeds.sh"
fi
exec "$harness" -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 \
     -artifact_prefix="$corpus/../$(basename "$harness")-" "$corpus"
