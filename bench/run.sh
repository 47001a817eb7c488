#!/usr/bin/env bash
# Runs a benchmark: bench/ is not part of the build (tsconfig.build.json), so bundle it with esbuild
# (a devDependency) into .cache/bench and run that with node.
# Usage: bash bench/run.sh [--help | options]            bench/poll.ts (memory-access paths)
#        bash bench/run.sh detection [--help | options]  bench/detection.ts (monitor detection latency)
#        bash bench/run.sh controller [--help | options] bench/controller.ts (controller ingest, reads, RSS; needs dist/)
#        bash bench/run.sh soak [--help | options]       bench/soak.ts (false alarms: 4 guests under stress-ng)
#        bash bench/run.sh fleet [--help | options]      bench/fleet.ts (the monitor's CPU and RSS for 10..3000 simulated VMs)
#        bash bench/run.sh faults [--help | options]     bench/faults.ts (the fault suite's scoreboard; needs dist/)
#        bash bench/run.sh fuzz [RUNS [SEED]]             test/fuzz with RUNS cases per property (default 100000)
#        bash bench/run.sh fuzz-coverage [RUNS]           test/fuzz's line and branch coverage of the decoders it fuzzes (default 300 runs)
#        bash bench/run.sh matrix                         the diagnostic SSDT on every kernel x QEMU x machine x firmware cell (36 guests, ~16 min; needs dist/)
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
if [ "${1:-}" = fuzz-coverage ]; then
  runs=${2:-300}
  case "$runs" in *[!0-9]* | '') echo "bench/run.sh fuzz-coverage: RUNS is an integer (got '$runs')" >&2; exit 2 ;; esac
  FUZZ_RUNS=$runs exec npx vitest run --project unit test/fuzz --testTimeout=0 --coverage.enabled --coverage.provider=v8 \
    --coverage.reportsDirectory=.cache/coverage --coverage.reporter=text \
    --coverage.include='acpi/decode/**' --coverage.include='host-reader/region/{decode,assess}.ts' \
    --coverage.include='host-reader/console/{sanitize,log-entry,line-splitter}.ts' --coverage.include='protocol/{mark,heartbeat-disk,report-manifest,controller-api}.ts' \
    --coverage.include='host-reader/qmp/{line-stream,messages}.ts' --coverage.include='host-reader/gdb/{packet,client,stack,x86-64}.ts' \
    --coverage.include='host-reader/erst/**' --coverage.include='controller/api/**' --coverage.include='controller/logs.ts'
fi
if [ "${1:-}" = matrix ]; then
  EVE_DIAG_MATRIX=full exec npx vitest run --project guest test/acpi/diag-ssdt.guest.test.ts
fi
case "${1:-}" in
  detection | controller | soak | fleet | faults) bench=$1; shift ;;
esac
mkdir -p .cache/bench
npx esbuild "bench/$bench.ts" --bundle --platform=node --format=esm --packages=external \
  --outfile=".cache/bench/$bench.mjs" --log-level=warning
exec node ".cache/bench/$bench.mjs" "$@"
