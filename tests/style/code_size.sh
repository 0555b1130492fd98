#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Keeps the code readable at a glance: no function outside tests/ longer than MAX_FUNCTION
# lines, no source file (tests included) longer than MAX_FILE lines. Generated code lives in
# the build tree and is not looked at. Functions are found by universal-ctags (start and end
# line of each C++ function definition).
#   tests/style/code_size.sh [SOURCE_DIR]        prints offenders, exit 1 if any
#   TOP=N tests/style/code_size.sh               also prints the N longest functions
set -euo pipefail
src=${1:-$(cd "$(dirname "$0")/../.." && pwd)}
MAX_FUNCTION=${MAX_FUNCTION:-120}
MAX_FILE=${MAX_FILE:-900}
cd "$src"
command -v ctags >/dev/null || { echo "code_size: universal-ctags is not installed" >&2; exit 2; }

mapfile -t all < <(git ls-files '*.cc' '*.h' 2>/dev/null || find . -name '*.cc' -o -name '*.h')
mapfile -t nontest < <(printf '%s\n' "${all[@]}" | grep -v '^tests/' | grep '\.cc$')
bad=0

while read -r lines file; do
  [ "$file" = total ] && continue
  if [ "$lines" -gt "$MAX_FILE" ]; then
    echo "file over $MAX_FILE lines: $file ($lines)"
    bad=1
  fi
done < <(wc -l "${all[@]}")

functions=$(ctags -x --_xformat='%N	%F	%n	%e' --kinds-c++=f --fields=+ne --language-force=c++ \
  "${nontest[@]}" 2>/dev/null | awk -F'\t' '$4 != "" {print $4-$3+1 "\t" $2 ":" $3 "\t" $1}' |
  sort -n -r)
if [ -n "${TOP:-}" ]; then
  echo "longest functions (lines, where, name):"
  printf '%s\n' "$functions" | head -"$TOP"
fi
over=$(printf '%s\n' "$functions" | awk -F'\t' -v max="$MAX_FUNCTION" '$1 > max')
if [ -n "$over" ]; then
  echo "functions over $MAX_FUNCTION lines:"
  printf '%s\n' "$over"
  bad=1
fi
[ "$bad" -eq 0 ] && echo "code_size: every file <= $MAX_FILE lines, every function <= $MAX_FUNCTION lines"
exit "$bad"
