# scripts/make-help.awk: `make help`. Reads the makefiles and prints one line
# per target from the `## text` written after it:
#     test: deps-test ## the whole suite ...
# Fails, naming them, when a .PHONY target has no such line, so the list
# cannot fall behind the targets.
FNR == 1 { printf "%s%s:\n", (NR > 1 ? "\n" : ""), FILENAME }

# .PHONY lists, with their backslash continuations
/^\.PHONY:/ { phony_line = 1; sub(/^\.PHONY:/, "") }
phony_line {
    line = $0
    more = sub(/\\[ \t]*$/, "", line)
    n = split(line, names, /[ \t]+/)
    for (i = 1; i <= n; i++) if (names[i] != "") phony[names[i]] = FILENAME
    phony_line = more
    next
}

/^[A-Za-z0-9_.%-]+([ \t]+[A-Za-z0-9_.%-]+)*[ \t]*:([^=]|$).*##/ {
    text = $0
    sub(/^[^#]*##[ \t]*/, "", text)
    targets = $0
    sub(/[ \t]*:.*/, "", targets)
    n = split(targets, names, /[ \t]+/)
    for (i = 1; i <= n; i++) {
        printf "  %-16s %s\n", names[i], text
        documented[names[i]] = 1
    }
}

END {
    bad = 0
    for (t in phony) if (!(t in documented)) {
        printf "make help: .PHONY target '%s' (%s) has no '## text' after it\n", t, phony[t] > "/dev/stderr"
        bad = 1
    }
    exit bad
}
