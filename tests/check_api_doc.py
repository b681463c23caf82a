#!/usr/bin/python3
"""Fails when docs/API.md leaves out a public function or macro of mprpc.h.

Public means: declared with MPRPCDEF, or #defined as MPRPC_* / mprpc_*, in the API half of mprpc.h
(before the implementation), outside the nanopb code embedded between "-- begin generated" and
"-- end generated" markers, and not an internal MPRPC__ name or the include guard. A name counts as
documented when docs/API.md has it in backquotes (`name`, `name(...)`, or inside a code block).
Usage: tests/check_api_doc.py [mprpc.h] [docs/API.md]"""
import re
import sys

header = sys.argv[1] if len(sys.argv) > 1 else "mprpc.h"
doc = sys.argv[2] if len(sys.argv) > 2 else "docs/API.md"

api = open(header, encoding="utf-8").read().split("#endif /* MPRPC_H_INCLUDED */")[0]
api = re.sub(r"-- begin generated.*?-- end generated[^\n]*", "", api, flags=re.S)
functions = set(re.findall(r"MPRPCDEF\b[^;{(]*?\b(mprpc_\w+)\s*\(", api))
macros = set(re.findall(r"^\s*#\s*define\s+((?:MPRPC|mprpc)_\w+)", api, flags=re.M))
macros = {m for m in macros if not m.startswith("MPRPC__") and m != "MPRPC_H_INCLUDED"}

text = open(doc, encoding="utf-8").read()
blocks = re.findall(r"^```.*?^```", text, flags=re.S | re.M)
inline = re.findall(r"`([^`\n]+)`", re.sub(r"^```.*?^```", "", text, flags=re.S | re.M))
code = " ".join(blocks + inline)
words = set(re.findall(r"\w+", code))
missing = sorted(n for n in functions | macros if n not in words)
for n in missing:
    kind = "function" if n in functions else "macro"
    print(f"{doc}: public {kind} {n} (mprpc.h) is not documented")
print(f"{len(functions)} functions, {len(macros)} macros checked; {len(missing)} missing")
sys.exit(1 if missing else 0)
