# SPDX-License-Identifier: GPL-2.0-or-later
# Sourced bash library: editing an MA config.toml from the drill, the HA demo and tests.
#
#   . deploy/lib/toml.sh
#   toml_set "$work/ma/config.toml" server drain_ms=3000 'trusted_proxies=["127.0.0.2"]'
#
# Contract:
# - toml_set FILE SECTION KEY=VALUE...: sets keys of one [SECTION] (VALUE is TOML, e.g.
#   '"tpm"'), replacing the key where the section has it, adding it otherwise. The section must
#   exist. The file is read back by ma-server's own parser at start, which names any mistake.
# Needs: /usr/bin/python3.

toml_set() {
  /usr/bin/python3 - "$@" <<'EOF'
import re, sys
path, section, pairs = sys.argv[1], sys.argv[2], [a.split("=", 1) for a in sys.argv[3:]]
lines = open(path).read().split("\n")
start = lines.index("[%s]" % section) + 1
end = next((i for i in range(start, len(lines)) if lines[i].lstrip().startswith("[")), len(lines))
for key, value in pairs:
    at = [i for i in range(start, end) if re.match(r"\s*%s\s*=" % re.escape(key), lines[i])]
    if at:
        lines[at[0]] = "%s = %s" % (key, value)
    else:
        lines.insert(start, "%s = %s" % (key, value))
        end += 1
open(path, "w").write("\n".join(lines))
EOF
}
