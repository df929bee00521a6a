#!/usr/bin/python3
"""A test double of Salesforce's token endpoint and the Chatter (Connect REST)
resources mailfeed uses, following docs/feed-apis.md section 1.

It listens on 127.0.0.1 (random port unless --port), prints the port on
stdout, and keeps everything in memory.  What it checks: RS256 JWT bearer
assertions (signature against --public-key, iss, aud, exp window, known and
pre-authorized sub), Bearer tokens on data calls (401 INVALID_SESSION_ID once
expired), feed item / comment input shapes (unknown fields, segment types and
their fields, markup nesting, 10,000 characters, 25 mentions of known user or
group ids of 15/18 characters, 10 files, known file ids), multipart uploads
with a fileData part, and the simple SOQL user query with its backslash
escapes.  Errors use Chatter's JSON array format.

Side channel for tests:
  POST /__control  {"fail_next": [500, 429, {"status": 400, "errorCode": "X",
                    "message": "..."}], "skip": N (data calls let through before
                    fail_next applies), "retry_after": 2, "delay": 3,
                    "drop": 1, "lose_after": K (let K data calls through first),
                    "lose_answer": N (the next N data calls are
                    carried out, then the connection is closed unanswered),
                    "expire_tokens": true, "expire_after": N,
                    "reject_sessions": true, "down_for": S (every call answers
                    503 SERVER_UNAVAILABLE for S seconds, with Retry-After when
                    retry_after is set), "groups": {"0F9...": "Name"},
                    "users": [{"Id": ..., "Username": ..., "Email": ...,
                               "Name": ..., "IsActive": true,
                               "authorized": true}],
                    "fail_token_next": [{"status": 400, "error": "invalid_grant",
                                         "error_description": "..."}],
                    "members": {GROUP_ID: [{"Id": "005...", "Name": ..., "Email": ...,
                                            "NotificationFrequency": "P|D|W|N",
                                            "CollaborationRole": "Standard"}]}
                    (replaces those groups' CollaborationGroupMember rows),
                    "query_page_size": N (records per query page, default 2000),
                    "group_roles": {GROUP_ID: "NotAMember"} (myRole in GET
                    /chatter/groups/{id}), "group_visibility": {GROUP_ID:
                    "PrivateAccess"}, "archived_groups": [GROUP_ID],
                    "objects": {NAME: {"keyPrefix": "a01", "feedEnabled": bool,
                                       "custom": bool, "fields": [NAME, ...]}}
                    (adds objects to, or changes, the org's catalogue: Account,
                    Contact, Lead, Opportunity, Case, User, CollaborationGroup)}
  GET  /services/data/vXX.X/sobjects/                 global describe
  GET  /services/data/vXX.X/sobjects/OBJECT/describe  one object, with fields
  GET  /services/data/vXX.X/sobjects/OBJECT/ID        one of the records given
       (an object's fields: those declared, and every field of its records)
  GET  /__state    posts, comments, files, users, mentions ({element, id} of
                   every Mention segment taken) and a request log
"""
import argparse
import base64
import email.parser
import hashlib
import email.policy
import json
import re
import sys
import threading
import time
import urllib.parse
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

LOCK = threading.Lock()
# the org's objects as the describe calls show them; /__control "objects"
# adds or changes entries
STANDARD_OBJECTS = {
    "Account": {"keyPrefix": "001", "feedEnabled": True,
                "fields": ["Id", "Name", "OwnerId", "Phone"]},
    "Contact": {"keyPrefix": "003", "feedEnabled": True,
                "fields": ["Id", "Name", "Email", "AccountId"]},
    "Lead": {"keyPrefix": "00Q", "feedEnabled": True,
             "fields": ["Id", "Name", "Email", "IsConverted", "ConvertedAccountId"]},
    "Opportunity": {"keyPrefix": "006", "feedEnabled": True,
                    "fields": ["Id", "Name", "AccountId", "StageName"]},
    "Case": {"keyPrefix": "500", "feedEnabled": True,
             "fields": ["Id", "CaseNumber", "Subject", "AccountId"]},
    "User": {"keyPrefix": "005", "feedEnabled": True,
             "fields": ["Id", "Username", "Email", "Name", "IsActive"]},
    "CollaborationGroup": {"keyPrefix": "0F9", "feedEnabled": True,
                           "fields": ["Id", "Name"]},
}
REFERENCE_TARGETS = {"AccountId": "Account", "ConvertedAccountId": "Account",
                     "OwnerId": "User"}


def field_describe(name):
    """A DescribeFieldResult, with the properties a client reads."""
    if name == "Id":
        ftype = "id"
    elif name in REFERENCE_TARGETS:
        ftype = "reference"
    elif name.startswith("Is"):
        ftype = "boolean"
    elif name == "Email":
        ftype = "email"
    else:
        ftype = "string"
    return {"name": name, "type": ftype, "label": name, "custom": name.endswith("__c"),
            "nillable": name != "Id", "length": 0 if ftype in ("id", "boolean") else 255,
            "referenceTo": [REFERENCE_TARGETS[name]] if name in REFERENCE_TARGETS else [],
            "relationshipName": name[:-2] if name in REFERENCE_TARGETS else None,
            "filterable": True, "updateable": name != "Id", "createable": name != "Id"}
MAX_BODY = 30 * 1024 * 1024
SEGMENT_FIELDS = {
    "Text": {"text"},
    "Hashtag": {"tag"},
    "Link": {"url"},
    "Mention": {"id"},
    "MarkupBegin": {"markupType", "url", "altText"},
    "MarkupEnd": {"markupType"},
}
MENTION_ID = re.compile(r"^(005|0F9)[A-Za-z0-9]{12}([A-Za-z0-9]{3})?$")
MARKUPS = {"Bold", "Code", "Hyperlink", "Italic", "ListItem", "OrderedList",
           "Paragraph", "Strikethrough", "Underline", "UnorderedList"}


def iso(t):
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + \
        "%03dZ" % int((t % 1) * 1000)


class State:
    def __init__(self, client_id, public_key):
        self.client_id = client_id
        self.public_key = public_key
        self.counter = 0
        self.tokens = {}          # token -> username
        self.tokens_issued = []   # usernames
        self.users = [{"Id": "005XX0000000001AAA", "Username": "integration@acme.example",
                       "Email": "feeds@example.org", "Name": "Feed Integration",
                       "IsActive": True, "authorized": True}]
        self.groups = {"0F9XX0000000001AAA": "Fundraising", "0F9XX0000000002AAA": "Board"}
        self.elements = []        # posts, newest last
        self.comments = []
        self.files = {}
        self.fail_next = []
        self.skip = 0             # data calls let through before fail_next applies
        self.expire_after = None  # data calls after which all tokens expire
        self.reject_sessions = False
        self.fail_token_next = []
        self.retry_after = None
        self.delay = 0
        self.drop = 0
        self.lose_answer = 0
        self.lose_after = 0
        # records of other objects (Account, Opportunity, Contact, Lead, custom),
        # by Id: {"Id": "006...", "attributes": {"type": "Opportunity"}, fields...}
        self.records = {}       # data calls answered before lose_answer starts
        self.down_until = 0.0     # maintenance window: every call answers 503
        self.log = []
        self.queries = []
        self.members = {}         # group id -> [member dict]
        self.group_roles = {}     # group id -> myRole of the integration user
        self.group_visibility = {}  # group id -> PublicAccess | PrivateAccess
        self.archived_groups = set()
        self.query_page_size = 2000
        self.cursors = {}         # query locator -> remaining records
        self.objects = {k: dict(v) for k, v in STANDARD_OBJECTS.items()}

    def new_id(self, prefix):
        self.counter += 1
        return prefix + "XX" + "%013d" % self.counter


def public(d):
    """What the API shows of a stored element: internal keys dropped."""
    return {k: v for k, v in d.items() if not k.startswith("_")}


def b64url_decode(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def out_segments(segs, users):
    out, text, depth = [], [], 0
    for s in segs:
        t = s["type"]
        if t == "Text":
            out.append({"type": "Text", "text": s["text"]})
            text.append(s["text"])
        elif t == "Link":
            out.append({"type": "Link", "url": s["url"], "text": s["url"]})
            text.append(s["url"])
        elif t == "Hashtag":
            out.append({"type": "Hashtag", "tag": s["tag"], "text": "#" + s["tag"],
                        "topicUrl": "/services/data/v62.0/connect/topics?exactMatch=true&q=" +
                        urllib.parse.quote(s["tag"]), "url": "/topics/" + s["tag"]})
            text.append("#" + s["tag"])
        elif t == "Mention":
            name = next((u["Name"] for u in users if u["Id"] == s["id"]), "Group")
            out.append({"type": "Mention", "text": "@" + name, "name": name,
                        "record": {"id": s["id"]}})
            text.append("@" + name)
        elif t == "MarkupBegin":
            depth += 1
            out.append({"type": "MarkupBegin", "markupType": s["markupType"],
                        "htmlTag": "p" if s["markupType"] == "Paragraph" else "b", "text": ""})
        elif t == "MarkupEnd":
            depth -= 1
            out.append({"type": "MarkupEnd", "markupType": s["markupType"],
                        "htmlTag": "p" if s["markupType"] == "Paragraph" else "b", "text": ""})
            if s["markupType"] == "Paragraph":
                text.append("\n")
    return out, "".join(text).strip("\n")


class Refused(Exception):
    def __init__(self, status, code, message):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def check_body(body, st):
    if not isinstance(body, dict) or set(body) - {"messageSegments"}:
        raise Refused(400, "JSON_PARSER_ERROR", "Unrecognized field in body")
    segs = body.get("messageSegments")
    if not isinstance(segs, list) or not segs:
        raise Refused(400, "INVALID_INPUT", "messageSegments is required")
    stack, chars, mentions = [], 0, 0
    for s in segs:
        if not isinstance(s, dict) or s.get("type") not in SEGMENT_FIELDS:
            raise Refused(400, "JSON_PARSER_ERROR", "Unknown message segment type")
        extra = set(s) - {"type"} - SEGMENT_FIELDS[s["type"]]
        if extra:
            raise Refused(400, "JSON_PARSER_ERROR",
                          "Unrecognized field \"%s\" in %s segment" % (sorted(extra)[0], s["type"]))
        t = s["type"]
        if t == "Text":
            if not isinstance(s.get("text"), str):
                raise Refused(400, "INVALID_INPUT", "Text segment needs text")
            chars += len(s["text"])
        elif t == "Hashtag":
            tag = s.get("tag")
            if not isinstance(tag, str) or not tag or tag.startswith("#") or "]" in tag \
                    or re.search(r"\s", tag):
                raise Refused(400, "INVALID_INPUT", "Invalid hashtag")
            chars += len(tag) + 1
        elif t == "Link":
            url = s.get("url")
            if not isinstance(url, str) or not re.match(r"https?://", url):
                raise Refused(400, "INVALID_INPUT", "Link segment needs an http(s) url")
            chars += len(url)
        elif t == "Mention":
            mid = s.get("id")
            if not isinstance(mid, str) or not MENTION_ID.match(mid):
                raise Refused(400, "INVALID_ID_FIELD",
                              "Mention id must be the 15 or 18 character id of a user or group")
            if not any(u["Id"] == mid for u in st.users) and mid not in st.groups:
                raise Refused(400, "INVALID_ID_FIELD", "Mention id is not a user or group")
            mentions += 1
        elif t == "MarkupBegin":
            if s.get("markupType") not in MARKUPS:
                raise Refused(400, "INVALID_INPUT", "Invalid markupType")
            stack.append(s["markupType"])
        elif t == "MarkupEnd":
            if not stack or stack.pop() != s.get("markupType"):
                raise Refused(400, "INVALID_MARKUP", "MarkupEnd does not match MarkupBegin")
    if stack:
        raise Refused(400, "INVALID_MARKUP", "Unclosed markup " + stack[-1])
    if chars > 10000:
        raise Refused(400, "INVALID_FIELD_LENGTH",
                      "Feed body exceeds the maximum of 10000 characters")
    if mentions > 25:
        raise Refused(400, "INVALID_INPUT", "Too many mentions")
    return segs


def soql_literal(s):
    out, i = [], 0
    escapes = {"'": "'", "\\": "\\", "n": "\n", "r": "\r", "t": "\t", "b": "\b",
               "f": "\f", '"': '"'}
    while i < len(s):
        c = s[i]
        if c == "\\":
            if i + 1 >= len(s) or s[i + 1] not in escapes:
                raise Refused(400, "MALFORMED_QUERY", "Invalid escape in string literal")
            out.append(escapes[s[i + 1]])
            i += 2
            continue
        if c == "'":
            raise Refused(400, "MALFORMED_QUERY", "unexpected token: '")
        out.append(c)
        i += 1
    return "".join(out)


RECORD_QUERY_RE = re.compile(
    r"^SELECT\s+(\w+)\s+FROM\s+(\w+)\s+WHERE\s+(\w+)\s*=\s*'((?:[^'\\]|\\.)*)'"
    r"(?:\s+AND\s+(\w+)\s*(=|!=)\s*(null|true|false))?(?:\s+LIMIT\s+(\d+))?\s*$", re.I)
MEMBER_QUERY_RE = re.compile(r"^SELECT\s+([\w\s,.]+?)\s+FROM\s+CollaborationGroupMember\s+"
                             r"WHERE\s+CollaborationGroupId\s*=\s*'((?:[^'\\]|\\.)*)'\s*$", re.I)
MEMBER_FIELDS = {"id", "memberid", "collaborationgroupid", "notificationfrequency",
                 "collaborationrole", "member.id", "member.email", "member.name"}

QUERY_RE = re.compile(r"^SELECT\s+([\w\s,]+?)\s+FROM\s+User\s+WHERE\s+(Email|Name)\s*=\s*"
                      r"'((?:[^'\\]|\\.)*)'(\s+AND\s+IsActive\s*=\s*true)?\s*$", re.I)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    st = None

    def log_message(self, fmt, *args):
        pass

    def send(self, status, obj, headers=None, ctype="application/json;charset=UTF-8"):
        if getattr(self, "lose", False):
            self.lose = False
            self.close_connection = True
            self.connection.shutdown(2)
            return
        data = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Sforce-Limit-Info", "api-usage=%d/15000" % len(self.st.log))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def error(self, status, code, message, headers=None):
        self.send(status, [{"errorCode": code, "message": message}], headers)

    def read_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n > MAX_BODY:
            raise Refused(413, "REQUEST_TOO_LARGE", "request too large")
        return self.rfile.read(n) if n else b""

    def do_GET(self):
        self.dispatch("GET")

    def do_POST(self):
        self.dispatch("POST")

    def do_PATCH(self):
        self.dispatch("PATCH")

    def do_DELETE(self):
        self.dispatch("DELETE")

    def dispatch(self, method):
        st = self.st
        url = urllib.parse.urlsplit(self.path)
        path, qs = url.path, urllib.parse.parse_qs(url.query)
        try:
            body = self.read_body()
        except Refused as e:
            self.error(e.status, e.code, e.message)
            return
        if path == "/__control" and method == "POST":
            self.control(json.loads(body or b"{}"))
            return
        if path == "/__state" and method == "GET":
            with LOCK:
                mentions = [{"element": e["id"], "id": s["record"]["id"]}
                            for e in st.elements + st.comments
                            for s in e["body"]["messageSegments"] if s["type"] == "Mention"]
                self.send(200, {"posts": st.elements, "comments": st.comments,
                                "files": list(st.files.values()), "users": st.users,
                                "tokens_issued": st.tokens_issued, "requests": st.log,
                                "queries": st.queries, "mentions": mentions})
            return
        with LOCK:
            st.log.append({"method": method, "path": path,
                           "authorization": "Authorization" in self.headers})
            delay, st.delay = st.delay, 0
            drop = st.drop > 0
            if drop:
                st.drop -= 1
        if delay:
            time.sleep(delay)
        if drop:
            self.close_connection = True
            self.connection.shutdown(2)
            return
        if time.time() < st.down_until:
            self.injected({"status": 503, "message": "Service is down for maintenance"})
            return
        try:
            if path == "/services/oauth2/token" and method == "POST":
                self.token(body)
                return
            m = re.match(r"^/services/data/v(\d+\.\d)(/.*)$", path)
            if not m:
                self.error(404, "NOT_FOUND", "The requested resource does not exist")
                return
            with LOCK:
                if st.expire_after is not None:
                    st.expire_after -= 1
                    if st.expire_after < 0:
                        st.expire_after = None
                        st.tokens.clear()
            user = self.authorize()
            if user is None:
                return
            with LOCK:
                if st.fail_next and st.skip > 0:
                    st.skip -= 1
                elif st.fail_next:
                    f = st.fail_next.pop(0)
                    self.injected(f)
                    return
            with LOCK:
                if st.lose_answer > 0 and st.lose_after > 0:
                    st.lose_after -= 1
                    self.lose = False
                else:
                    self.lose = st.lose_answer > 0
                    st.lose_answer -= 1 if self.lose else 0
            self.data(method, m.group(2), qs, body, user)
        except Refused as e:
            self.error(e.status, e.code, e.message)

    def injected(self, f):
        if isinstance(f, int):
            f = {"status": f}
        status = f["status"]
        headers = {}
        if status in (429, 503) and self.st.retry_after is not None:
            headers["Retry-After"] = str(self.st.retry_after)
        code = f.get("errorCode", {500: "UNKNOWN_EXCEPTION", 503: "SERVER_UNAVAILABLE",
                                   429: "REQUEST_LIMIT_EXCEEDED",
                                   403: "REQUEST_LIMIT_EXCEEDED"}.get(status, "INVALID_INPUT"))
        self.error(status, code, f.get("message", "injected failure"), headers)

    def control(self, c):
        st = self.st
        with LOCK:
            st.fail_next.extend(c.get("fail_next", []))
            st.fail_token_next.extend(c.get("fail_token_next", []))
            st.skip = c.get("skip", st.skip)
            st.expire_after = c.get("expire_after", st.expire_after)
            st.reject_sessions = c.get("reject_sessions", st.reject_sessions)
            if "retry_after" in c:
                st.retry_after = c["retry_after"]
            st.delay = c.get("delay", st.delay)
            st.drop = c.get("drop", st.drop)
            st.lose_answer = c.get("lose_answer", st.lose_answer)
            st.lose_after = c.get("lose_after", 0)
            if c.get("expire_tokens"):
                st.tokens.clear()
            if "down_for" in c:
                st.down_until = time.time() + c["down_for"]
            st.groups.update(c.get("groups", {}))
            for rec in c.get("records", []):
                st.records[rec["Id"]] = rec
            for u in c.get("users", []):
                st.users = [x for x in st.users if x["Username"] != u["Username"]] + [u]
            st.members.update(c.get("members", {}))
            st.group_roles.update(c.get("group_roles", {}))
            st.group_visibility.update(c.get("group_visibility", {}))
            st.archived_groups.update(c.get("archived_groups", []))
            st.query_page_size = c.get("query_page_size", st.query_page_size)
            for name, o in c.get("objects", {}).items():
                st.objects[name] = dict(st.objects.get(name, {"fields": ["Id", "Name"]}),
                                        **o)
        self.send(200, {"ok": True})

    def authorize(self):
        auth = self.headers.get("Authorization", "")
        m = re.match(r"^(Bearer|OAuth) (\S+)$", auth)
        with LOCK:
            user = self.st.tokens.get(m.group(2)) if m else None
            if self.st.reject_sessions:
                user = None
        if user is None:
            self.error(401, "INVALID_SESSION_ID", "Session expired or invalid")
        return user

    def token(self, body):
        st = self.st
        if not (self.headers.get("Content-Type") or "").startswith(
                "application/x-www-form-urlencoded"):
            self.send(400, {"error": "invalid_request", "error_description": "bad content type"})
            return
        form = urllib.parse.parse_qs(body.decode(), keep_blank_values=True)
        with LOCK:
            if st.fail_token_next:
                f = st.fail_token_next.pop(0)
                self.send(f.get("status", 400), {"error": f.get("error", "invalid_grant"),
                                                 "error_description": f.get(
                                                     "error_description", "authentication failure")})
                return
        if form.get("grant_type") != ["urn:ietf:params:oauth:grant-type:jwt-bearer"]:
            self.send(400, {"error": "unsupported_grant_type",
                            "error_description": "grant type not supported"})
            return
        jwt = (form.get("assertion") or [""])[0]
        parts = jwt.split(".")
        if len(parts) != 3:
            self.send(400, {"error": "invalid_grant", "error_description": "invalid assertion"})
            return
        try:
            header = json.loads(b64url_decode(parts[0]))
            claims = json.loads(b64url_decode(parts[1]))
            sig = b64url_decode(parts[2])
            if header.get("alg") != "RS256":
                raise ValueError("alg")
            st.public_key.verify(sig, (parts[0] + "." + parts[1]).encode(),
                                 padding.PKCS1v15(), hashes.SHA256())
        except (ValueError, InvalidSignature, json.JSONDecodeError):
            self.send(400, {"error": "invalid_grant", "error_description": "invalid assertion"})
            return
        now = time.time()
        exp = claims.get("exp")
        if claims.get("iss") != st.client_id:
            self.send(400, {"error": "invalid_client_id", "error_description": "client identifier invalid"})
            return
        host = "http://127.0.0.1:%d" % self.server.server_address[1]
        if claims.get("aud") not in ("https://login.salesforce.com",
                                     "https://test.salesforce.com", host):
            self.send(400, {"error": "invalid_grant", "error_description": "audience is invalid"})
            return
        if not isinstance(exp, int) or exp < now or exp > now + 300:
            self.send(400, {"error": "invalid_grant", "error_description": "expired authorization code"})
            return
        with LOCK:
            user = next((u for u in st.users if u["Username"] == claims.get("sub")), None)
            if not user or not user.get("authorized", True) or not user.get("IsActive", True):
                self.send(400, {"error": "invalid_grant",
                                "error_description": "user hasn't approved this consumer"})
                return
            st.counter += 1
            tok = "00DXX0000000001!AQ0AQ%08d" % st.counter
            st.tokens[tok] = user
            st.tokens_issued.append(user["Username"])
        self.send(200, {"access_token": tok, "scope": "api", "instance_url": host,
                        "id": host + "/id/00DXX0000000001EAA/" + user["Id"],
                        "token_type": "Bearer"})

    def actor(self, user):
        return {"id": user["Id"], "displayName": user["Name"], "name": user["Name"], "type": "User"}

    def element_out(self, el, ncomments=3):
        comments = [c for c in self.st.comments if c["feedElement"]["id"] == el["id"]]
        recent = [public(c) for c in reversed(comments)][:ncomments]
        return dict(public(el), capabilities=dict(el["capabilities"], comments={"page": {
            "items": recent, "total": len(comments), "currentPageUrl": None,
            "nextPageUrl": None}}))

    def data(self, method, rest, qs, body, user):
        st = self.st
        if rest == "/chatter/feed-elements" and method == "POST":
            inp = self.json_body(body)
            if set(inp) - {"feedElementType", "subjectId", "body", "capabilities", "visibility"}:
                raise Refused(400, "JSON_PARSER_ERROR", "Unrecognized field in feed item input")
            if inp.get("feedElementType") != "FeedItem":
                raise Refused(400, "INVALID_INPUT", "feedElementType must be FeedItem")
            sid = inp.get("subjectId")
            if not isinstance(sid, str) or not (sid.startswith(("0F9", "005", "me"))
                                                or sid in st.records):
                raise Refused(400, "INVALID_ID_FIELD", "subjectId is not a valid parent")
            segs = check_body(inp.get("body"), st)
            files = []
            caps = inp.get("capabilities") or {}
            if set(caps) - {"files"}:
                raise Refused(400, "JSON_PARSER_ERROR", "Unrecognized capability")
            if caps:
                items = caps["files"].get("items") if isinstance(caps["files"], dict) else None
                if not isinstance(items, list) or set(caps["files"]) - {"items"}:
                    raise Refused(400, "JSON_PARSER_ERROR", "files capability needs items")
                if len(items) > 10:
                    raise Refused(400, "INVALID_INPUT", "At most 10 files per feed element")
                for it in items:
                    if not isinstance(it, dict) or set(it) - {"id", "operationType"} \
                            or it.get("id") not in st.files:
                        raise Refused(400, "INVALID_ID_FIELD", "Unknown file id")
                    files.append({"id": it["id"], "title": st.files[it["id"]]["title"],
                                  "contentSize": st.files[it["id"]]["contentSize"]})
            with LOCK:
                if sid.startswith("0F9") and sid not in st.groups:
                    raise Refused(404, "NOT_FOUND", "The requested resource does not exist")
                now = time.time()
                out, text = out_segments(segs, st.users)
                el = {"id": st.new_id("0D5"), "feedElementType": "FeedItem",
                      "createdDate": iso(now), "modifiedDate": iso(now), "_created": now,
                      "url": "/services/data/v62.0/chatter/feed-elements/",
                      "actor": self.actor(user),
                      "parent": {"id": sid, "name": st.groups.get(sid, ""),
                                 "type": "CollaborationGroup"},
                      "header": {"text": user["Name"], "messageSegments": []},
                      "body": {"text": text, "isRichText": True, "messageSegments": out},
                      "capabilities": {"files": {"items": files}},
                      "visibility": "InternalUsers", "relativeCreatedDate": "Just now",
                      "_input": inp}
                el["url"] += el["id"]
                st.elements.append(el)
                self.send(201, self.element_out(el))
            return
        m = re.match(r"^/chatter/feed-elements/([^/]+)/capabilities/comments/items$", rest)
        if m:
            with LOCK:
                el = next((e for e in st.elements if e["id"] == m.group(1)), None)
            if el is None:
                raise Refused(404, "NOT_FOUND", "The requested resource does not exist")
            if method == "GET":
                # the current page holds the most recent comments; nextPageUrl
                # leads to older ones
                size = max(1, min(int((qs.get("pageSize") or ["3"])[0]), 100))
                start = int((qs.get("page") or ["0"])[0])
                with LOCK:
                    cs = [c for c in st.comments if c["feedElement"]["id"] == el["id"]]
                newest = [public(c) for c in reversed(cs)]
                base = "/services/data/v62.0" + rest
                nxt = None
                if start + size < len(cs):
                    nxt = "%s?page=%d&pageSize=%d" % (base, start + size, size)
                self.send(200, {"items": newest[start:start + size], "total": len(cs),
                                "currentPageUrl": base, "nextPageUrl": nxt,
                                "nextPageToken": str(start + size) if nxt else None})
                return
            if method != "POST":
                raise Refused(405, "METHOD_NOT_ALLOWED", "method not allowed")
            inp = self.json_body(body)
            if set(inp) - {"body", "capabilities"}:
                raise Refused(400, "JSON_PARSER_ERROR", "Unrecognized field in comment input")
            segs = check_body(inp.get("body"), st)
            caps = inp.get("capabilities") or {}
            files = []
            if caps:
                content = caps.get("content")
                if set(caps) - {"content"} or not isinstance(content, dict) \
                        or set(content) - {"contentDocumentId"} \
                        or content.get("contentDocumentId") not in st.files:
                    raise Refused(400, "JSON_PARSER_ERROR", "Invalid comment capability")
                files.append(content["contentDocumentId"])
            with LOCK:
                now = time.time()
                out, text = out_segments(segs, st.users)
                c = {"id": st.new_id("0D7"), "createdDate": iso(now), "_created": now,
                     "feedElement": {"id": el["id"], "url": el["url"]},
                     "user": self.actor(user), "body": {"text": text, "messageSegments": out},
                     "capabilities": {"content": {
                         "id": files[0], "title": st.files[files[0]]["title"],
                         "contentSize": st.files[files[0]]["contentSize"]}} if files else {},
                     "url": "/services/data/v62.0/chatter/comments/", "_input": inp}
                c["url"] += c["id"]
                st.comments.append(c)
                el["modifiedDate"] = iso(now)
                el["_modified"] = now
                self.send(201, public(c))
            return
        m = re.match(r"^/chatter/feeds/record/([^/]+)/feed-elements$", rest)
        if m and method == "GET":
            size = max(1, min(int((qs.get("pageSize") or ["25"])[0]), 100))
            start = int((qs.get("page") or ["0"])[0])
            sort = (qs.get("sort") or ["CreatedDateDesc"])[0]
            ncomm = int((qs.get("recentCommentCount") or ["3"])[0])
            with LOCK:
                els = [e for e in st.elements if e["parent"]["id"] == m.group(1)]
                key = "_modified" if sort == "LastModifiedDateDesc" else "_created"
                els.sort(key=lambda e: e.get(key, e["_created"]), reverse=True)
                page = [self.element_out(e, ncomm) for e in els[start:start + size]]
            base = "/services/data/v62.0/chatter/feeds/record/%s/feed-elements" % m.group(1)
            nxt = None
            if start + size < len(els):
                nxt = "%s?page=%d&pageSize=%d&sort=%s&recentCommentCount=%d" % (
                    base, start + size, size, sort, ncomm)
            self.send(200, {"elements": page, "currentPageUrl": base, "nextPageUrl": nxt,
                            "nextPageToken": str(start + size) if nxt else None,
                            "updatesToken": "2:%d" % int(time.time() * 1000)})
            return
        m = re.match(r"^/chatter/groups/(0F9\w+)$", rest)
        if m and method == "GET":
            with LOCK:
                name = st.groups.get(m.group(1))
                role = st.group_roles.get(m.group(1), "StandardMember")
                vis = st.group_visibility.get(m.group(1), "PublicAccess")
                archived = m.group(1) in st.archived_groups
            if name is None:
                raise Refused(404, "NOT_FOUND", "The requested resource does not exist")
            self.send(200, {"id": m.group(1), "name": name, "myRole": role, "visibility": vis,
                            "isArchived": archived, "memberCount": 2,
                            "mySubscription": None if role.startswith("NotAMember") else
                            {"id": "0FBXX0000000001AAA"},
                            "url": "/services/data/v62.0/chatter/groups/" + m.group(1)})
            return
        if rest == "/connect/files/users/me" and method == "POST":
            self.upload(body, user)
            return
        if rest == "/query" and method == "GET":
            self.query((qs.get("q") or [""])[0])
            return
        if rest == "/sobjects/" and method == "GET":
            self.describe_global()
            return
        m = re.match(r"^/sobjects/(\w+)/describe/?$", rest)
        if m and method == "GET":
            self.describe(m.group(1))
            return
        m = re.match(r"^/sobjects/(\w+)/(\w+)$", rest)
        if m and method == "GET":
            self.sobject_record(m.group(1), m.group(2))
            return
        m = re.match(r"^/query/(01g\w+)-(\d+)$", rest)
        if m and method == "GET":
            self.query_more(m.group(1), int(m.group(2)))
            return
        raise Refused(404, "NOT_FOUND", "The requested resource does not exist")

    def json_body(self, body):
        if not (self.headers.get("Content-Type") or "").startswith("application/json"):
            raise Refused(415, "UNSUPPORTED_MEDIA_TYPE", "Content-Type must be application/json")
        try:
            v = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise Refused(400, "JSON_PARSER_ERROR", "Malformed JSON")
        if not isinstance(v, dict):
            raise Refused(400, "JSON_PARSER_ERROR", "Expected a JSON object")
        return v

    def upload(self, body, user):
        ctype = self.headers.get("Content-Type") or ""
        if not ctype.startswith("multipart/form-data"):
            raise Refused(400, "INVALID_MULTIPART_REQUEST", "multipart/form-data expected")
        msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + body)
        fields = {}
        for part in msg.iter_parts():
            name = part.get_param("name", header="content-disposition")
            fields[name] = part
        if "fileData" not in fields or not fields["fileData"].get_filename():
            raise Refused(400, "INVALID_MULTIPART_REQUEST", "The fileData part is required")
        title = fields["fileData"].get_filename()
        if "json" in fields:
            try:
                meta = json.loads(fields["json"].get_payload(decode=True))
            except ValueError:
                raise Refused(400, "JSON_PARSER_ERROR", "Malformed JSON part")
            if set(meta) - {"title", "desc", "contentModifiedDate", "isMajorVersion",
                            "parentFolderId", "isInMyFileSync", "sharingOption",
                            "sharingPrivacy", "repositoryFileId", "reasonForChange"}:
                raise Refused(400, "JSON_PARSER_ERROR", "Unrecognized field in file input")
            title = meta.get("title", title)
        data = fields["fileData"].get_payload(decode=True) or b""
        with LOCK:
            fid = self.st.new_id("069")
            f = {"id": fid, "title": title, "name": title, "contentSize": len(data),
                 "mimeType": fields["fileData"].get_content_type(),
                 "owner": self.actor(user), "sha256": hashlib.sha256(data).hexdigest(),
                 "versionNumber": "1"}
            self.st.files[fid] = f
        self.send(201, f)

    def object_summary(self, name, o):
        """A DescribeGlobalSObjectResult (and the head of a describe)."""
        version = re.match(r"^/services/data/(v\d+\.\d)/", self.path).group(1)
        base = "/services/data/%s/sobjects/%s" % (version, name)
        custom = o.get("custom", name.endswith("__c"))
        return {"activateable": False, "createable": True, "custom": custom,
                "customSetting": False, "deletable": True, "deprecatedAndHidden": False,
                "feedEnabled": bool(o.get("feedEnabled", False)),
                "hasSubtypes": False, "isSubtype": False, "keyPrefix": o.get("keyPrefix"),
                "label": name.replace("__c", "").replace("_", " "),
                "labelPlural": name.replace("__c", "").replace("_", " ") + "s",
                "layoutable": True, "mergeable": False, "mruEnabled": True, "name": name,
                "queryable": True, "replicateable": True, "retrieveable": True,
                "searchable": True, "triggerable": True, "undeletable": True,
                "updateable": True,
                "urls": {"sobject": base, "describe": base + "/describe",
                         "rowTemplate": base + "/{ID}"}}

    def object_fields(self, name):
        o = self.st.objects[name]
        names = list(o.get("fields", []))
        for r in self.st.records.values():
            if r.get("attributes", {}).get("type") == name:
                names += [k for k in r if k != "attributes" and k not in names]
        return names

    def describe_global(self):
        with LOCK:
            out = [self.object_summary(n, o) for n, o in sorted(self.st.objects.items())]
        self.send(200, {"encoding": "UTF-8", "maxBatchSize": 200, "sobjects": out})

    def describe(self, name):
        with LOCK:
            o = self.st.objects.get(name)
            if o is None:
                raise Refused(404, "NOT_FOUND", "The requested resource does not exist")
            d = self.object_summary(name, o)
            d["fields"] = [field_describe(f) for f in self.object_fields(name)]
        d.update({"childRelationships": [], "recordTypeInfos": [],
                  "supportedScopes": [], "actionOverrides": [], "namedLayoutInfos": []})
        self.send(200, d)

    def sobject_record(self, name, rid):
        with LOCK:
            rec = self.st.records.get(rid)
            if (name not in self.st.objects or rec is None or
                    rec.get("attributes", {}).get("type") != name):
                raise Refused(404, "NOT_FOUND", "The requested resource does not exist")
            out = {k: v for k, v in rec.items() if k != "attributes"}
        version = re.match(r"^/services/data/(v\d+\.\d)/", self.path).group(1)
        self.send(200, dict({"attributes": {"type": name, "url": "/services/data/%s/sobjects/%s/%s"
                                            % (version, name, rid)}}, **out))

    def query_page(self, locator, records, offset):
        """One page of a query result from offset, with nextRecordsUrl."""
        st = self.st
        size = st.query_page_size
        page = records[offset:offset + size]
        out = {"totalSize": len(records), "done": offset + size >= len(records),
               "records": page}
        if not out["done"]:
            version = re.match(r"^/services/data/(v\d+\.\d)/", self.path).group(1)
            out["nextRecordsUrl"] = "/services/data/%s/query/%s-%d" % (
                version, locator, offset + size)
        self.send(200, out)

    def query_more(self, locator, offset):
        with LOCK:
            records = self.st.cursors.get(locator)
        if records is None or offset >= len(records):
            raise Refused(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        self.query_page(locator, records, offset)

    def query_members(self, m, q):
        st = self.st
        fields = [f.strip() for f in m.group(1).split(",")]
        for f in fields:
            if f.lower() not in MEMBER_FIELDS:
                raise Refused(400, "INVALID_FIELD", "No such column '%s' on entity "
                              "'CollaborationGroupMember'" % f)
        gid = soql_literal(m.group(2))
        out = []
        with LOCK:
            st.queries.append(q)
            for i, mem in enumerate(st.members.get(gid, [])):
                rec = {"attributes": {"type": "CollaborationGroupMember",
                                      "url": "/services/data/v62.0/sobjects/"
                                             "CollaborationGroupMember/0FBXX%013d" % i}}
                for f in fields:
                    k = f.lower()
                    if k.startswith("member."):
                        sub = rec.setdefault("Member", {"attributes": {
                            "type": "User",
                            "url": "/services/data/v62.0/sobjects/User/" + mem["Id"]}})
                        name = {"member.id": "Id", "member.email": "Email",
                                "member.name": "Name"}[k]
                        sub[name] = mem.get(name)
                    else:
                        name = {"id": "Id", "memberid": "MemberId",
                                "collaborationgroupid": "CollaborationGroupId",
                                "notificationfrequency": "NotificationFrequency",
                                "collaborationrole": "CollaborationRole"}[k]
                        rec[name] = {"Id": "0FBXX%013d" % i, "MemberId": mem["Id"],
                                     "CollaborationGroupId": gid}.get(name, mem.get(name))
                out.append(rec)
            locator = st.new_id("01g")
            st.cursors[locator] = out
        self.query_page(locator, out, 0)

    def query_records(self, m, q):
        """SELECT F FROM OBJECT WHERE FIELD = 'v' [AND G != null | AND G = true] [LIMIT n]
        over the records given by /__control."""
        st = self.st
        col, obj, field, value = m.group(1), m.group(2), m.group(3), soql_literal(m.group(4))
        with LOCK:
            st.queries.append(q)
            recs = [r for r in st.records.values() if r["attributes"]["type"] == obj]
            if recs and field not in recs[0]:
                raise Refused(400, "INVALID_FIELD", "No such column '%s' on entity '%s'"
                              % (field, obj))
            recs = [r for r in recs if str(r.get(field, "")).lower() == value.lower()]
            if m.group(5):
                g, op, lit = m.group(5), m.group(6), m.group(7).lower()
                want = None if lit == "null" else lit == "true"
                recs = [r for r in recs if (r.get(g) == want) == (op == "=")]
            if m.group(8):
                recs = recs[:int(m.group(8))]
            out = [{"attributes": {"type": obj, "url": "/services/data/v62.0/sobjects/%s/%s"
                                   % (obj, r["Id"])}, col: r.get(col)} for r in recs]
            locator = st.new_id("01g")
            st.cursors[locator] = out
        self.query_page(locator, out, 0)

    def query(self, q):
        st = self.st
        mm = MEMBER_QUERY_RE.match(q)
        if mm:
            self.query_members(mm, q)
            return
        rm = RECORD_QUERY_RE.match(q)
        if rm and rm.group(2) != "User":
            self.query_records(rm, q)
            return
        m = QUERY_RE.match(q)
        if not m:
            raise Refused(400, "MALFORMED_QUERY", "unsupported query")
        field = "Email" if m.group(2).lower() == "email" else "Name"
        value = soql_literal(m.group(3))
        fields = [f.strip() for f in m.group(1).split(",")]
        with LOCK:
            st.queries.append(q)
            # Email compares without regard to case, as SOQL's = does on text
            recs = [u for u in st.users if u.get(field, "").lower() == value.lower()
                    and (not m.group(4) or u.get("IsActive", True))]
            out = [dict({"attributes": {"type": "User",
                                        "url": "/services/data/v62.0/sobjects/User/" + u["Id"]}},
                        **{f: u.get(f) for f in fields}) for u in recs]
        self.send(200, {"totalSize": len(out), "done": True, "records": out})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--public-key", required=True, help="PEM public key that verifies JWTs")
    ap.add_argument("--client-id", default="3MVG9TESTCLIENT")
    a = ap.parse_args()
    with open(a.public_key, "rb") as f:
        key = serialization.load_pem_public_key(f.read())
    Handler.st = State(a.client_id, key)
    srv = ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    srv.daemon_threads = True
    print(srv.server_address[1], flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
