#!/usr/bin/env bash
# (not named cli_*.sh: ctest runs it only as cli_cuda_standin_bf16, on stories260k)
# tests/cli_cuda.sh the way a GPU machine runs it (scripts/device-pack.sh, device-check.sh): the
# cpu side's figures measured first (QS_E2E_CPU_ONLY=1, into a reference file), then the whole
# script with them read from it (QS_E2E_CPU_REF): it must say so, and pass on them. A reference
# for other settings must not be taken.
set -u
here=$(dirname "$0")
ref=${QS_TMP:-/tmp}/cli_cuda_ref-${QS_E2E_DEVICE:-cuda}.txt
rm -f "$ref"
QS_E2E_CPU_ONLY=1 QS_E2E_CPU_REF=$ref bash "$here/cli_cuda.sh" || { echo "FAIL: the cpu side alone"; exit 1; }
[ "$(wc -l < "$ref")" -eq 12 ] || { echo "FAIL: $ref holds $(wc -l < "$ref") lines, not a fingerprint and 11 figures (FP, four methods, six perturbed)"; exit 1; }
# the second run sees the same bytes through other paths (its own QS_TMP, the shared folder
# through a link), as a GPU machine does: the fingerprint must not depend on them
link=${QS_TMP:-/tmp}/cli_cuda_ref-shared
ln -sfn "$(cd "$QS_SHARED" && pwd)" "$link"
out=$(QS_E2E_CPU_REF=$ref QS_TMP=${QS_TMP:-/tmp}/second QS_SHARED=$link \
  QS_SMOLLM_DIR=${QS_SMOLLM_DIR/#$QS_SHARED/$link} bash "$here/cli_cuda.sh" 2>&1); rc=$?
echo "$out"
[ $rc -eq 0 ] || exit $rc
grep -q "^cpu figures from $ref" <<<"$out" || { echo "FAIL: the cpu figures were not read from $ref"; exit 1; }
# the same file with another fingerprint (other settings) is refused: the cpu runs are made again
sed -i '1s/.*/fingerprint 0/' "$ref"
out=$(QS_E2E_CPU_REF=$ref QS_E2E_REF_CHECK=1 bash "$here/cli_cuda.sh" 2>&1)
grep -q "^$ref is not for this binary" <<<"$out" || { echo "FAIL: a reference with another fingerprint: $out"; exit 1; }
echo ok
