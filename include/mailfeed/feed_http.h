/* feed_http.h — what the HTTP backends (feed_chatter.c, feed_mattermost.c)
 * share: a pool of http_clients, one per delivery thread, and the loop that
 * spreads a batch of items over those threads. */
#ifndef MAILFEED_FEED_HTTP_H
#define MAILFEED_FEED_HTTP_H

#include <stddef.h>

#include "mailfeed/config.h"
#include "mailfeed/feed.h"
#include "mailfeed/http.h"

/* http_classify as a delivery result: OK, RETRY (transient) or PERMANENT. */
enum feed_status feed_http_status(long status, int curl_failed);

/* [feed] concurrency clients (1 to 32), each with its own connections. */
struct feed_http_pool {
	struct http_client **clients;
	int n;
};

/* Opens the pool for f, each client allowing per_client requests at once.
 * 0, or -1 with err (nothing left open). */
int feed_http_pool_open(struct feed_http_pool *p, const struct mf_feed *f, int per_client,
			char *err, size_t errlen);
void feed_http_pool_close(struct feed_http_pool *p);

/* Delivers one item with hc; res is zeroed before the call. */
typedef void (*feed_http_deliver_fn)(void *ctx, struct http_client *hc, const struct feed_item *it,
				     struct feed_result *res);

/* Delivers items[0..n) on up to one thread per client of p, filling
 * results[i]: a post goes to the thread its key picks, a comment to the one
 * its post picks, so the comments of one post keep their order.  A comment
 * without the id of its post is refused for good without a call; every
 * other failure is logged as "NAME.deliver_failed". */
void feed_http_deliver(const struct feed_http_pool *p, const char *name, feed_http_deliver_fn one,
		       void *ctx, const struct feed_item *items, size_t n,
		       struct feed_result *results);

#endif
