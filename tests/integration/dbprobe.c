/* dbprobe.c — drives src/db.c and src/cluster.c directly for
 * tests/integration/test_postgres.py, against a PostgreSQL DSN or an SQLite
 * path.  Every command prints one line per event, flushed at once.
 *
 * TARGET is a DSN, a path, or @FILE holding a DSN.
 *
 *   dbprobe TARGET roundtrip               values of every type, read back
 *   dbprobe TARGET migrate                 a slow 3-step schema "slow"
 *   dbprobe TARGET hold NAME MS SECONDS    acquire (retrying), hold for SECONDS
 *                                          with heartbeats, ticking into `ticks`;
 *                                          "held EPOCH REALTIME_MS", "lost", "done"
 *   dbprobe TARGET race NAME MS SECONDS    acquire, 3 ticks, release; again
 *   dbprobe TARGET repl                    stdin: begin | commit | rollback |
 *                                          insert K | count | fail (an SQL error)
 */
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "mailfeed/cluster.h"
#include "mailfeed/db.h"
#include "mailfeed/util.h"

static struct db *db;

static const struct db_migration probe_steps[] = {
    {"CREATE TABLE ticks(id INTEGER PRIMARY KEY, name TEXT, holder TEXT, epoch INTEGER,"
     " at INTEGER, seq INTEGER);"
     "CREATE TABLE rows(k INTEGER PRIMARY KEY);",
     "CREATE TABLE ticks(id BIGSERIAL PRIMARY KEY, name TEXT, holder TEXT, epoch BIGINT,"
     " at BIGINT, seq BIGINT);"
     "CREATE TABLE rows(k BIGINT PRIMARY KEY);"},
};

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
}

static void die(const char *what)
{
	say("error %s: %s%s", what, db_unavailable(db) ? "unavailable: " : "", db_errmsg(db));
	exit(1);
}

static int64_t realtime_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

/* --- roundtrip --------------------------------------------------------- */

static void print_row(struct db_stmt *s)
{
	struct buf b;
	buf_init(&b);
	for (int i = 0; i < db_column_count(s); i++) {
		if (i)
			buf_puts(&b, " | ");
		if (db_column_is_null(s, i)) {
			buf_puts(&b, "NULL");
			continue;
		}
		size_t len;
		const unsigned char *p = db_column_blob(s, i, &len);
		buf_printf(&b, "i=%lld t=", (long long)db_column_int64(s, i));
		for (size_t k = 0; k < len; k++)
			if (p[k] >= 0x20 && p[k] < 0x7f && p[k] != '\\')
				buf_putc(&b, (char)p[k]);
			else
				buf_printf(&b, "\\x%02x", p[k]);
	}
	say("row %s", b.data);
	buf_free(&b);
}

static void query(const char *sql, const char *const *texts, const int64_t *ints, int n)
{
	struct db_stmt *s = db_prepare(db, sql);
	if (!s)
		die("prepare");
	for (int i = 0; i < n; i++) {
		if (texts && texts[i])
			db_bind_text(s, i + 1, texts[i], -1);
		else if (ints)
			db_bind_int64(s, i + 1, ints[i]);
	}
	int rc;
	while ((rc = db_step(s)) == DB_ROW)
		print_row(s);
	if (rc != DB_DONE)
		die("step");
	say("changes %lld", (long long)db_changes(db));
	db_finalize(s);
}

static int cmd_roundtrip(void)
{
	const char *create = db_sql(db,
				    "CREATE TABLE rt(id INTEGER PRIMARY KEY, i INTEGER, s TEXT,"
				    " b BLOB, UNIQUE(s))",
				    "CREATE TABLE rt(id BIGSERIAL PRIMARY KEY, i BIGINT, s TEXT,"
				    " b BYTEA, UNIQUE(s))");
	if (db_exec(db, create) < 0)
		die("create");
	const unsigned char blob[] = {0, 'a', 0xff, '\'', '?', 0, 0x80};
	const int64_t ints[] = {INT64_MIN, INT64_MAX, -1, 0};
	const char *const texts[] = {"plain", "caf\xc3\xa9 \xf0\x9f\x93\xac", "it's ? $1", NULL};
	for (int k = 0; k < 4; k++) {
		struct db_stmt *s = db_prepare(db, "INSERT INTO rt(i, s, b) VALUES(?, ?, ?3)"
						   " RETURNING id");
		if (!s)
			die("prepare insert");
		db_bind_int64(s, 1, ints[k]);
		db_bind_text(s, 2, texts[k], -1);
		if (k == 3)
			db_bind_null(s, 3);
		else
			db_bind_blob(s, 3, blob, sizeof blob - (size_t)k);
		if (db_step(s) != DB_ROW)
			die("insert");
		say("id %lld", (long long)db_column_int64(s, 0));
		db_finalize(s);
	}
	query("SELECT i, s, b FROM rt ORDER BY id", NULL, NULL, 0);
	/* one parameter used twice, plain ? after a numbered one, a ? in a literal */
	const int64_t p[] = {41};
	query("SELECT ?1 + 1, ?1 * 2, '?' || 'x'", NULL, p, 1);
	const char *const u[] = {"plain", "new"};
	query("INSERT INTO rt(i, s) VALUES(7, ?1), (8, ?2) ON CONFLICT(s) DO UPDATE"
	      " SET i=rt.i + 100 RETURNING i",
	      u, NULL, 2);
	query("SELECT COUNT(*), SUM(i) FROM rt WHERE i BETWEEN 0 AND 1000", NULL, NULL, 0);
	query("SELECT 1=1, 1=0", NULL, NULL, 0);
	const int64_t lim[] = {2};
	query("DELETE FROM rt WHERE id <= ?", NULL, lim, 1);
	return 0;
}

/* --- migrate: a slow schema, logging each step's run ------------------ */

static const struct db_migration slow_steps[] = {
    {"CREATE TABLE migration_runs(step INTEGER)", NULL},
    {"INSERT INTO migration_runs VALUES(2)",
     "SELECT pg_sleep(0.3); INSERT INTO migration_runs VALUES(2)"},
    {"CREATE TABLE slow_table(x BLOB); INSERT INTO migration_runs VALUES(3)",
     "CREATE TABLE slow_table(x BYTEA); INSERT INTO migration_runs VALUES(3)"},
};

static int cmd_migrate(void)
{
	int applied = 0;
	if (db_migrate(db, "slow", slow_steps, 3, &applied) < 0)
		die("migrate");
	say("applied %d version %d", applied, db_schema_version(db, "slow"));
	return 0;
}

/* --- leases ------------------------------------------------------------ */

static struct cluster *cl;

static void open_cluster(long lease_ms)
{
	char err[512];
	cl = cluster_open(db, "probe", lease_ms, err, sizeof err);
	if (!cl) {
		say("error cluster: %s", err);
		exit(1);
	}
}

/* A write fenced by the lease: it happens only while the lease row still
 * names us with this epoch and has not expired, checked in the same
 * statement (PostgreSQL: the lease row share-locked, so a take-over waits
 * for it; SQLite: writers are one at a time).  1 written, 0 fenced off. */
static int tick(const char *name, int64_t epoch, int seq)
{
	struct db_stmt *s = db_prepare(
	    db, db_sql(db,
		       "INSERT INTO ticks(name, holder, epoch, at, seq)"
		       " SELECT ?1, ?2, ?3, CAST((julianday('now') - 2440587.5) * 86400000.0"
		       " AS INTEGER), ?4 FROM leases WHERE name=?1 AND holder=?2 AND epoch=?3"
		       " AND expires > CAST((julianday('now') - 2440587.5) * 86400000.0"
		       " AS INTEGER)",
		       "INSERT INTO ticks(name, holder, epoch, at, seq)"
		       " SELECT ?1, ?2, ?3, CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000"
		       " AS BIGINT), ?4 FROM (SELECT 1 FROM leases WHERE name=?1 AND holder=?2"
		       " AND epoch=?3 AND expires > CAST(EXTRACT(EPOCH FROM clock_timestamp())"
		       " * 1000 AS BIGINT) FOR SHARE) AS held"));
	if (!s)
		die("prepare tick");
	db_bind_text(s, 1, name, -1);
	db_bind_text(s, 2, cluster_instance_id(cl), -1);
	db_bind_int64(s, 3, epoch);
	db_bind_int64(s, 4, seq);
	if (db_step(s) != DB_DONE)
		die("tick");
	db_finalize(s);
	return db_changes(db) == 1;
}

static void show_instance(const struct cluster_instance *in, void *arg)
{
	if (strcmp(in->id, cluster_instance_id(cl)) == 0)
		say("instance pid=%lld version=%s holds=%s", (long long)in->pid, in->version,
		    in->holds);
}

static int cmd_hold(const char *name, long lease_ms, long seconds)
{
	open_cluster(lease_ms);
	int64_t epoch = 0;
	int rc;
	while ((rc = cluster_lease_acquire(cl, name, &epoch)) == 0)
		sleep_ms(50);
	if (rc < 0)
		die("acquire");
	say("held %lld %lld", (long long)epoch, (long long)realtime_ms());
	cluster_instances(cl, show_instance, NULL);
	double end = now_monotonic() + (double)seconds;
	double next_beat = now_monotonic() + (double)lease_ms / 3000.0;
	for (int seq = 0; now_monotonic() < end; seq++) {
		if (now_monotonic() >= next_beat) {
			if (cluster_heartbeat(cl) < 0)
				say("heartbeat failed: %s", db_errmsg(db));
			next_beat = now_monotonic() + (double)lease_ms / 3000.0;
		}
		if (!cluster_lease_held(cl, name) || !tick(name, epoch, seq)) {
			say("lost");
			return 3;
		}
		sleep_ms(50);
	}
	cluster_close(cl);
	say("done");
	return 0;
}

static int cmd_race(const char *name, long lease_ms, long seconds)
{
	open_cluster(lease_ms);
	int tenures = 0;
	double end = now_monotonic() + (double)seconds;
	while (now_monotonic() < end) {
		int64_t epoch = 0;
		int rc = cluster_lease_acquire(cl, name, &epoch);
		if (rc < 0)
			die("acquire");
		if (rc == 0) {
			sleep_ms(5 + rand() % 20);
			continue;
		}
		tenures++;
		for (int seq = 0; seq < 3 && cluster_lease_held(cl, name); seq++) {
			if (!tick(name, epoch, seq))
				say("fenced off");
			sleep_ms(10);
		}
		if (cluster_lease_release(cl, name) < 0)
			die("release");
		sleep_ms(5 + rand() % 20);
	}
	cluster_close(cl);
	say("tenures %d", tenures);
	return 0;
}

/* --- repl: one call per line, for outages ------------------------------ */

static void report(int rc)
{
	if (rc >= 0)
		say("ok");
	else
		say("%s: %s", db_unavailable(db) ? "unavailable" : "error", db_errmsg(db));
}

static int cmd_repl(void)
{
	char line[256];
	say("ready");
	while (fgets(line, sizeof line, stdin)) {
		line[strcspn(line, "\n")] = 0;
		if (strcmp(line, "begin") == 0) {
			report(db_begin(db));
		} else if (strcmp(line, "commit") == 0) {
			report(db_commit(db));
		} else if (strcmp(line, "rollback") == 0) {
			db_rollback(db);
			report(0);
		} else if (strncmp(line, "insert ", 7) == 0) {
			struct db_stmt *s = db_prepare(db, "INSERT INTO rows(k) VALUES(?1)");
			int rc = -1;
			if (s) {
				db_bind_int64(s, 1, strtoll(line + 7, NULL, 10));
				rc = db_step(s) == DB_DONE ? 0 : -1;
				db_finalize(s);
			}
			report(rc);
		} else if (strcmp(line, "fail") == 0) {
			report(db_exec(db, "SELECT * FROM no_such_table"));
		} else if (strcmp(line, "count") == 0) {
			struct db_stmt *s = db_prepare(db, "SELECT COUNT(*) FROM rows");
			if (s && db_step(s) == DB_ROW)
				say("ok %lld", (long long)db_column_int64(s, 0));
			else
				report(-1);
			db_finalize(s);
		} else {
			say("error: unknown command");
		}
	}
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: dbprobe TARGET COMMAND ARGS...\n");
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	srand((unsigned)getpid());
	char err[512];
	int away = 0;
	/* @FILE: the DSN is read from FILE */
	db = argv[1][0] == '@' ? db_open_dsn_file(argv[1] + 1, err, sizeof err, &away)
			       : db_open(argv[1], err, sizeof err, &away);
	if (!db) {
		say("error open: %s%s", away ? "unavailable: " : "", err);
		return 1;
	}
	const char *cmd = argv[2];
	int rc = 2;
	if (strcmp(cmd, "migrate") == 0)
		rc = cmd_migrate();
	else if (db_migrate(db, "probe", probe_steps, 1, NULL) < 0)
		die("probe schema");
	else if (strcmp(cmd, "roundtrip") == 0)
		rc = cmd_roundtrip();
	else if (strcmp(cmd, "hold") == 0 && argc == 6)
		rc = cmd_hold(argv[3], atol(argv[4]), atol(argv[5]));
	else if (strcmp(cmd, "race") == 0 && argc == 6)
		rc = cmd_race(argv[3], atol(argv[4]), atol(argv[5]));
	else if (strcmp(cmd, "repl") == 0)
		rc = cmd_repl();
	else
		fprintf(stderr, "dbprobe: unknown command %s\n", cmd);
	db_close(db);
	return rc;
}
