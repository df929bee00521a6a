/* store.h — durable state in one SQLite database.
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
 *   messages     every message taken in: raw bytes, ids, state, reason
 *   threads, thread_ids   thread of each Message-ID per group
 *   outbox       posts/comments to deliver, with idempotency key and state
 *   attachments  files of outbox items
 *   subscribers, digest_runs, notices, sent_ids   digests and replies
 *   feed_members, feed_subscribers, feed_member_reads   digest subscribers
 *                taken from the feed's group membership
 *   local_items  the built-in local feed
 */
#ifndef MAILFEED_STORE_H
#define MAILFEED_STORE_H

#include <jansson.h>
#include <sqlite3.h>
#include <stdint.h>
#include <time.h>

struct store;

/* Opens (creating and migrating when needed) the database at path.
 * Returns NULL with a message in err on failure (corrupt file, disk full,
 * newer schema than this binary knows). */
struct store *store_open(const char *path, char *err, size_t errlen);
/* Creates the missing directories above the state file path, 0700
 * whatever the umask (store_open does it too; the state lock needs them
 * first). */
void store_prepare_dir(const char *path);
void store_close(struct store *st);
sqlite3 *store_db(struct store *st);

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
 * sqlite3_finalize; a statement asked for while its twin is still out is
 * prepared afresh and finalized when given back.  NULL on a prepare error
 * (store_errmsg tells). */
sqlite3_stmt *store_stmt(struct store *st, const char *sql);
void store_stmt_done(struct store *st, sqlite3_stmt *s);

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

struct stored_message {
	const char *mailbox;
	uint32_t uidvalidity;
	uint32_t uid;
	const char *message_id;   /* may be NULL */
	int64_t size;
	time_t internaldate;
	const char *raw;          /* NULL when skipped without fetching */
	size_t raw_len;
	const char *state;        /* "new" or "skipped" */
	const char *reason;       /* for skipped */
};

/* Inserts a message and advances the folder checkpoint to its UID in one
 * transaction.  A message already known (same mailbox/uidvalidity/uid, or —
 * after a UIDVALIDITY change — same Message-ID and content hash) is not
 * inserted again; *inserted tells which.  Returns 0 or -1. */
int store_message_add(struct store *st, const struct stored_message *m, int *inserted);
/* The same inside the caller's transaction, so that a batch of messages
 * and the checkpoint after its last one commit (and fsync) together. */
int store_message_add_tx(struct store *st, const struct stored_message *m, int *inserted);

/* What is known of a message stored without its content (too large):
 * parsed = JSON {"from": {"name", "email"}, "subject"} from its header. */
int store_message_describe(struct store *st, const char *mailbox, uint32_t uidvalidity,
			   uint32_t uid, const char *parsed);

/* Whether a message with this Message-ID and hash is already stored for the
 * mailbox (UIDVALIDITY resync). */
int store_message_known(struct store *st, const char *mailbox, const char *message_id,
			const char *sha256);

/* UIDs of this mailbox/uidvalidity whose after-action is due (message safe:
 * delivered, skipped with a reason, or dropped from the dead list) and not
 * yet done.  A dead message waits. */
int store_acks_due(struct store *st, const char *mailbox, uint32_t uidvalidity,
		   uint32_t **uids, size_t *n);
int store_acks_done(struct store *st, const char *mailbox, uint32_t uidvalidity,
		    const uint32_t *uids, size_t n);
/* The dead mark ($MailfeedDead on the server): messages to mark, marked
 * ones whose after-action is now due (to unmark first), and the due ones. */
enum ack_query { ACK_DUE, ACK_TO_MARK, ACK_TO_UNMARK };
int store_acks_select(struct store *st, const char *mailbox, uint32_t uidvalidity,
		      enum ack_query q, uint32_t **uids, size_t *n);
/* Sets acked (0 waiting, 1 done, 2 marked dead) of uids. */
int store_acks_set(struct store *st, const char *mailbox, uint32_t uidvalidity,
		   const uint32_t *uids, size_t n, int acked);

/* Retention: forgets the raw mail of messages that are finished
 * (delivered, handled, or dropped from the dead list) and the file bytes
 * of delivered or dropped items, keep_raw seconds after that; reply
 * Message-IDs older than id_lifetime and notices older than two days go
 * too.  Mail still waiting, retrying or on the dead list keeps its bytes.
 * Runs at most once per STORE_PRUNE_EVERY seconds of now per connection.
 * Returns the rows changed, or -1. */
#define STORE_PRUNE_EVERY 60
int store_prune(struct store *st, long keep_raw, long id_lifetime, time_t now);

/* Dedupe on Message-ID plus content: the hash of what a message says —
 * sender address, subject, full text, attachment digests (not the
 * original.eml copy, whose headers differ from folder to folder) — taken
 * from its JSON form (message_to_json), into out (65 bytes). */
void store_content_hash(json_t *parsed, char out[65]);
/* The outbox item `key` (of m's Message-ID) exists.  1 when it says the
 * same as m, or cannot be compared: m is a duplicate.  Else key becomes
 * one of m's content and note says why; 0, or 1 when that key is taken
 * too (this copy came before). */
struct mf_message;
int store_key_for_content(sqlite3 *db, const struct mf_message *m, char key[40], char *note,
			  size_t notelen);

#endif
