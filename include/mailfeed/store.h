/* store.h — durable state in one SQLite database, reached through the
 * engine-neutral statement interface of db.h (store_db), so that the same
 * modules can later run on PostgreSQL.
 *
 * Writer discipline: every thread opens its own connection with store_open();
 * connections run in WAL mode with a busy timeout, and every write is one
 * short BEGIN IMMEDIATE transaction (store_begin/store_commit).  Data that
 * lets the IMAP server forget a message (stored messages, checkpoints,
 * delivered outbox items) is committed with synchronous=FULL so it survives
 * power loss before the server is told.  No transaction is held across
 * network I/O.
 *
 * Tables (schema in store.c, versioned by PRAGMA user_version):
 *   folders      per mapping: uidvalidity, last_uid checkpoint, last ok/error
 *   messages     every message taken in: ids, state, reason
 *   message_bodies, message_parsed  its raw bytes and its parsed form,
 *                apart so that state changes rewrite small rows (all three
 *                owned by messages.c, see messages.h)
 *   threads, thread_ids   thread of each Message-ID per group
 *   outbox       posts/comments to deliver, with idempotency key and state
 *   attachments  files of outbox items
 *   subscribers, mutes   subscriptions and muted threads (subscribers.c)
 *   feed_members, feed_subscribers, feed_member_reads   digest subscribers
 *                taken from the feed's group membership (subscribers.c)
 *   digest_runs  digest periods recorded as sent (digest.c)
 *   reply_posts, reply_users, sent_ids   what a reply answers: the ids in
 *                tokens, the Message-IDs of mail sent (token.c)
 *   notices      which notice went to whom, when (notice.c)
 *   notice_queue notices waiting for the relay (notice_queue.c)
 *   ack_errors   after-actions the server refused (messages.c)
 *   daemon       notes and counters (notes.c)
 *   local_items  the built-in local feed (feed_local.c)
 * Each table has one owning module (threads: thread.c; outbox and
 * attachments: outbox.c; folders: store.c); the others ask through its
 * header.  store.c keeps the schema; retention.c has each owner prune its rows.
 */
#ifndef MAILFEED_STORE_H
#define MAILFEED_STORE_H

#include "mailfeed/db.h"
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct store;

/* Opens (creating and migrating when needed) the database at path.
 * Returns NULL with a message in err on failure (corrupt file, disk full,
 * newer schema than this binary knows). */
struct store *store_open(const char *path, char *err, size_t errlen);
/* store_open that also tells why it failed: *unavailable (may be NULL) 1
 * when the database server could not be reached or went away (pause and
 * retry later; not the state's fault), 0 otherwise. */
struct store *store_open_why(const char *path, char *err, size_t errlen, int *unavailable);
/* path may also be a postgresql:// DSN: the state in PostgreSQL, shared by
 * several instances (schema versioned by db_migrate "store", the same
 * version numbers as on SQLite). */

/* This process's name among the instances sharing a state, for the claims
 * it takes (outbox.claimed_by and the like): set by the daemon from its
 * cluster registration; "<host>:<pid>" until then.  Not thread-safe to
 * set: set it before the threads start. */
void store_set_instance_id(const char *id);
const char *store_instance(struct store *st);
/* The database at path opened read-only, for a command that only looks
 * (inspect, preview): never created or migrated.  NULL when it cannot be
 * opened, or when its schema is not the one this mailfeed writes (*stale
 * set to 1: an older state not yet upgraded, or a newer one), whose
 * queries would fail or mislead. */
struct db *store_open_readonly(const char *path, int *stale);
/* What such a command says of a stale state (one %s: its path). */
#define STORE_STALE_NOTE                                                                           \
	"mailfeed: the state database %s is of another schema version than this "                  \
	"mailfeed (not yet upgraded?); decided without it: run `mailfeed status` "                 \
	"once to upgrade it\n"
/* Creates the missing directories above the state file path, 0700
 * whatever the umask (store_open does it too; the state lock needs them
 * first). */
void store_prepare_dir(const char *path);
void store_close(struct store *st);
struct db *store_db(struct store *st);

/* BEGIN IMMEDIATE / COMMIT / ROLLBACK. 0 on success, -1 (logged) on error. */
int store_begin(struct store *st);
int store_commit(struct store *st);
void store_rollback(struct store *st);
/* Runs one statement without results; -1 (logged) on error. */
int store_exec(struct store *st, const char *sql);
const char *store_errmsg(struct store *st);

/* A prepared statement kept for the life of the connection, for the
 * statements run once per message or item: the same SQL text (the same
 * string literal: it is looked up by address) gets the same statement back,
 * unbound and reset.  Give it back with store_stmt_done, never
 * db_finalize; a statement asked for while its twin is still out is
 * prepared afresh and finalized when given back.  NULL on a prepare error
 * (store_errmsg tells). */
struct db_stmt *store_stmt(struct store *st, const char *sql);
void store_stmt_done(struct store *st, struct db_stmt *s);
/* For the owning modules: a statement prepared, or NULL with the reason
 * logged (store.error); one stepped once and finalized, 0 or -1 logged.
 * store_kept/store_run_kept do the same for a statement kept prepared
 * (store_stmt), given back after its step. */
struct db_stmt *store_prep(struct store *st, const char *sql);
int store_run(struct store *st, struct db_stmt *s);
struct db_stmt *store_kept(struct store *st, const char *sql);
int store_run_kept(struct store *st, struct db_stmt *s);
/* For retention: runs sql (a DELETE or UPDATE) with ?1 bound to cutoff.
 * The rows it changed, or -1 logged. */
int store_prune_rows(struct store *st, const char *sql, time_t cutoff);

/* --- folders and ingestion ------------------------------------------- */

struct folder_state {
	uint32_t uidvalidity;
	uint32_t last_uid;
};

/* Current checkpoint of a mapping (zeroes when never seen). */
int store_folder_get(struct store *st, const char *mailbox, struct folder_state *fs);
/* Records the account/folder of a mapping and its UIDVALIDITY.  When it
 * differs from the stored one the checkpoint is reset to 0 and *changed=1. */
int store_folder_select(struct store *st, const char *mailbox, const char *account,
			const char *folder, uint32_t uidvalidity, int *changed);
int store_folder_ok(struct store *st, const char *mailbox);
int store_folder_error(struct store *st, const char *mailbox, const char *error);
/* Advances the checkpoint (never backwards). Call inside a transaction. */
int store_folder_advance(struct store *st, const char *mailbox, uint32_t uid);

/* What `status` and the metrics show of a mapping's folder. */
struct folder_status {
	char *mailbox, *account, *folder; /* owned */
	uint32_t uidvalidity, last_uid;
	time_t last_ok, last_event; /* 0: never */
	char *last_error;	    /* owned; NULL when none */
	time_t last_error_at;
};
/* The row of mailbox: 1 (fs filled, free with store_folder_status_free),
 * 0 when the state has none (fs zeroed), -1. */
int store_folder_status(struct store *st, const char *mailbox, struct folder_status *fs);
/* Every folder the state knows, by mailbox name.  Owned array.  0 or -1. */
int store_folders_list(struct store *st, struct folder_status **list, size_t *n);
void store_folder_status_free(struct folder_status *fs);
void store_folders_free(struct folder_status *list, size_t n);

/* Retention (retention.c asks each table's owner) runs at most once per
 * STORE_PRUNE_EVERY seconds of now per connection: 1 when a pass is due
 * now (and counted as done), 0 otherwise. */
#define STORE_PRUNE_EVERY 60
int store_prune_due(struct store *st, time_t now);

#endif
