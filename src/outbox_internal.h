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

/* In one committed transaction of its own: comments of dead posts go dead
 * (added to *dead), then up to batch due items at now are chosen and
 * marked inflight.  *ids owned.  0 or -1. */
int outbox_claim_due(struct store *st, time_t now, size_t batch, int64_t **ids, size_t *n,
		     int *dead);
/* Items left inflight (interrupted by a crash), oldest first.  0 or -1. */
int outbox_inflight_ids(struct store *st, int64_t **ids, size_t *n);
/* Items pending, retrying or inflight. */
long outbox_count_waiting(struct store *st);

/* State changes (their message's state follows).  0 or -1. */
int outbox_mark_delivered(struct store *st, const struct outbox_loaded *l, const char *remote_id,
			  time_t now);
int outbox_mark_dead(struct store *st, const struct outbox_loaded *l, const char *error);
int outbox_mark_retry(struct store *st, const struct outbox_loaded *l, time_t next_at,
		      const char *error);
/* inflight -> pending: not found at the service after a crash. */
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
