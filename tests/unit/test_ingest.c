/* test_ingest.c — taking a folder in (ingest.c over imap.c) against a
 * scripted IMAP server on a socketpair: every message stored once, in UID
 * order, with its checkpoint; a fetch that breaks, a lease that ends, a
 * state database that refuses a message and the stop flag each leave the
 * checkpoint on the last committed batch and nothing stored past it; mail
 * over the size limit is recorded without its content and described. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "state_file.h"

#include "mailfeed/config.h"
#include "mailfeed/imap.h"
#include "mailfeed/ingest.h"
#include "mailfeed/store.h"
#include "mailfeed/util.h"

#define BODY_SIZE 10000 /* 100 of them fill a fetch batch and a commit */

static char path[64];
static char pwfile[64];

/* The server: a folder of uids 1..n, message big too large when not 0;
 * drop_after > 0 closes the connection once that many bodies were sent. */
struct server {
	int fd;
	uint32_t n;
	uint32_t big;
	int drop_after;
	int bodies_sent;
	char buf[8192];
	size_t len;
};

static char *message(uint32_t uid, size_t *len)
{
	size_t size = BODY_SIZE * (uid == 0 ? 3 : 1);
	char *m = xmalloc(size + 1);
	int head = snprintf(m, size,
			    "Message-ID: <m%u@test>\r\nFrom: Ann <ann@example.org>\r\n"
			    "Subject: message %u\r\n\r\n",
			    uid, uid);
	for (size_t i = (size_t)head; i < size; i++)
		m[i] = i % 72 == 71 ? '\n' : (char)('a' + (uid + i) % 26);
	m[size] = 0;
	*len = size;
	return m;
}

static size_t size_of(const struct server *sv, uint32_t uid)
{
	size_t len;
	free(message(uid == sv->big ? 0 : uid, &len));
	return len;
}

static int say(struct server *sv, const char *fmt, ...)
{
	char line[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	return send(sv->fd, line, (size_t)n, MSG_NOSIGNAL) == n ? 0 : -1;
}

/* The next command line (without CRLF), or NULL when the client left. */
static char *next_line(struct server *sv)
{
	for (;;) {
		char *eol = memchr(sv->buf, '\n', sv->len);
		if (eol) {
			size_t n = (size_t)(eol - sv->buf) + 1;
			char *line = xstrndup(sv->buf, n - 1);
			memmove(sv->buf, sv->buf + n, sv->len - n);
			sv->len -= n;
			line[strcspn(line, "\r")] = 0;
			return line;
		}
		ssize_t r = recv(sv->fd, sv->buf + sv->len, sizeof sv->buf - sv->len, 0);
		if (r <= 0)
			return NULL;
		sv->len += (size_t)r;
	}
}

/* Calls each(uid) for every uid of an IMAP set ("1:100,205"). */
static int each_uid(struct server *sv, const char *set, int (*each)(struct server *, uint32_t))
{
	const char *p = set;
	while (*p && *p != ' ') {
		char *end;
		unsigned long a = strtoul(p, &end, 10), b = a;
		if (*end == ':')
			b = end[1] == '*' ? sv->n : strtoul(end + 1, &end, 10);
		if (*end == '*')
			end++;
		for (unsigned long u = a; u <= b && u <= sv->n; u++)
			if (each(sv, (uint32_t)u) < 0)
				return -1;
		p = *end == ',' ? end + 1 : end;
	}
	return 0;
}

static int send_meta(struct server *sv, uint32_t uid)
{
	return say(
	    sv,
	    "* %u FETCH (UID %u RFC822.SIZE %zu INTERNALDATE \"01-Mar-2026 10:00:00 +0000\")\r\n",
	    uid, uid, size_of(sv, uid));
}

static int send_body(struct server *sv, uint32_t uid)
{
	size_t len;
	if (sv->drop_after && sv->bodies_sent >= sv->drop_after)
		return -1;
	char *m = message(uid == sv->big ? 0 : uid, &len);
	int rc = say(sv, "* %u FETCH (UID %u BODY[] {%zu}\r\n", uid, uid, len) < 0 ||
			 send(sv->fd, m, len, MSG_NOSIGNAL) != (ssize_t)len || say(sv, ")\r\n") < 0
		     ? -1
		     : 0;
	free(m);
	sv->bodies_sent++;
	return rc;
}

static int send_header(struct server *sv, uint32_t uid)
{
	const char *h = "From: Big <big@example.org>\r\nSubject: the big one\r\n\r\n";
	return say(sv, "* %u FETCH (UID %u BODY[HEADER]<0> {%zu}\r\n%s)\r\n", uid, uid, strlen(h),
		   h);
}

/* One command: the answer, 0; -1 to hang up. */
static int answer(struct server *sv, const char *line)
{
	char tag[32];
	if (sscanf(line, "%31s", tag) != 1)
		return -1;
	const char *cmd = line + strlen(tag) + 1;
	if (strncmp(cmd, "SELECT", 6) == 0)
		return say(sv,
			   "* %u EXISTS\r\n* OK [UIDVALIDITY 7] v\r\n* OK [UIDNEXT %u] n\r\n"
			   "%s OK [READ-WRITE] selected\r\n",
			   sv->n, sv->n + 1, tag);
	if (strncmp(cmd, "UID SEARCH", 10) == 0) {
		say(sv, "* SEARCH");
		for (uint32_t u = 1; u <= sv->n; u++)
			say(sv, " %u", u);
		return say(sv, "\r\n%s OK searched\r\n", tag);
	}
	if (strncmp(cmd, "UID FETCH ", 10) == 0) {
		const char *set = cmd + 10;
		int (*each)(struct server *, uint32_t) = strstr(cmd, "HEADER") ? send_header
							 : strstr(cmd, "BODY") ? send_body
									       : send_meta;
		if (each_uid(sv, set, each) < 0)
			return -1;
		return say(sv, "%s OK fetched\r\n", tag);
	}
	if (strncmp(cmd, "LOGOUT", 6) == 0) {
		say(sv, "* BYE bye\r\n%s OK done\r\n", tag);
		return -1;
	}
	return say(sv, "%s OK done\r\n", tag); /* LOGIN and the rest */
}

static void *serve(void *arg)
{
	struct server *sv = arg;
	char *line;
	say(sv, "* OK [CAPABILITY IMAP4rev1 IDLE] test server ready\r\n");
	while ((line = next_line(sv))) {
		int rc = answer(sv, line);
		free(line);
		if (rc < 0)
			break;
	}
	shutdown(sv->fd, SHUT_RDWR);
	return NULL;
}

/* What a take-in left in the state. */
struct outcome {
	int rc, inserted;
	uint32_t checkpoint;
	int count;
	uint32_t max_uid;
	int in_order; /* ids ascend with UIDs */
	int bodies_sent;
};

struct lease {
	int calls, lose_at, stop_at;
	atomic_int *stop;
};

static int lease_check(void *arg)
{
	struct lease *l = arg;
	l->calls++;
	if (l->stop_at && l->calls == l->stop_at)
		atomic_store(l->stop, 1);
	return !(l->lose_at && l->calls >= l->lose_at);
}

static int one_int(sqlite3 *db, const char *sql)
{
	sqlite3_stmt *s;
	int v = -1;
	assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK);
	if (sqlite3_step(s) == SQLITE_ROW)
		v = sqlite3_column_int(s, 0);
	sqlite3_finalize(s);
	return v;
}

/* Takes the folder of sv in; refuse_uid > 0: the state refuses that one. */
static struct outcome take(struct server *sv, struct lease *l, uint32_t refuse_uid,
			   long long max_size)
{
	struct mf_account acct = {.name = "test",
				  .host = "127.0.0.1",
				  .port = 143,
				  .tls = TLS_NONE,
				  .username = "ann",
				  .password_file = pwfile,
				  .timeout = 5,
				  .poll_interval = 1,
				  .idle_restart = 60};
	char err[512];
	int fds[2];
	atomic_int stop = 0;
	struct outcome o = {0};
	struct store *st = store_open(path, err, sizeof err);
	assert_non_null(st);
	if (refuse_uid) {
		char sql[300];
		snprintf(sql, sizeof sql,
			 "CREATE TRIGGER refuse BEFORE INSERT ON messages WHEN NEW.uid=%u "
			 "BEGIN SELECT RAISE(ABORT, 'disk full'); END",
			 refuse_uid);
		assert_int_equal(db_exec(store_db(st), sql), 0);
	}
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
	sv->fd = fds[1];
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, serve, sv), 0);
	struct imap_session *s = imap_open_fd(&acct, fds[0], max_size, err, sizeof err);
	if (!s)
		fprintf(stderr, "open: %s\n", err);
	assert_non_null(s);
	struct ingest_folder f = {.key = "team",
				  .acct = &acct,
				  .folder = "INBOX",
				  .max_size = max_size,
				  .start = START_ALL};
	if (l) {
		l->stop = &stop;
		f.may_work = lease_check;
		f.may_work_arg = l;
	}
	o.rc = ingest_sync_folder(s, st, &f, &stop, &o.inserted, err, sizeof err);
	struct folder_state fs;
	store_folder_get(st, "team", &fs);
	o.checkpoint = fs.last_uid;
	imap_abort(s);
	pthread_join(t, NULL);
	close(fds[1]);
	store_close(st);
	o.bodies_sent = sv->bodies_sent;

	sqlite3 *db;
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	o.count = one_int(db, "SELECT count(*) FROM messages");
	o.max_uid = (uint32_t)one_int(db, "SELECT coalesce(max(uid), 0) FROM messages");
	o.in_order = one_int(db, "SELECT count(*) FROM messages a JOIN messages b"
				 " ON a.id < b.id AND a.uid > b.uid") == 0;
	sqlite3_close(db);
	return o;
}

static int setup(void **state)
{
	state_file_new(path, sizeof path, "ingest");
	snprintf(pwfile, sizeof pwfile, "/tmp/mf-test-ingest-pw-%d", (int)getpid());
	FILE *f = fopen(pwfile, "w");
	assert_non_null(f);
	fputs("secret\n", f);
	fclose(f);
	chmod(pwfile, 0600);
	return 0;
}

static int teardown(void **state)
{
	state_file_remove(path);
	unlink(pwfile);
	return 0;
}

static void test_every_message_once_in_order(void **state)
{
	struct server sv = {.n = 800};
	struct outcome o = take(&sv, NULL, 0, 1 << 20);
	assert_int_equal(o.rc, 0);
	assert_int_equal(o.inserted, 800);
	assert_int_equal(o.count, 800);
	assert_int_equal(o.checkpoint, 800);
	assert_true(o.in_order);

	sqlite3 *db;
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	/* the bytes as sent, the Message-ID read from them */
	assert_int_equal(one_int(db, "SELECT count(*) FROM messages m JOIN message_bodies b"
				     " ON b.message=m.id WHERE length(b.raw)=10000"
				     " AND m.message_id='m'||m.uid||'@test' AND m.state='new'"),
			 800);
	assert_int_equal(one_int(db, "SELECT count(DISTINCT sha256) FROM messages"), 800);
	sqlite3_close(db);

	/* a second pass takes nothing again */
	struct server again = {.n = 800};
	o = take(&again, NULL, 0, 1 << 20);
	assert_int_equal(o.rc, 0);
	assert_int_equal(o.inserted, 0);
	assert_int_equal(o.count, 800);
	assert_int_equal(again.bodies_sent, 0);
}

/* The connection breaks in the fourth fetch batch (uids 301-400): the
 * batches committed up to 300 stay, 301-350 stored but not committed do
 * not. */
static void test_broken_fetch_keeps_committed_batches_only(void **state)
{
	struct server sv = {.n = 800, .drop_after = 350};
	struct outcome o = take(&sv, NULL, 0, 1 << 20);
	assert_int_equal(o.rc, -1);
	assert_int_equal(o.inserted, 300);
	assert_int_equal(o.count, 300);
	assert_int_equal(o.max_uid, 300);
	assert_int_equal(o.checkpoint, 300);

	/* the next pass goes on from there */
	struct server again = {.n = 800};
	o = take(&again, NULL, 0, 1 << 20);
	assert_int_equal(o.rc, 0);
	assert_int_equal(o.inserted, 500);
	assert_int_equal(again.bodies_sent, 500);
	assert_int_equal(o.count, 800);
	assert_true(o.in_order);
}

/* The lease ends while messages 201-295 are stored: they are rolled
 * back. */
static void test_lost_lease_rolls_back_the_open_batch(void **state)
{
	struct server sv = {.n = 2000};
	struct lease l = {.lose_at = 300};
	struct outcome o = take(&sv, &l, 0, 1 << 20);
	assert_int_equal(o.rc, INGEST_LEASE_LOST);
	assert_int_equal(o.inserted, 200);
	assert_int_equal(o.count, 200);
	assert_int_equal(o.checkpoint, 200);
	assert_true(sv.bodies_sent < 1200); /* the fetch stopped too */
}

/* The state refuses message 250: nothing from 201 on is stored, and the
 * fetch stops. */
static void test_store_failure_stores_nothing_past_it(void **state)
{
	struct server sv = {.n = 2000};
	struct outcome o = take(&sv, NULL, 250, 1 << 20);
	assert_int_equal(o.rc, INGEST_STORE_FAILED);
	assert_int_equal(o.count, 200);
	assert_int_equal(o.max_uid, 200);
	assert_int_equal(o.checkpoint, 200);
	assert_true(sv.bodies_sent < 1200);
}

/* The stop flag: what was stored is committed, with its checkpoint. */
static void test_stop_commits_what_was_stored(void **state)
{
	struct server sv = {.n = 800};
	struct lease l = {.stop_at = 150};
	struct outcome o = take(&sv, &l, 0, 1 << 20);
	assert_int_equal(o.rc, 0);
	assert_true(o.count > 100 && o.count < 800);
	assert_int_equal(o.inserted, o.count);
	assert_int_equal(o.checkpoint, o.max_uid);
	assert_int_equal(o.max_uid, (uint32_t)o.count);
}

/* Message 7 is over max_message_size: recorded as skipped, with the sender
 * and subject of its header; the others are taken around it. */
static void test_too_large_recorded_and_described(void **state)
{
	struct server sv = {.n = 20, .big = 7};
	struct outcome o = take(&sv, NULL, 0, 20000);
	assert_int_equal(o.rc, 0);
	assert_int_equal(o.count, 20);
	assert_int_equal(o.checkpoint, 20);
	assert_int_equal(sv.bodies_sent, 19);
	sqlite3 *db;
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_int_equal(one_int(db, "SELECT count(*) FROM messages WHERE uid=7 AND state='skipped'"
				     " AND reason LIKE 'too large: 30000 bytes%'"),
			 1);
	assert_int_equal(one_int(db, "SELECT count(*) FROM messages m JOIN message_parsed p"
				     " ON p.message=m.id WHERE m.uid=7"
				     " AND p.parsed LIKE '%the big one%'"
				     " AND p.parsed LIKE '%big@example.org%'"),
			 1);
	assert_int_equal(one_int(db, "SELECT count(*) FROM messages WHERE state='new'"), 19);
	sqlite3_close(db);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_every_message_once_in_order, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_broken_fetch_keeps_committed_batches_only, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_lost_lease_rolls_back_the_open_batch, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_store_failure_stores_nothing_past_it, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_stop_commits_what_was_stored, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_too_large_recorded_and_described, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
