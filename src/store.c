/* store.c — SQLite state: schema migrations, connection setup, the
 * folders table (checkpoints and sync status) and retention.  The
 * messages table belongs to messages.c, the daemon's notes to notes.c;
 * other modules keep the SQL of their own tables next to their logic and
 * use store_db() with the same writer discipline (see store.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <sqlite3.h> /* the SQLite-only file checks and diagnostics */

#include "mailfeed/db.h"
#include "mailfeed/log.h"
#include "mailfeed/messages.h"
#include "mailfeed/store.h"
#include "mailfeed/util.h"

#define STORE_STMTS 32

struct store {
	struct db *db;
	struct {
		const char *sql; /* by address */
		struct db_stmt *s;
		int out; /* handed out, not yet given back */
	} stmts[STORE_STMTS];
	size_t n_stmts;
	char *path;
	char err[512];	  /* the last failure seen by the store_* wrappers */
	char err_of[512]; /* the connection's message it was made of */
	time_t pruned_at; /* last retention pass (store_prune_due) */
};

/* Each entry moves the schema from version i to i+1.  Never edit a shipped
 * entry; append a new one. */
static const char *const migrations[] = {
    /* 1: initial schema */
    "CREATE TABLE folders("
    " mailbox TEXT PRIMARY KEY, account TEXT NOT NULL, folder TEXT NOT NULL,"
    " uidvalidity INTEGER NOT NULL DEFAULT 0, last_uid INTEGER NOT NULL DEFAULT 0,"
    " last_ok INTEGER, last_error TEXT, last_error_at INTEGER, last_event INTEGER);"
    "CREATE TABLE messages("
    " id INTEGER PRIMARY KEY, mailbox TEXT NOT NULL, uidvalidity INTEGER NOT NULL,"
    " uid INTEGER NOT NULL, message_id TEXT, size INTEGER NOT NULL,"
    " internaldate INTEGER, sha256 TEXT NOT NULL, raw BLOB,"
    " state TEXT NOT NULL DEFAULT 'new', reason TEXT, parsed TEXT,"
    " received_at INTEGER NOT NULL, acked INTEGER NOT NULL DEFAULT 0,"
    " UNIQUE(mailbox, uidvalidity, uid));"
    "CREATE INDEX messages_state ON messages(state, internaldate, id);"
    "CREATE INDEX messages_msgid ON messages(mailbox, message_id);"
    "CREATE INDEX messages_ack ON messages(mailbox, uidvalidity, acked);"
    "CREATE TABLE threads("
    " id INTEGER PRIMARY KEY, grp TEXT NOT NULL, mailbox TEXT NOT NULL,"
    " subject_norm TEXT, root_item INTEGER, first_date INTEGER, last_date INTEGER);"
    "CREATE INDEX threads_subject ON threads(grp, subject_norm);"
    "CREATE TABLE thread_ids("
    " message_id TEXT NOT NULL, grp TEXT NOT NULL, thread_id INTEGER NOT NULL,"
    " PRIMARY KEY(message_id, grp));"
    "CREATE TABLE outbox("
    " id INTEGER PRIMARY KEY, key TEXT UNIQUE NOT NULL, message INTEGER,"
    " kind TEXT NOT NULL, grp TEXT NOT NULL, thread_id INTEGER, parent INTEGER,"
    " payload TEXT NOT NULL, state TEXT NOT NULL DEFAULT 'pending',"
    " attempts INTEGER NOT NULL DEFAULT 0, next_at INTEGER NOT NULL DEFAULT 0,"
    " remote_id TEXT, error TEXT, created INTEGER NOT NULL, delivered_at INTEGER,"
    " sort_date TEXT NOT NULL DEFAULT '', ext_parent INTEGER NOT NULL DEFAULT 0);"
    "CREATE INDEX outbox_state ON outbox(state, next_at);"
    "CREATE INDEX outbox_parent ON outbox(parent, kind, state, sort_date);"
    "CREATE INDEX outbox_due ON outbox(state, next_at, kind, ext_parent, parent, sort_date);"
    "CREATE INDEX outbox_message ON outbox(message);"
    "CREATE TABLE attachments("
    " id INTEGER PRIMARY KEY, item INTEGER NOT NULL, filename TEXT NOT NULL,"
    " content_type TEXT NOT NULL, size INTEGER NOT NULL, sha256 TEXT NOT NULL,"
    " data BLOB);"
    "CREATE INDEX attachments_item ON attachments(item);"
    "CREATE TABLE subscribers("
    " email TEXT PRIMARY KEY, groups TEXT NOT NULL, frequency TEXT NOT NULL,"
    " hour INTEGER, tz TEXT, last_sent INTEGER, since INTEGER NOT NULL,"
    " source TEXT NOT NULL DEFAULT 'cli');"
    "CREATE TABLE digest_runs("
    " email TEXT NOT NULL, period TEXT NOT NULL, state TEXT NOT NULL,"
    " at INTEGER NOT NULL, PRIMARY KEY(email, period));"
    "CREATE TABLE notices("
    " address TEXT NOT NULL, reason TEXT NOT NULL, day TEXT NOT NULL,"
    " PRIMARY KEY(address, reason, day));"
    "CREATE TABLE sent_ids("
    " message_id TEXT PRIMARY KEY, grp TEXT, remote_id TEXT, email TEXT,"
    " created INTEGER NOT NULL);"
    "CREATE TABLE local_items("
    " id INTEGER PRIMARY KEY, key TEXT UNIQUE NOT NULL, grp TEXT NOT NULL,"
    " parent INTEGER, author_name TEXT, author_email TEXT, subject TEXT,"
    " text TEXT NOT NULL, hashtags TEXT, attachments TEXT, created INTEGER NOT NULL);"
    "CREATE INDEX local_items_grp ON local_items(grp, created);"
    "CREATE TABLE daemon(key TEXT PRIMARY KEY, value TEXT, at INTEGER);"
    "CREATE TABLE reply_posts("
    " id INTEGER PRIMARY KEY, grp TEXT NOT NULL, remote_id TEXT UNIQUE NOT NULL);"
    "CREATE TABLE reply_users(id INTEGER PRIMARY KEY, email TEXT UNIQUE NOT NULL);",
    /* 2: digest subscribers from the feed's group membership, one row per
     * (group, member); their digest state per (email, frequency), since a
     * member may want each post of one group and a weekly digest of
     * another; when each group's list was last read */
    "CREATE TABLE feed_members("
    " grp TEXT NOT NULL, email TEXT NOT NULL, name TEXT, frequency TEXT NOT NULL,"
    " PRIMARY KEY(grp, email));"
    "CREATE INDEX feed_members_email ON feed_members(email, frequency);"
    "CREATE TABLE feed_subscribers("
    " email TEXT NOT NULL, frequency TEXT NOT NULL, last_sent INTEGER,"
    " since INTEGER NOT NULL, PRIMARY KEY(email, frequency));"
    "CREATE TABLE feed_member_reads("
    " grp TEXT PRIMARY KEY, at INTEGER NOT NULL, ok INTEGER NOT NULL,"
    " members INTEGER, error TEXT);",
    /* 3: what the backend noted of an upload made by an earlier attempt */
    "ALTER TABLE attachments ADD COLUMN remote TEXT;",
    /* 4: when each notice went out, for the hourly cap of all notices */
    "ALTER TABLE notices ADD COLUMN at INTEGER;"
    "CREATE INDEX notices_at ON notices(at);",
    /* 5: parses of a message started and never ended (the daemon stopped) */
    "ALTER TABLE messages ADD COLUMN parse_attempts INTEGER NOT NULL DEFAULT 0;",
    /* 6: digests name the sender of what the gateway posted (outbox_origin) */
    "CREATE INDEX outbox_remote ON outbox(remote_id);",
    /* 7: threads a subscriber muted (reply "mute" to a post's address) */
    "CREATE TABLE mutes(email TEXT NOT NULL, remote_id TEXT NOT NULL, at INTEGER NOT NULL,"
    " PRIMARY KEY(email, remote_id));",
    /* 8: notices waiting for the relay (notice.c): composed when queued,
     * 'pending' -> 'sending' (recorded just before the end of the data)
     * -> 'sent', or 'failed' (refused for good, or a day old) */
    "CREATE TABLE notice_queue("
    " id INTEGER PRIMARY KEY, address TEXT NOT NULL, reason TEXT NOT NULL,"
    " mail BLOB NOT NULL, state TEXT NOT NULL DEFAULT 'pending',"
    " attempts INTEGER NOT NULL DEFAULT 0, next_at INTEGER NOT NULL DEFAULT 0,"
    " created INTEGER NOT NULL, error TEXT);"
    "CREATE INDEX notice_queue_due ON notice_queue(state, next_at);",
    /* 9: the raw mail and the parsed form of a message in a row of their
     * own, so that a change of state rewrites a small row, not the whole
     * mail; the old columns go (with secure_delete, their bytes too) */
    "CREATE TABLE message_bodies("
    " message INTEGER PRIMARY KEY REFERENCES messages(id) ON DELETE CASCADE,"
    " raw BLOB, parsed TEXT);"
    "INSERT INTO message_bodies(message, raw, parsed) SELECT id, raw, parsed FROM messages"
    " WHERE raw IS NOT NULL OR parsed IS NOT NULL;"
    "ALTER TABLE messages DROP COLUMN raw;"
    "ALTER TABLE messages DROP COLUMN parsed;",
    /* 10: the parsed form in a row of its own too, so that recording it
     * does not rewrite the raw mail; message_bodies keeps the raw bytes
     * only, and retention deletes its rows */
    "CREATE TABLE message_parsed("
    " message INTEGER PRIMARY KEY REFERENCES messages(id) ON DELETE CASCADE,"
    " parsed TEXT NOT NULL);"
    "INSERT INTO message_parsed(message, parsed) SELECT message, parsed FROM message_bodies"
    " WHERE parsed IS NOT NULL;"
    "DELETE FROM message_bodies WHERE raw IS NULL;"
    "ALTER TABLE message_bodies DROP COLUMN parsed;",
    /* 11: claims, so that several instances share the work without doing
     * it twice: who took an item and until when (the database's clock, ms) */
    "ALTER TABLE outbox ADD COLUMN claimed_by TEXT;"
    "ALTER TABLE outbox ADD COLUMN claim_until INTEGER;"
    "ALTER TABLE digest_runs ADD COLUMN claimed_by TEXT;"
    "ALTER TABLE digest_runs ADD COLUMN claim_until INTEGER;"
    "ALTER TABLE notice_queue ADD COLUMN claimed_by TEXT;"
    "ALTER TABLE notice_queue ADD COLUMN claim_until INTEGER;",
    /* 12: an outbox item's payload in a row of its own, so that claiming,
     * renewing, recording and retrying the item rewrite a small row, not
     * its text (nor, with secure_delete, zero its old overflow pages); the
     * waiting items indexed oldest first, so that choosing the due ones
     * reads the oldest waiting, not all of them */
    "CREATE TABLE outbox_payloads("
    " item INTEGER PRIMARY KEY REFERENCES outbox(id) ON DELETE CASCADE,"
    " payload TEXT NOT NULL);"
    "INSERT INTO outbox_payloads(item, payload) SELECT id, payload FROM outbox;"
    "ALTER TABLE outbox DROP COLUMN payload;"
    "CREATE INDEX outbox_waiting ON outbox(id, state, next_at, kind, ext_parent, parent,"
    " sort_date) WHERE state IN ('pending','retrying');"
    "DROP INDEX outbox_due;",
};

/* The same schema on PostgreSQL, versioned by db_migrate("store") with the
 * same numbers: a PostgreSQL state starts at version 10 in one step (the
 * SQLite steps 2-10 have no history to replay there), and every later
 * entry is the PostgreSQL form of the SQLite entry of the same number.
 * Integers are BIGINT (SQLite's are 64-bit), raw bytes BYTEA, row ids
 * BIGSERIAL. */
#define PG_NOTHING "SELECT 1"
static const char *const pg_migrations[] = {
    /* 1: the schema of SQLite version 10, and ack_errors (made on first
     * use on SQLite) */
    "CREATE TABLE folders("
    " mailbox TEXT PRIMARY KEY, account TEXT NOT NULL, folder TEXT NOT NULL,"
    " uidvalidity BIGINT NOT NULL DEFAULT 0, last_uid BIGINT NOT NULL DEFAULT 0,"
    " last_ok BIGINT, last_error TEXT, last_error_at BIGINT, last_event BIGINT);"
    "CREATE TABLE messages("
    " id BIGSERIAL PRIMARY KEY, mailbox TEXT NOT NULL, uidvalidity BIGINT NOT NULL,"
    " uid BIGINT NOT NULL, message_id TEXT, size BIGINT NOT NULL,"
    " internaldate BIGINT, sha256 TEXT NOT NULL,"
    " state TEXT NOT NULL DEFAULT 'new', reason TEXT,"
    " received_at BIGINT NOT NULL, acked BIGINT NOT NULL DEFAULT 0,"
    " parse_attempts BIGINT NOT NULL DEFAULT 0,"
    " UNIQUE(mailbox, uidvalidity, uid));"
    "CREATE INDEX messages_state ON messages(state, internaldate, id);"
    "CREATE INDEX messages_msgid ON messages(mailbox, message_id);"
    "CREATE INDEX messages_ack ON messages(mailbox, uidvalidity, acked);"
    "CREATE TABLE message_bodies("
    " message BIGINT PRIMARY KEY REFERENCES messages(id) ON DELETE CASCADE, raw BYTEA);"
    "CREATE TABLE message_parsed("
    " message BIGINT PRIMARY KEY REFERENCES messages(id) ON DELETE CASCADE,"
    " parsed TEXT NOT NULL);"
    "CREATE TABLE ack_errors("
    " mailbox TEXT NOT NULL, uidvalidity BIGINT NOT NULL, uid BIGINT NOT NULL,"
    " error TEXT NOT NULL, attempts BIGINT NOT NULL, next_at BIGINT NOT NULL,"
    " PRIMARY KEY(mailbox, uidvalidity, uid));"
    "CREATE TABLE threads("
    " id BIGSERIAL PRIMARY KEY, grp TEXT NOT NULL, mailbox TEXT NOT NULL,"
    " subject_norm TEXT, root_item BIGINT, first_date BIGINT, last_date BIGINT);"
    "CREATE INDEX threads_subject ON threads(grp, subject_norm);"
    "CREATE TABLE thread_ids("
    " message_id TEXT NOT NULL, grp TEXT NOT NULL, thread_id BIGINT NOT NULL,"
    " PRIMARY KEY(message_id, grp));"
    "CREATE TABLE outbox("
    " id BIGSERIAL PRIMARY KEY, key TEXT UNIQUE NOT NULL, message BIGINT,"
    " kind TEXT NOT NULL, grp TEXT NOT NULL, thread_id BIGINT, parent BIGINT,"
    " payload TEXT NOT NULL, state TEXT NOT NULL DEFAULT 'pending',"
    " attempts BIGINT NOT NULL DEFAULT 0, next_at BIGINT NOT NULL DEFAULT 0,"
    " remote_id TEXT, error TEXT, created BIGINT NOT NULL, delivered_at BIGINT,"
    " sort_date TEXT NOT NULL DEFAULT '', ext_parent BIGINT NOT NULL DEFAULT 0);"
    "CREATE INDEX outbox_state ON outbox(state, next_at);"
    "CREATE INDEX outbox_parent ON outbox(parent, kind, state, sort_date);"
    "CREATE INDEX outbox_due ON outbox(state, next_at, kind, ext_parent, parent, sort_date);"
    "CREATE INDEX outbox_message ON outbox(message);"
    "CREATE INDEX outbox_remote ON outbox(remote_id);"
    "CREATE TABLE attachments("
    " id BIGSERIAL PRIMARY KEY, item BIGINT NOT NULL, filename TEXT NOT NULL,"
    " content_type TEXT NOT NULL, size BIGINT NOT NULL, sha256 TEXT NOT NULL,"
    " data BYTEA, remote TEXT);"
    "CREATE INDEX attachments_item ON attachments(item);"
    "CREATE TABLE subscribers("
    " email TEXT PRIMARY KEY, groups TEXT NOT NULL, frequency TEXT NOT NULL,"
    " hour BIGINT, tz TEXT, last_sent BIGINT, since BIGINT NOT NULL,"
    " source TEXT NOT NULL DEFAULT 'cli');"
    "CREATE TABLE digest_runs("
    " email TEXT NOT NULL, period TEXT NOT NULL, state TEXT NOT NULL,"
    " at BIGINT NOT NULL, PRIMARY KEY(email, period));"
    "CREATE TABLE notices("
    " address TEXT NOT NULL, reason TEXT NOT NULL, day TEXT NOT NULL, at BIGINT,"
    " PRIMARY KEY(address, reason, day));"
    "CREATE INDEX notices_at ON notices(at);"
    "CREATE TABLE sent_ids("
    " message_id TEXT PRIMARY KEY, grp TEXT, remote_id TEXT, email TEXT,"
    " created BIGINT NOT NULL);"
    "CREATE TABLE local_items("
    " id BIGSERIAL PRIMARY KEY, key TEXT UNIQUE NOT NULL, grp TEXT NOT NULL,"
    " parent BIGINT, author_name TEXT, author_email TEXT, subject TEXT,"
    " text TEXT NOT NULL, hashtags TEXT, attachments TEXT, created BIGINT NOT NULL);"
    "CREATE INDEX local_items_grp ON local_items(grp, created);"
    "CREATE TABLE daemon(key TEXT PRIMARY KEY, value TEXT, at BIGINT);"
    "CREATE TABLE reply_posts("
    " id BIGSERIAL PRIMARY KEY, grp TEXT NOT NULL, remote_id TEXT UNIQUE NOT NULL);"
    "CREATE TABLE reply_users(id BIGSERIAL PRIMARY KEY, email TEXT UNIQUE NOT NULL);"
    "CREATE TABLE feed_members("
    " grp TEXT NOT NULL, email TEXT NOT NULL, name TEXT, frequency TEXT NOT NULL,"
    " PRIMARY KEY(grp, email));"
    "CREATE INDEX feed_members_email ON feed_members(email, frequency);"
    "CREATE TABLE feed_subscribers("
    " email TEXT NOT NULL, frequency TEXT NOT NULL, last_sent BIGINT,"
    " since BIGINT NOT NULL, PRIMARY KEY(email, frequency));"
    "CREATE TABLE feed_member_reads("
    " grp TEXT PRIMARY KEY, at BIGINT NOT NULL, ok BIGINT NOT NULL,"
    " members BIGINT, error TEXT);"
    "CREATE TABLE mutes(email TEXT NOT NULL, remote_id TEXT NOT NULL, at BIGINT NOT NULL,"
    " PRIMARY KEY(email, remote_id));"
    "CREATE TABLE notice_queue("
    " id BIGSERIAL PRIMARY KEY, address TEXT NOT NULL, reason TEXT NOT NULL,"
    " mail BYTEA NOT NULL, state TEXT NOT NULL DEFAULT 'pending',"
    " attempts BIGINT NOT NULL DEFAULT 0, next_at BIGINT NOT NULL DEFAULT 0,"
    " created BIGINT NOT NULL, error TEXT);"
    "CREATE INDEX notice_queue_due ON notice_queue(state, next_at);",
    /* 2-10: part of step 1 */
    PG_NOTHING,
    PG_NOTHING,
    PG_NOTHING,
    PG_NOTHING,
    PG_NOTHING,
    PG_NOTHING,
    PG_NOTHING,
    PG_NOTHING,
    PG_NOTHING,
    /* 11: claims */
    "ALTER TABLE outbox ADD COLUMN claimed_by TEXT;"
    "ALTER TABLE outbox ADD COLUMN claim_until BIGINT;"
    "ALTER TABLE digest_runs ADD COLUMN claimed_by TEXT;"
    "ALTER TABLE digest_runs ADD COLUMN claim_until BIGINT;"
    "ALTER TABLE notice_queue ADD COLUMN claimed_by TEXT;"
    "ALTER TABLE notice_queue ADD COLUMN claim_until BIGINT;",
    /* 12: outbox payloads in a table of their own, the waiting items
     * indexed oldest first */
    "CREATE TABLE outbox_payloads("
    " item BIGINT PRIMARY KEY REFERENCES outbox(id) ON DELETE CASCADE,"
    " payload TEXT NOT NULL);"
    "INSERT INTO outbox_payloads(item, payload) SELECT id, payload FROM outbox;"
    "ALTER TABLE outbox DROP COLUMN payload;"
    "CREATE INDEX outbox_waiting ON outbox(id) WHERE state IN ('pending','retrying');"
    "DROP INDEX outbox_due;",
};

#define SCHEMA_VERSION ((int)(sizeof(migrations) / sizeof(migrations[0])))
_Static_assert(sizeof(pg_migrations) == sizeof(migrations),
	       "every SQLite migration has its PostgreSQL form");

/* Out of room: SQLite reports SQLITE_FULL for a failed write, and an I/O
 * error with ENOSPC when its shared-memory index cannot grow. */
static int disk_full(struct db *db)
{
	sqlite3 *sq = db_sqlite_handle(db);
	if (!sq)
		return 0;
	int rc = sqlite3_errcode(sq) & 0xff;
	if (rc == SQLITE_FULL)
		return 1;
	if (rc != SQLITE_IOERR)
		return 0;
	int e = sqlite3_system_errno(sq);
	return e == ENOSPC || e == EDQUOT;
}

static void describe_error(struct db *db, const char *path, char *out, size_t outlen)
{
	if (disk_full(db))
		snprintf(out, outlen,
			 "disk full: no space left for the state database %s; free some space "
			 "on its file system, then mailfeed goes on where it stopped",
			 path);
	else
		snprintf(out, outlen, "%s", db_errmsg(db));
}

static int user_version(struct db *db)
{
	struct db_stmt *s = db_prepare(db, "PRAGMA user_version");
	int v = -1;
	if (!s)
		return -1;
	if (db_step(s) == DB_ROW)
		v = (int)db_column_int64(s, 0);
	db_finalize(s);
	return v;
}

static int has_tables(struct db *db)
{
	struct db_stmt *s = db_prepare(db, "SELECT 1 FROM sqlite_master LIMIT 1");
	if (!s)
		return 0;
	int found = db_step(s) == DB_ROW;
	db_finalize(s);
	return found;
}

/* Each step runs in its own IMMEDIATE transaction and re-reads the version
 * inside it, so two processes opening a new database at once (the daemon
 * and `mailfeed status`) cannot both apply the same step. */
static int migrate(struct db *db, const char *path, char *err, size_t errlen)
{
	int fresh = -1; /* a new database is created silently, an old one upgraded loudly */
	for (;;) {
		if (db_begin(db) < 0) {
			if (disk_full(db))
				describe_error(db, path, err, errlen);
			else
				snprintf(err, errlen, "cannot lock the state database: %s",
					 db_errmsg(db));
			return -1;
		}
		int v = user_version(db);
		if (v < 0 || v > SCHEMA_VERSION) {
			if (v < 0)
				snprintf(err, errlen, "cannot read schema version: %s",
					 db_errmsg(db));
			else
				snprintf(
				    err, errlen,
				    "state database has schema version %d, this mailfeed knows "
				    "up to %d; use a newer mailfeed",
				    v, SCHEMA_VERSION);
			db_rollback(db);
			return -1;
		}
		if (v == SCHEMA_VERSION) {
			if (db_commit(db) == 0)
				return 0;
			describe_error(db, path, err, errlen);
			db_rollback(db);
			return -1;
		}
		if (fresh < 0)
			fresh = v == 0;
		char pragma[64];
		snprintf(pragma, sizeof pragma, "PRAGMA user_version=%d", v + 1);
		if (db_exec(db, migrations[v]) < 0 || db_exec(db, pragma) < 0 ||
		    db_commit(db) < 0) {
			if (disk_full(db))
				describe_error(db, path, err, errlen);
			else
				snprintf(err, errlen, "schema migration to version %d failed: %s",
					 v + 1, db_errmsg(db));
			db_rollback(db);
			return -1;
		}
		if (!fresh)
			log_info("store.migrated version=%d", v + 1);
	}
}

/* The store's schema on PostgreSQL: the steps of pg_migrations under
 * db_migrate's advisory lock. */
static int migrate_pg(struct db *db, const char *shown, char *err, size_t errlen)
{
	struct db_migration steps[SCHEMA_VERSION];
	for (int i = 0; i < SCHEMA_VERSION; i++)
		steps[i] = (struct db_migration){pg_migrations[i], pg_migrations[i]};
	int applied = 0;
	if (db_migrate(db, "store", steps, SCHEMA_VERSION, &applied) < 0) {
		snprintf(err, errlen, "state database %s: %s", shown, db_errmsg(db));
		return -1;
	}
	if (applied && applied < SCHEMA_VERSION)
		log_info("store.migrated version=%d", SCHEMA_VERSION);
	return 0;
}

static int schema_version(struct db *db)
{
	return db_engine(db) == DB_POSTGRES ? db_schema_version(db, "store") : user_version(db);
}

/* A PostgreSQL state: reached, its schema brought up to date. */
static struct db *open_pg(const char *dsn, char *err, size_t errlen, int *unavailable)
{
	char *shown = dsn_redact(dsn);
	char why[512];
	struct db *db = db_open(dsn, why, sizeof why, unavailable);
	if (!db)
		snprintf(err, errlen, "state database %s: %s", shown, why);
	else if (migrate_pg(db, shown, err, errlen) < 0) {
		if (unavailable)
			*unavailable = db_unavailable(db);
		db_close(db);
		db = NULL;
	}
	free(shown);
	return db;
}

struct db *store_open_readonly(const char *path, int *stale)
{
	char err[512];
	*stale = 0;
	struct db *db = is_pg_dsn(path)
			    ? db_open(path, err, sizeof err, NULL)
			    : db_open_flags(path, DB_OPEN_READONLY, err, sizeof err, NULL);
	if (!db)
		return NULL;
	if (schema_version(db) != SCHEMA_VERSION) {
		*stale = 1;
		db_close(db);
		return NULL;
	}
	return db;
}

/* Why a database could not be opened, with what the admin can do. */
static void open_error(struct db *db, const char *path, const char *detail, char *err,
		       size_t errlen)
{
	sqlite3 *sq = db_sqlite_handle(db);
	int rc = sq ? sqlite3_errcode(sq) & 0xff : 0;
	if (disk_full(db))
		describe_error(db, path, err, errlen);
	else if (rc == SQLITE_CORRUPT || rc == SQLITE_NOTADB)
		snprintf(err, errlen,
			 "state database %s is corrupt or not a mailfeed state database (%s); "
			 "restore it from a backup, or move it away to start afresh",
			 path, detail);
	else
		snprintf(err, errlen, "state database %s is not usable: %s", path, detail);
}

/* A quick structural check catches a damaged file before we trust it; a
 * check that cannot run (disk full, I/O error) says why instead.  A file
 * with tables but no schema version belongs to another program. */
static int check_file(struct db *db, const char *path, char *err, size_t errlen)
{
	struct db_stmt *s = db_prepare(db, "PRAGMA quick_check(1)");
	int ok = 0;
	if (s && db_step(s) == DB_ROW) {
		const char *r = db_column_text(s, 0);
		ok = r && strcmp(r, "ok") == 0;
		if (!ok) {
			snprintf(err, errlen,
				 "state database %s is corrupt (%s); restore it from a backup, or "
				 "move it away to start afresh",
				 path, r ? r : "unreadable");
			for (char *c = err; *c; c++) /* SQLite's report spans lines */
				if (*c == '\n' || *c == '\r' || *c == '\t')
					*c = ' ';
		}
	} else {
		open_error(db, path, db_errmsg(db), err, errlen);
	}
	db_finalize(s);
	if (!ok)
		return -1;
	if (user_version(db) == 0 && has_tables(db)) {
		snprintf(err, errlen,
			 "%s is an SQLite database of another program, not a mailfeed state "
			 "database; point [gateway] state at a file of its own",
			 path);
		return -1;
	}
	return 0;
}

/* The state holds mail and tokens: its directory is made 0700 and the
 * file 0600 whatever the umask (SQLite gives its -wal and -shm files the
 * mode of the database file). */
void store_prepare_dir(const char *path)
{
	if (!path || !*path || strcmp(path, ":memory:") == 0 || strncmp(path, "file:", 5) == 0)
		return;
	char *dir = xstrdup(path);
	char *slash = strrchr(dir, '/');
	if (slash && slash != dir) {
		*slash = 0;
		for (char *p = dir + 1; *p; p++) {
			if (*p != '/')
				continue;
			*p = 0;
			if (mkdir(dir, 0700) == 0)
				chmod(dir, 0700);
			*p = '/';
		}
		if (mkdir(dir, 0700) == 0)
			chmod(dir, 0700);
	}
	free(dir);
}

static int prepare_file(const char *path, char *err, size_t errlen)
{
	if (!*path || strcmp(path, ":memory:") == 0 || strncmp(path, "file:", 5) == 0)
		return 0;
	store_prepare_dir(path);
	int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return 0; /* there already (or not creatable: SQLite says why) */
	int e = fchmod(fd, 0600) == 0 ? 0 : errno;
	close(fd);
	if (e) {
		snprintf(err, errlen, "cannot set mode 0600 on state database %s: %s", path,
			 strerror(e));
		return -1;
	}
	return 0;
}

/* A state database of ours that others may read is made private. */
static void tighten_mode(const char *path)
{
	struct stat sb;
	if (!*path || strcmp(path, ":memory:") == 0 || strncmp(path, "file:", 5) == 0)
		return;
	if (stat(path, &sb) == 0 && S_ISREG(sb.st_mode) && (sb.st_mode & 077) &&
	    sb.st_uid == geteuid() && chmod(path, sb.st_mode & 0700) == 0)
		log_warn("store.mode_tightened path=%s was=%04o now=%04o", path,
			 (unsigned)(sb.st_mode & 07777), (unsigned)(sb.st_mode & 0700));
}

static struct store *store_new(struct db *db, const char *path)
{
	struct store *st = xcalloc(1, sizeof *st);
	st->db = db;
	st->path = dsn_redact(path);
	return st;
}

struct store *store_open(const char *path, char *err, size_t errlen)
{
	return store_open_why(path, err, errlen, NULL);
}

struct store *store_open_why(const char *path, char *err, size_t errlen, int *unavailable)
{
	if (unavailable)
		*unavailable = 0;
	if (is_pg_dsn(path)) {
		struct db *db = open_pg(path, err, errlen, unavailable);
		return db ? store_new(db, path) : NULL;
	}
	if (prepare_file(path, err, errlen) < 0)
		return NULL;
	/* without its settings: the file is checked before anything is
	 * written, and the WAL setting already changes it */
	struct db *db = db_open_flags(path, DB_OPEN_NO_SETUP, err, errlen, NULL);
	if (!db)
		return NULL;
	/* a state that another process is creating this very moment (its
	 * journal mode being set) can answer "database is locked" at once,
	 * without waiting: asked again for up to 10 s */
	for (int tries = 0;; tries++) {
		int rc = check_file(db, path, err, errlen);
		if (rc == 0 && db_setup(db) < 0) {
			open_error(db, path, db_errmsg(db), err, errlen);
			rc = -1;
		}
		if (rc == 0)
			break;
		if (!db_unavailable(db) || tries >= 200)
			goto fail;
		usleep(50 * 1000);
	}
	if (migrate(db, path, err, errlen) < 0)
		goto fail;
	tighten_mode(path);
	return store_new(db, path);
fail:
	db_close(db);
	return NULL;
}

void store_close(struct store *st)
{
	if (!st)
		return;
	for (size_t i = 0; i < st->n_stmts; i++)
		db_finalize(st->stmts[i].s);
	db_close(st->db);
	free(st->path);
	free(st);
}

struct db *store_db(struct store *st) { return st->db; }

static char *instance_id;

void store_set_instance_id(const char *id)
{
	free(instance_id);
	instance_id = id ? xstrdup(id) : NULL;
}

const char *store_instance(struct store *st)
{
	(void)st;
	if (!instance_id) {
		char host[256] = "";
		if (gethostname(host, sizeof host - 1) < 0 || !*host)
			snprintf(host, sizeof host, "localhost");
		instance_id = xasprintf("%s:%ld", host, (long)getpid());
	}
	return instance_id;
}

/* Remembers the connection's current failure, so that it can still be
 * told after a ROLLBACK. */
static const char *note_error(struct store *st)
{
	describe_error(st->db, st->path, st->err, sizeof st->err);
	snprintf(st->err_of, sizeof st->err_of, "%s", db_errmsg(st->db));
	return st->err;
}

struct db_stmt *store_stmt(struct store *st, const char *sql)
{
	struct db_stmt *s = NULL;
	size_t i;
	for (i = 0; i < st->n_stmts && st->stmts[i].sql != sql; i++)
		;
	if (i < st->n_stmts && !st->stmts[i].out) {
		st->stmts[i].out = 1;
		return st->stmts[i].s;
	}
	if (!(s = db_prepare(st->db, sql))) {
		note_error(st);
		return NULL;
	}
	if (i == st->n_stmts && i < STORE_STMTS) {
		st->stmts[i].sql = sql;
		st->stmts[i].s = s;
		st->stmts[i].out = 1;
		st->n_stmts++;
	}
	return s;
}

void store_stmt_done(struct store *st, struct db_stmt *s)
{
	if (!s)
		return;
	for (size_t i = 0; i < st->n_stmts; i++) {
		if (st->stmts[i].s == s) {
			db_reset(s);
			st->stmts[i].out = 0;
			return;
		}
	}
	db_finalize(s);
}

const char *store_errmsg(struct store *st)
{
	/* a failure already noted keeps its description (a rollback since
	 * may have cleared what made it a full disk) */
	if (db_error(st->db) != DB_ERR_NONE &&
	    (!st->err[0] || strcmp(st->err_of, db_errmsg(st->db)) != 0))
		return note_error(st);
	return st->err;
}

static void log_failure(struct store *st, const char *sql)
{
	char q[256], e[600];
	log_error("store.error sql=%s error=%s", log_quote(sql, q, sizeof q),
		  log_quote(note_error(st), e, sizeof e));
}

int store_exec(struct store *st, const char *sql)
{
	if (db_exec(st->db, sql) < 0) {
		log_failure(st, sql);
		return -1;
	}
	return 0;
}

int store_begin(struct store *st)
{
	if (db_begin(st->db) < 0) {
		log_failure(st, "BEGIN IMMEDIATE");
		return -1;
	}
	return 0;
}

int store_commit(struct store *st)
{
	if (db_commit(st->db) < 0) {
		log_failure(st, "COMMIT");
		store_rollback(st);
		return -1;
	}
	return 0;
}

void store_rollback(struct store *st) { db_rollback(st->db); }

struct db_stmt *store_prep(struct store *st, const char *sql)
{
	struct db_stmt *s = NULL;
	if (!(s = db_prepare(st->db, sql))) {
		log_error("store.error prepare=failed error=%s", LOG_Q(note_error(st)));
		return NULL;
	}
	return s;
}

int store_prune_rows(struct store *st, const char *sql, time_t cutoff)
{
	struct db_stmt *s = store_prep(st, sql);
	if (s)
		db_bind_int64(s, 1, (int64_t)cutoff);
	if (store_run(st, s) < 0)
		return -1;
	return (int)db_changes(st->db);
}

int store_run(struct store *st, struct db_stmt *s)
{
	if (!s)
		return -1;
	int rc = db_step(s);
	db_finalize(s);
	if (rc != DB_DONE && rc != DB_ROW) {
		log_error("store.error error=%s", LOG_Q(note_error(st)));
		return -1;
	}
	return 0;
}

struct db_stmt *store_kept(struct store *st, const char *sql)
{
	struct db_stmt *s = store_stmt(st, sql);
	if (!s)
		log_error("store.error prepare=failed error=%s", LOG_Q(note_error(st)));
	return s;
}

int store_run_kept(struct store *st, struct db_stmt *s)
{
	if (!s)
		return -1;
	int rc = db_step(s);
	if (rc != DB_DONE && rc != DB_ROW) {
		log_error("store.error error=%s", LOG_Q(note_error(st)));
		store_stmt_done(st, s);
		return -1;
	}
	store_stmt_done(st, s);
	return 0;
}

int store_folder_get(struct store *st, const char *mailbox, struct folder_state *fs)
{
	struct db_stmt *s =
	    store_prep(st, "SELECT uidvalidity, last_uid FROM folders WHERE mailbox=?");
	memset(fs, 0, sizeof *fs);
	if (!s)
		return -1;
	db_bind_text(s, 1, mailbox, -1);
	if (db_step(s) == DB_ROW) {
		fs->uidvalidity = (uint32_t)db_column_int64(s, 0);
		fs->last_uid = (uint32_t)db_column_int64(s, 1);
	}
	db_finalize(s);
	return 0;
}

int store_folder_select(struct store *st, const char *mailbox, const char *account,
			const char *folder, uint32_t uidvalidity, int *changed)
{
	struct folder_state fs;
	*changed = 0;
	if (store_folder_get(st, mailbox, &fs) < 0)
		return -1;
	if (fs.uidvalidity != 0 && fs.uidvalidity != uidvalidity)
		*changed = 1;
	struct db_stmt *s = store_prep(
	    st, "INSERT INTO folders(mailbox, account, folder, uidvalidity, last_uid, last_event)"
		" VALUES(?1, ?2, ?3, ?4, 0, ?5) ON CONFLICT(mailbox) DO UPDATE SET"
		" account=?2, folder=?3, last_event=?5,"
		" last_uid=CASE WHEN folders.uidvalidity=?4 THEN folders.last_uid ELSE 0 END,"
		" uidvalidity=?4");
	if (!s)
		return -1;
	db_bind_text(s, 1, mailbox, -1);
	db_bind_text(s, 2, account, -1);
	db_bind_text(s, 3, folder, -1);
	db_bind_int64(s, 4, uidvalidity);
	db_bind_int64(s, 5, (int64_t)time(NULL));
	return store_run(st, s);
}

int store_folder_ok(struct store *st, const char *mailbox)
{
	struct db_stmt *s =
	    store_prep(st, "UPDATE folders SET last_ok=?2, last_event=?2, last_error=NULL"
			   " WHERE mailbox=?1");
	if (!s)
		return -1;
	db_bind_text(s, 1, mailbox, -1);
	db_bind_int64(s, 2, (int64_t)time(NULL));
	return store_run(st, s);
}

int store_folder_error(struct store *st, const char *mailbox, const char *error)
{
	struct db_stmt *s = store_prep(
	    st, "INSERT INTO folders(mailbox, account, folder, last_error, last_error_at)"
		" VALUES(?1, '', '', ?2, ?3) ON CONFLICT(mailbox) DO UPDATE SET"
		" last_error=?2, last_error_at=?3");
	if (!s)
		return -1;
	db_bind_text(s, 1, mailbox, -1);
	db_bind_text(s, 2, error, -1);
	db_bind_int64(s, 3, (int64_t)time(NULL));
	return store_run(st, s);
}

int store_folder_advance(struct store *st, const char *mailbox, uint32_t uid)
{
	/* once per message taken in: kept prepared.  Only forward, also when
	 * two instances advance it at once: on PostgreSQL the second UPDATE
	 * waits for the first and compares with the row it committed. */
	struct db_stmt *s = store_stmt(
	    st, "UPDATE folders SET last_uid=CASE WHEN last_uid < ?2 THEN ?2 ELSE last_uid END"
		" WHERE mailbox=?1");
	if (!s)
		return -1;
	db_bind_text(s, 1, mailbox, -1);
	db_bind_int64(s, 2, uid);
	int rc = db_step(s);
	store_stmt_done(st, s);
	if (rc != DB_DONE) {
		char e[600];
		log_error("store.error error=%s", log_quote(note_error(st), e, sizeof e));
		return -1;
	}
	return 0;
}

int store_prune_due(struct store *st, time_t now)
{
	if (st->pruned_at && now - st->pruned_at < STORE_PRUNE_EVERY)
		return 0;
	st->pruned_at = now;
	return 1;
}

static char *text_dup(struct db_stmt *s, int col)
{
	const char *t = db_column_text(s, col);
	return t ? xstrdup(t) : NULL;
}

/* One row of "SELECT mailbox, account, folder, uidvalidity, last_uid,
 * last_ok, last_error, last_error_at, last_event FROM folders". */
static void folder_row(struct db_stmt *s, struct folder_status *fs)
{
	fs->mailbox = text_dup(s, 0);
	fs->account = text_dup(s, 1);
	fs->folder = text_dup(s, 2);
	fs->uidvalidity = (uint32_t)db_column_int64(s, 3);
	fs->last_uid = (uint32_t)db_column_int64(s, 4);
	fs->last_ok = (time_t)db_column_int64(s, 5);
	fs->last_error = text_dup(s, 6);
	fs->last_error_at = (time_t)db_column_int64(s, 7);
	fs->last_event = (time_t)db_column_int64(s, 8);
}

#define FOLDER_COLUMNS                                                                             \
	"SELECT mailbox, account, folder, uidvalidity, last_uid, last_ok, last_error,"             \
	" last_error_at, last_event FROM folders"

int store_folder_status(struct store *st, const char *mailbox, struct folder_status *fs)
{
	struct db_stmt *s = store_prep(st, FOLDER_COLUMNS " WHERE mailbox=?");
	int found = 0;
	memset(fs, 0, sizeof *fs);
	if (!s)
		return -1;
	db_bind_text(s, 1, mailbox, -1);
	if (db_step(s) == DB_ROW) {
		folder_row(s, fs);
		found = 1;
	}
	db_finalize(s);
	return found;
}

int store_folders_list(struct store *st, struct folder_status **list, size_t *n)
{
	struct db_stmt *s = store_prep(st, FOLDER_COLUMNS " ORDER BY mailbox");
	*list = NULL;
	*n = 0;
	if (!s)
		return -1;
	while (db_step(s) == DB_ROW) {
		*list = xrealloc(*list, (*n + 1) * sizeof **list);
		folder_row(s, &(*list)[(*n)++]);
	}
	db_finalize(s);
	return 0;
}

void store_folder_status_free(struct folder_status *fs)
{
	free(fs->mailbox);
	free(fs->account);
	free(fs->folder);
	free(fs->last_error);
	memset(fs, 0, sizeof *fs);
}

void store_folders_free(struct folder_status *list, size_t n)
{
	for (size_t i = 0; i < n; i++)
		store_folder_status_free(&list[i]);
	free(list);
}
