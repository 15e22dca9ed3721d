#!/usr/bin/env bash
# scripts/check-layering.sh — the module layering, checked over #includes
# (docs/kernel.md, "Layering"; DESIGN §4). Each rule names a directory and the
# directories its files must not include from ("..." includes; <...>
# system headers are not modules). Prints one line per violation and
# exits 1 if there is any.
set -euo pipefail
cd "$(dirname "$0")/.."

bad=0
# forbid DIR MOD...: no file under DIR includes "MOD/...".
forbid() {
    local dir=$1
    shift
    [ -d "$dir" ] || return 0
    local mods names
    mods=$(IFS='|'; echo "$*")
    names=$(printf '%s/, ' "$@")
    names=${names%, }
    while IFS= read -r hit; do
        [ -n "$hit" ] || continue
        echo "layering: $hit: $dir/ must not include from $names" >&2
        bad=1
    done < <(grep -rnE --include='*.c' --include='*.h' \
        "^[[:space:]]*#[[:space:]]*include[[:space:]]*\"($mods)/" "$dir" || true)
}

# DESIGN §4: arrows point down only. tools/ may use everything; host/ and
# recovery/ use kernel/, snapshot/, store/, wal/, common/; kernel/ and
# snapshot/ are siblings over store/, wal/, common/; store/ uses wal/ and
# common/; wal/ uses only common/.
forbid common wal store kernel snapshot recovery host tools
forbid wal store kernel snapshot recovery host tools
forbid store kernel snapshot recovery host tools
forbid kernel snapshot recovery host tools
forbid snapshot kernel recovery host tools
forbid recovery host tools
forbid host recovery tools
# vats/ are written against the public API alone: "keel/..." and their
# own helpers in vats/.
while IFS= read -r hit; do
    [ -n "$hit" ] || continue
    echo "layering: $hit: vats/ include only keel/ and vats/" >&2
    bad=1
done < <(grep -rnE --include='*.c' --include='*.h' \
    '^[[:space:]]*#[[:space:]]*include[[:space:]]*"' vats |
    grep -vE '#[[:space:]]*include[[:space:]]*"(keel|vats)/' || true)
# examples/ are built out of tree against the installed headers: they
# include <keel/...> and system headers, nothing of this tree ("...").
while IFS= read -r hit; do
    [ -n "$hit" ] || continue
    echo "layering: $hit: examples/ include only <keel/...> and system headers" >&2
    bad=1
done < <(grep -rnE --include='*.c' --include='*.h' \
    '^[[:space:]]*#[[:space:]]*include[[:space:]]*"' examples || true)

if [ "$bad" -ne 0 ]; then
    exit 1
fi
echo "layering: ok"
