#!/usr/bin/python3
"""A test double of the Mattermost API v4 resources mailfeed uses, following
docs/feed-apis.md section 2.

Listens on 127.0.0.1 (random port unless --port), prints the port on stdout,
keeps everything in memory.  Checks: Bearer personal access token, post input
fields (unknown ones refused), 16,383-rune messages, root_id naming a root
post of the same channel, at most 5 known file_ids uploaded to that channel,
multipart uploads with channel_id and files parts.  Errors are AppError JSON,
except the rate limiter's plain-text 429 "limit exceeded".

Side channel for tests:
  POST /__control {"fail_next": [500, 429, {"status": 400, "id": "x.y", "message": "..."}],
                   "skip": N (calls let through before fail_next,
                              lose_answer or stall applies),
                   "retry_after": 2, "delay": 3, "drop": 1,
                   "pace": 0.02 (every later API call takes this long),
                   "lose_answer": N (the next N calls are carried out, then the
                                     connection is closed unanswered),
                   "stall": N (the next N calls are held unanswered, not carried
                               out, until the client goes away or 30 s pass),
                   "expire_files": true (files not attached to a post are
                                         removed, as the server cleans them up;
                                         a post naming one is refused),
                   "expire_tokens": true, "restore_tokens": true,
                   "users": [{"username": ..., "email": ..., "delete_at": 0, ...}],
                   "channels": {ID: name}, "not_member": [ID] (GET
                   /channels/{id}/members/me answers 404), "archived_channels": [ID]}
  GET  /__state   posts, files, users and a request log
"""
import argparse
import email.parser
import email.policy
import hashlib
import json
import re
import secrets
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
MAX_BODY = 60 * 1024 * 1024
POST_FIELDS = {"channel_id", "message", "root_id", "file_ids", "props", "pending_post_id"}
HASHTAG = re.compile(r"^#[^\W\d_][\w.-]*[^\W_]$|^#[^\W\d_][^\W_]$", re.UNICODE)


def new_id():
    return "".join(secrets.choice("abcdefghijkmnopqrstuwxyz13456789") for _ in range(26))


def hashtags(message):
    tags = []
    for word in message.split():
        w = word.strip(".,;:!?()[]{}\"'")
        w = re.sub(r"^#+", "#", w)
        if HASHTAG.match(w):
            tags.append(w)
    return " ".join(tags)


class State:
    def __init__(self, token):
        self.token = token
        self.token_valid = True
        self.bot = {"id": new_id(), "username": "mailfeed-bot", "email": "feeds@example.org",
                    "first_name": "Feed", "last_name": "Gateway", "nickname": "", "delete_at": 0}
        self.users = {self.bot["id"]: self.bot}
        alice = {"id": new_id(), "username": "alice", "email": "alice@example.org",
                 "first_name": "Alice", "last_name": "Example", "nickname": "", "delete_at": 0}
        self.users[alice["id"]] = alice
        self.channels = {"4xp9fdt77pncbef59f4k1qe83o": "fundraising",
                         "8d3kq9wz1ptb5fjhx6yrcmne4a": "board"}
        self.not_member = set()        # channels the token's user is not in
        self.archived_channels = set()
        self.posts = {}
        self.files = {}
        self.fail_next = []
        self.skip = 0  # calls let through before fail_next applies
        self.retry_after = None
        self.delay = 0
        self.pace = 0
        self.drop = 0
        self.lose_answer = 0
        self.stall = 0
        self.log = []


class Refused(Exception):
    def __init__(self, status, err_id, message):
        super().__init__(message)
        self.status, self.err_id, self.message = status, err_id, message


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    st = None

    def log_message(self, fmt, *args):
        pass

    def send(self, status, obj, headers=None, ctype="application/json"):
        if getattr(self, "lose", False):
            self.close_connection = True
            self.connection.shutdown(2)
            return
        data = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Ratelimit-Limit", "10")
        self.send_header("X-Ratelimit-Remaining", "9")
        self.send_header("X-Ratelimit-Reset", "1")
        self.send_header("X-Request-Id", new_id())
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def app_error(self, status, err_id, message, headers=None):
        self.send(status, {"id": err_id, "message": message, "detailed_error": "",
                           "request_id": new_id(), "status_code": status}, headers)

    def do_GET(self):
        self.dispatch("GET")

    def do_POST(self):
        self.dispatch("POST")

    def do_PUT(self):
        self.dispatch("PUT")

    def do_DELETE(self):
        self.dispatch("DELETE")

    def dispatch(self, method):
        st = self.st
        url = urllib.parse.urlsplit(self.path)
        path, qs = url.path, urllib.parse.parse_qs(url.query)
        n = int(self.headers.get("Content-Length") or 0)
        if n > MAX_BODY:
            self.app_error(413, "api.context.request_body_too_large.app_error", "too large")
            return
        body = self.rfile.read(n) if n else b""
        self.lose = False
        if path == "/__control" and method == "POST":
            self.control(json.loads(body or b"{}"))
            return
        if path == "/__state" and method == "GET":
            with LOCK:
                self.send(200, {"posts": list(st.posts.values()),
                                "files": list(st.files.values()),
                                "users": list(st.users.values()), "requests": st.log})
            return
        with LOCK:
            st.log.append({"method": method, "path": path})
            delay, st.delay = st.delay, 0
            if path.startswith("/api/v4/"):
                delay += st.pace
            drop = st.drop > 0
            if drop:
                st.drop -= 1
        if delay:
            time.sleep(delay)
        if drop:
            self.close_connection = True
            self.connection.shutdown(2)
            return
        if not path.startswith("/api/v4/"):
            self.app_error(404, "api.context.404.app_error", "Sorry, we could not find the page.")
            return
        with LOCK:
            ok = st.token_valid and self.headers.get("Authorization") == "Bearer " + st.token
        if not ok:
            self.app_error(401, "api.context.session_expired.app_error",
                           "Invalid or expired session, please login again.")
            return
        with LOCK:
            f = None
            stall = False
            if (st.fail_next or st.lose_answer or st.stall) and st.skip > 0:
                st.skip -= 1
            elif st.stall:
                st.stall -= 1
                stall = True
            elif st.fail_next:
                f = st.fail_next.pop(0)
            elif st.lose_answer:
                st.lose_answer -= 1
                self.lose = True
        if stall:
            self.close_connection = True
            self.connection.settimeout(30)
            try:
                self.connection.recv(1)
            except OSError:
                pass
            return
        if f is not None:
            self.injected(f)
            return
        try:
            self.route(method, path[len("/api/v4"):], qs, body)
        except Refused as e:
            self.app_error(e.status, e.err_id, e.message)

    def injected(self, f):
        if isinstance(f, int):
            f = {"status": f}
        status = f["status"]
        if status == 429:
            headers = {"X-Ratelimit-Remaining": "0"}
            if self.st.retry_after is not None:
                headers["Retry-After"] = str(self.st.retry_after)
                headers["X-Ratelimit-Reset"] = str(self.st.retry_after)
            self.send(429, b"limit exceeded\n", headers, "text/plain; charset=utf-8")
            return
        self.app_error(status, f.get("id", "api.injected.app_error"),
                       f.get("message", "injected failure"))

    def control(self, c):
        st = self.st
        with LOCK:
            st.fail_next.extend(c.get("fail_next", []))
            st.skip = c.get("skip", st.skip)
            if "retry_after" in c:
                st.retry_after = c["retry_after"]
            st.delay = c.get("delay", st.delay)
            st.pace = c.get("pace", st.pace)
            st.drop = c.get("drop", st.drop)
            st.lose_answer = c.get("lose_answer", st.lose_answer)
            st.stall = c.get("stall", st.stall)
            if c.get("expire_files"):
                st.files = {k: v for k, v in st.files.items() if v["post_id"]}
            if c.get("expire_tokens"):
                st.token_valid = False
            if c.get("restore_tokens"):
                st.token_valid = True
            st.channels.update(c.get("channels", {}))
            st.not_member.update(c.get("not_member", []))
            st.archived_channels.update(c.get("archived_channels", []))
            for u in c.get("users", []):
                user = {"id": new_id(), "first_name": "", "last_name": "", "nickname": "",
                        "delete_at": 0}
                user.update(u)
                user["email"] = user["email"].lower()
                st.users = {k: v for k, v in st.users.items()
                            if v["username"] != user["username"]}
                st.users[user["id"]] = user
        self.send(200, {"ok": True})

    def json_body(self, body):
        try:
            v = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise Refused(400, "api.context.invalid_body_param.app_error",
                          "Invalid or missing post in request body.")
        if not isinstance(v, dict):
            raise Refused(400, "api.context.invalid_body_param.app_error",
                          "Invalid or missing post in request body.")
        return v

    def route(self, method, rest, qs, body):
        st = self.st
        if rest == "/posts" and method == "POST":
            self.create_post(self.json_body(body))
            return
        if rest == "/files" and method == "POST":
            self.upload(body, qs)
            return
        m = re.match(r"^/channels/([a-z0-9]{26})/posts$", rest)
        if m and method == "GET":
            self.channel_posts(m.group(1), qs)
            return
        m = re.match(r"^/channels/([a-z0-9]{26})$", rest)
        if m and method == "GET":
            with LOCK:
                name = st.channels.get(m.group(1))
                archived = m.group(1) in st.archived_channels
            if name is None:
                raise Refused(404, "app.channel.get.existing.app_error",
                              "Unable to find the existing channel.")
            self.send(200, {"id": m.group(1), "name": name, "display_name": name.title(),
                            "type": "O", "team_id": "t" * 26, "delete_at": 1 if archived else 0})
            return
        m = re.match(r"^/channels/([a-z0-9]{26})/members/me$", rest)
        if m and method == "GET":
            with LOCK:
                member = m.group(1) in st.channels and m.group(1) not in st.not_member
            if not member:
                raise Refused(404, "app.channel.get_member.missing.app_error",
                              "No channel member found for that user ID and channel ID.")
            self.send(200, {"channel_id": m.group(1), "user_id": st.bot["id"],
                            "roles": "channel_user", "scheme_user": True})
            return
        if rest == "/users/search" and method == "POST":
            # the term is matched against username, full name, nickname and email
            inp = self.json_body(body)
            term = str(inp.get("term", "")).lower()
            if not term:
                raise Refused(400, "api.context.invalid_body_param.app_error",
                              "Invalid or missing term in request body.")
            with LOCK:
                hits = [u for u in st.users.values()
                        if (inp.get("allow_inactive") or not u.get("delete_at"))
                        and any(term in f.lower() for f in (
                            u.get("username", ""), u.get("email", ""), u.get("nickname", ""),
                            (u.get("first_name", "") + " " + u.get("last_name", "")).strip()))]
            self.send(200, hits[:int(inp.get("limit", 100))])
            return
        m = re.match(r"^/users/email/([^/]+)$", rest)
        if m and method == "GET":
            addr = urllib.parse.unquote(m.group(1)).lower()
            with LOCK:
                u = next((u for u in st.users.values() if u["email"] == addr), None)
            if not u:
                raise Refused(404, "app.user.missing_account.const", "Unable to find the user.")
            self.send(200, u)
            return
        m = re.match(r"^/users/([a-z0-9]{26}|me)$", rest)
        if m and method == "GET":
            with LOCK:
                u = st.bot if m.group(1) == "me" else st.users.get(m.group(1))
            if not u:
                raise Refused(404, "app.user.missing_account.const", "Unable to find the user.")
            self.send(200, u)
            return
        raise Refused(404, "api.context.404.app_error", "Sorry, we could not find the page.")

    def create_post(self, inp):
        st = self.st
        extra = set(inp) - POST_FIELDS
        if extra:
            raise Refused(400, "api.context.invalid_body_param.app_error",
                          "Invalid or unknown field in post: " + sorted(extra)[0])
        ch = inp.get("channel_id")
        msg = inp.get("message")
        if not isinstance(ch, str) or not isinstance(msg, str):
            raise Refused(400, "api.context.invalid_param.app_error",
                          "Invalid channel_id or message parameter.")
        if ch not in st.channels:
            raise Refused(403, "api.context.permissions.app_error",
                          "You do not have the appropriate permissions.")
        if len(msg) > 16383:
            raise Refused(400, "model.post.is_valid.msg.app_error", "Invalid message.")
        props = inp.get("props", {})
        if not isinstance(props, dict):
            raise Refused(400, "api.context.invalid_body_param.app_error", "Invalid props.")
        root = inp.get("root_id") or ""
        fids = inp.get("file_ids") or []
        if not isinstance(fids, list) or len(fids) > 5:
            raise Refused(400, "model.post.is_valid.file_ids.app_error", "Invalid file ids.")
        with LOCK:
            if root:
                r = st.posts.get(root)
                if not r or r["channel_id"] != ch or r["root_id"] or r["delete_at"]:
                    raise Refused(400, "api.post.create_post.root_id.app_error",
                                  "Invalid RootId parameter.")
            for f in fids:
                if f not in st.files or st.files[f]["channel_id"] != ch \
                        or st.files[f]["post_id"]:
                    raise Refused(400, "api.post.create_post.file_ids.app_error",
                                  "Invalid file id.")
            now = int(time.time() * 1000)
            pid = new_id()
            for f in fids:
                st.files[f]["post_id"] = pid
            p = {"id": pid, "create_at": now, "update_at": now, "edit_at": 0, "delete_at": 0,
                 "user_id": st.bot["id"], "channel_id": ch, "root_id": root, "original_id": "",
                 "message": msg, "type": "", "props": props, "hashtags": hashtags(msg),
                 "file_ids": fids, "pending_post_id": inp.get("pending_post_id", ""),
                 "is_pinned": False,
                 "metadata": {"files": [dict(st.files[f]) for f in fids]} if fids else {}}
            st.posts[pid] = p
        self.send(201, p)

    def upload(self, body, qs):
        st = self.st
        ctype = self.headers.get("Content-Type") or ""
        if not ctype.startswith("multipart/form-data"):
            raise Refused(400, "api.file.upload_file.incorrect_number_of_files.app_error",
                          "multipart/form-data expected")
        msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + body)
        channel, files = None, []
        for part in msg.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if name == "channel_id":
                channel = part.get_payload(decode=True).decode()
            elif name == "files" and part.get_filename():
                files.append(part)
        if channel not in st.channels:
            raise Refused(400, "api.file.upload_file.incorrect_channelId.app_error",
                          "Unable to upload file(s). Incorrect channel ID.")
        if not files:
            raise Refused(400, "api.file.upload_file.incorrect_number_of_files.app_error",
                          "Unable to upload files. Incorrect number of files specified.")
        infos = []
        with LOCK:
            for part in files:
                data = part.get_payload(decode=True) or b""
                name = part.get_filename()
                fid = new_id()
                info = {"id": fid, "user_id": st.bot["id"], "channel_id": channel, "post_id": "",
                        "name": name, "extension": name.rsplit(".", 1)[-1] if "." in name else "",
                        "size": len(data), "mime_type": part.get_content_type(),
                        "sha256": hashlib.sha256(data).hexdigest(),
                        "create_at": int(time.time() * 1000)}
                st.files[fid] = info
                infos.append(info)
        self.send(201, {"file_infos": infos, "client_ids": []})

    def channel_posts(self, ch, qs):
        st = self.st
        if ch not in st.channels:
            raise Refused(403, "api.context.permissions.app_error",
                          "You do not have the appropriate permissions.")
        with LOCK:
            posts = [p for p in st.posts.values() if p["channel_id"] == ch]
            if "since" in qs:
                if {"page", "per_page", "before", "after"} & set(qs):
                    raise Refused(400, "api.context.invalid_url_param.app_error",
                                  "since cannot be combined with paging")
                since = int(qs["since"][0])
                posts = [p for p in posts if p["update_at"] > since]
                posts.sort(key=lambda p: p["create_at"])
                posts = posts[:1000]
                order = [p["id"] for p in reversed(posts)]
            else:
                page = int((qs.get("page") or ["0"])[0])
                per = min(int((qs.get("per_page") or ["60"])[0]), 200)
                posts.sort(key=lambda p: p["create_at"], reverse=True)
                posts = posts[page * per:(page + 1) * per]
                order = [p["id"] for p in posts]
            self.send(200, {"order": order, "posts": {p["id"]: p for p in posts},
                            "next_post_id": "", "prev_post_id": "", "has_next": False})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--token", required=True, help="the personal access token accepted")
    a = ap.parse_args()
    Handler.st = State(a.token)
    srv = ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    srv.daemon_threads = True
    print(srv.server_address[1], flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
