#!/usr/bin/env bash
# Copy an experiment (its weights folder, logs folder and test log) under a new name, e.g. to
# fork a run before changing its flags:
#   bash scripts/utils/duplicate.sh SOURCE_EXPERIMENT NEW_EXPERIMENT [weights_root] [logs_root]
# (The original's version copied a hard-coded experiment in an older, flat weights layout.)
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: $0 SOURCE_EXPERIMENT NEW_EXPERIMENT [weights_root=weights] [logs_root=logs]" >&2
    exit 2
fi
src=$1; dst=$2; weights=${3:-weights}; logs=${4:-logs}
[ -d "$weights/$src" ] || { echo "no weights folder $weights/$src" >&2; exit 1; }
[ -e "$weights/$dst" ] && { echo "$weights/$dst exists; not overwriting" >&2; exit 1; }
cp -r "$weights/$src" "$weights/$dst"
[ -d "$logs/$src" ] && cp -r "$logs/$src" "$logs/$dst"
[ -f "$logs/${src}_log.jsonl" ] && cp "$logs/${src}_log.jsonl" "$logs/${dst}_log.jsonl"
echo "copied $src to $dst (resume it with --experiment_name $dst --resume)"
