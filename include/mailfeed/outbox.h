/* outbox.h — durable queue of posts and comments between the pipeline and
 * the feed service.  Each item has an idempotency key; a comment waits for
 * its post's remote id; transient failures back off exponentially with
 * jitter (honouring Retry-After); permanent ones go to the dead list.
 *
 * Item states (enum outbox_state; the DB keeps their names) and every
 * transition:
 *   pending   -> inflight   chosen for a delivery pass (deliver.c)
 *   retrying  -> inflight   likewise, once next_at has come
 *   inflight  -> delivered  the service took it (or reconcile found it there)
 *   inflight  -> retrying   a transient failure: next_at backs off
 *   inflight  -> dead       refused for good, given up after dead_after, or
 *                           its stored row is unreadable
 *   inflight  -> pending    interrupted by a crash and not found at the service
 *   pending | retrying -> dead   a comment whose post is dead or dropped
 *   dead      -> pending    `mailfeed dead retry` (with its dead comments)
 *   dead      -> dropped    `mailfeed dead drop`
 * delivered and dropped are final.  When an item with a message becomes
 * delivered (or dead), the message's state follows, which makes its IMAP
 * after-action due. */
#ifndef MAILFEED_OUTBOX_H
#define MAILFEED_OUTBOX_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "mailfeed/config.h"
#include "mailfeed/message.h"
#include "mailfeed/store.h"

enum outbox_state {
	OUTBOX_PENDING,
	OUTBOX_INFLIGHT,
	OUTBOX_RETRYING,
	OUTBOX_DELIVERED,
	OUTBOX_DEAD,
	OUTBOX_DROPPED,
};
#define OUTBOX_STATE_COUNT 6
/* The name stored in outbox.state ("pending", ...); NULL when out of range. */
const char *outbox_state_name(enum outbox_state s);
/* The state of a stored name.  0, or -1 when name is none of them. */
int outbox_state_parse(const char *name, enum outbox_state *s);

struct outbox_new {
	int64_t message;  /* messages.id, or 0 */
	const char *key;  /* idempotency key */
	const char *kind; /* "post" | "comment" */
	const char *group;
	int64_t thread_id;
	int64_t parent;		      /* outbox id of the post, for comments */
	const struct mf_message *msg; /* author, subject, text, hashtags, attachments */
	const char *author_name;      /* overrides msg's From when non-NULL */
	const char *author_email;
	int author_verified;		      /* the sender may be acted as (auth_verify) */
	const char *author_check;	      /* how that was decided, or NULL */
	const struct strlist *extra_hashtags; /* mailbox's configured tags, first */
	const char *parent_remote_id;	      /* comment on a post known only at the service */
	const struct strlist *recipients; /* may-be mentions (recipients_mentionable), or NULL */
};

/* Adds an item (and its attachments) inside the caller's transaction.
 * An existing key is left alone.  Returns the item id, or -1. */
int64_t outbox_enqueue(struct store *st, const struct outbox_new *n);

/* Whether an item with this idempotency key exists: 1, 0, or -1 on a
 * store error.  Takes the connection so that read-only callers (preview)
 * can ask too. */
int outbox_key_exists(struct db *db, const char *key);
/* The same for the daemon, which asks it for every message (the first
 * step of dedupe): on a statement the store keeps prepared. */
int outbox_key_taken(struct store *st, const char *key);

struct outbox_counts {
	long pending, retrying, inflight, delivered, dead, dropped;
};
int outbox_counts(struct store *st, struct outbox_counts *c);
/* Items in state s, 0 on a store error. */
long outbox_count(struct store *st, enum outbox_state s);
/* Why items wait: the error of the oldest retrying item (owned, may be
 * NULL) and the earliest next attempt of any (0 when unknown).  1 when an
 * item is retrying, 0 when none is, -1 on a store error. */
int outbox_retry_status(struct store *st, char **error, time_t *next_at);

/* Delivers every due item once through the backend ops (opened as ctx).
 * Items whose delivery was interrupted (inflight at start) are reconciled
 * first.  Returns the number of items that went to the dead list in this
 * call, or -1 on a store error. *waiting = items still pending/retrying
 * afterwards. */
struct feed_backend_ops;
int outbox_deliver_due(struct store *st, const struct mf_config *cfg,
		       const struct feed_backend_ops *ops, void *ctx, long *waiting);
/* The same, with *delivered = the items it delivered (a caller's loop
 * learns whether a round moved anything without counting the outbox). */
int outbox_deliver_counted(struct store *st, const struct mf_config *cfg,
			   const struct feed_backend_ops *ops, void *ctx, long *waiting,
			   long *delivered);
/* Earliest next_at of a waiting item, or 0 when none waits. */
long outbox_next_due(struct store *st);
/* Items per deliver call: the backend's own batch, or 4 x [feed]
 * concurrency. */
size_t outbox_batch_size(const struct mf_config *cfg, const struct feed_backend_ops *ops);

/* Delivered items of a group created after since, oldest first, as owned
 * feed entries: the digest source of backends without a read API. 0 or -1. */
struct feed_entry;
int outbox_read_delivered(struct store *st, const char *group, time_t since,
			  struct feed_entry **entries, size_t *n);
/* Entries of group created after since, oldest first: ops->read_group, or
 * for a backend without a read API (read_group NULL, e.g. the webhook)
 * outbox_read_delivered.  0, or -1 with err. */
int outbox_read_group(struct store *st, const struct feed_backend_ops *ops, void *ctx,
		      const char *group, time_t since, struct feed_entry **entries, size_t *n,
		      char *err, size_t errlen);

/* The dead list of `mailfeed dead`: outbox items that went dead (id "oN")
 * and messages skipped or dead-lettered before the outbox (id "mN"). */
struct outbox_dead {
	char id[24];
	time_t when;
	char *mailbox; /* may be NULL */
	char *from;    /* may be NULL */
	char *subject; /* may be NULL */
	char *reason;  /* may be NULL */
	char *state;   /* "dead" | "skipped" */
	uint32_t uid;  /* the message's IMAP UID in its folder, 0 when none */
};
/* Owned array, newest first; free with outbox_dead_free.  0 or -1. */
int outbox_dead_list(struct store *st, struct outbox_dead **list, size_t *n);
void outbox_dead_free(struct outbox_dead *list, size_t n);
/* Retry: an item goes back to pending (attempts 0, give-up clock restarted,
 * with the comments that died with it), taking the group and hashtags of
 * its mailbox's current mapping in cfg (NULL: as it was); a message goes
 * back to 'new' and is converted with the current mapping.
 * Drop: the item or message is marked 'dropped' and leaves the list; its
 * message's after-action is then due.
 * 0 done, 1 no such dead entry, -1 with a message in err. */
int outbox_dead_retry(struct store *st, const struct mf_config *cfg, const char *id, char *err,
		      size_t errlen);
int outbox_dead_drop(struct store *st, const char *id, char *err, size_t errlen);

/* What the gateway knows of an element it made at the feed service from a
 * mail: the sender and the subject.  All owned, NULL when unknown. */
struct outbox_origin {
	char *author_name;
	char *author_email;
	char *subject;
	int comment; /* the element is a comment */
};
/* 1 found (o filled), 0 not an element of the gateway's, -1 error. */
int outbox_origin(struct store *st, const char *remote_id, struct outbox_origin *o);
void outbox_origin_clear(struct outbox_origin *o);

/* Retention: forgets the file bytes of the items delivered or dropped at
 * or before cutoff, inside the caller's transaction.  Rows changed, or
 * -1. */
int outbox_prune_files(struct store *st, time_t cutoff);

#endif
