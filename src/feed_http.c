/* feed_http.c — the delivery loop and client pool of the HTTP backends.
 *
 * A batch is spread over up to [feed] concurrency threads, each with its own
 * http_client; an item's thread is picked by a hash of its key, or of its
 * post's id for a comment, so that the comments on one post go out through
 * one thread in the order given.  When a thread cannot be started its share
 * is delivered by the calling thread. */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mailfeed/feed_http.h"
#include "mailfeed/log.h"
#include "mailfeed/utf8.h"

#define FEED_HTTP_MAX_CLIENTS 32

void feed_http_set_error(struct feed_result *res, enum feed_status st, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(res->error, sizeof(res->error), fmt, ap);
	va_end(ap);
	res->status = st;
	for (char *p = res->error; *p; p++)
		if (*p == '\r' || *p == '\n')
			*p = ' ';
}

enum feed_status feed_http_status(long status, int curl_failed)
{
	switch (http_classify(status, curl_failed)) {
	case HTTP_CLASS_OK:
		return FEED_OK;
	case HTTP_CLASS_TRANSIENT:
		return FEED_RETRY;
	case HTTP_CLASS_REFUSED:
		break;
	}
	return FEED_PERMANENT;
}

int feed_http_pool_open(struct feed_http_pool *p, const struct mf_feed *f, int per_client,
			char *err, size_t errlen)
{
	p->n = f->concurrency > 0 ? (f->concurrency > FEED_HTTP_MAX_CLIENTS ? FEED_HTTP_MAX_CLIENTS
									    : f->concurrency)
				  : 1;
	p->clients = xcalloc((size_t)p->n, sizeof(*p->clients));
	struct http_options o = {.ca_file = f->ca_file,
				 .tls_verify = f->tls_verify,
				 .connect_timeout = f->connect_timeout,
				 .timeout = f->timeout,
				 .max_concurrency = per_client};
	for (int i = 0; i < p->n; i++) {
		p->clients[i] = http_client_new(&o, err, errlen);
		if (!p->clients[i]) {
			p->n = i;
			feed_http_pool_close(p);
			return -1;
		}
	}
	return 0;
}

void feed_http_pool_close(struct feed_http_pool *p)
{
	for (int i = 0; i < p->n; i++)
		http_client_free(p->clients[i]);
	free(p->clients);
	p->clients = NULL;
	p->n = 0;
}

struct feed_http_job {
	const struct feed_http_pool *pool;
	const char *name;
	feed_http_deliver_fn one;
	void *ctx;
	int slot, nslots;
	const struct feed_item *items;
	size_t n;
	struct feed_result *results;
};

static unsigned feed_http_hash(const char *s)
{
	unsigned h = 5381;
	for (; s && *s; s++)
		h = h * 33 + (unsigned char)*s;
	return h;
}

static void feed_http_one(const struct feed_http_job *j, const struct feed_item *it,
			  struct feed_result *res)
{
	memset(res, 0, sizeof(*res));
	if (it->kind == FEED_COMMENT && (!it->parent_remote_id || !*it->parent_remote_id)) {
		snprintf(res->error, sizeof(res->error), "comment without the id of its post");
		res->status = FEED_PERMANENT;
		return;
	}
	j->one(j->ctx, j->pool->clients[j->slot], it, res);
	if (res->status != FEED_OK)
		log_warn("%s.deliver_failed outbox_id=%lld status=%s retry_after=%ld", j->name,
			 (long long)it->id, res->status == FEED_RETRY ? "retry" : "permanent",
			 res->retry_after);
}

static void *feed_http_worker(void *arg)
{
	struct feed_http_job *j = arg;
	for (size_t i = 0; i < j->n; i++) {
		const struct feed_item *it = &j->items[i];
		const char *k = it->kind == FEED_COMMENT ? it->parent_remote_id : it->key;
		if (feed_http_hash(k) % (unsigned)j->nslots == (unsigned)j->slot)
			feed_http_one(j, it, &j->results[i]);
	}
	return NULL;
}

void feed_http_deliver(const struct feed_http_pool *p, const char *name, feed_http_deliver_fn one,
		       void *ctx, const struct feed_item *items, size_t n,
		       struct feed_result *results)
{
	int ns = p->n < (int)n ? p->n : (int)n;
	struct feed_http_job base = {p, name, one, ctx, 0, 1, items, n, results};
	if (ns <= 1) {
		feed_http_worker(&base);
		return;
	}
	struct feed_http_job *jobs = xcalloc((size_t)ns, sizeof(*jobs));
	pthread_t *th = xcalloc((size_t)ns, sizeof(*th));
	int *started = xcalloc((size_t)ns, sizeof(*started));
	for (int s = 0; s < ns; s++) {
		jobs[s] = base;
		jobs[s].slot = s;
		jobs[s].nslots = ns;
		started[s] = pthread_create(&th[s], NULL, feed_http_worker, &jobs[s]) == 0;
		if (!started[s])
			feed_http_worker(&jobs[s]);
	}
	for (int s = 0; s < ns; s++)
		if (started[s])
			pthread_join(th[s], NULL);
	free(started);
	free(th);
	free(jobs);
}

/* ---- one item in parts ---- */

static void split(const char *text, size_t budget, size_t fixed, size_t min_first, int late,
		  struct strlist *parts)
{
	size_t first = fixed + min_first < budget ? budget - fixed : min_first;
	(late ? utf8_split_late : utf8_split)(text ? text : "", first,
					      budget > 100 ? budget - 100 : budget, parts);
	if (parts->n == 0)
		strlist_add(parts, "");
}

void feed_http_split(const char *text, size_t budget, size_t fixed, size_t min_first,
		     struct strlist *parts)
{
	split(text, budget, fixed, min_first, 0, parts);
}

/* The first part, with one fallback.  0 with *id, or -1 with res. */
static int feed_http_first(const struct feed_parts *p, const char *text, char **id,
			   struct feed_result *res)
{
	int rc = p->first(p->hook, text, 0, id, res);
	if (rc != 0 && p->fallback && p->fallback(p->hook, res)) {
		memset(res, 0, sizeof(*res));
		rc = p->first(p->hook, text, 1, id, res);
	}
	return rc;
}

int feed_http_deliver_parts(const struct feed_parts *p, const struct feed_item *it,
			    struct feed_result *res, size_t *n_parts)
{
	struct strlist parts = {0};
	const char *root = it->kind == FEED_COMMENT ? it->parent_remote_id : NULL;
	char *done = NULL;
	int rc = -1;
	split(p->text, p->budget, p->fixed, p->min_first, p->cut_late, &parts);
	*n_parts = parts.n;
	if (parts.n > p->max_parts) {
		feed_http_set_error(res, FEED_PERMANENT,
				    "text too long for %s: %zu parts of %zu %s (limit %zu)",
				    p->service, parts.n, p->budget, p->unit, p->max_parts);
		goto out;
	}
	if (p->begin && p->begin(p->hook, parts.n, res) != 0)
		goto out;
	/* an item in several parts may be half-delivered by an earlier attempt */
	if (parts.n > 1 && p->find_part(p->hook, 0, parts.n, parts.v[0], root, &done, res) < 0)
		goto out;
	if (!done && feed_http_first(p, parts.v[0], &done, res) != 0)
		goto out;
	const char *thread = root ? root : done;
	for (size_t i = 1; i < parts.n; i++) {
		char *have = NULL;
		int f = p->find_part(p->hook, i, parts.n, parts.v[i], thread, &have, res);
		free(have);
		if (f == 0)
			f = p->next(p->hook, i, parts.n, parts.v[i], thread, res) == 0 ? 1 : -1;
		if (f < 0) {
			/* the first part exists: a retry must not post it again,
			 * and finds it */
			if (res->status == FEED_PERMANENT)
				res->status = FEED_RETRY;
			goto out;
		}
	}
	res->status = FEED_OK;
	res->remote_id = done;
	done = NULL;
	rc = 0;
out:
	free(done);
	strlist_free(&parts);
	return rc;
}
