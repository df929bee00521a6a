/* deliver.c — the delivery passes over the outbox queue (outbox.c).
 *
 * A pass is three short transactions around the network: claim a batch of
 * due items for this instance (inflight with a deadline, committed with
 * synchronous=FULL, so a crash leaves a trace), let the backend deliver
 * while a thread renews the claims, then record every result: delivered,
 * retrying with exponential backoff and jitter (honouring Retry-After), or
 * dead when refused for good or given up after [feed] dead_after.  Items
 * still inflight whose claim lapsed (their instance died or stalled between
 * "sent" and "recorded") are claimed at the start of a pass and looked for
 * at the service by the backend's reconcile, so nothing is posted twice,
 * whichever of several instances delivers. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mailfeed/feed.h"
#include "mailfeed/log.h"
#include "mailfeed/outbox.h"
#include "mailfeed/util.h"
#include "outbox_internal.h"

#define OUTBOX_BASE_DELAY 5

/* --- recording results ------------------------------------------------ */

/* Seconds until the next attempt after the attempts-th failure. */
static long backoff_delay(const struct mf_config *cfg, long attempts, long retry_after)
{
	long cap = cfg->feed.max_retry_delay;
	long d = OUTBOX_BASE_DELAY;
	for (long i = 0; i < attempts && d < cap; i++)
		d *= 2;
	if (d > cap)
		d = cap;
	d = jitter(d);
	if (d < 1)
		d = 1;
	return retry_after > d ? retry_after : d;
}

static void log_result(const struct outbox_loaded *l, const struct feed_result *r, const char *what)
{
	char e[300], rid[128];
	log_quote(r->error, e, sizeof e);
	if (r->status == FEED_OK)
		log_info("outbox.delivered key=%s kind=%s group=%s remote_id=%s attempt=%ld",
			 l->key, l->item.kind == FEED_POST ? "post" : "comment", l->group,
			 log_quote(r->remote_id, rid, sizeof rid), l->attempts + 1);
	else
		log_warn("outbox.%s key=%s kind=%s group=%s attempt=%ld error=%s", what, l->key,
			 l->item.kind == FEED_POST ? "post" : "comment", l->group, l->attempts + 1,
			 e);
}

/* Whether the service took the item: it answered OK with the item's id. */
static int result_delivered(const struct feed_result *r)
{
	return r->status == FEED_OK && r->remote_id && *r->remote_id;
}

/* Records one result.  Returns 1 when the item went dead, 0, or -1. */
static int record(struct store *st, const struct mf_config *cfg, const struct outbox_loaded *l,
		  const struct feed_result *r, time_t now)
{
	if (result_delivered(r)) {
		log_result(l, r, "delivered");
		return outbox_mark_delivered(st, l, r->remote_id, now);
	}
	if (r->status == FEED_PERMANENT) {
		log_result(l, r, "dead");
		return outbox_mark_dead(st, l,
					r->error[0] ? r->error : "refused by the feed service") < 0
			   ? -1
			   : 1;
	}
	const char *err = r->status == FEED_OK ? "the feed service returned no id"
			  : r->error[0]	       ? r->error
					       : "temporary failure";
	long dead_after = cfg->feed.dead_after;
	if (now - l->created >= dead_after) {
		char *why = xasprintf("gave up after %ld attempts over %ld s: %s", l->attempts + 1,
				      (long)(now - l->created), err);
		struct feed_result dead = {.status = FEED_PERMANENT};
		snprintf(dead.error, sizeof dead.error, "%s", why);
		log_result(l, &dead, "dead");
		int rc = outbox_mark_dead(st, l, why);
		free(why);
		return rc < 0 ? -1 : 1;
	}
	struct feed_result retry = {.status = FEED_RETRY};
	snprintf(retry.error, sizeof retry.error, "%s", err);
	log_result(l, &retry, "retrying");
	return outbox_mark_retry(st, l, now + backoff_delay(cfg, l->attempts, r->retry_after), err);
}

/* --- the backend's callbacks ------------------------------------------ */

/* Uploads reported by the backend during a delivery, written at once: the
 * connection is idle meanwhile (the main thread waits for the backend), and
 * the lock keeps the backend's threads apart. */
struct upload_log {
	struct store *st;
	pthread_mutex_t mu;
};

static void note_upload(void *arg, const struct feed_attachment *a, const char *remote)
{
	struct upload_log *u = arg;
	pthread_mutex_lock(&u->mu);
	outbox_note_upload(u->st, a->id, remote);
	pthread_mutex_unlock(&u->mu);
}

/* Whether another item already holds remote as its answer: a backend that
 * recognises an earlier attempt by its content must not take it. */
static int known_remote(void *arg, const char *remote)
{
	struct upload_log *u = arg;
	pthread_mutex_lock(&u->mu);
	int found = outbox_remote_known(u->st, remote);
	pthread_mutex_unlock(&u->mu);
	return found;
}

/* --- one pass ----------------------------------------------------------- */

static const char *found_word(int found)
{
	return found == 1 ? "yes" : found == 0 ? "no" : "unknown";
}

/* Records what reconcile found for an item whose claimer is gone, in its
 * own transaction.  0 or -1. */
static int reconciled(struct store *st, const struct outbox_loaded *l, int found,
		      const char *remote)
{
	if (store_begin(st) < 0)
		return -1;
	int rc = found == 1 && remote ? outbox_mark_delivered(st, l, remote, time(NULL))
				      : outbox_mark_pending(st, l->item.id);
	if (rc < 0 || store_commit(st) < 0) {
		store_rollback(st);
		return -1;
	}
	return 0;
}

/* Reconciles one claimed item.  0, 1 when it cannot be told now, or -1. */
static int reconcile_one(struct store *st, const struct feed_backend_ops *ops, void *ctx,
			 int64_t id)
{
	struct outbox_loaded l;
	char *remote = NULL;
	if (outbox_load(st, id, &l) < 0)
		return outbox_mark_unreadable(st, id) < 0 ? -1 : 0;
	struct upload_log ul = {.st = st};
	pthread_mutex_init(&ul.mu, NULL);
	l.item.remote_known = known_remote;
	l.item.remote_known_arg = &ul;
	int found = ops->reconcile ? ops->reconcile(ctx, &l.item, &remote) : 0;
	pthread_mutex_destroy(&ul.mu);
	log_info("outbox.reconciled key=%s found=%s", l.key, found_word(found));
	/* cannot tell now: the claim lapses at once and the item is looked
	 * at again by the next pass, of any instance */
	int rc = found >= 0			  ? reconciled(st, &l, found, remote)
		 : outbox_claim_lapse(st, id) < 0 ? -1
						  : 1;
	free(remote);
	outbox_loaded_free(&l);
	return rc;
}

#define STALE_BATCH 64

/* Items whose claimer went away between "sent" and "recorded" (a crash, a
 * killed or stalled instance): claimed now, then looked for at the
 * service, so that nothing is posted twice. */
static int reconcile_stale(struct store *st, const struct feed_backend_ops *ops, void *ctx,
			   int64_t claim_ms)
{
	int64_t *ids;
	size_t n;
	int undecided = 0;
	do {
		if (outbox_claim_stale(st, STALE_BATCH, claim_ms, &ids, &n) < 0)
			return -1;
		double renewed = now_monotonic();
		for (size_t i = 0; i < n; i++) {
			/* each look-up is bounded by [feed] timeout; the
			 * claims of those still waiting are renewed */
			if (now_monotonic() - renewed > (double)claim_ms / 3000.0) {
				outbox_claims_extend(st, claim_ms);
				renewed = now_monotonic();
			}
			int r = reconcile_one(st, ops, ctx, ids[i]);
			if (r < 0) {
				free(ids);
				return -1;
			}
			undecided += r;
		}
		free(ids);
		/* the undecided lapsed at once: they wait for the next pass */
	} while (n == STALE_BATCH && !undecided);
	return 0;
}

/* --- renewing claims while a batch is delivered -------------------------- */

/* A thread that renews this instance's claims every third of their length
 * while the backend delivers (the connection is shared with the backend's
 * callbacks under the upload log's lock). */
struct renewer {
	struct upload_log *ul;
	int64_t claim_ms;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int stop, running;
	pthread_t th;
};

static void *renewer_main(void *arg)
{
	struct renewer *k = arg;
	pthread_mutex_lock(&k->mu);
	while (!k->stop) {
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		int64_t ns = (int64_t)ts.tv_nsec + k->claim_ms / 3 * 1000000;
		ts.tv_sec += (time_t)(ns / 1000000000);
		ts.tv_nsec = (long)(ns % 1000000000);
		if (pthread_cond_timedwait(&k->cv, &k->mu, &ts) == 0 || k->stop)
			continue;
		pthread_mutex_unlock(&k->mu);
		pthread_mutex_lock(&k->ul->mu);
		int r = outbox_claims_extend(k->ul->st, k->claim_ms);
		pthread_mutex_unlock(&k->ul->mu);
		if (r < 0)
			log_warn("outbox.claim_renew_failed note=\"the claims may lapse; another "
				 "instance then looks for the items before sending them\"");
		pthread_mutex_lock(&k->mu);
	}
	pthread_mutex_unlock(&k->mu);
	return NULL;
}

static void renewer_start(struct renewer *k, struct upload_log *ul, int64_t claim_ms)
{
	memset(k, 0, sizeof *k);
	k->ul = ul;
	k->claim_ms = claim_ms;
	pthread_mutex_init(&k->mu, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&k->cv, &ca);
	pthread_condattr_destroy(&ca);
	k->running = pthread_create(&k->th, NULL, renewer_main, k) == 0;
}

static void renewer_stop(struct renewer *k)
{
	pthread_mutex_lock(&k->mu);
	k->stop = 1;
	pthread_cond_signal(&k->cv);
	pthread_mutex_unlock(&k->mu);
	if (k->running)
		pthread_join(k->th, NULL);
	pthread_cond_destroy(&k->cv);
	pthread_mutex_destroy(&k->mu);
}

/* Delivers items[0..n).  An item that failed before may have reached the
 * service anyway, its answer lost to a timeout or a dropped connection: it is
 * looked up first and, when found, not sent again. */
static void deliver_unless_there(const struct feed_backend_ops *ops, void *ctx,
				 const struct outbox_loaded *ls, struct feed_item *items, size_t n,
				 struct feed_result *res)
{
	size_t *send = xcalloc(n, sizeof *send), m = 0;
	for (size_t i = 0; i < n; i++) {
		if (ls[i].attempts > 0 && ops->reconcile) {
			char *remote = NULL;
			int found = ops->reconcile(ctx, &items[i], &remote);
			log_info("outbox.reconciled key=%s found=%s reason=retry", ls[i].key,
				 found_word(found));
			if (found == 1 && remote) {
				res[i].status = FEED_OK;
				res[i].error[0] = '\0';
				res[i].remote_id = remote;
				continue;
			}
			free(remote);
		}
		send[m++] = i;
	}
	if (m == n) {
		ops->deliver(ctx, items, n, res);
	} else if (m > 0) {
		struct feed_item *sub = xcalloc(m, sizeof *sub);
		struct feed_result *sres = xcalloc(m, sizeof *sres);
		for (size_t j = 0; j < m; j++) {
			sub[j] = items[send[j]];
			sres[j] = res[send[j]];
		}
		ops->deliver(ctx, sub, m, sres);
		for (size_t j = 0; j < m; j++)
			res[send[j]] = sres[j];
		free(sub);
		free(sres);
	}
	free(send);
}

/* A claimed batch: the items that could be loaded (ls, items, res: k of
 * them) and the ids of those that could not (bad). */
struct batch {
	struct outbox_loaded *ls;
	struct feed_item *items;
	struct feed_result *res;
	int64_t *bad;
	size_t k, nbad;
};

static void batch_load(struct store *st, const int64_t *ids, size_t n, struct batch *b)
{
	b->ls = xcalloc(n, sizeof *b->ls);
	b->items = xcalloc(n, sizeof *b->items);
	b->res = xcalloc(n, sizeof *b->res);
	b->bad = xcalloc(n, sizeof *b->bad);
	b->k = b->nbad = 0;
	for (size_t i = 0; i < n; i++) {
		size_t k = b->k;
		if (outbox_load(st, ids[i], &b->ls[k]) < 0) {
			b->bad[b->nbad++] = ids[i];
			continue;
		}
		b->items[k] = b->ls[k].item;
		b->res[k].status = FEED_RETRY;
		snprintf(b->res[k].error, sizeof b->res[k].error, "backend gave no result");
		b->k++;
	}
}

static void batch_deliver(struct store *st, const struct feed_backend_ops *ops, void *ctx,
			  struct batch *b, int64_t claim_ms)
{
	struct upload_log ul = {.st = st};
	struct renewer k;
	pthread_mutex_init(&ul.mu, NULL);
	for (size_t i = 0; i < b->k; i++) {
		b->items[i].uploaded = note_upload;
		b->items[i].uploaded_arg = &ul;
		b->items[i].remote_known = known_remote;
		b->items[i].remote_known_arg = &ul;
	}
	if (!ops->uses_store)
		renewer_start(&k, &ul, claim_ms);
	if (b->k > 0)
		deliver_unless_there(ops, ctx, b->ls, b->items, b->k, b->res);
	if (!ops->uses_store)
		renewer_stop(&k);
	pthread_mutex_destroy(&ul.mu);
}

/* Records every result of the batch in one transaction.  The number of
 * items that went dead, or -1. */
static int batch_record(struct store *st, const struct mf_config *cfg, const struct batch *b,
			long *delivered)
{
	time_t now = time(NULL);
	int dead = 0, rc = store_begin(st);
	long ok = 0;
	for (size_t i = 0; rc == 0 && i < b->k; i++) {
		int r = record(st, cfg, &b->ls[i], &b->res[i], now);
		if (r < 0)
			rc = -1;
		else
			dead += r;
		if (r == 0 && result_delivered(&b->res[i]))
			ok++;
	}
	for (size_t i = 0; rc == 0 && i < b->nbad; i++) {
		rc = outbox_mark_unreadable(st, b->bad[i]);
		dead++;
	}
	if (rc == 0) {
		int c = outbox_cascade_dead(st);
		rc = c < 0 ? -1 : 0;
		dead += c > 0 ? c : 0;
	}
	if (rc == 0)
		rc = store_commit(st);
	else
		store_rollback(st);
	if (rc == 0)
		*delivered += ok;
	return rc < 0 ? -1 : dead;
}

static void batch_free(struct batch *b)
{
	for (size_t i = 0; i < b->k; i++) {
		feed_result_clear(&b->res[i]);
		outbox_loaded_free(&b->ls[i]);
	}
	free(b->ls);
	free(b->items);
	free(b->res);
	free(b->bad);
}

size_t outbox_batch_size(const struct mf_config *cfg, const struct feed_backend_ops *ops)
{
	if (ops && ops->batch > 0)
		return ops->batch;
	return (size_t)cfg->feed.concurrency * 4;
}

int64_t outbox_claim_ms(const struct mf_config *cfg)
{
	long s = cfg->feed.claim_timeout > 0 ? cfg->feed.claim_timeout : OUTBOX_CLAIM_DEFAULT;
	return (int64_t)s * 1000;
}

int outbox_deliver_due(struct store *st, const struct mf_config *cfg,
		       const struct feed_backend_ops *ops, void *ctx, long *waiting)
{
	long delivered;
	return outbox_deliver_counted(st, cfg, ops, ctx, waiting, &delivered);
}

int outbox_deliver_counted(struct store *st, const struct mf_config *cfg,
			   const struct feed_backend_ops *ops, void *ctx, long *waiting,
			   long *delivered)
{
	int dead = 0;
	int64_t *ids, claim_ms = outbox_claim_ms(cfg);
	size_t n;

	*delivered = 0;
	if (waiting)
		*waiting = 0;
	if (!ops || !ops->deliver)
		return -1;
	if (reconcile_stale(st, ops, ctx, claim_ms) < 0)
		return -1;
	if (outbox_claim_due(st, time(NULL), outbox_batch_size(cfg, ops), claim_ms, &ids, &n,
			     &dead) < 0)
		return -1;
	if (n > 0) {
		struct batch b;
		batch_load(st, ids, n, &b);
		batch_deliver(st, ops, ctx, &b, claim_ms);
		int r = batch_record(st, cfg, &b, delivered);
		batch_free(&b);
		if (r < 0) {
			free(ids);
			return -1;
		}
		dead += r;
	}
	free(ids);
	if (waiting)
		*waiting = outbox_count_waiting(st);
	return dead;
}
