/* db.c — the engine-neutral statement layer (db.h): opening a path or a
 * DSN, placeholders, errors, transactions and versioned migrations, with
 * SQLite done here and PostgreSQL in db_pg.c. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "db_internal.h"
#include "mailfeed/db.h"
#include "mailfeed/util.h"

/* pg_advisory_lock key of schema migrations: "mailfeed" in ASCII */
#define MIGRATE_LOCK "7809920014575580516"

void db_set_error(struct db *db, enum db_error kind, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(db->errmsg, sizeof db->errmsg, fmt, ap);
	va_end(ap);
	for (char *c = db->errmsg; *c; c++) /* servers' messages span lines */
		if (*c == '\n' || *c == '\r' || *c == '\t')
			*c = ' ';
	size_t n = strlen(db->errmsg);
	while (n && db->errmsg[n - 1] == ' ')
		db->errmsg[--n] = 0;
	db->err = kind;
}

void db_clear_error(struct db *db)
{
	db->err = DB_ERR_NONE;
	db->errmsg[0] = 0;
}

enum db_error db_error(const struct db *db) { return db->err; }
const char *db_errmsg(const struct db *db) { return db->errmsg; }
int db_unavailable(const struct db *db) { return db->err == DB_ERR_UNAVAILABLE; }
enum db_engine db_engine(const struct db *db) { return db->engine; }
/* On SQLite, the connection itself tells (a SAVEPOINT outside a
 * transaction opens one too). */
int db_in_transaction(const struct db *db)
{
	if (db->engine == DB_SQLITE && db->sq)
		return !sqlite3_get_autocommit(db->sq);
	return db->in_tx;
}

const char *db_sql(const struct db *db, const char *sqlite, const char *pg)
{
	return db->engine == DB_POSTGRES && pg ? pg : sqlite;
}

int db_is_dsn(const char *target) { return is_pg_dsn(target); }

/* --- SQLite ----------------------------------------------------------- */

/* A full disk, a vanished or locked file: the database is away, not the
 * statement wrong. */
static enum db_error sqlite_kind(int rc)
{
	switch (rc & 0xff) {
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
	case SQLITE_FULL:
	case SQLITE_IOERR:
	case SQLITE_CANTOPEN:
	case SQLITE_PROTOCOL:
		return DB_ERR_UNAVAILABLE;
	default:
		return DB_ERR_SQL;
	}
}

static void sqlite_error(struct db *db, int rc)
{
	db_set_error(db, sqlite_kind(rc), "%s", sqlite3_errmsg(db->sq));
}

/* --- the writer gate (SQLite) ------------------------------------------ */

/* SQLite lets one writer in at a time, and a connection that finds the
 * file locked can only sleep and try again.  The threads of one process
 * (the watchers, the processor, the stages of run --once) therefore take
 * turns at a gate before they begin a transaction: a waiter sleeps on a
 * condition variable and is let in, first come first served, the moment
 * the holder commits or rolls back, instead of polling the lock.  Other
 * processes (a command run beside the daemon) still meet the file lock;
 * the busy handler tries again every few milliseconds for them, and for
 * statements written outside a transaction it waits for the end of the
 * gate holder's turn.
 *
 * A thread that already holds the gate (a transaction open on another
 * connection) passes through without waiting: it would wait for itself.
 * A turn not given within DB_GATE_WAIT seconds fails as a locked file
 * did before. */
#define DB_GATE_WAIT 30.0
#define DB_BUSY_WAIT 30.0

enum { GATE_NONE, GATE_HELD, GATE_PASSED };

struct gate_waiter {
	struct gate_waiter *next;
	int let_in;
};

static struct {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int held;
	unsigned long turns; /* turns ended so far */
	struct gate_waiter *head, *tail;
} gate = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, NULL, NULL};

static __thread int gate_mine; /* turns this thread holds (0 or 1) */

static void gate_unqueue(struct gate_waiter *w)
{
	struct gate_waiter **pp = &gate.head, *prev = NULL;
	while (*pp && *pp != w) {
		prev = *pp;
		pp = &(*pp)->next;
	}
	if (!*pp)
		return;
	*pp = w->next;
	if (gate.tail == w)
		gate.tail = prev;
}

/* Takes db's turn before it begins a transaction.  0, or -1 when the turn
 * did not come in time (db's error says so). */
static int gate_enter(struct db *db)
{
	if (db->gate != GATE_NONE)
		return 0; /* a transaction already open here: BEGIN will say so */
	if (gate_mine) {
		db->gate = GATE_PASSED;
		return 0;
	}
	pthread_mutex_lock(&gate.mu);
	if (!gate.held && !gate.head) {
		gate.held = 1;
	} else {
		struct gate_waiter w = {0};
		if (gate.tail)
			gate.tail->next = &w;
		else
			gate.head = &w;
		gate.tail = &w;
		struct timespec until = realtime_after(DB_GATE_WAIT);
		int rc = 0;
		while (!w.let_in && rc != ETIMEDOUT)
			rc = pthread_cond_timedwait(&gate.cv, &gate.mu, &until);
		if (!w.let_in) {
			gate_unqueue(&w);
			pthread_mutex_unlock(&gate.mu);
			db_set_error(db, DB_ERR_UNAVAILABLE,
				     "database is locked (another thread kept its transaction "
				     "open for %.0f s)",
				     DB_GATE_WAIT);
			return -1;
		}
	}
	pthread_mutex_unlock(&gate.mu);
	db->gate = GATE_HELD;
	gate_mine = 1;
	db->gate_mine = &gate_mine; /* a connection shared by threads under a
				      lock may end the turn on another one */
	return 0;
}

/* Ends db's turn: the first waiter is let in. */
static void gate_leave(struct db *db)
{
	int held = db->gate == GATE_HELD;
	db->gate = GATE_NONE;
	if (!held)
		return;
	*db->gate_mine = 0;
	pthread_mutex_lock(&gate.mu);
	gate.turns++;
	struct gate_waiter *w = gate.head;
	if (w) {
		gate.head = w->next;
		if (!gate.head)
			gate.tail = NULL;
		w->let_in = 1; /* the gate stays held: handed over */
	} else {
		gate.held = 0;
	}
	pthread_cond_broadcast(&gate.cv);
	pthread_mutex_unlock(&gate.mu);
}

/* In the busy handler: when another thread of this process holds the
 * gate, waits (at most 100 ms) for its turn to end and returns 1; 0 when
 * the lock is another process's (or this thread's own). */
static int gate_wait_turn(void)
{
	if (gate_mine)
		return 0;
	pthread_mutex_lock(&gate.mu);
	int other = gate.held;
	if (other) {
		unsigned long turns = gate.turns;
		struct timespec until = realtime_after(0.1);
		int rc = 0;
		while (gate.turns == turns && rc != ETIMEDOUT)
			rc = pthread_cond_timedwait(&gate.cv, &gate.mu, &until);
	}
	pthread_mutex_unlock(&gate.mu);
	return other;
}

/* SQLite's busy handler: up to DB_BUSY_WAIT seconds, waiting for the end
 * of a turn at the gate, or in short sleeps when another process holds the
 * lock. */
static int sqlite_busy(void *arg, int count)
{
	struct db *db = arg;
	double now = now_monotonic();
	if (count == 0)
		db->busy_since = now;
	else if (now - db->busy_since >= DB_BUSY_WAIT)
		return 0;
	if (!gate_wait_turn())
		usleep(count < 50 ? 1000 : 5000);
	return 1;
}

/* The settings of the state's connections.  The WAL is copied back every
 * WAL_CHECKPOINT_PAGES pages (32 MB) rather than every 1000: a burst of
 * messages checkpoints (two fsyncs each) an eighth as often, and a page
 * changed twice in between is copied once.  The copy is not SQLite's
 * automatic one, which runs inside the COMMIT and so at the writer gate:
 * a commit notes the WAL's size (wal_note) and, once the commit is done,
 * asks the copier thread below for the copy. */
#define SQLITE_SETTINGS                                                                            \
	"PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"                                        \
	"PRAGMA foreign_keys=ON; PRAGMA secure_delete=ON;"
#define WAL_CHECKPOINT_PAGES 8192

static int wal_note(void *arg, sqlite3 *sq, const char *name, int pages)
{
	struct db *db = arg;
	db->wal_pages = pages;
	return SQLITE_OK;
}

/* The settings, and the WAL's size noted on every commit. */
static int sqlite_settings(struct db *db, char **msg)
{
	int rc = sqlite3_exec(db->sq, SQLITE_SETTINGS, NULL, NULL, msg);
	if (rc == SQLITE_OK)
		sqlite3_wal_hook(db->sq, wal_note, db);
	return rc;
}

/* --- copying the WAL back ---------------------------------------------
 * The copy runs on a thread of its own, on a connection of its own: run
 * by the thread that committed, right after its commit, it took the
 * storing thread of the take-in, the processor and delivery about a
 * tenth of their time each through a backlog, while the stage on the
 * other side of them waited.  A request names the database; requests
 * made while one is waiting are one.  PASSIVE: the copy waits for no
 * reader or writer, does what it can, and the next request does the
 * rest.  The thread starts with the first request and is stopped at the
 * exit of the process that started it (a child never has it). */
static struct {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	pthread_t thread;
	pid_t pid;  /* the process whose thread it is */
	int state;  /* CKPT_NONE, CKPT_RUNNING, CKPT_STOPPING */
	char *want; /* the database of the request waiting, or NULL */
} ckpt = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0, NULL};

enum { CKPT_NONE, CKPT_RUNNING, CKPT_STOPPING };

/* Held through each copy made in this process: one at a time, and one
 * made by a committing thread waits for the copier's to end rather than
 * fail at SQLite's lock. */
static pthread_mutex_t ckpt_copying = PTHREAD_MUTEX_INITIALIZER;

/* The copier's connection to path (it has read the database, so SQLite
 * knows its WAL), or NULL. */
static sqlite3 *ckpt_connect(const char *path)
{
	sqlite3 *sq = NULL;
	if (sqlite3_open_v2(path, &sq, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) !=
		SQLITE_OK ||
	    sqlite3_exec(sq,
			 "PRAGMA synchronous=FULL; PRAGMA cache_size=16;"
			 "SELECT count(*) FROM sqlite_master",
			 NULL, NULL, NULL) != SQLITE_OK) {
		sqlite3_close(sq);
		return NULL;
	}
	return sq;
}

static void *ckpt_main(void *arg)
{
	sqlite3 *sq = NULL;
	char *at = NULL;     /* sq's database */
	struct stat at_file; /* which file it was (one put in its place is
				another database) */
	(void)arg;
	pthread_mutex_lock(&ckpt.mu);
	while (ckpt.state == CKPT_RUNNING) {
		if (!ckpt.want) {
			pthread_cond_wait(&ckpt.cv, &ckpt.mu);
			continue;
		}
		char *path = ckpt.want;
		ckpt.want = NULL;
		pthread_mutex_unlock(&ckpt.mu);
		struct stat now;
		int same = at && strcmp(at, path) == 0 && stat(path, &now) == 0 &&
			   now.st_dev == at_file.st_dev && now.st_ino == at_file.st_ino;
		if (!same) {
			sqlite3_close(sq);
			free(at);
			sq = stat(path, &at_file) == 0 ? ckpt_connect(path) : NULL;
			at = sq ? xstrdup(path) : NULL;
		}
		if (sq) {
			pthread_mutex_lock(&ckpt_copying);
			sqlite3_wal_checkpoint_v2(sq, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
			pthread_mutex_unlock(&ckpt_copying);
		}
		free(path);
		pthread_mutex_lock(&ckpt.mu);
	}
	pthread_mutex_unlock(&ckpt.mu);
	sqlite3_close(sq);
	free(at);
	return NULL;
}

static void ckpt_stop(void)
{
	pthread_mutex_lock(&ckpt.mu);
	int mine = ckpt.state == CKPT_RUNNING && ckpt.pid == getpid();
	if (mine) {
		ckpt.state = CKPT_STOPPING;
		pthread_cond_broadcast(&ckpt.cv);
	}
	pthread_mutex_unlock(&ckpt.mu);
	if (!mine)
		return;
	pthread_join(ckpt.thread, NULL);
	pthread_mutex_lock(&ckpt.mu);
	free(ckpt.want);
	ckpt.want = NULL;
	ckpt.state = CKPT_NONE;
	pthread_mutex_unlock(&ckpt.mu);
}

static void ckpt_at_exit(void) { atexit(ckpt_stop); }

/* Asks for path's WAL to be copied back.  -1 when there is no thread to
 * do it (the caller copies it itself). */
static int ckpt_request(const char *path)
{
	static pthread_once_t at_exit = PTHREAD_ONCE_INIT;
	int rc = 0;
	pthread_mutex_lock(&ckpt.mu);
	if (ckpt.state == CKPT_NONE || ckpt.pid != getpid()) {
		sigset_t all, old;
		sigfillset(&all);
		pthread_sigmask(SIG_SETMASK, &all, &old); /* signals are not its */
		ckpt.state = pthread_create(&ckpt.thread, NULL, ckpt_main, NULL) == 0 ? CKPT_RUNNING
										      : CKPT_NONE;
		pthread_sigmask(SIG_SETMASK, &old, NULL);
		ckpt.pid = getpid();
		if (ckpt.state == CKPT_RUNNING)
			pthread_once(&at_exit, ckpt_at_exit);
	}
	if (ckpt.state != CKPT_RUNNING) {
		rc = -1;
	} else if (!ckpt.want || strcmp(ckpt.want, path) != 0) {
		free(ckpt.want);
		ckpt.want = xstrdup(path);
		pthread_cond_signal(&ckpt.cv);
	}
	pthread_mutex_unlock(&ckpt.mu);
	return rc;
}

/* After a commit, outside a transaction (and so outside the gate): the
 * WAL copied back when it grew past WAL_CHECKPOINT_PAGES.  SQLite starts
 * the WAL over only when a write begins with all of it copied, which a
 * writer that commits again and again never lets the copier reach: so
 * past twice that length the committing thread copies the rest itself
 * (after the copier's run), and the WAL stays within about 64 MB. */
static void wal_checkpoint(struct db *db)
{
	int pages = db->wal_pages;
	if (pages < WAL_CHECKPOINT_PAGES || !sqlite3_get_autocommit(db->sq))
		return;
	db->wal_pages = 0;
	const char *path = sqlite3_db_filename(db->sq, "main");
	if (pages < 2 * WAL_CHECKPOINT_PAGES && path && *path && ckpt_request(path) == 0)
		return;
	pthread_mutex_lock(&ckpt_copying);
	sqlite3_wal_checkpoint_v2(db->sq, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
	pthread_mutex_unlock(&ckpt_copying);
}

/* A savepoint or a statement inside a transaction keeps the pages it
 * changes, as they were, in a sub-journal.  SQLite holds it in memory up
 * to 64 KB and then writes it to a temporary file for the rest of the
 * transaction: an enqueue batch, a savepoint per message of about 20
 * pages, wrote 776 MB there for 10,000 messages.  STMT_SPILL keeps the
 * sub-journal of one message (emptied when its savepoint is released) in
 * memory: 59 MB were still written.  SQLite allocates the memory in
 * pieces of this size, so it stays under malloc's 128 KB threshold for
 * mmap (an mmap and munmap per message cost more than the writes).  Set
 * once, before SQLite starts. */
#define STMT_SPILL (120 * 1024)
static pthread_once_t sqlite_once = PTHREAD_ONCE_INIT;

static void sqlite_configure(void) { sqlite3_config(SQLITE_CONFIG_STMTJRNL_SPILL, STMT_SPILL); }

static int sqlite_connect(struct db *db, int flags, char *err, size_t errlen, int *unavailable)
{
	const char *path = db->target;
	int rc;
	pthread_once(&sqlite_once, sqlite_configure);
	if (flags & DB_OPEN_READONLY) {
		rc = sqlite3_open_v2(path, &db->sq, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX,
				     NULL);
		if (rc == SQLITE_OK)
			return 0;
		flags |= DB_OPEN_NO_SETUP;
	} else {
		if (*path && strcmp(path, ":memory:") != 0 && strncmp(path, "file:", 5) != 0) {
			int fd =
			    open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
			if (fd >= 0)
				close(fd); /* new: private from the start */
		}
		rc = sqlite3_open_v2(
		    path, &db->sq, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
		    NULL);
	}
	char *msg = NULL;
	if (rc == SQLITE_OK) {
		sqlite3_busy_handler(db->sq, sqlite_busy, db);
		if (flags & DB_OPEN_NO_SETUP)
			return 0;
		rc = sqlite_settings(db, &msg);
	}
	if (rc == SQLITE_OK)
		return 0;
	snprintf(err, errlen, "cannot open state database %s: %s", path,
		 msg	  ? msg
		 : db->sq ? sqlite3_errmsg(db->sq)
			  : sqlite3_errstr(rc));
	if (unavailable)
		*unavailable = sqlite_kind(rc) == DB_ERR_UNAVAILABLE;
	sqlite3_free(msg);
	return -1;
}

/* --- opening ------------------------------------------------------------ */

struct db *db_open(const char *target, char *err, size_t errlen, int *unavailable)
{
	return db_open_flags(target, 0, err, errlen, unavailable);
}

struct db *db_open_flags(const char *target, int flags, char *err, size_t errlen, int *unavailable)
{
	if (unavailable)
		*unavailable = 0;
	if (!target || !*target) {
		snprintf(err, errlen, "no state database given");
		return NULL;
	}
	struct db *db = xcalloc(1, sizeof *db);
	db->engine = db_is_dsn(target) ? DB_POSTGRES : DB_SQLITE;
	db->target = xstrdup(target);
	int rc = db->engine == DB_POSTGRES ? dbpg_connect(db, err, errlen, unavailable)
					   : sqlite_connect(db, flags, err, errlen, unavailable);
	if (rc < 0) {
		db_close(db);
		return NULL;
	}
	return db;
}

int db_setup(struct db *db)
{
	if (db->engine != DB_SQLITE)
		return 0;
	db_clear_error(db);
	char *msg = NULL;
	int rc = sqlite_settings(db, &msg);
	if (rc == SQLITE_OK)
		return 0;
	db_set_error(db, sqlite_kind(rc), "%s", msg ? msg : sqlite3_errmsg(db->sq));
	sqlite3_free(msg);
	return -1;
}

void *db_sqlite_handle(struct db *db) { return db->engine == DB_SQLITE ? db->sq : NULL; }

const char *db_sqlite_version(void) { return sqlite3_libversion(); }

struct db *db_open_dsn_file(const char *path, char *err, size_t errlen, int *unavailable)
{
	if (unavailable)
		*unavailable = 0;
	char *dsn = dsn_file_read(path, err, errlen);
	if (!dsn)
		return NULL;
	struct db *db = db_open(dsn, err, errlen, unavailable);
	explicit_bzero(dsn, strlen(dsn));
	free(dsn);
	return db;
}

void db_close(struct db *db)
{
	if (!db)
		return;
	if (db->engine == DB_POSTGRES) {
		dbpg_close(db);
	} else {
		sqlite3_close(db->sq);
		gate_leave(db);
	}
	if (db->target) {
		explicit_bzero(db->target, strlen(db->target));
		free(db->target);
	}
	free(db);
}

/* --- placeholders ----------------------------------------------------- */

char *db_translate_placeholders(const char *sql, int *nparams)
{
	struct buf b;
	buf_init(&b);
	int max = 0;
	const char *p = sql;
	while (*p) {
		if (*p == '\'' || *p == '"') { /* a literal or quoted name, '' included */
			const char *end = strchr(p + 1, *p);
			end = end ? end + 1 : p + strlen(p);
			buf_append(&b, p, (size_t)(end - p));
			p = end;
		} else if (p[0] == '-' && p[1] == '-') {
			size_t n = strcspn(p, "\n");
			buf_append(&b, p, n);
			p += n;
		} else if (p[0] == '/' && p[1] == '*') {
			const char *end = strstr(p + 2, "*/");
			end = end ? end + 2 : p + strlen(p);
			buf_append(&b, p, (size_t)(end - p));
			p = end;
		} else if (*p == '?') {
			p++;
			int n = 0;
			if (*p >= '0' && *p <= '9') {
				while (*p >= '0' && *p <= '9' && n < 100000)
					n = n * 10 + (*p++ - '0');
			} else {
				n = max + 1;
			}
			if (n > max)
				max = n;
			buf_printf(&b, "$%d", n);
		} else {
			buf_putc(&b, *p++);
		}
	}
	if (nparams)
		*nparams = max;
	return buf_steal(&b);
}

/* --- statements ---------------------------------------------------------- */

struct db_stmt *db_prepare(struct db *db, const char *sql)
{
	db_clear_error(db);
	struct db_stmt *s = xcalloc(1, sizeof *s);
	s->db = db;
	s->row = -1;
	if (db->engine == DB_POSTGRES) {
		s->sql = db_translate_placeholders(sql, &s->nparams);
		s->params = xcalloc((size_t)s->nparams + 1, sizeof *s->params);
		return s;
	}
	int rc = sqlite3_prepare_v2(db->sq, sql, -1, &s->sq, NULL);
	if (rc != SQLITE_OK) {
		sqlite_error(db, rc);
		sqlite3_finalize(s->sq);
		free(s);
		return NULL;
	}
	return s;
}

static int bind_result(struct db_stmt *s, int rc)
{
	if (rc == SQLITE_OK)
		return 0;
	sqlite_error(s->db, rc);
	return -1;
}

int db_bind_int64(struct db_stmt *s, int i, int64_t v)
{
	if (s->db->engine == DB_SQLITE)
		return bind_result(s, sqlite3_bind_int64(s->sq, i, v));
	unsigned char be[8];
	for (int k = 0; k < 8; k++)
		be[k] = (unsigned char)((uint64_t)v >> (56 - 8 * k));
	return dbpg_bind(s, i, DBPG_INT8, 1, be, 8);
}

int db_bind_text(struct db_stmt *s, int i, const char *v, int len)
{
	if (!v)
		return db_bind_null(s, i);
	size_t n = len < 0 ? strlen(v) : (size_t)len;
	if (s->db->engine == DB_SQLITE)
		return bind_result(
		    s, sqlite3_bind_text64(s->sq, i, v, n, SQLITE_TRANSIENT, SQLITE_UTF8));
	return dbpg_bind(s, i, DBPG_TEXT, 0, v, n);
}

int db_bind_blob(struct db_stmt *s, int i, const void *v, size_t len)
{
	if (s->db->engine == DB_SQLITE)
		return bind_result(
		    s, sqlite3_bind_blob64(s->sq, i, v ? v : "", len, SQLITE_TRANSIENT));
	return dbpg_bind(s, i, DBPG_BYTEA, 1, v ? v : "", len);
}

int db_bind_null(struct db_stmt *s, int i)
{
	if (s->db->engine == DB_SQLITE)
		return bind_result(s, sqlite3_bind_null(s->sq, i));
	return dbpg_bind(s, i, 0, 0, NULL, 0);
}

int db_step(struct db_stmt *s)
{
	struct db *db = s->db;
	if (db->engine == DB_POSTGRES)
		return dbpg_step(s);
	int rc = sqlite3_step(s->sq);
	if (rc == SQLITE_ROW)
		return DB_ROW;
	if (rc == SQLITE_DONE) {
		db->changes = sqlite3_changes64(db->sq);
		wal_checkpoint(db);
		return DB_DONE;
	}
	sqlite_error(db, rc);
	return DB_FAIL;
}

int db_column_count(struct db_stmt *s)
{
	return s->db->engine == DB_POSTGRES ? dbpg_column_count(s) : sqlite3_column_count(s->sq);
}

int db_param_count(struct db_stmt *s)
{
	return s->db->engine == DB_POSTGRES ? s->nparams : sqlite3_bind_parameter_count(s->sq);
}

int db_column_is_null(struct db_stmt *s, int col)
{
	if (s->db->engine == DB_POSTGRES)
		return dbpg_column_is_null(s, col);
	return sqlite3_column_type(s->sq, col) == SQLITE_NULL;
}

int64_t db_column_int64(struct db_stmt *s, int col)
{
	if (s->db->engine == DB_POSTGRES)
		return dbpg_column_int64(s, col);
	return sqlite3_column_int64(s->sq, col);
}

const char *db_column_text(struct db_stmt *s, int col)
{
	if (s->db->engine == DB_POSTGRES)
		return dbpg_column_text(s, col);
	return (const char *)sqlite3_column_text(s->sq, col);
}

const void *db_column_blob(struct db_stmt *s, int col, size_t *len)
{
	if (s->db->engine == DB_POSTGRES)
		return dbpg_column_blob(s, col, len);
	const void *p = sqlite3_column_blob(s->sq, col);
	*len = (size_t)sqlite3_column_bytes(s->sq, col);
	return p;
}

void db_reset(struct db_stmt *s)
{
	if (!s)
		return;
	if (s->db->engine == DB_POSTGRES) {
		dbpg_stmt_clear(s);
		return;
	}
	sqlite3_reset(s->sq);
	sqlite3_clear_bindings(s->sq);
}

void db_finalize(struct db_stmt *s)
{
	if (!s)
		return;
	if (s->db->engine == DB_POSTGRES) {
		dbpg_stmt_clear(s);
		free(s->params);
		free(s->sql);
	} else {
		sqlite3_finalize(s->sq);
	}
	free(s);
}

int64_t db_changes(struct db *db) { return db->changes; }

/* --- scripts and transactions -------------------------------------------- */

int db_exec(struct db *db, const char *sql)
{
	db_clear_error(db);
	if (db->engine == DB_POSTGRES)
		return dbpg_exec(db, sql);
	char *msg = NULL;
	int rc = sqlite3_exec(db->sq, sql, NULL, NULL, &msg);
	if (rc == SQLITE_OK) {
		db->changes = sqlite3_changes64(db->sq);
		if (db->gate == GATE_NONE)
			wal_checkpoint(db);
		return 0;
	}
	db_set_error(db, sqlite_kind(rc), "%s", msg ? msg : sqlite3_errmsg(db->sq));
	sqlite3_free(msg);
	return -1;
}

/* On SQLite, the transaction ended (committed, rolled back, or by SQLite
 * itself after some errors): the gate is let go. */
static void gate_check(struct db *db)
{
	if (db->engine == DB_SQLITE && db->gate != GATE_NONE && sqlite3_get_autocommit(db->sq))
		gate_leave(db);
}

int db_begin(struct db *db)
{
	if (db->engine == DB_SQLITE && gate_enter(db) < 0)
		return -1;
	if (db_exec(db, db->engine == DB_POSTGRES ? "BEGIN" : "BEGIN IMMEDIATE") < 0) {
		gate_check(db);
		return -1;
	}
	db->in_tx = 1;
	db->tx_lost = 0;
	return 0;
}

int db_commit(struct db *db)
{
	if (db->tx_lost) {
		db_set_error(db, DB_ERR_UNAVAILABLE,
			     "the connection to the database was lost; the transaction was "
			     "rolled back");
		db->in_tx = db->tx_lost = 0;
		return -1;
	}
	int rc = db_exec(db, "COMMIT");
	/* a failed COMMIT ends the transaction on PostgreSQL; on SQLite it
	 * may stay open (busy): the caller's rollback ends it */
	if (rc == 0 || db->engine == DB_POSTGRES)
		db->in_tx = 0;
	gate_check(db);
	if (rc == 0 && db->engine == DB_SQLITE)
		wal_checkpoint(db);
	return rc;
}

void db_rollback(struct db *db)
{
	if (db->tx_lost || !db_in_transaction(db)) {
		db->in_tx = db->tx_lost = 0;
		gate_check(db);
		return;
	}
	/* keep the error that made the caller roll back */
	enum db_error kind = db->err;
	char msg[sizeof db->errmsg];
	memcpy(msg, db->errmsg, sizeof msg);
	db_exec(db, "ROLLBACK");
	db->err = kind;
	memcpy(db->errmsg, msg, sizeof msg);
	db->in_tx = 0;
	gate_check(db);
}

/* --- migrations ---------------------------------------------------------- */

int db_schema_version(struct db *db, const char *name)
{
	if (db_exec(db, "CREATE TABLE IF NOT EXISTS schema_versions("
			" name TEXT PRIMARY KEY, version INTEGER NOT NULL)") < 0)
		return -1;
	struct db_stmt *s = db_prepare(db, "SELECT version FROM schema_versions WHERE name=?1");
	if (!s)
		return -1;
	db_bind_text(s, 1, name, -1);
	int rc = db_step(s);
	int v = rc == DB_ROW ? (int)db_column_int64(s, 0) : rc == DB_DONE ? 0 : -1;
	db_finalize(s);
	return v;
}

static int set_version(struct db *db, const char *name, int v)
{
	struct db_stmt *s = db_prepare(db, "INSERT INTO schema_versions(name, version)"
					   " VALUES(?1, ?2) ON CONFLICT(name)"
					   " DO UPDATE SET version=excluded.version");
	if (!s)
		return -1;
	db_bind_text(s, 1, name, -1);
	db_bind_int64(s, 2, v);
	int rc = db_step(s);
	db_finalize(s);
	return rc == DB_DONE ? 0 : -1;
}

/* One step under the caller's lock, in its own transaction; 1 when one
 * ran, 0 when the schema is current, -1 on failure. */
static int migrate_step(struct db *db, const char *name, const struct db_migration *steps, int n)
{
	if (db_begin(db) < 0)
		return -1;
	int v = db_schema_version(db, name);
	if (v < 0)
		goto fail;
	if (v > n) {
		db_set_error(db, DB_ERR_SQL,
			     "schema %s has version %d, this mailfeed knows up to %d; use a "
			     "newer mailfeed",
			     name, v, n);
		goto fail;
	}
	if (v == n)
		return db_commit(db) < 0 ? -1 : 0;
	if (db_exec(db, db_sql(db, steps[v].sqlite, steps[v].pg)) < 0) {
		char msg[sizeof db->errmsg];
		snprintf(msg, sizeof msg, "%s", db->errmsg);
		db_set_error(db, db->err, "schema %s: migration to version %d failed: %s", name,
			     v + 1, msg);
		goto fail;
	}
	if (set_version(db, name, v + 1) < 0 || db_commit(db) < 0)
		goto fail;
	return 1;
fail:
	db_rollback(db);
	return -1;
}

int db_migrate(struct db *db, const char *name, const struct db_migration *steps, int n,
	       int *applied)
{
	int done = 0, rc;
	if (applied)
		*applied = 0;
	if (db->engine == DB_POSTGRES) {
		/* the table of versions is made under the lock too: two
		 * CREATE TABLE IF NOT EXISTS at once can collide */
		if (db_exec(db, "SELECT pg_advisory_lock(" MIGRATE_LOCK ")") < 0)
			return -1;
	}
	while ((rc = migrate_step(db, name, steps, n)) == 1)
		done++;
	if (db->engine == DB_POSTGRES && !db->tx_lost) {
		enum db_error kind = db->err;
		char msg[sizeof db->errmsg];
		memcpy(msg, db->errmsg, sizeof msg);
		db_exec(db, "SELECT pg_advisory_unlock(" MIGRATE_LOCK ")");
		db->err = kind;
		memcpy(db->errmsg, msg, sizeof msg);
	}
	if (applied)
		*applied = done;
	return rc < 0 ? -1 : 0;
}

int64_t db_now_ms(struct db *db)
{
	struct db_stmt *s =
	    db_prepare(db, db_sql(db, "SELECT " DB_NOW_MS_SQLITE, "SELECT " DB_NOW_MS_PG));
	if (!s)
		return -1;
	int64_t v = db_step(s) == DB_ROW ? db_column_int64(s, 0) : -1;
	db_finalize(s);
	return v;
}
