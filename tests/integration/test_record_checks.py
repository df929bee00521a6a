"""Record targets and routes, as an admin sees them before and while the
gateway runs: `check-config --online` asks the org (through the Chatter
double's describe and record calls) whether each record a mapping targets
exists and has a feed, and whether each route's object and field are there;
`inspect` and `preview` tell, without asking the service, which route a new
thread takes and what it would look up."""
import json

from conftest import run_mailfeed, write_config
from test_check_online import chatter, chatter_feed, line, lines  # noqa: F401

GROUP = "0F9XX0000000001AAA"  # the double's "Fundraising"
OPP = "006XX0000000042AAA"
PROJECT = "a01XX0000000001AAA"
REF = r"reference:\[(OPP-[0-9]+)\] -> Opportunity.Reference__c"
RECORDS = [
    {"Id": OPP, "attributes": {"type": "Opportunity"}, "Reference__c": "OPP-1042",
     "Name": "Acme renewal"},
    {"Id": PROJECT, "attributes": {"type": "Project__c"}, "Name": "Website",
     "Code__c": "W-1"},
    {"Id": "003XX0000000001AAA", "attributes": {"type": "Contact"},
     "Email": "alice@example.org", "AccountId": "001XX0000000007AAA"},
]


def test_record_targets_and_routes_are_checked_online(tmp_path, dovecot, chatter):
    chatter.control(records=RECORDS, objects={
        "Project__c": {"keyPrefix": "a01", "feedEnabled": False, "custom": True}})
    for f in ("G", "P", "F", "S"):
        dovecot.create_folder("alice", f)
    conf = write_config(tmp_path, dovecot, group=OPP, feed=chatter_feed(chatter),
                        mailbox={"route": REF}, **{
                            "mailbox gone": {"account": "alice", "folder": "G",
                                             "group": "006XX0000000099AAA"},
                            "mailbox project": {"account": "alice", "folder": "P",
                                                "group": PROJECT,
                                                "route": "reference:(W-[0-9]+) -> "
                                                         "Project__c.Code__c"},
                            "mailbox typo": {"account": "alice", "folder": "F",
                                             "group": GROUP,
                                             "route": "reference:(OPP-[0-9]+) -> "
                                                      "Opportunity.Refrence__c"},
                            "mailbox senders": {"account": "alice", "folder": "S",
                                                "group": GROUP, "route": "sender-account"}})
    r = run_mailfeed(conf, "check-config", "--online")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "ERROR: AddressSanitizer" not in r.stderr
    # a good record: its object found by the key prefix, feed-enabled, there
    assert line(r, f"group {OPP}") == \
        f'group {OPP} (mailbox team): ok, Opportunity "Acme renewal" (feed enabled)'
    assert line(r, "group 006XX0000000099AAA") == \
        "group 006XX0000000099AAA (mailbox gone): FAILED: no Opportunity with id " \
        "006XX0000000099AAA (deleted, or integration@acme.example may not see it)"
    assert line(r, f"group {PROJECT}") == \
        f"group {PROJECT} (mailbox project): FAILED: Project__c records have no feed: turn " \
        "on feed tracking for Project__c (Setup, Feed Tracking)"
    assert line(r, f"group {GROUP}") == f'group {GROUP} (mailbox typo): ok, "Fundraising"'
    # each route line: object, field, feed
    assert line(r, f"route {REF} (mailbox team)") == \
        f"route {REF} (mailbox team): ok, Opportunity is feed-enabled, " \
        "Opportunity.Reference__c readable"
    assert line(r, "route reference:(W-") == \
        "route reference:(W-[0-9]+) -> Project__c.Code__c (mailbox project): FAILED: " \
        "Project__c records have no feed: turn on feed tracking for Project__c (Setup, " \
        "Feed Tracking)"
    assert line(r, "route reference:(OPP-") == \
        "route reference:(OPP-[0-9]+) -> Opportunity.Refrence__c (mailbox typo): FAILED: " \
        "Opportunity has no field Refrence__c that integration@acme.example may read"
    assert line(r, "route sender-account") == \
        "route sender-account (mailbox senders): ok, Contact.AccountId and " \
        "Lead.ConvertedAccountId readable, Account is feed-enabled"
    assert lines(r)[-1] == "4 checks failed"
    # the prefix is looked up once in the catalogue, then the object and the record
    paths = [q["path"] for q in json.loads(
        __import__("urllib.request").request.urlopen(chatter.base + "/__state").read())
        ["requests"]]
    assert any(p.endswith("/sobjects/") for p in paths)
    assert any(p.endswith("/sobjects/Opportunity/describe") for p in paths)
    assert any(p.endswith("/sobjects/Opportunity/" + OPP) for p in paths)

    # an object the org does not have, and a lead field hidden from the user
    chatter.control(objects={"Lead": {"fields": ["Id", "Name", "Email"]}})
    conf = write_config(tmp_path / "b", dovecot, group=GROUP, feed=chatter_feed(chatter),
                        extra="route = reference:(X-[0-9]+) -> Nosuch__c.Code__c\n"
                              "route = sender-account\n")
    r = run_mailfeed(conf, "check-config", "--online")
    assert r.returncode == 1, r.stdout + r.stderr
    assert line(r, "route reference:(X-") == \
        "route reference:(X-[0-9]+) -> Nosuch__c.Code__c (mailbox team): FAILED: no object " \
        "Nosuch__c in the org (or integration@acme.example may not see it)"
    assert line(r, "route sender-account") == \
        "route sender-account (mailbox team): FAILED: Lead has no field ConvertedAccountId " \
        "that integration@acme.example may read"
    assert lines(r)[-1] == "2 checks failed"


def mail(i, subject, body, frm="carol@example.org", to="team@example.org", extra=""):
    return ("From: Carol <%s>\r\nTo: %s\r\nSubject: %s\r\n"
            "Message-ID: <r%d@example.org>\r\nDate: Mon, 23 Nov 2026 07:%02d:00 +0000\r\n"
            "%s\r\n%s" % (frm, to, subject, i, i, extra, body)).encode()


def test_inspect_shows_the_route_and_why(tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("x\n")
    pw.chmod(0o600)
    conf = tmp_path / "routes.conf"
    conf.write_text("[gateway]\nstate = %s\n[feed]\nbackend = local\ndir = %s\n"
                    "[account a]\nhost = 127.0.0.1\nusername = u\npassword_file = %s\n"
                    "[mailbox sales]\naccount = a\nfolder = Sales\ngroup = %s\nroute = %s\n"
                    "route = sender-account\n"
                    % (tmp_path / "state.db", tmp_path / "feeds", pw, GROUP, REF))

    def inspect(raw, *args):
        f = tmp_path / "m.eml"
        f.write_bytes(raw)
        r = run_mailfeed(str(conf), "inspect", str(f), *args)
        assert r.returncode == 0, r.stdout + r.stderr
        return r.stdout

    out = inspect(mail(1, "[OPP-1042] Pricing", "The numbers.\n"))
    assert "Route: reference OPP-1042 \u2192 Opportunity.Reference__c (looked up when " \
           "posted)\n" in out, out
    o = json.loads(inspect(mail(1, "[OPP-1042] Pricing", "The numbers.\n"), "--json"))
    assert o["route"] == {"rule": REF, "kind": "reference", "value": "OPP-1042",
                          "object": "Opportunity", "field": "Reference__c",
                          "text": "reference OPP-1042 \u2192 Opportunity.Reference__c "
                                  "(looked up when posted)"}
    # no reference: the sender's account
    out = inspect(mail(2, "Lunch", "See you.\n", frm="alice@example.org"))
    assert "Route: sender-account alice@example.org \u2192 Contact \u2192 Account" in out, out
    o = json.loads(inspect(mail(2, "Lunch", "See you.\n", frm="alice@example.org"),
                           "--json"))["route"]
    assert (o["rule"], o["kind"], o["value"]) == ("sender-account", "sender-account",
                                                  "alice@example.org")
    # a skipped message has no route
    o = json.loads(inspect(mail(3, "Out of office", "Away.\n",
                                extra="Auto-Submitted: auto-replied\r\n"), "--json"))
    assert o["classification"] == "skipped" and o["route"] is None


def test_preview_shows_the_route_and_none_matched(dovecot, tmp_path):
    dovecot.create_folder("alice", "Sales")
    dovecot.append("alice", "Sales", mail(1, "[OPP-1042] Pricing", "The numbers.\n"))
    dovecot.append("alice", "Sales", mail(2, "Lunch", "See you.\n"))
    cfg = write_config(tmp_path, dovecot, folder="Sales", group=GROUP, mailbox={"route": REF})
    r = run_mailfeed(cfg, "preview", "team", "--json")
    assert r.returncode == 0, r.stderr
    items = json.loads(r.stdout)
    assert items[0]["route"]["kind"] == "reference"
    assert items[0]["route"]["value"] == "OPP-1042"
    assert items[1]["route"] == {"rule": None, "kind": "none", "value": None, "object": None,
                                 "field": None, "text": "none matched \u2192 group"}
    r = run_mailfeed(cfg, "preview", "team")
    assert r.returncode == 0, r.stderr
    assert "  route:    reference OPP-1042 \u2192 Opportunity.Reference__c (looked up when " \
           "posted)\n" in r.stdout, r.stdout
    assert "  route:    none matched \u2192 group\n" in r.stdout, r.stdout

    # once the thread is posted, a reply is a comment: it follows its post
    r = run_mailfeed(cfg, "run", "--once", timeout=120)
    assert r.returncode == 0, r.stderr
    reply = tmp_path / "reply.eml"
    reply.write_bytes(mail(3, "Re: [OPP-1042] Pricing", "Agreed.\n",
                           extra="In-Reply-To: <r1@example.org>\r\n"))
    o = json.loads(run_mailfeed(cfg, "inspect", str(reply), "--json").stdout)
    assert o["classification"] == "comment", o
    assert o["route"]["kind"] == "thread" and o["route"]["rule"] is None
    r = run_mailfeed(cfg, "inspect", str(reply))
    assert "Route: thread \u2192 a comment under its post, on the feed the post went to\n" \
        in r.stdout, r.stdout
