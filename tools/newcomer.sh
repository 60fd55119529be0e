#!/usr/bin/env bash
# The newcomer's path: clone the repository into a fresh temporary folder with nothing beside it, with every
# HERD_* variable unset and Slurm's binaries hidden from PATH, and run the README's commands there: the 405B
# dry-run plan and the tiny recipe (smoke size by default; --full for the default run). .ci/run calls it.
#
#   tools/newcomer.sh [--full] [--keep] [REPO]     # REPO: what to clone (default: this checkout's committed HEAD)
set -euo pipefail

full=0 keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    --full) full=1 ;;
    --keep) keep=1 ;;
    -*) echo "newcomer.sh: unknown flag $1" >&2; exit 2 ;;
    *) break ;;
  esac
  shift
done
repo="${1:-$(cd "$(dirname "$0")/.." && pwd)}"

work="$(mktemp -d)"
clone="$work/herd"
cleanup() {
  [ -d "$clone" ] && (cd "$clone" && ./bazelw shutdown >/dev/null 2>&1 || true)
  [ "$keep" = 1 ] || rm -rf "$work"
}
trap cleanup EXIT

# A PATH without Slurm: symlinks to every tool on PATH except the Slurm commands.
hidden="srun sbatch squeue sinfo scontrol scancel sacct salloc slurmctld slurmd"
bin="$work/bin"
mkdir -p "$bin"
IFS=: read -r -a dirs <<<"$PATH"
for d in "${dirs[@]}"; do
  [ -d "$d" ] || continue
  for f in "$d"/*; do
    name="$(basename "$f")"
    case " $hidden " in *" $name "*) continue ;; esac
    [ -e "$bin/$name" ] || ln -s "$f" "$bin/$name"
  done
done

git clone -q "$repo" "$clone"
cd "$clone"
[ ! -e "$work/shared" ] || { echo "newcomer.sh: $work/shared exists" >&2; exit 1; }
run() {
  echo "newcomer: \$ $*" >&2
  local t0=$SECONDS
  env -u CI $(env | sed -n 's/^\(HERD_[A-Za-z0-9_]*\)=.*/-u \1/p') PATH="$bin" "$@"
  echo "newcomer: took $((SECONDS - t0))s" >&2
}

command -v srun >/dev/null 2>&1 && PATH="$bin" command -v srun >/dev/null 2>&1 &&
  { echo "newcomer.sh: srun is still reachable" >&2; exit 1; }
run ./bazelw run //experiments:llama3_405b -- --dry-run >"$work/plan.txt"
grep -q "== sbatch scripts ==" "$work/plan.txt" || { echo "newcomer: the dry-run printed no sbatch scripts" >&2; exit 1; }
echo "newcomer: the 405B plan has $(wc -l <"$work/plan.txt") lines" >&2
if [ "$full" = 1 ]; then
  run ./bazelw run //experiments:llama3_tiny
else
  run ./bazelw run //experiments:llama3_tiny -- config=experiments/tests/llama3_tiny_smoke.yaml run_id=smoke
fi
report="$(ls -d runs/llama3_tiny/*/stages/report 2>/dev/null | head -1)"
[ -n "$report" ] && [ -f "$report/COMPLETE.json" ] || { echo "newcomer: no completed report stage" >&2; exit 1; }
echo "newcomer: passed in $work (the tiny run's report: $clone/$report)" >&2
