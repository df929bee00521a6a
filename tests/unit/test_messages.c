/* test_messages.c — the messages table through its module: the state
 * names (one table, round trip, unknown names refused), the after-action
 * rule against the rows it selects, the pipeline's reads and state
 * changes, backfill's held mail, the dead list's retry and drop, what
 * status and the metrics count, the after-action backoff, and the
 * daemon's notes and counters (notes.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "state_file.h"

#include "mailfeed/message.h"
#include "mailfeed/messages.h"
#include "mailfeed/notes.h"
#include "mailfeed/outbox.h"
#include "mailfeed/retention.h"
#include "mailfeed/store.h"

static char path[64];

static int setup(void **state)
{
	state_file_new(path, sizeof path, "messages");
	return 0;
}

static int teardown(void **state)
{
	state_file_remove(path);
	return 0;
}

static struct store *open_ok(void)
{
	char err[256];
	struct store *st = store_open(path, err, sizeof err);
	assert_non_null(st);
	return st;
}

/* Stores a message (content raw, NULL: not fetched) in state s; its id. */
static int64_t add(struct store *st, const char *mb, uint32_t uid, const char *raw,
		   enum msg_state s, time_t date)
{
	int inserted = -1;
	char id[32];
	snprintf(id, sizeof id, "m%u@x", uid);
	struct stored_message m = {.mailbox = mb,
				   .uidvalidity = 9,
				   .uid = uid,
				   .message_id = id,
				   .size = raw ? (int64_t)strlen(raw) : 100,
				   .internaldate = date,
				   .raw = raw,
				   .raw_len = raw ? strlen(raw) : 0,
				   .state = s};
	assert_int_equal(store_message_add(st, &m, &inserted), 0);
	assert_int_equal(inserted, 1);
	return (int64_t)sqlite3_last_insert_rowid(db_sqlite_handle(store_db(st)));
}

static const char *state_of(struct store *st, int64_t id)
{
	static char out[32];
	struct db_stmt *s;
	out[0] = 0;
	assert_non_null((s = db_prepare(store_db(st), "SELECT state FROM messages WHERE id=?")));
	db_bind_int64(s, 1, id);
	if (db_step(s) == DB_ROW)
		snprintf(out, sizeof out, "%s", db_column_text(s, 0));
	db_finalize(s);
	return out;
}

static void exec_ok(struct store *st, const char *sql) { assert_int_equal(store_exec(st, sql), 0); }

/* An outbox item of message id in state s; its id. */
static int64_t item(struct store *st, int64_t message, const char *s, int64_t parent)
{
	static int serial;
	char sql[300];
	snprintf(sql, sizeof sql,
		 "INSERT INTO outbox(key, message, kind, grp, parent, state, created)"
		 " VALUES('k%d', %lld, '%s', 'g', %lld, '%s', 1)",
		 ++serial, (long long)message, parent ? "comment" : "post", (long long)parent, s);
	exec_ok(st, sql);
	return (int64_t)sqlite3_last_insert_rowid(db_sqlite_handle(store_db(st)));
}

/* Every state has one name and comes back from it; other names (and the
 * wrong case, and NULL) are refused and leave the output alone. */
static void test_state_names(void **state)
{
	static const char *const expected[] = {"new",	  "held", "queued",    "skipped",
					       "handled", "dead", "delivered", "dropped"};
	assert_int_equal(MSG_STATE_COUNT, sizeof expected / sizeof *expected);
	for (int i = 0; i < MSG_STATE_COUNT; i++) {
		enum msg_state s = MSG_STATE_COUNT;
		const char *name = msg_state_name((enum msg_state)i);
		assert_non_null(name);
		assert_int_equal(msg_state_parse(name, &s), 0);
		assert_int_equal(s, i);
		/* the names are what the databases in use hold: they never change */
		int found = 0;
		for (size_t k = 0; k < sizeof expected / sizeof *expected; k++)
			found += strcmp(expected[k], name) == 0;
		assert_int_equal(found, 1);
	}
	enum msg_state s = MSG_DEAD;
	assert_int_equal(msg_state_parse("pending", &s), -1);
	assert_int_equal(msg_state_parse("Queued", &s), -1);
	assert_int_equal(msg_state_parse("", &s), -1);
	assert_int_equal(msg_state_parse(NULL, &s), -1);
	assert_int_equal(s, MSG_DEAD);
	assert_null(msg_state_name(MSG_STATE_COUNT));
	assert_null(msg_state_name((enum msg_state) - 1));
}

/* The rule in C and the rows the after-action takes agree, for every
 * state with and without an outbox item. */
static void test_after_action_rule(void **state)
{
	struct store *st = open_ok();
	uint32_t uid = 1;
	for (int with_item = 0; with_item < 2; with_item++)
		for (int i = 0; i < MSG_STATE_COUNT; i++) {
			int64_t id = add(st, "team", uid, "raw", (enum msg_state)i, 0);
			if (with_item)
				item(st, id, "dead", 0);
			uint32_t *uids;
			size_t n;
			assert_int_equal(store_acks_due(st, "team", 9, &uids, &n), 0);
			int due = 0;
			for (size_t k = 0; k < n; k++)
				due |= uids[k] == uid;
			free(uids);
			assert_int_equal(due, msg_after_action_due((enum msg_state)i, with_item));
			uid++;
		}
	assert_true(msg_after_action_due(MSG_DELIVERED, 1));
	assert_true(msg_after_action_due(MSG_DEAD, 0));
	assert_false(msg_after_action_due(MSG_DEAD, 1));
	assert_false(msg_after_action_due(MSG_NEW, 0));
	assert_false(msg_after_action_due(MSG_QUEUED, 1));
	assert_false(msg_after_action_due(MSG_HELD, 0));
	store_close(st);
}

/* The pipeline's view: new messages with content of the mailboxes asked
 * for, oldest first; suspects by their parse attempts; raw bytes by id;
 * the state change keeps the parsed form unless a new one is given. */
static void test_pipeline_reads_and_writes(void **state)
{
	struct store *st = open_ok();
	int64_t a = add(st, "team", 1, "Subject: a\r\n\r\nA", MSG_NEW, 200);
	int64_t b = add(st, "team", 2, "Subject: b\r\n\r\nB", MSG_NEW, 100);
	add(st, "team", 3, NULL, MSG_SKIPPED, 50);		/* not fetched */
	add(st, "other", 4, "x", MSG_NEW, 10);			/* not asked for */
	int64_t r = add(st, "[replies]", 5, "r", MSG_NEW, 300); /* replies */
	const char *names[] = {"team"};
	int64_t *ids;
	int *attempts;
	size_t n;
	assert_int_equal(messages_new_ids(st, "[replies]", names, 1, 0, 10, &ids, &attempts, &n),
			 0);
	assert_int_equal(n, 3);
	assert_int_equal(ids[0], b);
	assert_int_equal(ids[1], a);
	assert_int_equal(ids[2], r);
	assert_int_equal(attempts[0], 0);
	free(ids);
	free(attempts);
	assert_int_equal(messages_new_ids(st, NULL, names, 1, 0, 1, &ids, &attempts, &n), 0);
	assert_int_equal(n, 1);
	free(ids);
	free(attempts);

	/* parse attempts: counted, then forgotten only for the still new */
	int64_t both[] = {a, b};
	assert_int_equal(messages_count_attempts(st, both, 2), 0);
	assert_int_equal(messages_new_ids(st, NULL, names, 1, 1, 10, &ids, &attempts, &n), 0);
	assert_int_equal(n, 2);
	assert_int_equal(attempts[0], 1);
	free(ids);
	free(attempts);
	assert_int_equal(messages_set_state(st, a, MSG_QUEUED, NULL, "{\"subject\":\"a\"}"), 0);
	messages_forget_attempts(st, both, 2);
	assert_int_equal(messages_new_ids(st, NULL, names, 1, 1, 10, &ids, &attempts, &n), 0);
	assert_int_equal(n, 0);
	free(ids);
	free(attempts);

	char *mb, *raw;
	size_t len;
	assert_int_equal(messages_raw(st, b, &mb, &raw, &len), 1);
	assert_string_equal(mb, "team");
	assert_int_equal(len, strlen("Subject: b\r\n\r\nB"));
	assert_string_equal(raw, "Subject: b\r\n\r\nB");
	free(mb);
	free(raw);
	assert_int_equal(messages_raw(st, 9999, &mb, &raw, &len), 0);
	assert_null(raw);

	/* a state change without a parsed form keeps the one there */
	assert_string_equal(state_of(st, a), "queued");
	assert_int_equal(messages_set_state(st, a, MSG_DEAD, "why", NULL), 0);
	assert_string_equal(state_of(st, a), "dead");
	struct db_stmt *s;
	assert_non_null(
	    (s = db_prepare(store_db(st),
			    "SELECT reason, json_extract(parsed,'$.subject')"
			    " FROM messages JOIN message_parsed ON message=id WHERE id=?")));
	db_bind_int64(s, 1, a);
	assert_int_equal(db_step(s), DB_ROW);
	assert_string_equal(db_column_text(s, 0), "why");
	assert_string_equal(db_column_text(s, 1), "a");
	db_finalize(s);
	assert_int_equal(messages_set_state(st, a, MSG_STATE_COUNT, NULL, NULL), -1);
	store_close(st);
}

/* Backfill: held mail counted, released oldest first, the older forgotten;
 * UIDs already stored are not fetched again. */
static void test_backfill_held(void **state)
{
	struct store *st = open_ok();
	int64_t old = add(st, "team", 1, "a", MSG_HELD, 100);
	int64_t mid = add(st, "team", 2, "b", MSG_HELD, 200);
	int64_t young = add(st, "team", 3, "c", MSG_HELD, 300);
	add(st, "other", 4, "d", MSG_HELD, 50);
	assert_int_equal(messages_held_count(st, "team"), 3);
	assert_int_equal(messages_release_held(st, "team", 1), 0);
	assert_string_equal(state_of(st, old), "new");
	assert_string_equal(state_of(st, mid), "held");
	messages_forget_held(st, "team", 250);
	assert_string_equal(state_of(st, mid), "");
	assert_string_equal(state_of(st, young), "held");
	assert_string_equal(state_of(st, old), "new"); /* released: not held any more */
	assert_int_equal(messages_held_count(st, "team"), 1);
	assert_int_equal(messages_held_count(st, "other"), 1);

	uint32_t uids[] = {1, 2, 3, 7};
	assert_int_equal(messages_drop_known(st, "team", 9, uids, 4), 2);
	assert_int_equal(uids[0], 2); /* forgotten above: fetched again */
	assert_int_equal(uids[1], 7);
	store_close(st);
}

/* What the outbox tells: delivered once no item is on its way; comments
 * of a dead post go dead; a retried item queues its message again; the
 * dead list's retry and drop of messages and items. */
static void test_outbox_follows(void **state)
{
	struct store *st = open_ok();
	int64_t m = add(st, "team", 1, "a", MSG_QUEUED, 0);
	int64_t i1 = item(st, m, "delivered", 0);
	int64_t i2 = item(st, m, "pending", 0);
	assert_int_equal(messages_follow_delivered(st, m), 0);
	assert_string_equal(state_of(st, m), "queued"); /* i2 still on its way */
	char sql[80];
	snprintf(sql, sizeof sql, "UPDATE outbox SET state='dropped' WHERE id=%lld", (long long)i2);
	exec_ok(st, sql);
	assert_int_equal(messages_follow_delivered(st, m), 0);
	assert_string_equal(state_of(st, m), "delivered");
	assert_int_equal(messages_follow_delivered(st, 0), 0);
	(void)i1;

	/* a comment waiting on a dead post */
	int64_t p = add(st, "team", 2, "p", MSG_DEAD, 0);
	int64_t post = item(st, p, "dead", 0);
	int64_t c = add(st, "team", 3, "c", MSG_QUEUED, 0);
	item(st, c, "pending", post);
	assert_int_equal(messages_follow_dead_posts(st, "post was not delivered"), 0);
	assert_string_equal(state_of(st, c), "dead");
	/* the post retried: its dead message is queued again */
	exec_ok(st, "UPDATE outbox SET state='pending' WHERE message=2");
	assert_int_equal(messages_follow_retried(st), 0);
	assert_string_equal(state_of(st, p), "queued");

	/* dead list of messages: retry and drop, content told */
	int64_t sk = add(st, "team", 4, "s", MSG_SKIPPED, 0);
	int64_t big = add(st, "team", 5, NULL, MSG_SKIPPED, 0);
	assert_int_equal(messages_dead_content(st, sk), 1);
	assert_int_equal(messages_dead_content(st, big), 2);
	assert_int_equal(messages_dead_content(st, m), 0); /* delivered: not on the list */
	assert_int_equal(messages_retry(st, sk), 0);
	assert_int_equal((int)db_changes(store_db(st)), 1);
	assert_string_equal(state_of(st, sk), "new");
	assert_int_equal(messages_retry(st, m), 0);
	assert_int_equal((int)db_changes(store_db(st)), 0);
	assert_int_equal(messages_drop(st, big), 0);
	assert_string_equal(state_of(st, big), "dropped");

	/* an item dropped: its dead message follows unless another is on its way */
	int64_t d = add(st, "team", 6, "d", MSG_DEAD, 0);
	int64_t di = item(st, d, "dropped", 0);
	int64_t other = item(st, d, "pending", 1000);
	assert_int_equal(messages_drop_of_item(st, di), 0);
	assert_string_equal(state_of(st, d), "dead");
	snprintf(sql, sizeof sql, "UPDATE outbox SET state='delivered' WHERE id=%lld",
		 (long long)other);
	exec_ok(st, sql);
	assert_int_equal(messages_drop_of_item(st, di), 0);
	assert_string_equal(state_of(st, d), "dropped");
	store_close(st);
}

static void count_cb(void *ctx, const char *mailbox, const char *state, long long n)
{
	char *out = ctx;
	size_t l = strlen(out);
	snprintf(out + l, 256 - l, "%s/%s=%lld;", mailbox, state, n);
}

/* Status and metrics: counts per mailbox, the oldest waiting, counts by
 * state; folders with their sync status. */
static void test_counts_and_folders(void **state)
{
	struct store *st = open_ok();
	int changed;
	assert_int_equal(store_folder_select(st, "team", "acct", "Team", 9, &changed), 0);
	add(st, "team", 1, "a", MSG_NEW, 0);
	add(st, "team", 2, "b", MSG_QUEUED, 0);
	add(st, "team", 3, "c", MSG_SKIPPED, 0);
	add(st, "team", 4, "d", MSG_HANDLED, 0);
	add(st, "team", 5, "e", MSG_DEAD, 0);
	add(st, "team", 6, "f", MSG_DELIVERED, 0);
	struct messages_counts c;
	assert_int_equal(messages_counts(st, "team", &c), 0);
	assert_int_equal(c.stored, 6);
	assert_int_equal(c.skipped, 2);
	assert_int_equal(c.fresh, 1);
	assert_int_equal(c.queued, 1);
	assert_int_equal(c.dead, 1);
	assert_true(c.oldest_waiting > 0);
	assert_int_equal(messages_counts(st, "none", &c), 0);
	assert_int_equal(c.stored, 0);
	assert_int_equal(c.oldest_waiting, 0);
	char out[256] = "";
	exec_ok(st, "DELETE FROM messages WHERE state NOT IN ('new','dead')");
	assert_int_equal(messages_each_count(st, count_cb, out), 0);
	assert_string_equal(out, "team/dead=1;team/new=1;");

	struct folder_status fs;
	assert_int_equal(store_folder_status(st, "team", &fs), 1);
	assert_int_equal(fs.last_uid, 6); /* the adds moved the checkpoint */
	assert_true(fs.last_event > 0);
	assert_null(fs.last_error);
	store_folder_status_free(&fs);
	assert_int_equal(store_folder_status(st, "zzz", &fs), 0);
	assert_null(fs.mailbox);
	assert_int_equal(store_folder_select(st, "b-box", "acct", "INBOX", 42, &changed), 0);
	assert_int_equal(store_folder_error(st, "b-box", "refused"), 0);
	assert_int_equal(store_folder_status(st, "b-box", &fs), 1);
	assert_string_equal(fs.account, "acct");
	assert_string_equal(fs.folder, "INBOX");
	assert_int_equal(fs.uidvalidity, 42);
	assert_string_equal(fs.last_error, "refused");
	assert_true(fs.last_error_at > 0);
	assert_int_equal(fs.last_ok, 0);
	store_folder_status_free(&fs);
	struct folder_status *list;
	size_t n;
	assert_int_equal(store_folders_list(st, &list, &n), 0);
	assert_int_equal(n, 2);
	assert_string_equal(list[0].mailbox, "b-box");
	assert_string_equal(list[1].mailbox, "team");
	assert_int_equal(list[1].last_uid, 6);
	store_folders_free(list, n);
	store_close(st);
}

/* Refused after-actions count while their message still waits for one. */
static void test_acks_refused(void **state)
{
	struct store *st = open_ok();
	time_t next;
	char *error;
	exec_ok(st, "CREATE TABLE IF NOT EXISTS ack_errors("
		    " mailbox TEXT NOT NULL, uidvalidity INTEGER NOT NULL, uid INTEGER NOT NULL,"
		    " error TEXT NOT NULL, attempts INTEGER NOT NULL, next_at INTEGER NOT NULL,"
		    " PRIMARY KEY(mailbox, uidvalidity, uid))");
	assert_int_equal(messages_acks_refused(st, "team", 9, &next, &error), 0);
	assert_null(error);
	add(st, "team", 1, "a", MSG_DELIVERED, 0);
	add(st, "team", 2, "b", MSG_DELIVERED, 0);
	exec_ok(st, "INSERT INTO ack_errors VALUES('team', 9, 1, 'NO [TRYCREATE]', 1, 500),"
		    " ('team', 9, 2, 'NO [TRYCREATE]', 2, 400), ('team', 9, 3, 'gone', 1, 10)");
	assert_int_equal(messages_acks_refused(st, "team", 9, &next, &error), 2);
	assert_int_equal(next, 400);
	assert_string_equal(error, "NO [TRYCREATE]");
	free(error);
	uint32_t done = 2;
	assert_int_equal(store_acks_done(st, "team", 9, &done, 1), 0);
	assert_int_equal(messages_acks_refused(st, "team", 9, &next, &error), 1);
	assert_int_equal(next, 500);
	free(error);
	store_close(st);
}

static int64_t int_of(struct store *st, const char *sql)
{
	struct db_stmt *s;
	int64_t v = -1;
	assert_non_null((s = db_prepare(store_db(st), sql)));
	if (db_step(s) == DB_ROW)
		v = db_column_int64(s, 0);
	db_finalize(s);
	return v;
}

/* A refused after-action waits a minute, then twice as long each time, an
 * hour at most; success forgets it.  One upsert per message, so that two
 * processes noting the same refusal count both. */
static void test_acks_backoff(void **state)
{
	struct store *st = open_ok();
	uint32_t uid = 4;
	const int64_t waits[] = {60, 120, 240, 480, 960, 1920, 3600, 3600};
	assert_int_equal(messages_acks_table(st), 0);
	for (size_t i = 0; i < sizeof waits / sizeof *waits; i++) {
		messages_acks_note(st, "team", 9, &uid, 1, "NO [TRYCREATE]", 1000);
		assert_int_equal(int_of(st, "SELECT attempts FROM ack_errors"), (int64_t)i + 1);
		assert_int_equal(int_of(st, "SELECT next_at FROM ack_errors"), 1000 + waits[i]);
	}
	uint32_t kept = 4;
	size_t n = 1;
	messages_acks_not_waiting(st, "team", 9, &kept, &n, 1000 + 3599);
	assert_int_equal(n, 0);
	messages_acks_note(st, "team", 9, &uid, 1, NULL, 5000);
	assert_int_equal(int_of(st, "SELECT COUNT(*) FROM ack_errors"), 0);
	store_close(st);
}

/* Counters add up and stay text a person can read; notes are replaced. */
static void test_notes_and_counters(void **state)
{
	struct store *st = open_ok();
	char *v = NULL;
	assert_int_equal(note_count(st, NOTE_COUNT_RETRIED, 3), 0);
	assert_int_equal(note_count(st, NOTE_COUNT_RETRIED, 4), 0);
	assert_int_equal(note_counter(st, NOTE_COUNT_RETRIED), 7);
	assert_int_equal(note_get(st, NOTE_COUNT_RETRIED, &v, NULL), 1);
	assert_string_equal(v, "7");
	free(v);
	assert_int_equal(note_set(st, NOTE_RELOAD_ERROR, "first", 10), 0);
	assert_int_equal(note_set(st, NOTE_RELOAD_ERROR, "second", 20), 0);
	time_t at = 0;
	assert_int_equal(note_get(st, NOTE_RELOAD_ERROR, &v, &at), 1);
	assert_string_equal(v, "second");
	assert_int_equal(at, 20);
	free(v);
	store_close(st);
}

/* A state of schema version 8 keeps its mail: raw bytes move to
 * message_bodies and parsed forms to message_parsed, the messages rows lose
 * the columns. */
static void test_migration_moves_bodies(void **state)
{
	struct db *db;
	assert_non_null(db = db_open_flags(path, DB_OPEN_NO_SETUP, NULL, 0, NULL));
	assert_int_equal(
	    db_exec(db,
		    "CREATE TABLE messages(id INTEGER PRIMARY KEY, mailbox TEXT NOT NULL,"
		    " uidvalidity INTEGER NOT NULL, uid INTEGER NOT NULL, message_id TEXT,"
		    " size INTEGER NOT NULL, internaldate INTEGER, sha256 TEXT NOT NULL,"
		    " raw BLOB, state TEXT NOT NULL DEFAULT 'new', reason TEXT, parsed TEXT,"
		    " received_at INTEGER NOT NULL, acked INTEGER NOT NULL DEFAULT 0,"
		    " parse_attempts INTEGER NOT NULL DEFAULT 0,"
		    " UNIQUE(mailbox, uidvalidity, uid));"
		    "INSERT INTO messages(id, mailbox, uidvalidity, uid, size, sha256, raw, state,"
		    " parsed, received_at) VALUES(1, 'team', 9, 1, 5, 'h', 'Hello', 'delivered',"
		    " '{\"subject\":\"Hi\"}', 1), (2, 'team', 9, 2, 5, 'h', NULL, 'skipped',"
		    " '{\"subject\":\"Big\"}', 1), (3, 'team', 9, 3, 5, 'h', NULL, 'skipped',"
		    " NULL, 1), (4, 'team', 9, 4, 5, 'h', 'New one', 'new', NULL, 1);"
		    "CREATE TABLE outbox(id INTEGER PRIMARY KEY, payload TEXT, state TEXT,"
		    " next_at INTEGER, kind TEXT, ext_parent INTEGER, parent INTEGER,"
		    " sort_date TEXT);"
		    "CREATE INDEX outbox_due ON outbox(state);"
		    "CREATE TABLE digest_runs(email TEXT);"
		    "CREATE TABLE notice_queue(id INTEGER PRIMARY KEY);"
		    "PRAGMA user_version=8;"),
	    0);
	db_close(db);
	struct store *st = open_ok();
	static const char *const want[][3] = {
	    {"1", "Hello", "{\"subject\":\"Hi\"}"},
	    {"2", NULL, "{\"subject\":\"Big\"}"},
	    {"3", NULL, NULL},
	    {"4", "New one", NULL},
	};
	struct db_stmt *s;
	assert_non_null(
	    (s = db_prepare(store_db(st),
			    "SELECT m.id, b.raw, p.parsed FROM messages m"
			    " LEFT JOIN message_bodies b ON b.message=m.id"
			    " LEFT JOIN message_parsed p ON p.message=m.id ORDER BY m.id")));
	for (size_t i = 0; i < 4; i++) {
		assert_int_equal(db_step(s), DB_ROW);
		for (int c = 0; c < 3; c++) {
			const char *v = db_column_text(s, c);
			if (want[i][c])
				assert_string_equal(v, want[i][c]);
			else
				assert_null(v);
		}
	}
	assert_int_equal(db_step(s), DB_DONE);
	db_finalize(s);
	/* only mail with bytes has a body row, and it holds nothing else */
	assert_non_null((s = db_prepare(store_db(st), "SELECT COUNT(*) FROM message_bodies")));
	assert_int_equal(db_step(s), DB_ROW);
	assert_int_equal((int)db_column_int64(s, 0), 2);
	db_finalize(s);
	assert_null((s = db_prepare(store_db(st), "SELECT parsed FROM message_bodies")));
	db_finalize(s);
	/* the columns are gone from messages */
	assert_null((s = db_prepare(store_db(st), "SELECT raw FROM messages")));
	db_finalize(s);
	char *mb, *raw;
	size_t len;
	assert_int_equal(messages_raw(st, 4, &mb, &raw, &len), 1);
	assert_string_equal(raw, "New one");
	free(mb);
	free(raw);
	assert_int_equal(messages_dead_content(st, 2), 2);
	assert_int_equal(messages_dead_content(st, 3), 2);
	store_close(st);
}

/* Retention forgets the raw mail of finished messages and keeps their
 * parsed form (dedupe compares it); mail still waiting keeps its bytes;
 * a message deleted (backfill) takes its body with it. */
static void test_prune_and_delete_bodies(void **state)
{
	struct store *st = open_ok();
	int64_t done = add(st, "team", 1, "finished", MSG_NEW, 0);
	int64_t waiting = add(st, "team", 2, "waiting", MSG_NEW, 0);
	int64_t held = add(st, "team", 3, "held", MSG_HELD, 10);
	assert_int_equal(messages_set_state(st, done, MSG_DELIVERED, NULL, "{\"subject\":\"d\"}"),
			 0);
	assert_int_equal(messages_set_state(st, waiting, MSG_QUEUED, NULL, "{\"subject\":\"w\"}"),
			 0);
	assert_true(retention_run(st, 0, 86400, time(NULL) + 10) >= 1);
	char *mb, *raw;
	size_t len;
	assert_int_equal(messages_raw(st, done, &mb, &raw, &len), 0);
	assert_int_equal(messages_raw(st, waiting, &mb, &raw, &len), 1);
	free(mb);
	free(raw);
	struct db_stmt *s;
	assert_non_null(
	    (s = db_prepare(store_db(st), "SELECT json_extract(parsed, '$.subject') FROM"
					  " message_parsed WHERE message=?")));
	db_bind_int64(s, 1, done);
	assert_int_equal(db_step(s), DB_ROW);
	assert_string_equal(db_column_text(s, 0), "d");
	db_finalize(s);
	messages_forget_held(st, "team", 100);
	assert_int_equal(messages_raw(st, held, &mb, &raw, &len), 0);
	assert_non_null((s = db_prepare(store_db(st), "SELECT COUNT(*) FROM message_bodies")));
	assert_int_equal(db_step(s), DB_ROW);
	assert_int_equal((int)db_column_int64(s, 0), 1); /* the waiting one's */
	db_finalize(s);
	assert_non_null((s = db_prepare(store_db(st), "SELECT COUNT(*) FROM message_parsed")));
	assert_int_equal(db_step(s), DB_ROW);
	assert_int_equal((int)db_column_int64(s, 0), 2);
	db_finalize(s);
	store_close(st);
}

static struct mf_message *content_sample(void)
{
	struct mf_message *m = message_new();
	m->from_email = xstrdup("ann@example.org");
	m->subject = xstrdup("Budget \xc3\xa9t\xc3\xa9");
	m->full_text = xstrdup("Numbers attached.\n\n> old\n");
	m->text = xstrdup("Numbers attached.");
	m->removed = xstrdup("> old");
	m->attachments = xcalloc(2, sizeof *m->attachments);
	m->n_attachments = 2;
	m->attachments[0].filename = xstrdup("sheet.csv");
	m->attachments[0].content_type = xstrdup("text/csv");
	snprintf(m->attachments[0].sha256, 65, "%064d", 1);
	m->attachments[1].filename = xstrdup("original.eml");
	m->attachments[1].content_type = xstrdup("message/rfc822");
	snprintf(m->attachments[1].sha256, 65, "%064d", 2);
	return m;
}

/* The hash of a message taken from itself is the one taken from its JSON
 * form (NULL fields, text that is not UTF-8, the original.eml copy left
 * out); the parsed form of a queued message keeps it in place of its
 * full text, and a copy of the same Message-ID is still told apart by
 * what it says. */
static void test_content_hash_kept_for_queued(void **state)
{
	struct mf_message *m = content_sample();
	char direct[65], via_json[65];
	for (int k = 0; k < 4; k++) {
		if (k == 1) {
			free(m->subject);
			m->subject = xstrdup("bad \xff\xfe utf-8 \xc3\xa9");
		} else if (k == 2) {
			free(m->from_email);
			m->from_email = NULL;
			snprintf(m->attachments[1].sha256, 65, "%064d", 3);
		} else if (k == 3) {
			free(m->full_text);
			m->full_text = NULL;
		}
		messages_content_hash(m, direct);
		json_t *j = message_to_json(m, 0);
		store_content_hash(j, via_json);
		json_decref(j);
		assert_string_equal(direct, via_json);
	}
	message_free(m);

	struct store *st = open_ok();
	m = content_sample();
	int64_t row = add(st, "team", 1, "a", MSG_NEW, 0);
	messages_content_hash(m, direct);
	char *parsed = message_stored_json(m, direct);
	assert_null(strstr(parsed, "Numbers attached")); /* no text: the item has it */
	assert_non_null(strstr(parsed, "> old"));	 /* what cleaning removed stays */
	assert_int_equal(messages_set_state(st, row, MSG_QUEUED, NULL, parsed), 0);
	free(parsed);
	exec_ok(st, "INSERT INTO outbox(key, message, kind, grp, created)"
		    " VALUES('mf-same', 1, 'post', 'g', 1)");
	assert_int_equal(outbox_key_taken(st, "mf-same"), 1);
	assert_int_equal(outbox_key_taken(st, "mf-other"), 0);
	assert_int_equal(outbox_key_taken(st, "mf-same"), 1); /* kept, asked again */
	char key[40] = "mf-same", note[300] = "";
	assert_int_equal(store_key_for_content(store_db(st), m, key, note, sizeof note), 1);
	assert_string_equal(key, "mf-same"); /* the same content: a duplicate */
	free(m->full_text);
	m->full_text = xstrdup("Other words.\n");
	assert_int_equal(store_key_for_content(store_db(st), m, key, note, sizeof note), 0);
	assert_string_not_equal(key, "mf-same"); /* other content: kept under a key of its own */
	assert_non_null(strstr(note, "other content"));
	message_free(m);
	store_close(st);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_state_names),
	    cmocka_unit_test_setup_teardown(test_after_action_rule, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_pipeline_reads_and_writes, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_backfill_held, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_outbox_follows, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_counts_and_folders, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_acks_refused, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_acks_backoff, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_notes_and_counters, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_migration_moves_bodies, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_prune_and_delete_bodies, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_content_hash_kept_for_queued, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
