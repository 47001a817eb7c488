#!/usr/bin/env bash
# Runs a benchmark: bench/ is not part of the build (tsconfig.build.json), so bundle it with esbuild
# (a devDependency) into .cache/bench and run that with node.
# Usage: bash bench/run.sh [--help | options]            bench/poll.ts (memory-access paths)
#        bash bench/run.sh detection [--help | options]  bench/detection.ts (monitor detection latency)
#        bash bench/run.sh controller [--help | options] bench/controller.ts (controller ingest, reads, RSS; needs dist/)
set -euo pipefail
cd "$(dirname "$0")/.."
bench=poll
if [[ "${1:-}" == detection ]]; then bench=detection; shift; fi
if [[ "${1:-}" == controller ]]; then bench=controller; shift; fi
mkdir -p .cache/bench
npx esbuild "bench/$bench.ts" --bundle --platform=node --format=esm --packages=external \
  --outfile=".cache/bench/$bench.mjs" --log-level=warning
exec node ".cache/bench/$bench.mjs" "$@"
