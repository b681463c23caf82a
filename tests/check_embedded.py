#!/usr/bin/python3
"""mprpc.h embeds the nanopb code generated from proto/mprpc.proto (and, as the
block tagged "admin", from proto/admin.proto). This regenerates it and checks
that every line of the embedded block appears, in order, in the fresh output,
so the copy cannot drift from the .proto.
Usage: check_embedded.py GENERATED.pb.h [TAG]"""
import re, sys

gen = open(sys.argv[1]).read()
top = open(__file__.rsplit("/tests/", 1)[0] + "/mprpc.h").read()
tag = " " + sys.argv[2] if len(sys.argv) > 2 else ""
block = top.split(f"/* -- begin generated{tag} -- */", 1)[1].split(f"/* -- end generated{tag} -- */", 1)[0]

def lines(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return [re.sub(r"\s+", " ", l).strip() for l in text.splitlines() if l.strip()]

want, have = lines(block), lines(gen)
pos = 0
for l in want:
    try:
        pos = have.index(l, pos) + 1
    except ValueError:
        print(f"embedded line not in regenerated output (or out of order): {l}")
        sys.exit(1)
print(f"embedded nanopb code matches the regenerated {sys.argv[1]} ({len(want)} lines)")
