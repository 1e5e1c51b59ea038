# tests/lib/kill-resume.sh - sourced by the tests/cli_*.sh programs that check resume.
# kill_resume TRIES RUN_MS N_BLOCKS DIR COMMAND...: runs COMMAND (a qstream quantize writing DIR,
# started directly so that the kill reaches qstream itself) TRIES times, each killed with SIGKILL
# after a random time below RUN_MS ms; a run that finished is removed so the next starts over;
# every third time the activation checkpoints in DIR are damaged, so that the next resume must
# replay the finished blocks instead. On a loaded machine the kills land mid-run less often: up
# to 3 x TRIES runs are made until TRIES have run, 3 kills landed mid-run and a checkpoint was
# damaged. Sets
# mid (kills that landed with 1..N_BLOCKS-1 blocks recorded), damaged (checkpoints damaged) and
# runs (how many were started).
kill_resume() {
  local tries=$1 run_ms=$2 nb=$3 dir=$4; shift 4
  local i pid n a
  mid=0 damaged=0 runs=0
  for i in $(seq 1 $((3 * tries))); do
    [ "$i" -gt "$tries" ] && [ "$mid" -ge 3 ] && [ "$damaged" -ge 1 ] && break
    runs=$i
    "$@" 2>/dev/null &
    pid=$!
    sleep "$(awk -v ms="$run_ms" -v s=$RANDOM 'BEGIN{srand(s); printf "%.3f", rand()*ms/1000}')"
    kill -9 $pid 2>/dev/null; wait $pid 2>/dev/null
    n=$(grep -c '"block":' "$dir/manifest.json" 2>/dev/null); n=${n:-0}
    [ "$n" -gt 0 ] && [ "$n" -lt "$nb" ] && mid=$((mid + 1))
    [ "$n" -eq "$nb" ] && rm -rf "$dir"
    if [ $((i % 3)) -eq 0 ]; then
      for a in "$dir/acts/"acts-*.qsh; do
        [ -f "$a" ] && printf '\x55' | dd of="$a" bs=1 seek=4200 conv=notrunc status=none && damaged=$((damaged + 1))
      done
    fi
  done
}
