#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-or-later
# usage: validate_examples.sh XSD EXAMPLES_DIR
# Every examples/*.xml must validate against the schema extracted from migration.wsdl,
# except invalid-*.xml, which must be refused by the schema (xmllint exit 3, not a parse
# error). Also requires a request and a response example for each of the 7 operations.
set -u
xsd=$1
dir=$2
fail=0
count=0
for f in "$dir"/*.xml; do
  count=$((count + 1))
  name=$(basename "$f")
  out=$(xmllint --noout --nonet --schema "$xsd" "$f" 2>&1)
  rc=$?
  case "$name" in
    invalid-*)
      if [ "$rc" -ne 3 ]; then
        echo "FAIL: $name should be refused by the schema (xmllint exit $rc): $out"
        fail=1
      fi ;;
    *)
      if [ "$rc" -ne 0 ]; then
        echo "FAIL: $name should validate: $out"
        fail=1
      fi ;;
  esac
done
for op in authenticate upload download query delete getmaserviceinfo getmakey; do
  for kind in request response; do
    if ! ls "$dir"/$op*.$kind.xml >/dev/null 2>&1; then
      echo "FAIL: no $kind example for $op"
      fail=1
    fi
  done
done
[ "$count" -ge 20 ] || { echo "FAIL: only $count examples found in $dir"; fail=1; }
[ "$fail" -eq 0 ] && echo "all $count examples behave as expected"
exit $fail
