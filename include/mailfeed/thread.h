/* thread.h — which thread a message belongs to.
 *
 * Threads are found by Message-ID / In-Reply-To / References (JWZ), then by
 * the normalised subject within the same mailbox and a time window.  The
 * persistent side keeps every Message-ID seen in a thread (its own and all
 * it references) per group, so that a reply arriving before its parent, or
 * days later, or in another mapped mailbox of the same group, finds it.
 *
 * One writer: threads are created and recorded only by the pipeline of the
 * instance holding the "process" lease (several instances on PostgreSQL),
 * so finding and then creating a thread needs no guard against another
 * process creating the same thread between the two.  The id rows are
 * upserts all the same (ON CONFLICT), so that a lease handed over while a
 * batch commits leaves no error behind. */
#ifndef MAILFEED_THREAD_H
#define MAILFEED_THREAD_H

#include "mailfeed/db.h"
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include "mailfeed/message.h"
#include "mailfeed/store.h"

/* "Re: Fwd: AW: [Tag] Hello" -> "hello" (prefixes in many languages,
 * RE[2]:, list tags, whitespace folded, case folded).  Owned result. */
char *thread_subject_normalise(const char *subject);

/* Whether id (without <>) can identify a message: it has an '@' with
 * something on both sides and no spaces or brackets.  "yes" (left by a
 * prompt of git send-email), "", "12345" are not ids: they are ignored for
 * threading and for duplicate detection. */
int thread_id_usable(const char *id);

/* The thread m belongs to in group grp, without changing anything: by its
 * usable ids, then (for a reply) by the normalised subject of any message of
 * a thread of the same mailbox active within window seconds.  0 = none,
 * -1 on a database error. */
int64_t thread_find(struct db *db, const char *grp, const char *mailbox, const struct mf_message *m,
		    long window);
/* The same on the store's connection with its statements kept prepared
 * (store_stmt): for the daemon, which looks up every message. */
int64_t thread_find_kept(struct store *st, const char *grp, const char *mailbox,
			 const struct mf_message *m, long window);
/* Records m in thread found (0: creates a thread; *is_new = 1): its ids
 * and its subject.  Call inside a store transaction.  0 or -1. */
int thread_record(struct store *st, const char *grp, const char *mailbox,
		  const struct mf_message *m, int64_t found, int64_t *thread_id, int *is_new);
/* The outbox item of the thread's post (0: none yet, -1: error). */
int64_t thread_root_item(struct db *db, int64_t thread_id);

/* Finds or creates the thread of m in group grp.  Call inside a store
 * transaction.  *is_new = 1 when m starts a new thread (it becomes the
 * post).  Registers m's ids with the thread. 0 or -1. */
int thread_assign(struct store *st, const char *grp, const char *mailbox,
		  const struct mf_message *m, long window, int64_t *thread_id, int *is_new);
/* Records/reads the outbox item holding the thread's post (thread_root:
 * thread_root_item on the store's kept statements, a failure logged). */
int thread_set_root(struct store *st, int64_t thread_id, int64_t outbox_item);
int64_t thread_root(struct store *st, int64_t thread_id);
/* Moves a thread, with the Message-IDs that lead to it, to group grp (its
 * post is sent again there): replies that come later find it there.  An
 * id that grp already gives to another thread stays with that one.  Call
 * inside a store transaction.  0 or -1 (logged). */
int thread_move(struct store *st, int64_t thread_id, const char *grp);

/* In-memory JWZ threading of a set of messages, for ordering a batch and for
 * tests: input arrays of ids; output a forest printed like the corpus'
 * expected file.  See thread.c. */
struct jwz_msg {
	const char *message_id;
	const char *subject;
	const char *const *references; /* In-Reply-To folded in, oldest first */
	size_t n_references;
};
/* Prints the forest of msgs to out, one subject per line, indented three
 * spaces per depth, "dummy" for a container without a message (the corpus'
 * format); never drops a message, even in reference loops. */
void thread_jwz_print(const struct jwz_msg *msgs, size_t n, FILE *out);

#endif
