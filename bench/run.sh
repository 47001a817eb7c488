#!/usr/bin/env bash
# Runs a benchmark: bench/ is not part of the build (tsconfig.build.json), so bundle it with esbuild
# (a devDependency) into .cache/bench and run that with node.
# Usage: bash bench/run.sh [--help | options]            bench/poll.ts (memory-access paths)
#        bash bench/run.sh detection [--help | options]  bench/detection.ts (monitor detection latency)
#        bash bench/run.sh controller [--help | options] bench/controller.ts (controller ingest, reads, RSS; needs dist/)
#        bash bench/run.sh soak [--help | options]       bench/soak.ts (false alarms: 4 guests under stress-ng)
#        bash bench/run.sh fleet [--help | options]      bench/fleet.ts (the monitor's CPU and RSS for 10..3000 simulated VMs)
set -euo pipefail
cd "$(dirname "$0")/.."
bench=poll
case "${1:-}" in
  detection | controller | soak | fleet) bench=$1; shift ;;
esac
mkdir -p .cache/bench
npx esbuild "bench/$bench.ts" --bundle --platform=node --format=esm --packages=external \
  --outfile=".cache/bench/$bench.mjs" --log-level=warning
exec node ".cache/bench/$bench.mjs" "$@"
