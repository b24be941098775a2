#!/usr/bin/env bash
# Regenerate the README figures from the default run: `lsg-graph build` (if the run has no graph), then plot, cluster
# and walk with their defaults; the figures are copied into docs/ (magnification.png) and docs/figures/.
# Usage: bash docs/make_figures.sh [python]   (default .venv/bin/python; RUN=lsg-out by default)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${1:-.venv/bin/python}
RUN=${RUN:-lsg-out}
lsg() { "$PYTHON" -m cli.main "$@"; }
[ -f "$RUN/graph.npz" ] || lsg build --run "$RUN" --train-if-missing --quiet
lsg plot --run "$RUN" --quiet
lsg cluster --run "$RUN" --quiet
lsg walk --run "$RUN" --quiet
mkdir -p docs/figures
cp "$RUN/magnification.png" docs/magnification.png
cp "$RUN/magnification_strips.png" "$RUN/clusters.png" "$RUN/walks_metric.png" "$RUN/walks_metric_strip.png" docs/figures/
echo "figures: docs/magnification.png docs/figures/"
