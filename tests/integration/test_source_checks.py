"""The source checks `make check` runs before the tests: the include layers
(scripts/check-layers.py) and the function length (scripts/check-length.sh).
Each passes on the tree as it is and refuses a planted breach in a copy."""
import os
import shutil
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LAYERS = os.path.join(ROOT, "scripts", "check-layers.py")
LENGTH = os.path.join(ROOT, "scripts", "check-length.sh")


def copy_tree(tmp_path):
    dst = tmp_path / "tree"
    for d in ("src", "include"):
        shutil.copytree(os.path.join(ROOT, d), dst / d)
    return dst


def run(cmd, cwd=ROOT):
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)


def test_tree_keeps_the_layers():
    r = run(["/usr/bin/python3", LAYERS, ROOT])
    assert r.returncode == 0, r.stderr


def test_upward_include_is_refused(tmp_path):
    tree = copy_tree(tmp_path)
    with open(tree / "src" / "util.c", "a") as f:
        f.write('#include "mailfeed/outbox.h"\n')
    r = run(["/usr/bin/python3", LAYERS, str(tree)])
    assert r.returncode == 1
    assert "src/util.c" in r.stderr and "upward include" in r.stderr
    assert "outbox.h (layer queue)" in r.stderr


def test_header_cycle_is_refused(tmp_path):
    tree = copy_tree(tmp_path)
    with open(tree / "include" / "mailfeed" / "message.h", "a") as f:
        f.write('#include "mailfeed/store.h"\n')
    with open(tree / "include" / "mailfeed" / "store.h", "a") as f:
        f.write('#include "mailfeed/message.h"\n')
    r = run(["/usr/bin/python3", LAYERS, str(tree)])
    assert r.returncode == 1
    assert "include cycle between headers" in r.stderr
    assert "include/mailfeed/message.h" in r.stderr and "include/mailfeed/store.h" in r.stderr
    assert "upward" not in r.stderr


def test_module_without_layer_is_refused(tmp_path):
    tree = copy_tree(tmp_path)
    (tree / "src" / "gadget.c").write_text('#include "mailfeed/util.h"\n')
    r = run(["/usr/bin/python3", LAYERS, str(tree)])
    assert r.returncode == 1
    assert 'module "gadget" has no layer' in r.stderr


def test_tree_keeps_the_function_length():
    r = run(["sh", LENGTH, ROOT])
    assert r.returncode == 0, r.stderr


def test_new_long_function_is_refused(tmp_path):
    tree = copy_tree(tmp_path)
    body = "".join("\tx += %d;\n" % i for i in range(85))
    with open(tree / "src" / "util.c", "a") as f:
        f.write("int planted_long(int x);\nint planted_long(int x)\n{\n%s\treturn x;\n}\n" % body)
    r = run(["sh", LENGTH, str(tree)])
    assert r.returncode == 1
    assert "src/util.c" in r.stderr and "planted_long is 89 lines" in r.stderr
