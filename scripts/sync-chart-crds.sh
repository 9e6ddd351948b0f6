#!/usr/bin/env bash
# Copies the repository's CRDs (crds/*.yaml, the single source of the API) into the Helm chart
# (charts/tickwire/crds/), so the chart cannot drift from them.
#
#   scripts/sync-chart-crds.sh          copy, and remove chart CRDs that crds/ no longer has
#   scripts/sync-chart-crds.sh --check  change nothing; exit 1 and name the files that differ
#
# tests/chart/test_chart_crds.py runs the check, so a CRD edit without a sync fails the tests.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
src="$root/crds"
dst="$root/charts/tickwire/crds"

mode=sync
case "${1:-}" in
  "") ;;
  --check) mode=check ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

shopt -s nullglob
sources=("$src"/*.yaml)
if [ ${#sources[@]} -eq 0 ]; then
  echo "sync-chart-crds: no CRDs in $src: nothing to copy (is this the tickwire repository?)" >&2
  exit 1
fi

drift=()
for file in "${sources[@]}"; do
  name="$(basename "$file")"
  if ! cmp -s "$file" "$dst/$name"; then
    drift+=("$name")
    [ "$mode" = sync ] && mkdir -p "$dst" && cp "$file" "$dst/$name"
  fi
done
for file in "$dst"/*.yaml; do
  name="$(basename "$file")"
  if [ ! -e "$src/$name" ]; then
    drift+=("$name (not in crds/)")
    [ "$mode" = sync ] && rm "$file"
  fi
done

if [ ${#drift[@]} -eq 0 ]; then
  echo "sync-chart-crds: chart CRDs equal crds/"
elif [ "$mode" = check ]; then
  echo "sync-chart-crds: charts/tickwire/crds/ differs from crds/ in: ${drift[*]}." >&2
  echo "Run scripts/sync-chart-crds.sh to copy crds/ into the chart." >&2
  exit 1
else
  echo "sync-chart-crds: updated ${drift[*]}"
fi
