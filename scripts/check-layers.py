#!/usr/bin/python3
"""check-layers.py — the include rule of mailfeed's modules.

Every module (src/NAME.c, include/mailfeed/NAME.h, src/NAME.h) sits in one
layer below.  A file may include the headers of its own layer and of the
layers beneath it, never of a layer above: the stages call down into the
domain, the domain into the protocols, the protocols into the base, and
nothing calls back up.  Headers must not include each other in a cycle.

Run from the top of the tree (make check does):  scripts/check-layers.py [ROOT]
Exit status 0 when the tree keeps the rule, 1 with one line per breach.

A new file needs a place in LAYERS: the check refuses modules it does not
know, so that the order is decided when a module is born, not later.
"""

import fnmatch
import os
import re
import sys

# Bottom first.  Names are module names (file names without .c/.h); shell
# patterns are allowed.  Same-layer includes are fine.
LAYERS = [
    ("base", ["util", "log", "utf8", "tz", "mutf7", "loopback", "parse_limits",
              "mention", "route", "secret"]),
    ("config", ["config"]),
    ("state", ["db", "db_*", "message", "store", "messages", "notes", "state_owner",
               "health", "claims"]),
    ("protocols", ["imap", "http", "smtp", "compose", "jwt", "mime", "mime_*",
                   "facts", "html", "clean", "tags", "sandbox"]),
    ("domain", ["auth", "classify", "thread", "recipients", "token", "convert",
                "cluster", "cluster_*"]),
    ("feeds", ["feed", "feed_*"]),
    ("queue", ["outbox", "outbox_*", "deliver", "decide", "subscribers", "notice",
               "notice_queue"]),
    ("stages", ["worker", "worker_frame", "pipeline", "ingest", "replies", "retention",
                "digest", "digest_*", "metrics", "metrics_http"]),
    ("entry", ["cli", "cmd_*", "main", "worker_child"]),
]

# Includes that point up and are being removed.  THIS LIST MUST STAY EMPTY:
# it exists only so that the tree builds while a removal is under way; an
# entry that no longer matches an include is noted on every run.
UPWARD_EXCEPTIONS = []

INCLUDE_RE = re.compile(r'^\s*#\s*include\s+"(?:mailfeed/)?([A-Za-z0-9_]+)\.h"')


def module_of(path):
    return os.path.splitext(os.path.basename(path))[0]


def layer_of(module):
    for i, (_, names) in enumerate(LAYERS):
        for pat in names:
            if fnmatch.fnmatchcase(module, pat):
                return i
    return None


def files(root):
    out = []
    for d, ext in (("src", ".c"), ("src", ".h"), ("include/mailfeed", ".h")):
        full = os.path.join(root, d)
        if not os.path.isdir(full):
            continue
        for name in sorted(os.listdir(full)):
            if name.endswith(ext):
                out.append(os.path.join(d, name))
    return out


def includes(root, rel):
    found = []
    with open(os.path.join(root, rel), encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            m = INCLUDE_RE.match(line)
            if m:
                found.append((n, m.group(1)))
    return found


def header_path(root, name):
    for d in ("include/mailfeed", "src"):
        p = os.path.join(d, name + ".h")
        if os.path.exists(os.path.join(root, p)):
            return p
    return None


def find_cycles(graph):
    """Strongly connected components with more than one node (or a self
    loop), by Tarjan's algorithm; each as a sorted list."""
    index, low, on, stack, out = {}, {}, set(), [], []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph.get(v, ()):
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def main(argv):
    root = argv[1] if len(argv) > 1 else "."
    errors = []
    used_exceptions = set()
    header_graph = {}
    for rel in files(root):
        mod = module_of(rel)
        lay = layer_of(mod)
        if lay is None:
            errors.append("%s: module \"%s\" has no layer; add it to LAYERS in "
                          "scripts/check-layers.py" % (rel, mod))
            continue
        for line, inc in includes(root, rel):
            target = header_path(root, inc)
            if target is None:
                continue  # a system header spelt with quotes, or a test stub
            if rel.endswith(".h"):
                header_graph.setdefault(rel, set()).add(target)
            tlay = layer_of(inc)
            if tlay is None:
                errors.append("%s:%d: includes %s.h, whose module has no layer; add "
                              "it to LAYERS in scripts/check-layers.py" % (rel, line, inc))
                continue
            if tlay <= lay:
                continue
            if (rel, inc + ".h") in UPWARD_EXCEPTIONS:
                used_exceptions.add((rel, inc + ".h"))
                continue
            errors.append("%s:%d: upward include: %s (layer %s) includes %s.h (layer %s); "
                          "a module may include only its own layer and those below"
                          % (rel, line, mod, LAYERS[lay][0], inc, LAYERS[tlay][0]))
    for exc in UPWARD_EXCEPTIONS:
        if exc not in used_exceptions:
            print("check-layers: note: exception %s -> %s is gone from the code; "
                  "remove it from UPWARD_EXCEPTIONS" % exc, file=sys.stderr)
    for comp in find_cycles(header_graph):
        errors.append("include cycle between headers: %s each reach the others"
                      % ", ".join(comp))
    for e in errors:
        print("check-layers: " + e, file=sys.stderr)
    if errors:
        print("check-layers: %d problem(s); the layers, bottom first: %s"
              % (len(errors), " < ".join(n for n, _ in LAYERS)), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
