#!/usr/bin/env bash
# Runs a benchmark: bench/ is not part of the build (tsconfig.build.json), so bundle it with esbuild
# (a devDependency) into .cache/bench and run that with node. Usage: bash bench/run.sh [--help | options]
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .cache/bench
npx esbuild bench/poll.ts --bundle --platform=node --format=esm --packages=external \
  --outfile=.cache/bench/poll.mjs --log-level=warning
exec node .cache/bench/poll.mjs "$@"
