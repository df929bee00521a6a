/* messages.c — the messages table: its states and their names, taking
 * messages in exactly once (message + checkpoint in one transaction), the
 * state changes the pipeline, backfill and the outbox ask for, the
 * after-action rule and the after-actions the server refused (the
 * ack_errors table), retention of raw mail, dedupe on content, and the
 * counts status and the metrics show.  The only module with SQL on these
 * tables; the states and their transitions are listed in messages.h.
 * Rules that depend on a message's outbox items (after-action due, dead
 * or retried posts, dedupe on content) read outbox.c's table, read-only,
 * inside the statement that changes or chooses the message. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mailfeed/log.h"
#include "mailfeed/message.h"
#include "mailfeed/messages.h"
#include "mailfeed/util.h"

/* The names stored in the database: never change one.  SQL below quotes
 * them with Q() so that every state string comes from here. */
#define S_NEW "new"
#define S_HELD "held"
#define S_QUEUED "queued"
#define S_SKIPPED "skipped"
#define S_HANDLED "handled"
#define S_DEAD "dead"
#define S_DELIVERED "delivered"
#define S_DROPPED "dropped"
#define Q(s) "'" s "'"

static const char *const state_names[MSG_STATE_COUNT] = {
    [MSG_NEW] = S_NEW,
    [MSG_HELD] = S_HELD,
    [MSG_QUEUED] = S_QUEUED,
    [MSG_SKIPPED] = S_SKIPPED,
    [MSG_HANDLED] = S_HANDLED,
    [MSG_DEAD] = S_DEAD,
    [MSG_DELIVERED] = S_DELIVERED,
    [MSG_DROPPED] = S_DROPPED,
};

const char *msg_state_name(enum msg_state s)
{
	return (unsigned)s < MSG_STATE_COUNT ? state_names[s] : NULL;
}

int msg_state_parse(const char *name, enum msg_state *s)
{
	for (int i = 0; name && i < MSG_STATE_COUNT; i++)
		if (strcmp(name, state_names[i]) == 0) {
			*s = (enum msg_state)i;
			return 0;
		}
	return -1;
}

int msg_after_action_due(enum msg_state s, int has_item)
{
	return s == MSG_DELIVERED || s == MSG_SKIPPED || s == MSG_HANDLED || s == MSG_DROPPED ||
	       (s == MSG_DEAD && !has_item);
}

/* The same rule in SQL, on a row of messages (acked: 0 not yet,
 * 1 after-action done, 2 marked $MailfeedDead and waiting). */
#define HAS_ITEM "EXISTS(SELECT 1 FROM outbox o WHERE o.message=messages.id)"
#define AFTER_ACTION_DUE                                                                           \
	"(state IN (" Q(S_DELIVERED) "," Q(S_SKIPPED) "," Q(S_HANDLED) "," Q(                      \
	    S_DROPPED) ")"                                                                         \
		       " OR (state=" Q(S_DEAD) " AND NOT " HAS_ITEM "))"

/* No outbox item of the message is on its way: all delivered or dropped. */
#define NONE_ON_ITS_WAY                                                                            \
	"NOT EXISTS(SELECT 1 FROM outbox WHERE message=messages.id"                                \
	" AND state NOT IN ('delivered','dropped'))"

/* One statement on one message id (?1) in the caller's transaction. */
static int update_id(struct store *st, const char *sql, int64_t id)
{
	struct db_stmt *s = store_prep(st, sql);
	if (s)
		db_bind_int64(s, 1, id);
	return store_run(st, s);
}

/* --- taking messages in ----------------------------------------------- */

int store_message_known(struct store *st, const char *mailbox, const char *message_id,
			const char *sha256)
{
	struct db_stmt *s;
	int known = 0;
	/* once per message taken in: kept prepared */
	if (message_id)
		s = store_kept(st, "SELECT 1 FROM messages WHERE mailbox=?1 AND message_id=?2"
				   " AND sha256=?3 LIMIT 1");
	else
		s = store_kept(st, "SELECT 1 FROM messages WHERE mailbox=?1 AND message_id IS NULL"
				   " AND sha256=?2 LIMIT 1");
	if (!s)
		return 0;
	db_bind_text(s, 1, mailbox, -1);
	if (message_id)
		db_bind_text(s, 2, message_id, -1);
	/* every parameter is used: PostgreSQL cannot type an unused one */
	db_bind_text(s, message_id ? 3 : 2, sha256, -1);
	if (db_step(s) == DB_ROW)
		known = 1;
	store_stmt_done(st, s);
	return known;
}

/* The raw bytes of message id, in the row of its body. */
static int body_add(struct store *st, int64_t id, const char *raw, size_t len)
{
	struct db_stmt *s = store_kept(st, "INSERT INTO message_bodies(message, raw) VALUES(?, ?)"
					   " ON CONFLICT(message) DO NOTHING");
	if (!s)
		return -1;
	db_bind_int64(s, 1, id);
	db_bind_blob(s, 2, raw, (size_t)(len));
	return store_run_kept(st, s);
}

/* The parsed form of message id, in a row of its own. */
static int body_set_parsed(struct store *st, int64_t id, const char *parsed)
{
	/* once per message: kept prepared */
	struct db_stmt *s =
	    store_stmt(st, "INSERT INTO message_parsed(message, parsed) VALUES(?1, ?2)"
			   " ON CONFLICT(message) DO UPDATE SET parsed=?2");
	if (!s)
		return -1;
	db_bind_int64(s, 1, id);
	db_bind_text(s, 2, parsed, -1);
	int rc = db_step(s);
	store_stmt_done(st, s);
	return rc == DB_DONE ? 0 : -1;
}

/* The message has its raw bytes (SQL on a row of messages). */
#define HAS_RAW                                                                                    \
	"EXISTS(SELECT 1 FROM message_bodies b WHERE b.message=messages.id AND b.raw IS NOT NULL)"

int store_message_add_tx(struct store *st, const struct stored_message *m, int *inserted)
{
	char hash[65];
	const char *state = msg_state_name(m->state);
	*inserted = 0;
	if (m->raw && m->sha256)
		snprintf(hash, sizeof hash, "%s", m->sha256);
	else if (m->raw)
		sha256_hex(m->raw, m->raw_len, hash);
	else
		snprintf(hash, sizeof hash, "size:%lld", (long long)m->size);
	if (!store_message_known(st, m->mailbox, m->message_id, hash)) {
		struct db_stmt *s = store_kept(
		    st, "INSERT INTO messages(mailbox, uidvalidity, uid, message_id,"
			" size, internaldate, sha256, state, reason, received_at)"
			" VALUES(?,?,?,?,?,?,?,?,?,?) ON CONFLICT(mailbox, uidvalidity, uid)"
			" DO NOTHING RETURNING id");
		if (!s)
			return -1;
		db_bind_text(s, 1, m->mailbox, -1);
		db_bind_int64(s, 2, m->uidvalidity);
		db_bind_int64(s, 3, m->uid);
		if (m->message_id)
			db_bind_text(s, 4, m->message_id, -1);
		db_bind_int64(s, 5, m->size);
		db_bind_int64(s, 6, (int64_t)m->internaldate);
		db_bind_text(s, 7, hash, -1);
		db_bind_text(s, 8, state ? state : S_NEW, -1);
		if (m->reason)
			db_bind_text(s, 9, m->reason, -1);
		db_bind_int64(s, 10, (int64_t)time(NULL));
		int rc = db_step(s); /* a row: the id of the new message */
		int64_t id = rc == DB_ROW ? db_column_int64(s, 0) : 0;
		store_stmt_done(st, s);
		if (rc != DB_ROW && rc != DB_DONE) {
			char e[600];
			log_error("store.error error=%s", log_quote(store_errmsg(st), e, sizeof e));
			return -1;
		}
		*inserted = rc == DB_ROW;
		if (*inserted && m->raw && body_add(st, id, m->raw, m->raw_len) < 0)
			return -1;
	}
	return store_folder_advance(st, m->mailbox, m->uid);
}

int store_message_describe(struct store *st, const char *mailbox, uint32_t uidvalidity,
			   uint32_t uid, const char *parsed)
{
	struct db_stmt *s =
	    store_prep(st, "SELECT id FROM messages WHERE mailbox=? AND uidvalidity=?"
			   " AND uid=? AND NOT " HAS_RAW);
	int64_t id = 0;
	if (!s)
		return -1;
	db_bind_text(s, 1, mailbox, -1);
	db_bind_int64(s, 2, uidvalidity);
	db_bind_int64(s, 3, uid);
	if (db_step(s) == DB_ROW)
		id = db_column_int64(s, 0);
	db_finalize(s);
	return id ? body_set_parsed(st, id, parsed) : 0;
}

/* Stored as too large (no content) and not described yet. */
#define LARGE_UNDESCRIBED                                                                          \
	"SELECT uid, size FROM messages WHERE mailbox=? AND uidvalidity=? AND state=" Q(           \
	    S_SKIPPED) " AND reason LIKE 'too large%' AND NOT " HAS_RAW                            \
		       " AND NOT EXISTS(SELECT 1 FROM message_parsed p"                            \
		       " WHERE p.message=messages.id) ORDER BY uid"

int messages_large_undescribed(struct store *st, const char *mailbox, uint32_t uidvalidity,
			       uint32_t **uids, uint32_t **sizes, size_t *n)
{
	struct db_stmt *s = store_prep(st, LARGE_UNDESCRIBED);
	*uids = NULL;
	*sizes = NULL;
	*n = 0;
	if (!s)
		return -1;
	db_bind_text(s, 1, mailbox, -1);
	db_bind_int64(s, 2, uidvalidity);
	int rc;
	while ((rc = db_step(s)) == DB_ROW) {
		*uids = xrealloc(*uids, (*n + 1) * sizeof **uids);
		*sizes = xrealloc(*sizes, (*n + 1) * sizeof **sizes);
		(*uids)[*n] = (uint32_t)db_column_int64(s, 0);
		(*sizes)[(*n)++] = (uint32_t)db_column_int64(s, 1);
	}
	db_finalize(s);
	return rc == DB_DONE ? 0 : -1;
}

int store_message_add(struct store *st, const struct stored_message *m, int *inserted)
{
	if (store_begin(st) < 0)
		return -1;
	if (store_message_add_tx(st, m, inserted) < 0) {
		store_rollback(st);
		*inserted = 0;
		return -1;
	}
	if (store_commit(st) < 0) {
		*inserted = 0;
		return -1;
	}
	return 0;
}

size_t messages_drop_known(struct store *st, const char *mailbox, uint32_t uidvalidity,
			   uint32_t *uids, size_t n)
{
	struct db_stmt *s =
	    store_prep(st, "SELECT 1 FROM messages WHERE mailbox=? AND uidvalidity=? AND uid=?");
	size_t kept = 0;
	if (!s)
		return n;
	for (size_t i = 0; i < n; i++) {
		db_bind_text(s, 1, mailbox, -1);
		db_bind_int64(s, 2, uidvalidity);
		db_bind_int64(s, 3, uids[i]);
		if (db_step(s) != DB_ROW)
			uids[kept++] = uids[i];
		db_reset(s);
	}
	db_finalize(s);
	return kept;
}

/* --- after-actions ------------------------------------------------------ */

int store_acks_select(struct store *st, const char *mailbox, uint32_t uidvalidity, enum ack_query q,
		      uint32_t **uids, size_t *n)
{
	static const char *const sql[] = {
	    [ACK_DUE] = "SELECT uid FROM messages WHERE mailbox=? AND uidvalidity=?"
			" AND acked IN (0,2) AND " AFTER_ACTION_DUE " ORDER BY uid LIMIT 1000",
	    [ACK_TO_MARK] =
		"SELECT uid FROM messages WHERE mailbox=? AND uidvalidity=?"
		" AND acked=0 AND state=" Q(S_DEAD) " AND " HAS_ITEM " ORDER BY uid LIMIT 1000",
	    [ACK_TO_UNMARK] = "SELECT uid FROM messages WHERE mailbox=? AND uidvalidity=?"
			      " AND acked=2 AND " AFTER_ACTION_DUE " ORDER BY uid LIMIT 1000",
	};
	struct db_stmt *s = store_prep(st, sql[q]);
	size_t cap = 0;
	*uids = NULL;
	*n = 0;
	if (!s)
		return -1;
	db_bind_text(s, 1, mailbox, -1);
	db_bind_int64(s, 2, uidvalidity);
	while (db_step(s) == DB_ROW) {
		if (*n == cap) {
			cap = cap ? cap * 2 : 64;
			*uids = xrealloc(*uids, cap * sizeof **uids);
		}
		(*uids)[(*n)++] = (uint32_t)db_column_int64(s, 0);
	}
	db_finalize(s);
	return 0;
}

int store_acks_due(struct store *st, const char *mailbox, uint32_t uidvalidity, uint32_t **uids,
		   size_t *n)
{
	return store_acks_select(st, mailbox, uidvalidity, ACK_DUE, uids, n);
}

int store_acks_set(struct store *st, const char *mailbox, uint32_t uidvalidity,
		   const uint32_t *uids, size_t n, int acked)
{
	if (store_begin(st) < 0)
		return -1;
	struct db_stmt *s = store_prep(
	    st, "UPDATE messages SET acked=? WHERE mailbox=? AND uidvalidity=? AND uid=?");
	if (!s) {
		store_rollback(st);
		return -1;
	}
	for (size_t i = 0; i < n; i++) {
		db_bind_int64(s, 1, acked);
		db_bind_text(s, 2, mailbox, -1);
		db_bind_int64(s, 3, uidvalidity);
		db_bind_int64(s, 4, uids[i]);
		db_step(s);
		db_reset(s);
	}
	db_finalize(s);
	return store_commit(st);
}

int store_acks_done(struct store *st, const char *mailbox, uint32_t uidvalidity,
		    const uint32_t *uids, size_t n)
{
	return store_acks_set(st, mailbox, uidvalidity, uids, n, 1);
}

int messages_acks_refused(struct store *st, const char *mailbox, uint32_t uidvalidity,
			  time_t *next_at, char **error)
{
	struct db_stmt *s =
	    store_prep(st, "SELECT COUNT(*), MIN(next_at), MAX(error) FROM ack_errors e"
			   " WHERE mailbox=?1 AND uidvalidity=?2 AND EXISTS(SELECT 1 FROM"
			   " messages m WHERE m.mailbox=e.mailbox AND"
			   " m.uidvalidity=e.uidvalidity AND m.uid=e.uid AND m.acked=0)");
	int count = -1;
	*next_at = 0;
	*error = NULL;
	if (!s)
		return -1;
	db_bind_text(s, 1, mailbox, -1);
	db_bind_int64(s, 2, uidvalidity);
	if (db_step(s) == DB_ROW) {
		count = (int)db_column_int64(s, 0);
		*next_at = (time_t)db_column_int64(s, 1);
		if (db_column_text(s, 2))
			*error = xstrdup(db_column_text(s, 2));
	}
	db_finalize(s);
	return count;
}

/* The table was added without a migration: states made before it get it
 * on first use on SQLite; PostgreSQL's schema has it from the start. */
int messages_acks_table(struct store *st)
{
	if (db_engine(store_db(st)) != DB_SQLITE)
		return 0;
	return db_exec(store_db(st),
		       "CREATE TABLE IF NOT EXISTS ack_errors("
		       " mailbox TEXT NOT NULL, uidvalidity INTEGER NOT NULL, uid INTEGER NOT NULL,"
		       " error TEXT NOT NULL, attempts INTEGER NOT NULL, next_at INTEGER NOT NULL,"
		       " PRIMARY KEY(mailbox, uidvalidity, uid))") == 0
		   ? 0
		   : -1;
}

void messages_acks_not_waiting(struct store *st, const char *mailbox, uint32_t uidvalidity,
			       uint32_t *uids, size_t *n, time_t now)
{
	struct db_stmt *q;
	size_t k = 0;
	if (!(q = db_prepare(store_db(st),
			     "SELECT 1 FROM ack_errors WHERE mailbox=?1 AND uidvalidity=?2"
			     " AND uid=?3 AND next_at > ?4")))
		return;
	for (size_t i = 0; i < *n; i++) {
		db_bind_text(q, 1, mailbox, -1);
		db_bind_int64(q, 2, uidvalidity);
		db_bind_int64(q, 3, uids[i]);
		db_bind_int64(q, 4, (int64_t)now);
		if (db_step(q) != DB_ROW)
			uids[k++] = uids[i];
		db_reset(q);
	}
	db_finalize(q);
	*n = k;
}

void messages_acks_note(struct store *st, const char *mailbox, uint32_t uidvalidity,
			const uint32_t *uids, size_t n, const char *error, time_t now)
{
	struct db_stmt *q;
	const char *sql =
	    error ? "INSERT INTO ack_errors(mailbox, uidvalidity, uid, error, attempts, next_at)"
		    " VALUES(?1, ?2, ?3, ?4, 1, ?5 + 60) ON CONFLICT(mailbox, uidvalidity, uid)"
		    " DO UPDATE SET error=?4, attempts=ack_errors.attempts+1,"
		    " next_at=?5 + CASE WHEN ack_errors.attempts >= 6 THEN 3600"
		    " ELSE 60 * (1 << CAST(ack_errors.attempts AS INTEGER)) END"
		  : "DELETE FROM ack_errors WHERE mailbox=?1 AND uidvalidity=?2 AND uid=?3";
	if (!(q = db_prepare(store_db(st), sql)))
		return;
	store_begin(st);
	for (size_t i = 0; i < n; i++) {
		db_bind_text(q, 1, mailbox, -1);
		db_bind_int64(q, 2, uidvalidity);
		db_bind_int64(q, 3, uids[i]);
		if (error) {
			db_bind_text(q, 4, error, -1);
			db_bind_int64(q, 5, (int64_t)now);
		}
		db_step(q);
		db_reset(q);
	}
	db_finalize(q);
	store_commit(st);
}

/* --- backfill ------------------------------------------------------------ */

long messages_held_count(struct store *st, const char *mailbox)
{
	struct db_stmt *s =
	    store_prep(st, "SELECT COUNT(*) FROM messages WHERE mailbox=? AND state=" Q(S_HELD));
	long n = -1;
	if (!s)
		return -1;
	db_bind_text(s, 1, mailbox, -1);
	if (db_step(s) == DB_ROW)
		n = (long)db_column_int64(s, 0);
	db_finalize(s);
	return n;
}

int messages_release_held(struct store *st, const char *mailbox, long n)
{
	if (store_begin(st) < 0)
		return -1;
	struct db_stmt *s = store_prep(
	    st, "UPDATE messages SET state=" Q(
		    S_NEW) " WHERE id IN"
			   " (SELECT id FROM messages WHERE mailbox=?1"
			   " AND state=" Q(S_HELD) " ORDER BY internaldate, id LIMIT ?2)");
	if (s) {
		db_bind_text(s, 1, mailbox, -1);
		db_bind_int64(s, 2, n);
	}
	if (store_run(st, s) < 0) {
		store_rollback(st);
		return -1;
	}
	return store_commit(st);
}

void messages_forget_held(struct store *st, const char *mailbox, time_t before)
{
	struct db_stmt *s = store_prep(st, "DELETE FROM messages WHERE mailbox=? AND state=" Q(
					       S_HELD) " AND internaldate < ?");
	if (!s)
		return;
	db_bind_text(s, 1, mailbox, -1);
	db_bind_int64(s, 2, (int64_t)before);
	store_run(st, s);
}

/* --- the pipeline ------------------------------------------------------- */

int messages_set_state(struct store *st, int64_t id, enum msg_state state, const char *reason,
		       const char *parsed)
{
	const char *name = msg_state_name(state);
	struct db_stmt *s;
	if (!name)
		return -1;
	/* once per message: kept prepared */
	if (!(s = store_stmt(st, "UPDATE messages SET state=?2, reason=?3 WHERE id=?1")))
		return -1;
	db_bind_int64(s, 1, id);
	db_bind_text(s, 2, name, -1);
	if (reason)
		db_bind_text(s, 3, reason, -1);
	int rc = db_step(s);
	store_stmt_done(st, s);
	if (rc != DB_DONE)
		return -1;
	return parsed ? body_set_parsed(st, id, parsed) : 0;
}

int messages_new_ids(struct store *st, const char *replies_key, const char *const *mailboxes,
		     size_t n_mailboxes, int min_attempts, int limit, int64_t **ids, int **attempts,
		     size_t *n)
{
	struct buf sql;
	struct db_stmt *s;
	*ids = NULL;
	*attempts = NULL;
	*n = 0;
	buf_init(&sql);
	buf_puts(&sql, "SELECT id, parse_attempts FROM messages WHERE state=" Q(
			   S_NEW) " AND " HAS_RAW " AND mailbox IN (?1");
	for (size_t i = 0; i < n_mailboxes; i++)
		buf_printf(&sql, ",?%zu", i + 3);
	buf_printf(&sql, ") AND parse_attempts >= %d ORDER BY internaldate, id LIMIT ?2",
		   min_attempts);
	s = store_prep(st, sql.data);
	buf_free(&sql);
	if (!s)
		return -1;
	/* ?1: the replies mailbox, or a name no mapping can have */
	db_bind_text(s, 1, replies_key ? replies_key : "", -1);
	db_bind_int64(s, 2, limit);
	for (size_t i = 0; i < n_mailboxes; i++)
		db_bind_text(s, (int)i + 3, mailboxes[i], -1);
	while (db_step(s) == DB_ROW) {
		*ids = xrealloc(*ids, (*n + 1) * sizeof **ids);
		*attempts = xrealloc(*attempts, (*n + 1) * sizeof **attempts);
		(*ids)[*n] = db_column_int64(s, 0);
		(*attempts)[(*n)++] = (int)db_column_int64(s, 1);
	}
	db_finalize(s);
	return 0;
}

int messages_count_attempts(struct store *st, const int64_t *ids, size_t n)
{
	struct db_stmt *s;
	int rc = -1;
	if (n == 0)
		return 0;
	/* SQLite: a lost count costs one parse more, not worth a flush */
	int sqlite = db_engine(store_db(st)) == DB_SQLITE;
	if (sqlite)
		store_exec(st, "PRAGMA synchronous=NORMAL");
	if (store_begin(st) == 0) {
		if ((s = store_prep(st, "UPDATE messages SET parse_attempts=parse_attempts+1"
					" WHERE id=?"))) {
			rc = 0;
			for (size_t i = 0; i < n && rc == 0; i++) {
				db_reset(s);
				db_bind_int64(s, 1, ids[i]);
				rc = db_step(s) == DB_DONE ? 0 : -1;
			}
			db_finalize(s);
		}
		if (rc == 0)
			rc = store_commit(st);
		else
			store_rollback(st);
	}
	if (sqlite)
		store_exec(st, "PRAGMA synchronous=FULL");
	return rc;
}

void messages_forget_attempts(struct store *st, const int64_t *ids, size_t n)
{
	struct db_stmt *s =
	    store_prep(st, "UPDATE messages SET parse_attempts=0 WHERE id=? AND state=" Q(S_NEW));
	if (!s)
		return;
	for (size_t i = 0; i < n; i++) {
		db_reset(s);
		db_bind_int64(s, 1, ids[i]);
		db_step(s);
	}
	db_finalize(s);
}

int messages_raw(struct store *st, int64_t id, char **mailbox, char **raw, size_t *len)
{
	/* once per message: kept prepared */
	struct db_stmt *s = store_stmt(st, "SELECT m.mailbox, b.raw FROM messages m"
					   " JOIN message_bodies b ON b.message=m.id WHERE m.id=?");
	int rc;
	*mailbox = *raw = NULL;
	*len = 0;
	if (!s)
		return -1;
	db_bind_int64(s, 1, id);
	rc = db_step(s);
	if (rc == DB_ROW && !db_column_is_null(s, 1)) {
		*mailbox = xstrdup(db_column_text(s, 0));
		const void *blob = db_column_blob(s, 1, len);
		*raw = xmalloc(*len + 1);
		if (*len)
			memcpy(*raw, blob, *len);
		(*raw)[*len] = 0;
	}
	store_stmt_done(st, s); /* no read open while verdicts are written */
	if (rc != DB_ROW && rc != DB_DONE)
		return -1;
	return *raw != NULL;
}

/* --- what the outbox tells ------------------------------------------------ */

int messages_follow_delivered(struct store *st, int64_t id)
{
	if (id <= 0)
		return 0;
	/* once per item: kept prepared */
	struct db_stmt *s =
	    store_stmt(st, "UPDATE messages SET state=" Q(
			       S_DELIVERED) ","
					    " reason=CASE WHEN state=" Q(
						S_QUEUED) " THEN reason END"
							  " WHERE id=?1 AND " NONE_ON_ITS_WAY);
	if (!s)
		return -1;
	db_bind_int64(s, 1, id);
	int rc = db_step(s);
	store_stmt_done(st, s);
	if (rc != DB_DONE) {
		char e[600];
		log_error("store.error error=%s", log_quote(store_errmsg(st), e, sizeof e));
		return -1;
	}
	return 0;
}

int messages_follow_dead_posts(struct store *st, const char *why)
{
	/* driven from the (few) dead posts through the parent index, so the
	 * cost does not grow with the queue */
	struct db_stmt *s = store_prep(
	    st, "UPDATE messages SET state=" Q(
		    S_DEAD) ", reason=?1 WHERE id IN"
			    " (SELECT c.message FROM outbox c WHERE c.parent IN"
			    " (SELECT id FROM outbox WHERE state IN ('dead','dropped'))"
			    " AND c.kind='comment' AND c.state IN ('pending','retrying'))");
	if (s)
		db_bind_text(s, 1, why, -1);
	return store_run(st, s);
}

int messages_follow_retried(struct store *st)
{
	return store_run(
	    st, store_prep(st, "UPDATE messages SET state=" Q(
				   S_QUEUED) ", reason=NULL"
					     " WHERE state=" Q(
						 S_DEAD) " AND id IN (SELECT message"
							 " FROM outbox WHERE state='pending')"));
}

#define ON_DEAD_LIST "state IN (" Q(S_SKIPPED) "," Q(S_DEAD) ")"

int messages_dead_content(struct store *st, int64_t id)
{
	struct db_stmt *s =
	    store_prep(st, "SELECT NOT " HAS_RAW " FROM messages WHERE id=? AND " ON_DEAD_LIST);
	int rc = 0;
	if (!s)
		return -1;
	db_bind_int64(s, 1, id);
	if (db_step(s) == DB_ROW)
		rc = (int)db_column_int64(s, 0) ? 2 : 1;
	db_finalize(s);
	return rc;
}

int messages_retry(struct store *st, int64_t id)
{
	return update_id(st,
			 "UPDATE messages SET state=" Q(S_NEW) ", reason=NULL, parse_attempts=0"
							       " WHERE id=?1 AND " ON_DEAD_LIST,
			 id);
}

int messages_drop(struct store *st, int64_t id)
{
	return update_id(
	    st, "UPDATE messages SET state=" Q(S_DROPPED) " WHERE id=?1 AND " ON_DEAD_LIST, id);
}

int messages_drop_of_item(struct store *st, int64_t item)
{
	/* done with, unless another item of it is still on its way */
	return update_id(
	    st,
	    "UPDATE messages SET state=" Q(S_DROPPED) " WHERE state=" Q(
		S_DEAD) " AND id=(SELECT message FROM outbox WHERE id=?1) AND " NONE_ON_ITS_WAY,
	    item);
}

/* --- what status and metrics show ---------------------------------------- */

/* How many rows meet cond (both engines: PostgreSQL sums no booleans). */
#define COUNT_IF(cond) "SUM(CASE WHEN " cond " THEN 1 ELSE 0 END)"

int messages_counts(struct store *st, const char *mailbox, struct messages_counts *c)
{
	struct db_stmt *s = store_prep(
	    st,
	    "SELECT COUNT(*), " COUNT_IF("state IN (" Q(S_SKIPPED) "," Q(
		S_HANDLED) ")") ","
				" " COUNT_IF("state=" Q(S_NEW)) ", " COUNT_IF("state=" Q(
				    S_QUEUED)) ","
					       " " COUNT_IF("state=" Q(
						   S_DEAD)) ","
							    " MIN(CASE WHEN state IN (" Q(
								S_NEW) "," Q(S_QUEUED) ") THEN "
										       "received_"
										       "at END)"
										       " FROM "
										       "messages "
										       "WHERE "
										       "mailbox=?");
	memset(c, 0, sizeof *c);
	if (!s)
		return -1;
	db_bind_text(s, 1, mailbox, -1);
	if (db_step(s) == DB_ROW) {
		c->stored = db_column_int64(s, 0);
		c->skipped = db_column_int64(s, 1);
		c->fresh = db_column_int64(s, 2);
		c->queued = db_column_int64(s, 3);
		c->dead = db_column_int64(s, 4);
		c->oldest_waiting = (time_t)db_column_int64(s, 5);
	}
	db_finalize(s);
	return 0;
}

int messages_each_count(struct store *st,
			void (*fn)(void *ctx, const char *mailbox, const char *state, long long n),
			void *ctx)
{
	struct db_stmt *s =
	    store_prep(st, "SELECT mailbox, state, COUNT(*) FROM messages GROUP BY 1, 2");
	if (!s)
		return -1;
	while (db_step(s) == DB_ROW)
		fn(ctx, db_column_text(s, 0), db_column_text(s, 1),
		   (long long)db_column_int64(s, 2));
	db_finalize(s);
	return 0;
}

/* --- retention and dedupe ----------------------------------------------- */

int messages_prune_raw(struct store *st, time_t cutoff)
{
	/* finished mail: delivered, handled, or dropped from the dead list;
	 * none of its items still on its way or delivered after cutoff.  The
	 * parsed form stays (dedupe compares it); with secure_delete the
	 * bytes of the mail are overwritten. */
	return store_prune_rows(
	    st,
	    "DELETE FROM message_bodies WHERE EXISTS(SELECT 1"
	    " FROM messages WHERE messages.id=message_bodies.message AND received_at <= ?1"
	    " AND (state IN (" Q(S_DELIVERED) "," Q(S_HANDLED) "," Q(
		S_DROPPED) ")"
			   " OR (" ON_DEAD_LIST " AND EXISTS(SELECT 1 FROM outbox o WHERE"
			   " o.message=messages.id AND o.state='dropped')))"
			   " AND NOT EXISTS(SELECT 1 FROM outbox o WHERE o.message=messages.id"
			   " AND (o.state NOT IN ('delivered','dropped')"
			   " OR COALESCE(o.delivered_at,0) > ?1)))",
	    cutoff);
}

/* s as the JSON form holds it (json_str_or_null): NULL as "", text that
 * is not UTF-8 with its bytes above 0x7f as '?'. */
static void put_content_field(struct buf *b, const char *s)
{
	size_t n = s ? strlen(s) : 0;
	if (n && !utf8_valid(s, n)) {
		for (size_t i = 0; i < n; i++)
			buf_putc(b, (unsigned char)s[i] > 0x7f ? '?' : s[i]);
	} else if (n) {
		buf_append(b, s, n);
	}
	buf_putc(b, '\0');
}

/* attach_original's copy differs with every folder's headers */
static int is_original_copy(const char *name, const char *type)
{
	return name && type && strcmp(name, "original.eml") == 0 &&
	       strcmp(type, "message/rfc822") == 0;
}

void store_content_hash(json_t *parsed, char out[65])
{
	/* the parsed form of a queued message keeps the hash, not its text */
	const char *kept = json_string_value(json_object_get(parsed, "content_sha256"));
	if (kept && strlen(kept) == 64) {
		memcpy(out, kept, 65);
		return;
	}
	struct buf b;
	buf_init(&b);
	const char *fields[] = {
	    json_string_value(json_object_get(json_object_get(parsed, "from"), "email")),
	    json_string_value(json_object_get(parsed, "subject")),
	    json_string_value(json_object_get(parsed, "full_text")),
	};
	for (size_t i = 0; i < 3; i++)
		put_content_field(&b, fields[i]);
	size_t i;
	json_t *a;
	json_array_foreach(json_object_get(parsed, "attachments"), i, a)
	{
		if (is_original_copy(json_string_value(json_object_get(a, "filename")),
				     json_string_value(json_object_get(a, "content_type"))))
			continue;
		put_content_field(&b, json_string_value(json_object_get(a, "sha256")));
	}
	sha256_hex(b.data ? b.data : "", b.len, out);
	buf_free(&b);
}

void messages_content_hash(const struct mf_message *m, char out[65])
{
	struct buf b;
	buf_init(&b);
	put_content_field(&b, m->from_email);
	put_content_field(&b, m->subject);
	put_content_field(&b, m->full_text);
	for (size_t i = 0; i < m->n_attachments; i++) {
		const struct mf_attachment *a = &m->attachments[i];
		if (!is_original_copy(a->filename, a->content_type))
			put_content_field(&b, a->sha256);
	}
	sha256_hex(b.data ? b.data : "", b.len, out);
	buf_free(&b);
}

int store_key_for_content(struct db *db, const struct mf_message *m, char key[40], char *note,
			  size_t notelen)
{
	char hash[65], h[65];
	messages_content_hash(m, hash);
	struct db_stmt *s;
	int same = -1;
	if (!(s = db_prepare(
		  db, "SELECT p.parsed FROM outbox o JOIN message_parsed p ON p.message=o.message"
		      " WHERE o.key=?")))
		return 1;
	db_bind_text(s, 1, key, -1);
	if (db_step(s) == DB_ROW && db_column_text(s, 0)) {
		json_t *p = json_loads(db_column_text(s, 0), 0, NULL);
		if (p) {
			store_content_hash(p, h);
			same = strcmp(h, hash) == 0;
			json_decref(p);
		}
	}
	db_finalize(s);
	if (same != 0)
		return 1; /* the same, or nothing to compare: a duplicate */
	char *src = xasprintf("%s\n%s", key, hash);
	sha256_hex(src, strlen(src), h);
	free(src);
	snprintf(note, notelen,
		 "Message-ID also used by item %s with other content (forged or changed copy); "
		 "both kept",
		 key);
	snprintf(key, 40, "mf-%.32s", h);
	if (!(s = db_prepare(db, "SELECT 1 FROM outbox WHERE key=?")))
		return 1;
	db_bind_text(s, 1, key, -1);
	int known = db_step(s) == DB_ROW;
	db_finalize(s);
	return known;
}
