# tests/lib/kill-resume.sh - sourced by the tests/cli_*.sh programs that check resume.
# kill_resume TRIES RUN_MS N_BLOCKS DIR COMMAND...: runs COMMAND (a qstream quantize writing DIR,
# started directly so that the kill reaches qstream itself) TRIES times, each killed with SIGKILL;
# a run that finished is removed so the next starts over; every third time the activation
# checkpoints in DIR are damaged, so that the next resume must replay the finished blocks
# instead. Odd tries kill after a random time below RUN_MS ms (anywhere: start-up, a first pass,
# mid-block, the end); even tries wait until a random number 1..N_BLOCKS-1 of blocks is recorded
# in DIR's manifest, then kill after a random time below a quarter of one block's share of RUN_MS, so that
# kills land mid-run however loaded the machine is (a fixed delay lands mid-run only when the
# machine runs at the speed the reference run measured). Up to 3 x TRIES runs are made until
# TRIES have run, 3 kills landed mid-run and a checkpoint was damaged (where the method
# writes any). Sets
# mid (kills that landed with 1..N_BLOCKS-1 blocks recorded), damaged (checkpoints damaged) and
# runs (how many were started).
kr_recorded() {
  local n
  n=$(grep -c '"block":' "$1/manifest.json" 2>/dev/null); echo "${n:-0}"
}
# kr_wait TRY PID RUN_MS N_BLOCKS DIR: the wait before the kill of try TRY, as above.
kr_wait() {
  local i=$1 pid=$2 span=$3 nb=$4 dir=$5 k
  if [ $((i % 2)) -eq 0 ] && [ "$nb" -gt 1 ]; then
    k=$((1 + RANDOM % (nb - 1)))
    while kill -0 "$pid" 2>/dev/null && [ "$(kr_recorded "$dir")" -lt "$k" ]; do sleep 0.01; done
    span=$((span / (4 * nb)))
  fi
  sleep "$(awk -v ms="$span" -v s=$RANDOM 'BEGIN{srand(s); printf "%.3f", rand()*ms/1000}')"
}
kill_resume() {
  local tries=$1 run_ms=$2 nb=$3 dir=$4; shift 4
  local i pid n a ckpt=0
  mid=0 damaged=0 runs=0
  for i in $(seq 1 $((3 * tries))); do
    [ "$i" -gt "$tries" ] && [ "$mid" -ge 3 ] && { [ "$damaged" -ge 1 ] || [ "$ckpt" -eq 0 ]; } && break
    runs=$i
    "$@" 2>/dev/null &
    pid=$!
    kr_wait "$i" $pid "$run_ms" "$nb" "$dir"
    kill -9 $pid 2>/dev/null; wait $pid 2>/dev/null
    n=$(kr_recorded "$dir")
    [ "$n" -gt 0 ] && [ "$n" -lt "$nb" ] && mid=$((mid + 1))
    [ "$n" -eq "$nb" ] && rm -rf "$dir"
    ls "$dir/acts/"acts-*.qsh >/dev/null 2>&1 && ckpt=1
    if [ $((i % 3)) -eq 0 ]; then
      for a in "$dir/acts/"acts-*.qsh; do
        [ -f "$a" ] && printf '\x55' | dd of="$a" bs=1 seek=4200 conv=notrunc status=none && damaged=$((damaged + 1))
      done
    fi
  done
}
