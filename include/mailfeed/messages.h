/* messages.h — the `messages` table: every message taken in, its state
 * and the reason for it; `message_bodies` and `message_parsed`: its raw
 * bytes and its parsed form, each in a row of its own so that a change of
 * state (or recording the parsed form) rewrites a small row.  Only
 * messages.c writes the tables; every other module asks through the
 * functions below (the dead list in outbox.c reads them).
 *
 * States (stored as the names of msg_state_name, which never change) and
 * every transition, with the module that asks for it:
 *
 *   (taken in)  -> new        ingest.c: fetched, waits for the pipeline
 *   (taken in)  -> held       ingest.c for backfill: older mail, waits
 *   (taken in)  -> skipped    ingest.c: over max_message_size, not fetched
 *   held        -> new        cmd_backfill.c: released at the chosen rate
 *   held        -> (deleted)  cmd_backfill.c: older than the new SINCE
 *   new         -> queued     pipeline.c, replies.c: its post or comment
 *                             is in the outbox
 *   new         -> skipped    pipeline.c, replies.c: refused by the
 *                             classification, or a refused reply
 *   new         -> handled    pipeline.c: a duplicate the group already has;
 *                             replies.c: an email command carried out
 *   new         -> dead       pipeline.c: the parser gave it up, or the
 *                             daemon stopped twice while parsing it
 *   queued      -> delivered  outbox.c: each item of it delivered or dropped
 *   queued      -> dead       outbox.c: its item went dead, or the post its
 *                             comment hangs on did
 *   dead        -> queued     outbox.c: its item retried from the dead list
 *   skipped, dead -> new      outbox.c: retried from the dead list (mN)
 *   skipped, dead -> dropped  outbox.c: dropped from the dead list
 *   queued, dead -> delivered outbox.c: its last item on its way delivered
 *                             (a dead one whose other item is delivered
 *                             after its dead item was dropped)
 *
 * The IMAP after-action (seen/move/delete) of a message is due once its
 * work is done: msg_after_action_due says when.
 *
 * Several instances on one PostgreSQL state (read committed): the writes
 * that two processes may do at once are safe as they are.  Taking a
 * message in is idempotent on (mailbox, uidvalidity, uid): the second
 * insert of the same UID does nothing (ON CONFLICT DO NOTHING, waiting for
 * the first to commit) and *inserted says 0; the folder checkpoint only
 * moves forward (store_folder_advance re-reads the committed row); the
 * after-action refusals are one upsert per message.  The changes of state
 * from new on (parse, classify, thread, enqueue: pipeline.c) are made only
 * by the instance holding the "process" lease, so they need no guard
 * against a second writer. */
#ifndef MAILFEED_MESSAGES_H
#define MAILFEED_MESSAGES_H

#include "mailfeed/db.h"
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "mailfeed/store.h"

enum msg_state {
	MSG_NEW,
	MSG_HELD,
	MSG_QUEUED,
	MSG_SKIPPED,
	MSG_HANDLED,
	MSG_DEAD,
	MSG_DELIVERED,
	MSG_DROPPED,
	MSG_STATE_COUNT
};

/* The name stored in the database ("new", "held", ...); NULL when s is
 * not a state. */
const char *msg_state_name(enum msg_state s);
/* The state called name: 0, or -1 (nothing set) for a name that is not
 * one of them. */
int msg_state_parse(const char *name, enum msg_state *s);

/* The after-action rule: a message's IMAP after-action is due when it was
 * delivered, skipped, handled (duplicate or command) or dropped from the
 * dead list, or when it went dead before it became an outbox item (the
 * parser gave it up: recorded with its reason, done with).  A message
 * whose item is dead (has_item) waits, marked $MailfeedDead, until it is
 * delivered or dropped. */
int msg_after_action_due(enum msg_state s, int has_item);

/* --- taking messages in (ingest.c) ------------------------------------ */

struct stored_message {
	const char *mailbox;
	uint32_t uidvalidity;
	uint32_t uid;
	const char *message_id; /* may be NULL */
	int64_t size;
	time_t internaldate;
	const char *raw; /* NULL when skipped without fetching */
	size_t raw_len;
	enum msg_state state; /* MSG_NEW, MSG_HELD or MSG_SKIPPED */
	const char *reason;   /* for skipped */
	const char *sha256;   /* of raw in hex, when the caller has it; NULL: computed */
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
/* The UIDs and sizes (both the caller's to free) of the folder's messages
 * stored as too large and not described yet (a fetch broke, or the daemon
 * stopped, after their batch was committed), in UID order.  0 or -1. */
int messages_large_undescribed(struct store *st, const char *mailbox, uint32_t uidvalidity,
			       uint32_t **uids, uint32_t **sizes, size_t *n);

/* Whether a message with this Message-ID and hash is already stored for the
 * mailbox (UIDVALIDITY resync). */
int store_message_known(struct store *st, const char *mailbox, const char *message_id,
			const char *sha256);

/* Keeps in uids (in order) those of mailbox/uidvalidity not stored yet;
 * returns how many (n when the state cannot be read). */
size_t messages_drop_known(struct store *st, const char *mailbox, uint32_t uidvalidity,
			   uint32_t *uids, size_t n);

/* UIDs of this mailbox/uidvalidity whose after-action is due
 * (msg_after_action_due) and not yet done.  A dead message waits. */
int store_acks_due(struct store *st, const char *mailbox, uint32_t uidvalidity, uint32_t **uids,
		   size_t *n);
int store_acks_done(struct store *st, const char *mailbox, uint32_t uidvalidity,
		    const uint32_t *uids, size_t n);
/* The dead mark ($MailfeedDead on the server): messages to mark, marked
 * ones whose after-action is now due (to unmark first), and the due ones. */
enum ack_query { ACK_DUE, ACK_TO_MARK, ACK_TO_UNMARK };
int store_acks_select(struct store *st, const char *mailbox, uint32_t uidvalidity, enum ack_query q,
		      uint32_t **uids, size_t *n);
/* Sets acked (0 waiting, 1 done, 2 marked dead) of uids. */
int store_acks_set(struct store *st, const char *mailbox, uint32_t uidvalidity,
		   const uint32_t *uids, size_t n, int acked);

/* After-actions the server refused, one row per message (table
 * ack_errors): what it said, how often, and when to try again, kept beside
 * the messages so that a restart neither forgets the backoff nor hammers
 * the server.  messages_acks_table makes sure the table exists (states
 * older than it); 0, or -1. */
int messages_acks_table(struct store *st);
/* Leaves in uids (in order, *n updated) those whose after-action is not
 * waiting for a retry at now. */
void messages_acks_not_waiting(struct store *st, const char *mailbox, uint32_t uidvalidity,
			       uint32_t *uids, size_t *n, time_t now);
/* Records a refusal with error for uids (attempts + 1, the next try at now
 * plus a delay doubling from a minute to an hour), or clears them after
 * success (error NULL); in one transaction. */
void messages_acks_note(struct store *st, const char *mailbox, uint32_t uidvalidity,
			const uint32_t *uids, size_t n, const char *error, time_t now);
/* The after-actions of mailbox/uidvalidity the server refused of messages
 * still waiting for one: how many (or -1), when the next try is due and
 * one of the errors (owned, may be NULL). */
int messages_acks_refused(struct store *st, const char *mailbox, uint32_t uidvalidity,
			  time_t *next_at, char **error);

/* --- backfill (cmd_backfill.c) ---------------------------------------- */

/* How many held messages mailbox has, or -1. */
long messages_held_count(struct store *st, const char *mailbox);
/* Hands the oldest n held messages of mailbox to the pipeline (new), in
 * a transaction of its own.  0 or -1. */
int messages_release_held(struct store *st, const char *mailbox, long n);
/* Forgets the held messages of mailbox whose INTERNALDATE is before
 * `before`. */
void messages_forget_held(struct store *st, const char *mailbox, time_t before);

/* --- the pipeline (pipeline.c, replies.c) ----------------------------- */

/* Sets the state and reason (NULL: none) of message id, and its parsed
 * form when parsed (JSON text) is not NULL.  Inside the caller's
 * transaction, if any.  0 or -1. */
int messages_set_state(struct store *st, int64_t id, enum msg_state state, const char *reason,
		       const char *parsed);
/* The ids of new messages with their content, oldest first, of the
 * mailboxes named (replies_key: the [replies] mailbox, or NULL), at most
 * limit, whose parse was started at least min_attempts times; with the
 * count of those starts.  Owned arrays.  0 or -1. */
int messages_new_ids(struct store *st, const char *replies_key, const char *const *mailboxes,
		     size_t n_mailboxes, int min_attempts, int limit, int64_t **ids, int **attempts,
		     size_t *n);
/* Counts a parse started for each of ids, in a transaction of its own
 * that survives the daemon being killed (no fsync: see pipeline.c). */
int messages_count_attempts(struct store *st, const int64_t *ids, size_t n);
/* Those of ids still new start again with no parse attempt counted. */
void messages_forget_attempts(struct store *st, const int64_t *ids, size_t n);
/* The mailbox and raw bytes (NUL-terminated, owned) of message id: 1, or
 * 0 when it is gone or has no content, or -1. */
int messages_raw(struct store *st, int64_t id, char **mailbox, char **raw, size_t *len);

/* --- what the outbox tells (outbox.c) --------------------------------- */

/* The message is delivered once none of its outbox items is on its way
 * (all delivered or dropped); the reason of a queued one stays. */
int messages_follow_delivered(struct store *st, int64_t id);
/* Messages of the comments waiting on a dead or dropped post go dead with
 * reason why.  0 or -1. */
int messages_follow_dead_posts(struct store *st, const char *why);
/* Dead messages with an item pending again are queued again. */
int messages_follow_retried(struct store *st);
/* A skipped or dead message of the dead list: 1 with its content, 2
 * without (it was never fetched), 0 when there is none such, -1. */
int messages_dead_content(struct store *st, int64_t id);
/* Back to new, parse attempts forgotten, if skipped or dead.  Inside the
 * caller's transaction.  0 or -1; db_changes tells whether it was. */
int messages_retry(struct store *st, int64_t id);
/* Dropped from the dead list, if skipped or dead.  As messages_retry. */
int messages_drop(struct store *st, int64_t id);
/* The message of outbox item `item` is dropped when dead and no other item
 * of it is on its way.  As messages_retry. */
int messages_drop_of_item(struct store *st, int64_t item);

/* --- what status and metrics show ------------------------------------ */

struct messages_counts {
	long long stored;  /* every message of the mailbox */
	long long skipped; /* skipped or handled */
	long long fresh;   /* new: waiting for the pipeline */
	long long queued;  /* waiting for the feed */
	long long dead;
	time_t oldest_waiting; /* received_at of the oldest new or queued, 0 */
};
int messages_counts(struct store *st, const char *mailbox, struct messages_counts *c);
/* Calls fn for each (mailbox, state) with its number of messages. */
int messages_each_count(struct store *st,
			void (*fn)(void *ctx, const char *mailbox, const char *state, long long n),
			void *ctx);

/* --- retention and dedupe -------------------------------------------- */

/* Forgets the raw mail of finished messages received at or before cutoff
 * (see retention.h), inside the caller's transaction.  Rows changed, or
 * -1. */
int messages_prune_raw(struct store *st, time_t cutoff);

/* Dedupe on Message-ID plus content: the hash of what a message says —
 * sender address, subject, full text, attachment digests (not the
 * original.eml copy, whose headers differ from folder to folder) — taken
 * from its JSON form (message_to_json, or the parsed form the state keeps:
 * that of a queued message holds the hash itself as "content_sha256"),
 * into out (65 bytes). */
void store_content_hash(json_t *parsed, char out[65]);
/* The same hash of m itself, without building its JSON form. */
struct mf_message;
void messages_content_hash(const struct mf_message *m, char out[65]);
/* The outbox item `key` (of m's Message-ID) exists.  1 when it says the
 * same as m, or cannot be compared: m is a duplicate.  Else key becomes
 * one of m's content and note says why; 0, or 1 when that key is taken
 * too (this copy came before). */
struct mf_message;
int store_key_for_content(struct db *db, const struct mf_message *m, char key[40], char *note,
			  size_t notelen);

#endif
