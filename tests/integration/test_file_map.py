"""The README's map of src/ is true to the tree: every source file is in
it, every file it names exists, and a table it gives to one file is
touched by no other (store.c keeps the schema; the read-only joins the
map names are the only crossings)."""
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SRC = os.path.join(ROOT, "src")

# (file, tables of another module it may read in a join), as the README says
READ_ONLY_JOINS = {
    "outbox.c": {"messages", "message_bodies", "message_parsed"},
    "messages.c": {"outbox"},
}


def file_map():
    """{file: [tables]} from the README's list of the files of src/."""
    readme = open(os.path.join(ROOT, "README.md")).read()
    start = readme.index("The files of `src/`, by layer")
    end = readme.index("Private headers:", start)
    text = readme[start:readme.index("\n\n", end)]
    owned = {}
    # an entry: `file.c` (`table`, `table`: what) or `a.c`, `b.c` (...)
    for m in re.finditer(r"`([a-z0-9_*]+\.[ch])`(?:\s+\(([^)]*)\))?", text):
        tables = re.findall(r"`([a-z_]+)`", (m.group(2) or "").split(":")[0])
        owned[m.group(1)] = tables
    return owned


def test_every_source_file_is_in_the_map():
    named = file_map()
    for f in sorted(os.listdir(SRC)):
        if f.endswith((".c", ".h")) and not f.startswith("cmd_"):
            assert f in named, f"src/{f} is missing from the README's file map"
    for f in named:
        if "*" not in f:
            assert os.path.exists(os.path.join(SRC, f)), f"the README names src/{f}"


def test_a_table_has_one_owner():
    owners = {}
    for f, tables in file_map().items():
        for t in tables:
            assert t not in owners, f"{t} given to {owners.get(t)} and {f}"
            owners[t] = f
    assert {"messages", "outbox", "subscribers", "mutes", "sent_ids", "notice_queue",
            "notices", "digest_runs", "ack_errors"} <= set(owners)
    for f in sorted(os.listdir(SRC)):
        if not f.endswith(".c") or f == "store.c":
            continue
        code = open(os.path.join(SRC, f)).read()
        for t, owner in owners.items():
            if f == owner or t in READ_ONLY_JOINS.get(f, ()):
                continue
            sql = re.search(r"(FROM|INTO|UPDATE|JOIN|TABLE( IF NOT EXISTS)?) +%s\b" % t, code)
            assert not sql, f"src/{f} has SQL on {t}, which is {owner}'s"
