/* ingest.h — IMAP ingest: folder sync into the state and after-actions.
 * Used by the watcher threads and `run --once` (cmd_run.c). */
#ifndef MAILFEED_INGEST_H
#define MAILFEED_INGEST_H

#include <stdatomic.h>

#include "mailfeed/config.h"
#include "mailfeed/imap.h"
#include "mailfeed/messages.h"
#include "mailfeed/store.h"

/* One folder as ingest sees it (borrowed strings). */
struct ingest_folder {
	const char *key; /* mapping name, or the replies key */
	const struct mf_account *acct;
	const char *folder;
	long long max_size;
	enum start_mode start; /* on the mapping's first sight */
	long start_since;
	const struct mf_config *cfg; /* for notices to senders; NULL: none */
	/* The right to work on the folder now (a lease held, cluster.h): asked
	 * before the fetch and before each message is stored or committed (by
	 * the thread that stores, see ingest_take); without it the uncommitted
	 * batch is rolled back and the sync ends with INGEST_LEASE_LOST.
	 * NULL: always. */
	int (*may_work)(void *arg);
	void *may_work_arg;
};

/* Syncs one folder: select, detect UIDVALIDITY changes, fetch every new
 * message and store it with its checkpoint.  On the mapping's first sight
 * the mail already there is passed over as f->start says.  *stop is polled
 * between messages.  Returns 0, or -1 with err (the server), or
 * INGEST_STORE_FAILED with err when the state database refused the work (a
 * full disk, say). */
#define INGEST_STORE_FAILED (-2)
#define INGEST_LEASE_LOST (-3)
int ingest_sync_folder(struct imap_session *s, struct store *st, const struct ingest_folder *f,
		       atomic_int *stop, int *new_messages, char *err, size_t errlen);
/* Fetches uids of the selected folder and stores them in state (MSG_NEW,
 * or MSG_HELD for backfill), in batches; the checkpoint never moves back.  A
 * message over f->max_size is recorded as skipped with its sender and
 * subject, and the sender is told.  *inserted counts messages not known
 * before.  Fetching and storing overlap: a thread of its own stores, in UID
 * order, the messages the calling thread fetches, through a queue of at
 * most 4 MB; st is that thread's alone until the call returns.  After a
 * failed fetch, what was fetched before is stored but the batch left open
 * is not committed (fetched again next time).  Returns as above. */
int ingest_take(struct imap_session *s, struct store *st, const struct ingest_folder *f,
		uint32_t uidvalidity, const uint32_t *uids, size_t n, enum msg_state state,
		atomic_int *stop, int *inserted, char *err, size_t errlen);
/* Applies the after-action to every message of key that is safe now.
 * Returns 0, -1 or INGEST_STORE_FAILED with err, as ingest_sync_folder, or
 * INGEST_ACKS_WAITING when the server refused the after-action of some
 * messages (a missing move target, no permission): they are retried from
 * a minute doubling to an hour, and the mailbox's status line says so; the
 * connection stays. */
#define INGEST_ACKS_WAITING 1
int ingest_apply_acks(struct imap_session *s, struct store *st, const char *key,
		      enum after_action a, const char *after_folder, char *err, size_t errlen);

/* 1 when ingest_apply_acks() has work for key now (after-actions due,
 * dead marks to set or clear), 0 when it would do nothing: a session that
 * serves several folders selects one only when there is something to do. */
int ingest_acks_pending(struct store *st, const char *key);

#endif
