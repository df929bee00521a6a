/* outbox_internal.h — what deliver.c asks of the queue in outbox.c: due
 * items claimed, loaded as feed items, and their state changes.  Only
 * outbox.c touches the tables; the functions that change a state run
 * inside the caller's transaction unless said otherwise. */
#ifndef MAILFEED_OUTBOX_INTERNAL_H
#define MAILFEED_OUTBOX_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "mailfeed/feed.h"
#include "mailfeed/store.h"

/* One item loaded from its row, as the backend gets it (item points into
 * the owned fields). */
struct outbox_loaded {
	struct feed_item item;
	int64_t message;
	long attempts;
	time_t created;
	char *key, *group, *parent_remote_id, *author_name, *author_email, *subject, *text,
	    *message_id;
	struct strlist tags, recipients;
	struct feed_attachment *att;
	size_t n_att;
};

/* Loads item id with its post's remote id.  0, or -1 (row gone or its
 * payload unreadable). */
int outbox_load(struct store *st, int64_t id, struct outbox_loaded *l);
void outbox_loaded_free(struct outbox_loaded *l);
/* Reads a payload's fields into l (parent_remote_id only when l has none
 * yet): in one pass over the text when fast and the text allows it,
 * otherwise by jansson; the same fields either way.  0, or -1 when the
 * text is not JSON. */
int outbox_payload_read(const char *text, struct outbox_loaded *l, int fast);

/* In one committed transaction of its own: comments of dead posts go dead
 * (added to *dead), then up to batch due items at now are claimed for
 * this instance (store_instance) for claim_ms: marked inflight with a
 * deadline in the database's clock.  *ids owned, oldest first.  0 or -1. */
int outbox_claim_due(struct store *st, time_t now, size_t batch, int64_t claim_ms, int64_t **ids,
		     size_t *n, int *dead);
/* Claims up to max items left inflight by a claimer that is gone: past
 * their deadline, or of a process of this host that no longer runs (or
 * this instance's own, left by a batch whose results could not be
 * recorded: a pass starts with none of its own in flight).  They
 * may have reached the service: reconcile them first.  *ids owned, oldest
 * first.  0 or -1. */
int outbox_claim_stale(struct store *st, size_t max, int64_t claim_ms, int64_t **ids, size_t *n);
/* Ends this instance's claim on an inflight item that could not be
 * reconciled now, leaving it to the next pass.  0 or -1. */
int outbox_claim_lapse(struct store *st, int64_t id);
/* Moves the deadline of every claim of this instance to claim_ms from now
 * (a long delivery).  How many, or -1. */
int outbox_claims_extend(struct store *st, int64_t claim_ms);
/* Seconds a claim lasts when [feed] claim_timeout is not set. */
#define OUTBOX_CLAIM_DEFAULT 300
/* [feed] claim_timeout in milliseconds. */
int64_t outbox_claim_ms(const struct mf_config *cfg);

/* Items pending, retrying or inflight. */
long outbox_count_waiting(struct store *st);

/* State changes (their message's state follows; the claim ends).  A
 * failure or a return to pending is recorded only while the claim is still
 * this instance's; a delivery always is.  0 or -1. */
int outbox_mark_delivered(struct store *st, const struct outbox_loaded *l, const char *remote_id,
			  time_t now);
int outbox_mark_dead(struct store *st, const struct outbox_loaded *l, const char *error);
int outbox_mark_retry(struct store *st, const struct outbox_loaded *l, time_t next_at,
		      const char *error);
/* inflight -> pending: not found at the service after its claimer died. */
int outbox_mark_pending(struct store *st, int64_t id);
/* inflight -> dead: its row could not be loaded. */
int outbox_mark_unreadable(struct store *st, int64_t id);
/* Comments whose post is dead or dropped go dead too.  How many, or -1. */
int outbox_cascade_dead(struct store *st);

/* The backend's note of an uploaded file, kept for later attempts. */
void outbox_note_upload(struct store *st, int64_t attachment, const char *remote);
/* Whether an item already holds remote as its answer: 1 or 0. */
int outbox_remote_known(struct store *st, const char *remote);

#endif
