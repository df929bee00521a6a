/* outbox.h — durable queue of posts and comments between the pipeline and
 * the feed service.  Each item has an idempotency key; a comment waits for
 * its post's remote id; transient failures back off exponentially with
 * jitter (honouring Retry-After); permanent ones go to the dead list.
 *
 * Item states: pending -> inflight -> delivered | retrying | dead.
 * When an item with a message becomes delivered (or dead), the message's
 * state follows, which makes its IMAP after-action due. */
#ifndef MAILFEED_OUTBOX_H
#define MAILFEED_OUTBOX_H

#include <stdint.h>

#include "mailfeed/config.h"
#include "mailfeed/message.h"
#include "mailfeed/store.h"

struct outbox_new {
	int64_t message;          /* messages.id, or 0 */
	const char *key;          /* idempotency key */
	const char *kind;         /* "post" | "comment" */
	const char *group;
	int64_t thread_id;
	int64_t parent;           /* outbox id of the post, for comments */
	const struct mf_message *msg; /* author, subject, text, hashtags, attachments */
	const char *author_name;  /* overrides msg's From when non-NULL */
	const char *author_email;
	const struct strlist *extra_hashtags; /* mailbox's configured tags, first */
	const char *parent_remote_id; /* comment on a post known only at the service */
};

/* Adds an item (and its attachments) inside the caller's transaction.
 * An existing key is left alone.  Returns the item id, or -1. */
int64_t outbox_enqueue(struct store *st, const struct outbox_new *n);

struct outbox_counts {
	long pending, retrying, inflight, delivered, dead;
};
int outbox_counts(struct store *st, struct outbox_counts *c);

/* Delivers every due item once through the backend.  Items whose delivery
 * was interrupted (inflight at start) are reconciled first.  Returns the
 * number of items that went to the dead list in this call, or -1 on a
 * store error. *waiting = items still pending/retrying afterwards. */
struct feed_ctx;
int outbox_deliver_due(struct store *st, const struct mf_config *cfg, void *backend_ctx,
		       long *waiting);
/* Earliest next_at of a waiting item, or 0 when none waits. */
long outbox_next_due(struct store *st);

#endif
