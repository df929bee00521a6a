/* feed_http.h — what the HTTP backends (feed_chatter.c, feed_mattermost.c)
 * share: a pool of http_clients, one per delivery thread, the loop that
 * spreads a batch of items over those threads, and the loop that delivers
 * one item in parts through the backend's hooks. */
#ifndef MAILFEED_FEED_HTTP_H
#define MAILFEED_FEED_HTTP_H

#include <stddef.h>

#include "mailfeed/config.h"
#include "mailfeed/feed.h"
#include "mailfeed/http.h"

/* Sets res's status and error text; CR and LF become spaces, so that the
 * text stays one log line. */
void feed_http_set_error(struct feed_result *res, enum feed_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

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

/* Appends text to parts in parts of at most budget characters: the first
 * leaves room for fixed characters (From line, subject, notes, tags,
 * mentions) but keeps at least min_first; the others leave 100 for the
 * "(continued, part i of n)" head.  Cut points as utf8_split's; always at
 * least one part (empty for an empty text). */
void feed_http_split(const char *text, size_t budget, size_t fixed, size_t min_first,
		     struct strlist *parts);

/* One item delivered in parts, for a service that limits the size of a
 * post: the loop is here, the protocol in the backend's hooks (as curl's
 * pingpong.c serves FTP, IMAP, POP3 and SMTP).  hook is the backend's state
 * for the item.  thread is where continuations go: the post's id, or for a
 * comment its post's id (for part 0 of a post it is NULL). */
struct feed_parts {
	const char *service; /* "Chatter", for the error text */
	const char *unit;    /* "characters", likewise */
	const char *text;    /* split with feed_http_split */
	size_t budget, fixed, min_first;
	int cut_late; /* cut points as utf8_split_late's, not utf8_split's */
	size_t max_parts;
	void *hook;
	/* Optional: after the split, before anything is looked up or sent
	 * (e.g. a log-in).  0, or -1 with res set. */
	int (*begin)(void *hook, size_t n, struct feed_result *res);
	/* Whether part i of n is at the service from an earlier attempt: 1
	 * (*id set, owned), 0 not, -1 cannot tell now (res set).  Asked only
	 * for an item in several parts. */
	int (*find_part)(void *hook, size_t i, size_t n, const char *text, const char *thread,
			 char **id, struct feed_result *res);
	/* Uploads what goes with the first part and posts it; called again
	 * with retry 1 after fallback.  0 with *id (owned), or -1 with res. */
	int (*first)(void *hook, const char *text, int retry, char **id, struct feed_result *res);
	/* Optional: after first failed with res, 1 when one more try could
	 * work (without mentions, with files uploaded anew) and is prepared,
	 * else 0. */
	int (*fallback)(void *hook, const struct feed_result *res);
	/* Posts part i (from 1) of n in thread.  0, or -1 with res set. */
	int (*next)(void *hook, size_t i, size_t n, const char *text, const char *thread,
		    struct feed_result *res);
};

/* Splits p->text, refuses for good an item of more than max_parts parts,
 * finds the first part of an item in several parts at the service (a
 * half-delivered earlier attempt) or posts it (with one fallback), then
 * posts every continuation not found at the service.  Once the first part
 * exists a refused continuation is retried, not dead: the retry finds the
 * first part and completes the rest.  0 with res FEED_OK and remote_id
 * (the first part's), or -1 with res set; *n_parts = parts. */
int feed_http_deliver_parts(const struct feed_parts *p, const struct feed_item *it,
			    struct feed_result *res, size_t *n_parts);

#endif
