/* test_store.c — the state database: creation and migration, ingestion
 * exactly once (message + checkpoint), UIDVALIDITY changes, after-actions
 * that are due, refusal of damaged, foreign or newer databases, and the
 * message of a full disk. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "state_file.h"

#include "mailfeed/messages.h"
#include "mailfeed/store.h"

static char path[64];

static int setup(void **state)
{
	state_file_new(path, sizeof path, "store");
	*state = path;
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

static int add(struct store *st, const char *mb, uint32_t uv, uint32_t uid, const char *id,
	       const char *raw)
{
	int inserted = -1;
	struct stored_message m = {.mailbox = mb,
				   .uidvalidity = uv,
				   .uid = uid,
				   .message_id = id,
				   .size = (int64_t)strlen(raw),
				   .raw = raw,
				   .raw_len = strlen(raw),
				   .state = MSG_NEW};
	assert_int_equal(store_message_add(st, &m, &inserted), 0);
	return inserted;
}

static long count(struct store *st, const char *sql)
{
	sqlite3_stmt *s;
	long n = -1;
	assert_int_equal(sqlite3_prepare_v2(store_db(st), sql, -1, &s, NULL), SQLITE_OK);
	if (sqlite3_step(s) == SQLITE_ROW)
		n = sqlite3_column_int64(s, 0);
	sqlite3_finalize(s);
	return n;
}

/* A kept statement comes back prepared, reset and unbound; one asked for
 * while its twin is out is a statement of its own; all close with the
 * store (the leak check tells). */
static void test_kept_statements(void **state)
{
	static const char *const sql = "SELECT ?1 IS NULL, ?1";
	struct store *st = open_ok();
	sqlite3_stmt *a = store_stmt(st, sql);
	assert_non_null(a);
	sqlite3_bind_int(a, 1, 7);
	assert_int_equal(sqlite3_step(a), SQLITE_ROW);
	assert_int_equal(sqlite3_column_int(a, 1), 7);
	sqlite3_stmt *b = store_stmt(st, sql); /* a is still out */
	assert_non_null(b);
	assert_ptr_not_equal(a, b);
	store_stmt_done(st, b);
	store_stmt_done(st, a);
	sqlite3_stmt *c = store_stmt(st, sql);
	assert_ptr_equal(c, a);
	assert_int_equal(sqlite3_step(c), SQLITE_ROW);
	assert_int_equal(sqlite3_column_int(c, 0), 1); /* the binding was cleared */
	store_stmt_done(st, c);
	assert_null(store_stmt(st, "SELECT FROM nowhere"));
	assert_non_null(strstr(store_errmsg(st), "syntax"));
	store_close(st);
}

static void test_create_and_reopen(void **state)
{
	struct store *st = open_ok();
	assert_true(count(st, "PRAGMA user_version") >= 1);
	sqlite3_stmt *s;
	assert_int_equal(sqlite3_prepare_v2(store_db(st), "PRAGMA journal_mode", -1, &s, NULL),
			 SQLITE_OK);
	assert_int_equal(sqlite3_step(s), SQLITE_ROW);
	assert_string_equal((const char *)sqlite3_column_text(s, 0), "wal");
	sqlite3_finalize(s);
	store_close(st);
	st = open_ok(); /* migrations are not applied twice */
	assert_int_equal(count(st, "SELECT COUNT(*) FROM folders"), 0);
	store_close(st);
}

static void test_message_and_checkpoint_once(void **state)
{
	struct store *st = open_ok();
	int changed = -1;
	struct folder_state fs;
	assert_int_equal(store_folder_select(st, "team", "staff", "INBOX", 77, &changed), 0);
	assert_int_equal(changed, 0);
	assert_int_equal(add(st, "team", 77, 1, "a@x", "A"), 1);
	assert_int_equal(add(st, "team", 77, 2, "b@x", "B"), 1);
	/* the same UID again (a fetch repeated after a crash) is not stored twice */
	assert_int_equal(add(st, "team", 77, 2, "b@x", "B"), 0);
	store_folder_get(st, "team", &fs);
	assert_int_equal(fs.uidvalidity, 77);
	assert_int_equal(fs.last_uid, 2);
	/* the checkpoint never goes backwards */
	assert_int_equal(store_folder_advance(st, "team", 1), 0);
	store_folder_get(st, "team", &fs);
	assert_int_equal(fs.last_uid, 2);
	assert_int_equal(count(st, "SELECT COUNT(*) FROM messages"), 2);
	store_close(st);
}

static void test_uidvalidity_change(void **state)
{
	struct store *st = open_ok();
	int changed = -1;
	struct folder_state fs;
	store_folder_select(st, "team", "staff", "INBOX", 1, &changed);
	add(st, "team", 1, 5, "a@x", "A");
	add(st, "team", 1, 6, "b@x", "B");
	assert_int_equal(store_folder_select(st, "team", "staff", "INBOX", 2, &changed), 0);
	assert_int_equal(changed, 1);
	store_folder_get(st, "team", &fs);
	assert_int_equal(fs.last_uid, 0); /* rescan from the start */
	/* the same messages under new UIDs are recognised; a new one is taken */
	assert_int_equal(add(st, "team", 2, 1, "a@x", "A"), 0);
	assert_int_equal(add(st, "team", 2, 2, "b@x", "B"), 0);
	assert_int_equal(add(st, "team", 2, 3, "c@x", "C"), 1);
	/* same Message-ID, different content: a different message */
	assert_int_equal(add(st, "team", 2, 4, "a@x", "A, edited"), 1);
	store_folder_get(st, "team", &fs);
	assert_int_equal(fs.last_uid, 4);
	assert_int_equal(count(st, "SELECT COUNT(*) FROM messages"), 4);
	store_close(st);
}

static void test_acks_only_when_safe(void **state)
{
	struct store *st = open_ok();
	int changed;
	uint32_t *uids = NULL;
	size_t n = 0;
	store_folder_select(st, "team", "staff", "INBOX", 9, &changed);
	add(st, "team", 9, 1, "a@x", "A");
	add(st, "team", 9, 2, "b@x", "B");
	add(st, "team", 9, 3, "c@x", "C");
	assert_int_equal(store_acks_due(st, "team", 9, &uids, &n), 0);
	assert_int_equal(n, 0); /* stored is not yet safe */
	free(uids);
	store_exec(st, "UPDATE messages SET state='delivered' WHERE uid=1");
	store_exec(st, "UPDATE messages SET state='skipped' WHERE uid=3");
	store_exec(st, "UPDATE messages SET state='queued' WHERE uid=2");
	assert_int_equal(store_acks_due(st, "team", 9, &uids, &n), 0);
	assert_int_equal(n, 2);
	assert_int_equal(uids[0], 1);
	assert_int_equal(uids[1], 3);
	assert_int_equal(store_acks_done(st, "team", 9, uids, n), 0);
	free(uids);
	assert_int_equal(store_acks_due(st, "team", 9, &uids, &n), 0);
	assert_int_equal(n, 0);
	free(uids);
	store_close(st);
}

static void test_refuses_damaged_and_newer(void **state)
{
	char err[256];
	struct store *st = open_ok();
	store_exec(st, "PRAGMA user_version=999");
	store_close(st);
	assert_null(store_open(path, err, sizeof err));
	assert_non_null(strstr(err, "newer mailfeed"));
	teardown(state);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	for (int i = 0; i < 4096; i++)
		fputs("not a database ", f);
	fclose(f);
	assert_null(store_open(path, err, sizeof err));
	assert_non_null(strstr(err, path));
	assert_non_null(strstr(err, "corrupt or not a mailfeed state database"));
	assert_non_null(strstr(err, "restore it from a backup"));
	assert_null(strchr(err, '\n'));
}

static long file_size(void)
{
	FILE *f = fopen(path, "rb");
	assert_non_null(f);
	fseek(f, 0, SEEK_END);
	long n = ftell(f);
	fclose(f);
	return n;
}

/* Another program's SQLite file is refused before anything is written to it
 * (not even the switch to WAL mode). */
static void test_refuses_foreign_database(void **state)
{
	char err[256], wal[80];
	sqlite3 *db;
	(void)state;
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db,
				      "CREATE TABLE notes(t TEXT); INSERT INTO notes"
				      " VALUES('keep me')",
				      NULL, NULL, NULL),
			 SQLITE_OK);
	sqlite3_close(db);
	long before = file_size();
	assert_null(store_open(path, err, sizeof err));
	assert_non_null(strstr(err, "not a mailfeed state database"));
	assert_non_null(strstr(err, path));
	assert_int_equal(file_size(), before);
	snprintf(wal, sizeof wal, "%s-wal", path);
	assert_int_equal(access(wal, F_OK), -1);
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	sqlite3_stmt *s;
	assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &s, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(s), SQLITE_ROW);
	assert_string_equal((const char *)sqlite3_column_text(s, 0), "delete");
	sqlite3_finalize(s);
	sqlite3_close(db);
}

/* A write that finds no room says so, with the file, also after the
 * rollback that follows it (max_page_count stands in for a full disk:
 * SQLite reports both as SQLITE_FULL). */
static void test_disk_full_is_told(void **state)
{
	(void)state;
	struct store *st = open_ok();
	assert_int_equal(store_exec(st, "PRAGMA max_page_count=1"), 0);
	assert_int_equal(store_begin(st), 0);
	assert_int_equal(store_exec(st, "CREATE TABLE filler(x); INSERT INTO filler"
					" VALUES(zeroblob(100000))"),
			 -1);
	store_rollback(st);
	const char *e = store_errmsg(st);
	assert_non_null(strstr(e, "disk full"));
	assert_non_null(strstr(e, path));
	store_close(st);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_create_and_reopen, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_kept_statements, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_message_and_checkpoint_once, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_uidvalidity_change, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_acks_only_when_safe, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_refuses_damaged_and_newer, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_refuses_foreign_database, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_disk_full_is_told, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
