#!/usr/bin/env bash
# Runs a benchmark: bench/ is not part of the build (tsconfig.build.json), so bundle it with esbuild
# (a devDependency) into .cache/bench and run that with node.
# Usage: bash bench/run.sh [--help | options]            bench/poll.ts (memory-access paths)
#        bash bench/run.sh detection [--help | options]  bench/detection.ts (monitor detection latency)
#        bash bench/run.sh controller [--help | options] bench/controller.ts (controller ingest, reads, RSS; needs dist/)
#        bash bench/run.sh soak [--help | options]       bench/soak.ts (false alarms: 4 guests under stress-ng)
#        bash bench/run.sh fleet [--help | options]      bench/fleet.ts (the monitor's CPU and RSS for 10..3000 simulated VMs)
#        bash bench/run.sh fuzz [RUNS [SEED]]             test/fuzz with RUNS cases per property (default 100000)
set -euo pipefail
cd "$(dirname "$0")/.."
bench=poll
if [ "${1:-}" = fuzz ]; then
  runs=${2:-100000}
  seed=${3:-$(date +%s)}
  case "$runs$seed" in *[!0-9]*) echo "bench/run.sh fuzz: RUNS and SEED are integers (got '$runs' '$seed')" >&2; exit 2 ;; esac
  echo "fuzz: $runs cases per property, seed $seed (FUZZ_RUNS=$runs FUZZ_SEED=$seed reproduces it)"
  FUZZ_RUNS=$runs FUZZ_SEED=$seed exec npx vitest run --project unit test/fuzz --testTimeout=0
fi
case "${1:-}" in
  detection | controller | soak | fleet) bench=$1; shift ;;
esac
mkdir -p .cache/bench
npx esbuild "bench/$bench.ts" --bundle --platform=node --format=esm --packages=external \
  --outfile=".cache/bench/$bench.mjs" --log-level=warning
exec node ".cache/bench/$bench.mjs" "$@"
