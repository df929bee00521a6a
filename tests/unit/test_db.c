/* test_db.c — the statement layer on SQLite: placeholders, the round trip
 * of every type, changes and RETURNING, transactions, the two kinds of
 * error, scripts and versioned migrations (run once, refused when newer,
 * a failed step leaves nothing behind), the writer gate that lets the
 * threads of one process take turns at an SQLite file, and the WAL copied
 * back outside it. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "state_file.h"

#include "mailfeed/db.h"

static char path[64];

static int setup(void **state)
{
	state_file_new(path, sizeof path, "db");
	char err[256];
	struct db *db = db_open(path, err, sizeof err, NULL);
	assert_non_null(db);
	*state = db;
	return 0;
}

static int teardown(void **state)
{
	db_close(*state);
	state_file_remove(path);
	return 0;
}

static void test_placeholders(void **state)
{
	int n = 0;
	char *t = db_translate_placeholders("SELECT ?1, ?, ?7, ?", &n);
	assert_string_equal(t, "SELECT $1, $2, $7, $8");
	assert_int_equal(n, 8);
	free(t);
	t = db_translate_placeholders("SELECT 'a?b', \"c?\", ? -- d?\n, /* e? */ ?2", &n);
	assert_string_equal(t, "SELECT 'a?b', \"c?\", $1 -- d?\n, /* e? */ $2");
	assert_int_equal(n, 2);
	free(t);
	t = db_translate_placeholders("SELECT 'it''s ?', ?", &n);
	assert_string_equal(t, "SELECT 'it''s ?', $1");
	free(t);
	t = db_translate_placeholders("SELECT 1", &n);
	assert_int_equal(n, 0);
	free(t);
}

static void test_is_dsn(void **state)
{
	assert_true(db_is_dsn("postgresql://u@h/db"));
	assert_true(db_is_dsn("postgres://h/db"));
	assert_false(db_is_dsn("/var/lib/mailfeed/state.db"));
	assert_false(db_is_dsn("postgresql.db"));
}

static void test_round_trip(void **state)
{
	struct db *db = *state;
	assert_int_equal(db_engine(db), DB_SQLITE);
	assert_int_equal(db_exec(db, "CREATE TABLE t(id INTEGER PRIMARY KEY, i INTEGER,"
				     " s TEXT, b BLOB)"),
			 0);
	const char text[] = "caf\xc3\xa9 \xe2\x80\x94 \xf0\x9f\x93\xac";
	const unsigned char blob[] = {0, 1, 0xff, 0, 'x'};
	const int64_t ints[] = {INT64_MIN, -1, 0, INT64_MAX};
	for (int k = 0; k < 4; k++) {
		struct db_stmt *s =
		    db_prepare(db, "INSERT INTO t(i, s, b) VALUES(?, ?, ?) RETURNING id");
		assert_non_null(s);
		assert_int_equal(db_bind_int64(s, 1, ints[k]), 0);
		assert_int_equal(k == 2 ? db_bind_null(s, 2) : db_bind_text(s, 2, text, -1), 0);
		assert_int_equal(db_bind_blob(s, 3, blob, sizeof blob), 0);
		assert_int_equal(db_step(s), DB_ROW);
		assert_int_equal(db_column_int64(s, 0), k + 1);
		assert_int_equal(db_step(s), DB_DONE);
		db_finalize(s);
		assert_int_equal(db_changes(db), 1);
	}
	struct db_stmt *s = db_prepare(db, "SELECT i, s, b FROM t WHERE id >= ?1 ORDER BY id");
	db_bind_int64(s, 1, 1);
	for (int k = 0; k < 4; k++) {
		assert_int_equal(db_step(s), DB_ROW);
		assert_int_equal(db_column_count(s), 3);
		assert_true(db_column_int64(s, 0) == ints[k]);
		if (k == 2) {
			assert_true(db_column_is_null(s, 1));
			assert_null(db_column_text(s, 1));
		} else {
			assert_string_equal(db_column_text(s, 1), text);
		}
		size_t len = 0;
		const void *b = db_column_blob(s, 2, &len);
		assert_int_equal(len, sizeof blob);
		assert_memory_equal(b, blob, sizeof blob);
	}
	assert_int_equal(db_step(s), DB_DONE);
	/* reset: runs again with every parameter unbound (NULL) */
	db_reset(s);
	assert_int_equal(db_step(s), DB_DONE);
	db_finalize(s);
	s = db_prepare(db, "UPDATE t SET i=i WHERE id IN (?1, ?2)");
	db_bind_int64(s, 1, 1);
	db_bind_int64(s, 2, 2);
	assert_int_equal(db_step(s), DB_DONE);
	assert_int_equal(db_changes(db), 2);
	db_finalize(s);
}

static int64_t count(struct db *db)
{
	struct db_stmt *s = db_prepare(db, "SELECT COUNT(*) FROM t");
	assert_int_equal(db_step(s), DB_ROW);
	int64_t n = db_column_int64(s, 0);
	db_finalize(s);
	return n;
}

static void test_transactions(void **state)
{
	struct db *db = *state;
	assert_int_equal(db_exec(db, "CREATE TABLE t(x INTEGER)"), 0);
	assert_int_equal(db_begin(db), 0);
	assert_true(db_in_transaction(db));
	assert_int_equal(db_exec(db, "INSERT INTO t VALUES(1); INSERT INTO t VALUES(2)"), 0);
	db_rollback(db);
	assert_false(db_in_transaction(db));
	assert_int_equal(count(db), 0);
	assert_int_equal(db_begin(db), 0);
	assert_int_equal(db_exec(db, "INSERT INTO t VALUES(1)"), 0);
	assert_int_equal(db_commit(db), 0);
	assert_int_equal(count(db), 1);
	/* another connection waits for the writer lock; here it is free */
	char err[256];
	struct db *other = db_open(path, err, sizeof err, NULL);
	assert_non_null(other);
	assert_int_equal(db_begin(other), 0);
	assert_int_equal(db_commit(other), 0);
	db_close(other);
}

static void test_errors(void **state)
{
	struct db *db = *state;
	assert_int_equal(db_error(db), DB_ERR_NONE);
	assert_null(db_prepare(db, "SELEC nothing"));
	assert_int_equal(db_error(db), DB_ERR_SQL);
	assert_false(db_unavailable(db));
	assert_non_null(strstr(db_errmsg(db), "syntax error"));
	assert_int_equal(db_exec(db, "CREATE TABLE u(k TEXT PRIMARY KEY)"), 0);
	assert_int_equal(db_exec(db, "INSERT INTO u VALUES('a')"), 0);
	assert_int_equal(db_exec(db, "INSERT INTO u VALUES('a')"), -1);
	assert_int_equal(db_error(db), DB_ERR_SQL);
	assert_non_null(strstr(db_errmsg(db), "UNIQUE"));
	/* the error that made the caller roll back survives the rollback */
	assert_int_equal(db_begin(db), 0);
	struct db_stmt *s = db_prepare(db, "INSERT INTO u VALUES(?1)");
	db_bind_text(s, 1, "a", -1);
	assert_int_equal(db_step(s), DB_FAIL);
	db_finalize(s);
	db_rollback(db);
	assert_int_equal(db_error(db), DB_ERR_SQL);
	assert_non_null(strstr(db_errmsg(db), "UNIQUE"));
	/* a parameter number beyond the statement's */
	s = db_prepare(db, "SELECT ?1");
	assert_int_equal(db_bind_int64(s, 2, 1), -1);
	db_finalize(s);
	/* a file that cannot be opened: the database is away */
	char err[256];
	int away = 0;
	assert_null(db_open("/nonexistent-dir/x/state.db", err, sizeof err, &away));
	assert_true(away);
	assert_non_null(strstr(err, "/nonexistent-dir/x/state.db"));
}

static const struct db_migration steps[] = {
    {"CREATE TABLE a(id INTEGER PRIMARY KEY, data BLOB)",
     "CREATE TABLE a(id BIGSERIAL PRIMARY KEY, data BYTEA)"},
    {"CREATE TABLE b(x INTEGER); INSERT INTO b VALUES(42)", NULL},
    {"CREATE TABLE c(x INTEGER); INSERT INTO nowhere VALUES(1)", NULL},
};

static void test_migrations(void **state)
{
	struct db *db = *state;
	int applied = -1;
	assert_int_equal(db_schema_version(db, "test"), 0);
	assert_int_equal(db_migrate(db, "test", steps, 2, &applied), 0);
	assert_int_equal(applied, 2);
	assert_int_equal(db_schema_version(db, "test"), 2);
	assert_int_equal(db_migrate(db, "test", steps, 2, &applied), 0);
	assert_int_equal(applied, 0);
	/* another schema in the same database counts on its own */
	assert_int_equal(db_schema_version(db, "other"), 0);
	/* a failed step: nothing of it stays, the version stays */
	assert_int_equal(db_migrate(db, "test", steps, 3, &applied), -1);
	assert_int_equal(applied, 0);
	assert_int_equal(db_error(db), DB_ERR_SQL);
	assert_non_null(strstr(db_errmsg(db), "version 3"));
	assert_non_null(strstr(db_errmsg(db), "nowhere"));
	assert_int_equal(db_schema_version(db, "test"), 2);
	assert_null(db_prepare(db, "SELECT * FROM c"));
	/* an older binary refuses a newer database */
	assert_int_equal(db_migrate(db, "test", steps, 1, &applied), -1);
	assert_non_null(strstr(db_errmsg(db), "version 2"));
	assert_false(db_in_transaction(db));
}

static void test_dsn_file(void **state)
{
	char p[80], err[256];
	snprintf(p, sizeof p, "%s.dsn", path);
	FILE *f = fopen(p, "w");
	fputs("/var/lib/state.db\n", f);
	fclose(f);
	assert_null(db_open_dsn_file(p, err, sizeof err, NULL));
	assert_non_null(strstr(err, "postgresql://"));
	unlink(p);
	assert_null(db_open_dsn_file(p, err, sizeof err, NULL));
	assert_non_null(strstr(err, "cannot read"));
}

static void test_now(void **state)
{
	int64_t now = db_now_ms(*state);
	int64_t local = (int64_t)time(NULL) * 1000;
	assert_true(now > local - 5000 && now < local + 5000);
}

/* --- the writer gate --------------------------------------------------- */

static double mono(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

#define GATE_THREADS 3
#define GATE_ROUNDS 150

struct gate_run {
	int failures;
};

/* Read-modify-write of one counter, in transactions of its own connection,
 * with a little work inside each. */
static void *gate_counter(void *arg)
{
	struct gate_run *r = arg;
	char err[256];
	struct db *db = db_open(path, err, sizeof err, NULL);
	if (!db) {
		r->failures = GATE_ROUNDS;
		return NULL;
	}
	for (int i = 0; i < GATE_ROUNDS; i++) {
		if (db_begin(db) < 0) {
			r->failures++;
			continue;
		}
		struct db_stmt *s = db_prepare(db, "SELECT n FROM counter");
		int64_t n = s && db_step(s) == DB_ROW ? db_column_int64(s, 0) : -1;
		db_finalize(s);
		usleep(200);
		s = db_prepare(db, "UPDATE counter SET n=?1");
		db_bind_int64(s, 1, n + 1);
		if (n < 0 || db_step(s) != DB_DONE) {
			db_finalize(s);
			db_rollback(db);
			r->failures++;
			continue;
		}
		db_finalize(s);
		if (db_commit(db) < 0) {
			db_rollback(db);
			r->failures++;
		}
	}
	db_close(db);
	return NULL;
}

static int64_t counter(struct db *db)
{
	struct db_stmt *s = db_prepare(db, "SELECT n FROM counter");
	int64_t n = db_step(s) == DB_ROW ? db_column_int64(s, 0) : -1;
	db_finalize(s);
	return n;
}

/* Threads writing at once, each on its own connection, all get in: no
 * transaction is refused, none is lost. */
static void test_gate_turns(void **state)
{
	struct db *db = *state;
	assert_int_equal(
	    db_exec(db, "CREATE TABLE counter(n INTEGER); INSERT INTO counter VALUES(0)"), 0);
	pthread_t th[GATE_THREADS];
	struct gate_run runs[GATE_THREADS] = {0};
	double t0 = mono();
	for (int i = 0; i < GATE_THREADS; i++)
		assert_int_equal(pthread_create(&th[i], NULL, gate_counter, &runs[i]), 0);
	for (int i = 0; i < GATE_THREADS; i++) {
		pthread_join(th[i], NULL);
		assert_int_equal(runs[i].failures, 0);
	}
	assert_int_equal(counter(db), GATE_THREADS * GATE_ROUNDS);
	/* taking turns, not sleeping in the busy handler: well under the
	 * seconds that polling the lock took */
	assert_true(mono() - t0 < 10.0);
}

struct gate_holder {
	double hold, committing, committed;
	int rc;
};

static void *gate_hold(void *arg)
{
	struct gate_holder *h = arg;
	char err[256];
	struct db *db = db_open(path, err, sizeof err, NULL);
	h->rc = db && db_begin(db) == 0 && db_exec(db, "UPDATE counter SET n=n+1") == 0 ? 0 : -1;
	usleep((useconds_t)(h->hold * 1e6));
	h->committing = mono();
	if (h->rc == 0)
		h->rc = db_commit(db);
	h->committed = mono();
	db_close(db);
	return NULL;
}

/* A thread waiting for its turn gets in as soon as the holder commits;
 * a write outside a transaction waits for the turn to end too. */
static void test_gate_waiter(void **state)
{
	struct db *db = *state;
	char err[256];
	assert_int_equal(
	    db_exec(db, "CREATE TABLE counter(n INTEGER); INSERT INTO counter VALUES(0)"), 0);
	struct db *other = db_open(path, err, sizeof err, NULL);
	assert_non_null(other);
	double late = 0;
	for (int round = 0; round < 4; round++) {
		struct gate_holder h = {.hold = 0.5};
		pthread_t th;
		assert_int_equal(pthread_create(&th, NULL, gate_hold, &h), 0);
		usleep(50 * 1000); /* the holder is in */
		double in;
		if (round % 2 == 0) {
			assert_int_equal(db_begin(other), 0);
			in = mono();
			assert_int_equal(db_exec(other, "UPDATE counter SET n=n+10"), 0);
			assert_int_equal(db_commit(other), 0);
		} else {
			assert_int_equal(db_exec(other, "UPDATE counter SET n=n+10"), 0);
			in = mono();
		}
		pthread_join(th, NULL);
		assert_int_equal(h.rc, 0);
		/* let in during the holder's commit, or just after it */
		assert_true(in >= h.committing);
		late += in > h.committed ? in - h.committed : 0;
	}
	/* polling the lock slept up to 100 ms a try: 50 ms a round on average */
	assert_true(late < 0.1);
	assert_int_equal(counter(db), 44);
	db_close(other);
}

/* A thread with a transaction open on one file begins another on a second
 * file without waiting for itself; both turns end with their commits. */
static void test_gate_second_file(void **state)
{
	struct db *db = *state;
	char err[256], path2[64];
	state_file_new(path2, sizeof path2, "db2");
	struct db *db2 = db_open(path2, err, sizeof err, NULL);
	assert_non_null(db2);
	assert_int_equal(
	    db_exec(db, "CREATE TABLE counter(n INTEGER); INSERT INTO counter VALUES(0)"), 0);
	assert_int_equal(db_exec(db2, "CREATE TABLE t(x INTEGER)"), 0);
	double t0 = mono();
	assert_int_equal(db_begin(db), 0);
	assert_int_equal(db_begin(db2), 0);
	assert_int_equal(db_exec(db2, "INSERT INTO t VALUES(1)"), 0);
	assert_int_equal(db_commit(db2), 0);
	assert_int_equal(db_exec(db, "UPDATE counter SET n=n+1"), 0);
	assert_int_equal(db_commit(db), 0);
	assert_true(mono() - t0 < 1.0);
	/* the gate is free again: another thread gets in at once */
	struct gate_holder h = {.hold = 0};
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, gate_hold, &h), 0);
	pthread_join(th, NULL);
	assert_int_equal(h.rc, 0);
	assert_int_equal(counter(db), 2);
	db_close(db2);
	state_file_remove(path2);
}

static void write_blobs(struct db *db, int from, int n)
{
	size_t len = 1024 * 1024;
	unsigned char *blob = calloc(1, len);
	assert_non_null(blob);
	for (int i = from; i < from + n; i++) {
		blob[0] = (unsigned char)i;
		assert_int_equal(db_begin(db), 0);
		struct db_stmt *s = db_prepare(db, "INSERT INTO b VALUES(?1)");
		db_bind_blob(s, 1, blob, len);
		assert_int_equal(db_step(s), DB_DONE);
		db_finalize(s);
		assert_int_equal(db_commit(db), 0);
	}
	free(blob);
}

/* Waits up to 20 s for the database file itself to exceed mb MB. */
static int file_grows_past(long long mb)
{
	struct stat sd;
	for (int i = 0; i < 2000; i++) {
		if (stat(path, &sd) == 0 && sd.st_size > mb * 1024 * 1024)
			return 1;
		usleep(10000);
	}
	return 0;
}

/* The WAL is copied back into the database once it grew past 32 MB, by
 * the copier thread while the writer goes on: the file comes to hold the
 * rows, and the WAL starts again from its beginning instead of growing
 * with everything written. */
static void test_wal_copied_back(void **state)
{
	struct db *db = *state;
	assert_int_equal(db_exec(db, "CREATE TABLE b(x BLOB)"), 0);
	write_blobs(db, 0, 48);
	assert_true(file_grows_past(30));
	write_blobs(db, 48, 48);
	assert_true(file_grows_past(78));
	char wal[80];
	snprintf(wal, sizeof wal, "%s-wal", path);
	struct stat sw;
	assert_int_equal(stat(wal, &sw), 0);
	assert_true(sw.st_size < 80LL * 1024 * 1024); /* 96 MB were written */
	struct db_stmt *s = db_prepare(db, "SELECT COUNT(*) FROM b");
	assert_int_equal(db_step(s), DB_ROW);
	assert_int_equal(db_column_int64(s, 0), 96);
	db_finalize(s);
}

/* The same with another database put where the first one was (the
 * copier's connection to the removed file is not the new one's). */
static void test_wal_copied_back_new_file(void **state) { test_wal_copied_back(state); }

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_placeholders),
	    cmocka_unit_test(test_is_dsn),
	    cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_transactions, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_errors, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_migrations, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_dsn_file, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_now, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_gate_turns, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_gate_waiter, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_gate_second_file, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_wal_copied_back, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_wal_copied_back_new_file, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
