"""Record feeds (Chatter): a mapping's routes send a new thread to the feed
of the record it is about — by a reference in the subject or text looked up
with SOQL, or by the sender's (or a recipient's) Contact and its Account —
and fall back to the mapping's group.  Driven through feedprobe against the
Chatter double, which keeps records and answers their SOQL as the API does."""
import json
import os
import subprocess

from test_chatter import GROUP, PROBE, chatter, comment, post  # noqa: F401

OPP = "006XX0000000042AAA"
ACME = "001XX0000000007AAA"
GLOBEX = "001XX0000000008AAA"
RECORDS = [
    {"Id": OPP, "attributes": {"type": "Opportunity"}, "Reference__c": "OPP-1042",
     "Name": "Acme renewal"},
    {"Id": "006XX0000000043AAA", "attributes": {"type": "Opportunity"},
     "Reference__c": "OPP-7", "Name": "one"},
    {"Id": "006XX0000000044AAA", "attributes": {"type": "Opportunity"},
     "Reference__c": "OPP-7", "Name": "two"},
    {"Id": ACME, "attributes": {"type": "Account"}, "Name": "Acme"},
    {"Id": GLOBEX, "attributes": {"type": "Account"}, "Name": "Globex"},
    {"Id": "003XX0000000001AAA", "attributes": {"type": "Contact"},
     "Email": "alice@example.org", "AccountId": ACME},
    {"Id": "003XX0000000002AAA", "attributes": {"type": "Contact"},
     "Email": "hank@globex.example", "AccountId": GLOBEX},
    {"Id": "00QXX0000000001AAA", "attributes": {"type": "Lead"},
     "Email": "lead@example.net", "IsConverted": True, "ConvertedAccountId": GLOBEX},
]


def probe(chatter, req, routes):
    path = chatter.config()
    pw = os.path.join(os.path.dirname(path), "imap.pass")
    with open(pw, "w") as f:
        f.write("x\n")
    os.chmod(pw, 0o600)
    with open(path, "a") as f:
        f.write("[account staff]\nhost = 127.0.0.1\nusername = u\npassword_file = %s\n"
                "[mailbox sales]\naccount = staff\nfolder = Sales\ngroup = %s\n" % (pw, GROUP))
        for r in routes:
            f.write("route = %s\n" % r)
    out = subprocess.run([PROBE, path], input=json.dumps(req), capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert "ERROR: AddressSanitizer" not in out.stderr
    chatter.log = out.stderr
    return json.loads(out.stdout)


REF = r"reference:\[(OPP-[0-9]+)\] -> Opportunity.Reference__c"


def test_reference_in_the_subject_goes_to_its_record(chatter):
    chatter.control(records=RECORDS)
    res = probe(chatter, {"op": "deliver", "items": [
        post("r1", subject="[OPP-1042] Pricing for next year"),
        post("r2", subject="No reference here", text="Nor here."),
        post("r3", subject="[OPP-7] two records have it"),
        post("r4", subject="Re: the renewal", text="About [OPP-1042], the numbers.")]},
        [REF, "sender-account"])["results"]
    assert all(r["status"] == "ok" for r in res), res
    st = chatter.state()
    where = {p["id"]: p["parent"]["id"] for p in st["posts"]}
    assert where[res[0]["remote_id"]] == OPP
    # no reference: the sender's account (alice is a contact of Acme)
    assert where[res[1]["remote_id"]] == ACME
    # a reference that names two records is no answer: the next rule decides
    assert where[res[2]["remote_id"]] == ACME
    # found in the text when the subject has none
    assert where[res[3]["remote_id"]] == OPP
    asked = [q for q in st["queries"] if "Opportunity" in q]
    assert "SELECT Id FROM Opportunity WHERE Reference__c = 'OPP-1042' LIMIT 2" in asked
    assert "chatter.routed" in chatter.log and "reference OPP-1042" in chatter.log


def test_sender_account_then_recipients_then_the_group(chatter):
    chatter.control(records=RECORDS)
    res = probe(chatter, {"op": "deliver", "items": [
        post("s1", author_email="nobody@else.example", recipients=["hank@globex.example"]),
        post("s2", author_email="lead@example.net"),
        post("s3", author_email="o'neil@example.com", recipients=["x@y.example"])]},
        ["sender-account"])["results"]
    assert all(r["status"] == "ok" for r in res), res
    where = {p["id"]: p["parent"]["id"] for p in chatter.state()["posts"]}
    assert where[res[0]["remote_id"]] == GLOBEX  # the first recipient's account
    assert where[res[1]["remote_id"]] == GLOBEX  # a converted lead's account
    assert where[res[2]["remote_id"]] == GROUP   # nobody known: the mapping's group
    # the quote in the address is escaped in SOQL
    assert any("Email = 'o\\'neil@example.com'" in q for q in chatter.state()["queries"])


def test_a_routed_thread_stays_and_a_lost_answer_is_found_there(chatter):
    chatter.control(records=RECORDS)
    item = post("t1", subject="[OPP-1042] Kick-off")
    pid = probe(chatter, {"op": "deliver", "items": [item]}, [REF])["results"][0]["remote_id"]
    # a comment goes under the post, on the record's feed
    c = probe(chatter, {"op": "deliver", "items": [comment(pid, key="t1c")]}, [REF])
    assert c["results"][0]["status"] == "ok"
    assert chatter.state()["comments"][0]["feedElement"]["id"] == pid
    # after a crash, the post is looked for where the routes sent it
    r = probe(chatter, {"op": "reconcile", "item": item}, [REF])
    assert r == {"found": 1, "remote_id": pid}


def test_a_failed_lookup_is_retried_and_a_refused_query_falls_back(chatter):
    chatter.control(records=RECORDS, fail_next=[503])
    res = probe(chatter, {"op": "deliver", "items": [post("f1", subject="[OPP-1042] x")]},
                [REF])["results"]
    assert res[0]["status"] == "retry", res
    assert chatter.state()["posts"] == []
    # a field the org does not have: logged, and the group takes the thread
    res = probe(chatter, {"op": "deliver", "items": [post("f2", subject="[OPP-1042] y")]},
                [r"reference:\[(OPP-[0-9]+)\] -> Opportunity.NoSuchField__c"])["results"]
    assert res[0]["status"] == "ok", res
    assert chatter.state()["posts"][0]["parent"]["id"] == GROUP
    assert "chatter.route_lookup_failed" in chatter.log


def test_a_broken_route_is_refused_with_its_line(tmp_path):
    from conftest import run_mailfeed
    pw = tmp_path / "pw"
    pw.write_text("x\n")
    os.chmod(pw, 0o600)
    for bad, words in (("reference:[unclosed -> Opportunity.Reference__c", "does not compile"),
                       ("reference:OPP-[0-9]+", "needs -> OBJECT.FIELD"),
                       ("reference:OPP -> Opportunity", "OBJECT.FIELD"),
                       ("account-of-sender", "sender-account")):
        conf = tmp_path / "mailfeed.conf"
        conf.write_text("[gateway]\nstate = %s\n[feed]\nbackend = local\ndir = %s\n"
                        "[account a]\nhost = 127.0.0.1\nusername = u\npassword_file = %s\n"
                        "[mailbox m]\naccount = a\nfolder = Sales\ngroup = g\nroute = %s\n"
                        % (tmp_path / "s.db", tmp_path / "feed", pw, bad))
        r = run_mailfeed(str(conf), "check-config")
        assert r.returncode == 2, (bad, r.stdout, r.stderr)
        assert words in r.stderr and "mailfeed.conf:14:" in r.stderr and "missing" not in r.stderr, r.stderr
