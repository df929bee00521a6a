/* db.h — one statement interface over the two state engines: SQLite (a
 * file path, the embedded default for one host) and PostgreSQL (a
 * postgresql:// DSN, state shared by several instances on several hosts).
 *
 * The calls follow SQLite's shape: prepare, bind, step, read columns,
 * reset/finalize.  SQL is written once with SQLite's numbered placeholders
 * (?1, ?2, or plain ? for "the next number"); for PostgreSQL they become
 * $1, $2 (outside string literals, quoted names and comments).  Where the
 * engines' SQL differs, the caller keeps both texts side by side
 * (db_engine() tells which to use) — the migrations below do so.
 *
 * Rows: values are read as int64, text or blob whatever the column's type;
 * PostgreSQL's booleans read as 1/0 and its bytea as the raw bytes.  Text
 * and blob pointers stay valid until the next step, reset or finalize.
 * Use the forms both engines know: `INSERT ... RETURNING id` for new row
 * ids, `ON CONFLICT(...) DO NOTHING` / `DO UPDATE SET x=excluded.x` rather
 * than SQLite's `INSERT OR IGNORE` / `OR REPLACE`.
 *
 * PostgreSQL specifics: a statement runs on its first db_step (parameters
 * typed int8, text, bytea; NULL left to the server to infer) and the
 * following steps walk the rows of the result.  A lost connection is
 * re-established by the next call; a transaction open when it was lost is
 * gone (the server rolled it back), so the caller redoes it whole.  A
 * statement outside a transaction whose answer was lost may have run: make
 * such writes idempotent (a key, ON CONFLICT) or look before redoing.
 *
 * Errors: every call that can fail returns -1 (db_step: DB_FAIL) and keeps
 * the reason: db_errmsg() for people, db_error() for the program.
 * DB_ERR_UNAVAILABLE means the database could not be reached or went away
 * (connection refused or lost, server shutting down or starting up, SQLite
 * file locked past the busy timeout): pause the work and retry later, it is
 * not the data's fault.  DB_ERR_SQL is everything else (syntax, constraint,
 * type): retrying the same statement will fail the same way.
 *
 * A struct db is one connection, for one thread at a time. */
#ifndef MAILFEED_DB_H
#define MAILFEED_DB_H

#include <stddef.h>
#include <stdint.h>

struct db;
struct db_stmt;

enum db_engine { DB_SQLITE, DB_POSTGRES };

enum db_error {
	DB_ERR_NONE = 0,
	DB_ERR_SQL,	    /* the statement failed; retrying will not help */
	DB_ERR_UNAVAILABLE, /* the database is away: pause and retry */
};

/* db_step results */
enum { DB_FAIL = -1, DB_DONE = 0, DB_ROW = 1 };

/* Whether target names a PostgreSQL database (postgresql:// or
 * postgres:// URI) rather than an SQLite file. */
int db_is_dsn(const char *target);

/* Opens target: a postgresql:// DSN or an SQLite file path (created when
 * missing, WAL mode, busy timeout).  NULL with the reason in err on
 * failure; *unavailable (may be NULL) is set to 1 when the reason is that
 * the server could not be reached. */
struct db *db_open(const char *target, char *err, size_t errlen, int *unavailable);
/* db_open with flags: DB_OPEN_NO_SETUP leaves a new SQLite connection
 * without its settings (WAL mode and the rest; the busy timeout is set),
 * so that the caller can check the file before anything is written to it;
 * db_setup applies them then (nothing to do on PostgreSQL).  0 or -1. */
#define DB_OPEN_NO_SETUP 1
/* DB_OPEN_READONLY: an SQLite file is opened read-only, never created,
 * without settings or busy timeout (for commands that only look). */
#define DB_OPEN_READONLY 2
struct db *db_open_flags(const char *target, int flags, char *err, size_t errlen, int *unavailable);
int db_setup(struct db *db);
/* SQLite only: SQLite's own connection handle, for the checks and
 * diagnostics that exist on SQLite alone (the state file's structural
 * check, disk-full reasons).  NULL on PostgreSQL. */
void *db_sqlite_handle(struct db *db);
/* The version of the SQLite library linked in (for the build information). */
const char *db_sqlite_version(void);
/* The same with the DSN read from a file (first line; it may hold a
 * password, so the file should be private). */
struct db *db_open_dsn_file(const char *path, char *err, size_t errlen, int *unavailable);
void db_close(struct db *db);

enum db_engine db_engine(const struct db *db);
/* The SQL text for this engine: pg when on PostgreSQL and not NULL. */
const char *db_sql(const struct db *db, const char *sqlite, const char *pg);

/* The last failure: its kind, its message ("" when none). */
enum db_error db_error(const struct db *db);
const char *db_errmsg(const struct db *db);
/* Shortcut: the last failure was DB_ERR_UNAVAILABLE. */
int db_unavailable(const struct db *db);

/* Prepares one statement.  NULL on failure (db_errmsg). */
struct db_stmt *db_prepare(struct db *db, const char *sql);
/* Parameters are numbered from 1; values are copied. */
int db_bind_int64(struct db_stmt *s, int i, int64_t v);
int db_bind_text(struct db_stmt *s, int i, const char *v, int len); /* len -1: strlen */
int db_bind_blob(struct db_stmt *s, int i, const void *v, size_t len);
int db_bind_null(struct db_stmt *s, int i);
/* DB_ROW (a row is there to read), DB_DONE, or DB_FAIL. */
int db_step(struct db_stmt *s);
int db_column_count(struct db_stmt *s);
/* The highest parameter number of the statement's SQL. */
int db_param_count(struct db_stmt *s);
int db_column_is_null(struct db_stmt *s, int col);
int64_t db_column_int64(struct db_stmt *s, int col);
const char *db_column_text(struct db_stmt *s, int col); /* NULL for NULL */
const void *db_column_blob(struct db_stmt *s, int col, size_t *len);
/* Ready to run again, with every parameter unbound. */
void db_reset(struct db_stmt *s);
void db_finalize(struct db_stmt *s);
/* Rows changed by the last INSERT/UPDATE/DELETE run on this connection. */
int64_t db_changes(struct db *db);

/* Runs SQL without parameters or results: one statement, or a script of
 * several separated by semicolons.  0 or -1. */
int db_exec(struct db *db, const char *sql);
/* Transactions: BEGIN IMMEDIATE on SQLite (the writer lock at once),
 * BEGIN (read committed) on PostgreSQL.  On SQLite the threads of one
 * process take turns, first come first served, at a writer gate before
 * they begin: a waiting thread is let in the moment the holder commits or
 * rolls back (db.c); a turn that does not come within 30 s fails as
 * DB_ERR_UNAVAILABLE, as a file locked by another process does.  After a failed statement inside
 * a transaction, roll back: PostgreSQL refuses every other statement of it
 * and its COMMIT fails.  db_rollback after a lost connection succeeds (the
 * server already dropped the transaction). */
int db_begin(struct db *db);
int db_commit(struct db *db);
void db_rollback(struct db *db);
int db_in_transaction(const struct db *db);

/* One step of a schema: the SQL of each engine (pg NULL: the same text). */
struct db_migration {
	const char *sqlite;
	const char *pg;
};

/* Brings the schema called name (a table of versions per name,
 * schema_versions, holds where each stands) to version n, running each
 * missing step in its own transaction.  Several processes starting at once
 * run each step once: on PostgreSQL under pg_advisory_lock, on SQLite in a
 * BEGIN IMMEDIATE transaction that re-reads the version.  A database newer
 * than n is refused.  *applied (may be NULL) gets the number of steps run.
 * 0 or -1 (db_errmsg). */
int db_migrate(struct db *db, const char *name, const struct db_migration *steps, int n,
	       int *applied);
/* The version of schema name (0 when never migrated), or -1. */
int db_schema_version(struct db *db, const char *name);

/* The database's clock in milliseconds since the epoch as an SQL
 * expression, per engine: the clock every instance sharing a state agrees
 * on (leases, claims); db_now_ms() reads it. */
#define DB_NOW_MS_SQLITE "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)"
#define DB_NOW_MS_PG "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)"

/* Translates ?N and ? placeholders to $N outside literals, quoted names
 * and comments (what db_prepare does on PostgreSQL).  Caller frees.
 * *nparams gets the highest parameter number. */
char *db_translate_placeholders(const char *sql, int *nparams);

/* The database's clock, in milliseconds since the epoch (one clock for
 * every instance sharing it).  -1 on failure. */
int64_t db_now_ms(struct db *db);

#endif
