"""Files everywhere: a mail with two attachments goes through the daemon (a
real Dovecot, `run --once`) to the built-in local feed, which keeps both
files on disk under safe names and links them from the Atom entry and the
text; the digest then lists them with names, sizes and where they are."""
import email.message
import os
import re
import time
import xml.etree.ElementTree as ET

from conftest import state_db
from test_digest import (Sink, make_config, mf, needs_dovecot, parts, prepare,  # noqa: F401
                         run_once, sink)

from test_digest_view import check_layout  # noqa: E402

ATOM = "{http://www.w3.org/2005/Atom}"


def mail_with_files():
    m = email.message.EmailMessage()
    m["From"] = "Ann Example <ann@example.org>"
    m["To"] = "team@example.org"
    m["Subject"] = "Board pack for Thursday"
    m["Message-ID"] = "<files-1@example.org>"
    m["Date"] = "Mon, 23 Nov 2026 08:00:00 +0000"
    m.set_content("The board pack and the budget are attached.\n")
    m.add_attachment(b"%PDF-1.4 board pack" + b"x" * 3000, maintype="application",
                     subtype="pdf", filename="../Board pack.pdf")
    m.add_attachment(b"item,amount\nrent,1200\n", maintype="text", subtype="csv",
                     filename=".budget 2026.csv")
    return m.as_bytes()


@needs_dovecot
def test_mail_with_two_files_reaches_disk_atom_and_digest(dovecot, tmp_path, sink):
    dovecot.create_folder("alice", "Team")
    cfg = make_config(tmp_path, sink.port, imap_port=dovecot.imap_port)
    prepare(cfg)
    dovecot.append("alice", "Team", mail_with_files())
    r = run_once(cfg)
    assert r.returncode == 0, r.stderr

    files = tmp_path / "feed" / "team-group.files"
    kept = sorted(os.listdir(files))
    assert kept == ["Board pack.pdf", "budget 2026.csv"], kept
    assert (files / "budget 2026.csv").read_bytes() == b"item,amount\nrent,1200\n"
    assert os.stat(files / "Board pack.pdf").st_size == 3019
    assert all(os.stat(files / k).st_mode & 0o777 == 0o640 for k in kept)

    root = ET.parse(tmp_path / "feed" / "team-group.atom").getroot()
    [entry] = root.findall(ATOM + "entry")
    links = [(ln.get("href"), ln.get("length"), ln.get("type"))
             for ln in entry.findall(ATOM + "link") if ln.get("rel") == "enclosure"]
    assert links == [("team-group.files/Board%20pack.pdf", "3019", "application/pdf"),
                     ("team-group.files/budget%202026.csv", "22", "text/csv")]
    txt = (tmp_path / "feed" / "team-group.txt").read_text()
    assert "File: Board pack.pdf (3 KB): team-group.files/Board pack.pdf" in txt

    # the daemon's own pass already settled today's (empty) period: look
    # at everything of the last minute
    con = state_db(cfg)
    con.execute("UPDATE subscribers SET last_sent=?", (int(time.time()) - 60,))
    con.commit()
    con.close()
    time.sleep(1.2)  # a digest covers whole seconds up to the one before now
    r = mf(cfg, "digest", "--now")
    assert r.returncode == 0, r.stderr
    assert sink.messages(), r.stderr
    [(_meta, m, _raw)] = sink.messages()
    text, html = parts(m)
    assert re.search(r"Files: Board pack\.pdf \(3 KB\) file:///\S*/team-group\.files/Board%20pack\.pdf\r?\n",
                     text), text
    assert re.search(r"\n +budget 2026\.csv \(22 bytes\) file:///\S*/team-group\.files/budget%202026\.csv",
                     text), text
    assert "<li>Board pack.pdf <span" in html and "(22 bytes)</span></li>" in html
    # the list reads on a phone as on a desk (screenshots under build/screenshots)
    check_layout(html, "digest-files", tmp_path)
