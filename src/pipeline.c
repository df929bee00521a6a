/* pipeline.c — turns stored messages into posts and comments.
 *
 * Each message in state 'new' is parsed by the sandboxed worker (a crash or
 * hang there quarantines the message, never the daemon), classified
 * (auto-replies, bounces, bulk, loops, senders outside allow_senders are
 * skipped with a reason), threaded, and enqueued in the outbox.  The state
 * change of the message and its outbox item commit in one transaction, so a
 * crash anywhere leaves the message either untouched or fully queued.
 * Poison is recorded as soon as the worker gives it up, and every parse
 * started is counted first: a message the daemon dies on (twice) is dead,
 * not parsed again on every start.
 * Messages of one batch are handled in Date order, so a parent fetched
 * together with its replies becomes the post. */
#include <ctype.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mailfeed/auth.h"
#include "mailfeed/classify.h"
#include "mailfeed/decide.h"
#include "mailfeed/log.h"
#include "mailfeed/message.h"
#include "mailfeed/messages.h"
#include "mailfeed/notice.h"
#include "mailfeed/outbox.h"
#include "mailfeed/pipeline.h"
#include "mailfeed/recipients.h"
#include "mailfeed/replies.h"
#include "mailfeed/thread.h"
#include "mailfeed/util.h"
#include "mailfeed/worker.h"

struct pending {
	int64_t id;
	char *mailbox;
	char *raw;
	size_t raw_len;
	struct mf_message *msg;
	char reason[256];
	int sender_verified; /* for the notice of a refusal */
	int poison;
	struct worker_job *job; /* while it is parsed */
};

static int by_date(const void *a, const void *b)
{
	const struct pending *x = a, *y = b;
	time_t dx = x->msg ? x->msg->date : 0, dy = y->msg ? y->msg->date : 0;
	if (dx != dy && dx && dy)
		return dx < dy ? -1 : 1;
	return x->id < y->id ? -1 : x->id > y->id;
}

/* The new state of message id, with its parsed form when m is given (as
 * the state keeps it: message_stored_json; a queued message's text is in
 * its outbox item, and the hash of its content stands for full_text). */
static int set_state(struct store *st, int64_t id, enum msg_state state, const char *reason,
		     const struct mf_message *m)
{
	char content[65];
	if (m && state == MSG_QUEUED)
		messages_content_hash(m, content);
	char *parsed = m ? message_stored_json(m, state == MSG_QUEUED ? content : NULL) : NULL;
	int rc = messages_set_state(st, id, state, reason, parsed);
	free(parsed);
	return rc;
}

/* Records a skip (or a duplicate, handled); *notify = 1 when the sender
 * is to be told why.  0 or -1. */
static int record_skip(struct store *st, const struct mf_mailbox *mb, struct pending *p,
		       const struct decision *d, int *notify)
{
	const struct mf_message *m = p->msg;
	const char *reason = d->reason;
	char q1[128], q2[128];
	if (set_state(st, p->id, d->duplicate ? MSG_HANDLED : MSG_SKIPPED, reason, m) < 0) {
		log_error("message.error mailbox=%s id=%lld error=%s", mb->name, (long long)p->id,
			  LOG_Q(store_errmsg(st)));
		return -1;
	}
	if (d->duplicate)
		return 0;
	log_info("message.skipped mailbox=%s id=%lld from=%s reason=%s", mb->name, (long long)p->id,
		 log_quote(m->from_email, q1, sizeof q1), log_quote(reason, q2, sizeof q2));
	if (!classify_is_automatic(m) && m->from_email &&
	    strncmp(reason, "sender not allowed", 18) == 0) {
		*notify = 1;
		p->sender_verified = d->auth.verified;
		snprintf(p->reason, sizeof p->reason, "%.250s", reason);
	}
	return 0;
}

/* The whole message as it arrived, as an attachment, so nothing trimmed is
 * out of sight. */
static void attach_original(struct mf_message *m, const struct pending *p)
{
	m->attachments = xrealloc(m->attachments, (m->n_attachments + 1) * sizeof *m->attachments);
	struct mf_attachment *a = &m->attachments[m->n_attachments++];
	memset(a, 0, sizeof *a);
	a->filename = xstrdup("original.eml");
	a->content_type = xstrdup("message/rfc822");
	a->size = p->raw_len;
	a->data = xmalloc(p->raw_len ? p->raw_len : 1);
	memcpy(a->data, p->raw, p->raw_len);
	sha256_hex(p->raw, p->raw_len, a->sha256);
}

/* The post or comment of p after decision d, into the outbox: its id, or
 * -1. */
static int64_t enqueue_item(struct store *st, const struct mf_config *cfg,
			    const struct mf_mailbox *mb, const struct pending *p,
			    const struct decision *d, int64_t thread_id)
{
	struct strlist recipients = {0};
	recipients_mentionable(cfg, p->msg, NULL, &recipients);
	struct outbox_new n = {
	    .message = p->id,
	    .key = d->key,
	    .kind = decide_action_name(d->action),
	    .group = mb->group,
	    .thread_id = thread_id,
	    .parent = d->action == DECIDE_COMMENT ? d->root_item : 0,
	    .msg = p->msg,
	    .author_verified = d->auth.verified,
	    .author_check = d->auth.why,
	    .extra_hashtags = &mb->hashtags,
	    .recipients = &recipients,
	};
	int64_t item = outbox_enqueue(st, &n);
	strlist_free(&recipients);
	return item;
}

/* The savepoint of one message, its statements kept prepared (they run
 * for every message).  0 or -1 (logged). */
static int savepoint(struct store *st, const char *sql)
{
	return store_run_kept(st, store_kept(st, sql));
}

static const char SAVEPOINT_MESSAGE[] = "SAVEPOINT message";
static const char RELEASE_MESSAGE[] = "RELEASE message";
static const char ROLLBACK_MESSAGE[] = "ROLLBACK TO message";

/* Runs inside the batch transaction; one savepoint per message so a store
 * error undoes only that message (which stays 'new': -1).  *notify = 1 when
 * the sender is to be told (after the commit: no network I/O inside a
 * transaction). */
static int enqueue_message(struct store *st, const struct mf_config *cfg,
			   const struct mf_mailbox *mb, struct pending *p, int *notify)
{
	struct mf_message *m = p->msg;
	struct decision d;
	char q1[128], q2[128];

	/* the same decision preview and inspect show */
	if (decide_message_kept(st, cfg, mb, m, p->raw, p->raw_len, &d) < 0) {
		log_error("message.error mailbox=%s id=%lld error=%s", mb->name, (long long)p->id,
			  LOG_Q(store_errmsg(st)));
		decision_free(&d);
		return -1;
	}
	if (d.action == DECIDE_SKIP) {
		int rc = record_skip(st, mb, p, &d, notify);
		decision_free(&d);
		return rc;
	}

	if (savepoint(st, SAVEPOINT_MESSAGE) < 0) {
		decision_free(&d);
		return -1;
	}
	int64_t thread_id = 0;
	int is_new = 0;
	if (thread_record(st, mb->group, mb->name, m, d.thread_id, &thread_id, &is_new) < 0)
		goto fail;
	if (mb->attach_original)
		attach_original(m, p);
	/* a thread known by id whose post never became an item (e.g. its first
	 * message was skipped): this one starts it (decide_message said so) */
	int64_t item = enqueue_item(st, cfg, mb, p, &d, thread_id);
	if (item < 0)
		goto fail;
	if (d.action != DECIDE_COMMENT && thread_set_root(st, thread_id, item) < 0)
		goto fail;
	if (set_state(st, p->id, MSG_QUEUED, d.note[0] ? d.note : NULL, m) < 0)
		goto fail;
	if (d.note[0])
		log_warn("message.id_reused mailbox=%s id=%lld message_id=%s note=%s", mb->name,
			 (long long)p->id, log_quote(m->message_id, q1, sizeof q1),
			 log_quote(d.note, q2, sizeof q2));
	savepoint(st, RELEASE_MESSAGE);
	log_info("message.queued mailbox=%s id=%lld kind=%s key=%s thread=%lld sender=%s", mb->name,
		 (long long)p->id, decide_action_name(d.action), d.key, (long long)thread_id,
		 log_quote(d.auth.why, q1, sizeof q1));
	decision_free(&d);
	return 0;
fail:
	decision_free(&d);
	log_error("message.error mailbox=%s id=%lld error=%s", mb->name, (long long)p->id,
		  LOG_Q(store_errmsg(st)));
	savepoint(st, ROLLBACK_MESSAGE);
	savepoint(st, RELEASE_MESSAGE);
	return -1;
}

static void notify_sender(struct store *st, const struct mf_config *cfg,
			  const struct mf_mailbox *mb, const struct pending *p)
{
	const struct mf_message *m = p->msg;
	char *what = xasprintf("to %s was not posted to the group feed", mb->folder);
	notice_refusal(st, cfg, m->from_email, p->sender_verified, m->subject, "sender-not-allowed",
		       "Your message was not posted", what, p->reason,
		       "Ask the feed's administrator if you think this is wrong.");
	free(what);
}

static int handle_reply(struct store *st, const struct mf_config *cfg, struct pending *p)
{
	const char *state = NULL;
	char reason[300] = "";
	char q[128];
	struct auth_verdict av;
	auth_verify(cfg->gateway.trusted_authserv, p->raw, p->raw_len,
		    p->msg ? p->msg->from_email : NULL, &av);
	if (replies_process(st, cfg, p->id, p->msg, &av, &state, reason, sizeof reason) < 0) {
		log_error("reply.error id=%lld error=%s", (long long)p->id,
			  log_quote(reason, q, sizeof q));
		return -1;
	}
	/* replies_process records the queued state together with the comment;
	 * refusals and commands are recorded here */
	enum msg_state ms;
	if (!state)
		return 0;
	if (msg_state_parse(state, &ms) < 0) {
		log_error("reply.error id=%lld error=\"unknown message state\" state=%s",
			  (long long)p->id, log_quote(state, q, sizeof q));
		return -1;
	}
	if (ms != MSG_QUEUED)
		return set_state(st, p->id, ms, reason[0] ? reason : NULL, p->msg);
	return 0;
}

/* Commits the batch transaction; the messages in it count as done, or,
 * when the commit fails, their notices are not sent. */
static int batch_commit(struct store *st, int *notify, size_t from, size_t to, int *in_batch,
			int *done)
{
	int rc = store_commit(st);
	if (rc == 0)
		*done += *in_batch;
	else
		memset(notify + from, 0, (to - from) * sizeof *notify);
	*in_batch = 0;
	return rc;
}

/* A parse started and never ended (the daemon itself was stopped while
 * parsing) counts one attempt.  A batch the daemon died in marks each of
 * its messages once, though only one of them was being parsed: they come
 * back as suspects, each parsed on its own.  A message whose lone parse
 * was then cut short twice goes to the dead list instead of being parsed
 * again after the next start; a restart that merely lands while suspects
 * are being worked through costs no innocent message its post. */
#define PARSE_MAX_ATTEMPTS 3

/* The new messages of a batch, read from the store one by one as the parse
 * worker asks for them. */
struct rows {
	struct store *st;
	const int64_t *ids;
	size_t n_ids, next_id;
	struct pending *batch;
	size_t n, cap;
	int suspect; /* the batch is one message whose parse was under way at a stop */
};

static struct worker_job *next_row(void *ctx)
{
	struct rows *r = ctx;
	while (r->next_id < r->n_ids) {
		char *mailbox, *raw;
		size_t len;
		int64_t id = r->ids[r->next_id++];
		if (messages_raw(r->st, id, &mailbox, &raw, &len) != 1)
			continue; /* gone meanwhile (dead drop) */
		if (r->n == r->cap) {
			r->cap = r->cap ? r->cap * 2 : 32;
			r->batch = xrealloc(r->batch, r->cap * sizeof *r->batch);
		}
		struct pending *p = &r->batch[r->n++];
		memset(p, 0, sizeof *p);
		p->id = id;
		p->mailbox = mailbox;
		p->raw = raw;
		p->raw_len = len;
		/* apart from the batch, which may move as it grows */
		p->job = xcalloc(1, sizeof *p->job);
		p->job->raw = p->raw;
		p->job->len = p->raw_len;
		return p->job;
	}
	return NULL;
}

/* Poison is recorded as soon as it is known, not with the batch: a batch of
 * slow or crashing messages keeps its verdicts even if the daemon is
 * stopped before the batch ends.  The other outcomes are taken from the
 * jobs once the whole batch is parsed (they are handled in Date order). */
static void row_parsed(void *ctx, struct worker_job *job)
{
	struct rows *r = ctx;
	char q[300];
	if (job->rc <= 0)
		return;
	for (size_t i = 0; i < r->n; i++) {
		struct pending *p = &r->batch[i];
		if (p->job != job)
			continue;
		if (set_state(r->st, p->id, MSG_DEAD, job->reason, NULL) == 0) {
			p->poison = 2; /* recorded */
			log_warn("message.quarantined mailbox=%s id=%lld reason=%s", p->mailbox,
				 (long long)p->id, log_quote(job->reason, q, sizeof q));
		}
		return;
	}
}

/* Messages whose parse was started and never ended (suspects) come only
 * from a process stopped while parsing: this one's predecessor, or another
 * instance that held the stage's lease.  Looking for them scans every new
 * message, which through a backlog of thousands would be done for every
 * batch: so it is done once a pass (the first batch after one that found
 * nothing to do) and at least every SUSPECTS_EVERY seconds, less than the
 * shortest lease_timeout (2 s): another instance cannot have taken the
 * stage, parsed and died since without this one going that long without a
 * look.  Per thread (the processor's), per store. */
#define SUSPECTS_EVERY 1.0
static _Thread_local const struct store *suspects_none_store;
static _Thread_local double suspects_none_at;

static int suspects_look_due(const struct store *st, double now)
{
	return suspects_none_store != st || now - suspects_none_at >= SUSPECTS_EVERY;
}

/* Up to limit ids of new messages of the configured mappings (and the
 * replies folder), with min_attempts parses or more started: see
 * messages_new_ids.  0 or -1. */
static int new_ids(struct store *st, const struct mf_config *cfg, int min_attempts, int limit,
		   int64_t **ids, int **attempts, size_t *n)
{
	const char **names = xcalloc(cfg->n_mailboxes + 1, sizeof *names);
	for (size_t i = 0; i < cfg->n_mailboxes; i++)
		names[i] = cfg->mailboxes[i].name;
	int rc = messages_new_ids(st, cfg->replies.present ? REPLIES_KEY : NULL, names,
				  cfg->n_mailboxes, min_attempts, limit, ids, attempts, n);
	free(names);
	return rc;
}

/* The ids of the next batch: messages whose parse was started before and
 * never ended come first, one at a time, so that the one that stops the
 * daemon is found and the others are not blamed with it.  Only messages of
 * mappings in the config: those of a removed mapping stay stored for when
 * it comes back, and must not take the batch.  0 or -1. */
static int batch_ids(struct store *st, const struct mf_config *cfg, int limit, int64_t **ids,
		     int **attempts, size_t *n, int *suspect)
{
	int rc = 0;
	double now = now_monotonic();
	int look = suspects_look_due(st, now);
	*n = 0;
	for (int suspects = look; rc == 0 && suspects >= 0 && *n == 0; suspects--) {
		rc = new_ids(st, cfg, suspects, suspects ? 1 : limit, ids, attempts, n);
		*suspect = suspects;
		if (suspects && rc == 0 && *n == 0) {
			suspects_none_store = st;
			suspects_none_at = now;
		}
	}
	return rc;
}

/* Seconds spent in each stage since the start, for the pass summary. */
static double stage_parse_s, stage_enqueue_s, stage_enqueue_cpu_s;

void pipeline_stage_seconds(double *parse_s, double *enqueue_s, double *enqueue_cpu_s)
{
	*parse_s = stage_parse_s;
	*enqueue_s = stage_enqueue_s;
	*enqueue_cpu_s = stage_enqueue_cpu_s;
}

/* Sends to the dead list the messages of ids whose parse was started
 * PARSE_MAX_ATTEMPTS times and never ended, and keeps the others in ids
 * (*n_parse of them).  Returns how many went dead. */
static int quarantine_suspects(struct store *st, int64_t *ids, const int *attempts, size_t n_ids,
			       size_t *n_parse)
{
	int done = 0;
	*n_parse = 0;
	for (size_t i = 0; i < n_ids; i++) {
		if (attempts[i] < PARSE_MAX_ATTEMPTS) {
			ids[(*n_parse)++] = ids[i];
			continue;
		}
		const char *why =
		    "parse never finished: the daemon stopped twice while parsing it on its own";
		if (set_state(st, ids[i], MSG_DEAD, why, NULL) == 0) {
			done++;
			log_warn("message.quarantined id=%lld reason=%s", (long long)ids[i],
				 LOG_Q(why));
		}
	}
	return done;
}

/* Takes the outcome of each parse from its job. */
static void take_outcomes(struct pending *batch, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		struct pending *p = &batch[i];
		p->msg = p->job->msg;
		snprintf(p->reason, sizeof p->reason, "%s", p->job->reason);
		if (p->poison == 2)
			; /* recorded as soon as it was known */
		else if (p->job->rc > 0)
			p->poison = 1;
		else if (p->job->rc < 0)
			p->poison = -1; /* our fault, not the message's: try again later */
		free(p->job);
		p->job = NULL;
	}
}

/* Reads and parses the next batch into r (r->batch, r->n).  *done counts
 * the messages already dealt with (gone dead).  0 or -1. */
static int parse_batch(struct store *st, const struct mf_config *cfg, struct parse_worker *w,
		       int limit, struct rows *r, int *done)
{
	int64_t *ids;
	int *attempts;
	size_t n_ids, n_parse;

	if (batch_ids(st, cfg, limit, &ids, &attempts, &n_ids, &r->suspect) < 0)
		return -1;
	*done += quarantine_suspects(st, ids, attempts, n_ids, &n_parse);
	free(attempts);
	if (messages_count_attempts(st, ids, n_parse) < 0) {
		free(ids);
		return -1;
	}
	r->ids = ids;
	r->n_ids = n_parse;
	struct worker_feed feed = {next_row, row_parsed, r};
	worker_parse_stream(w, &feed);
	free(ids);
	r->ids = NULL;
	take_outcomes(r->batch, r->n);
	return 0;
}

/* --- the next batch, parsed ahead ---------------------------------------
 * Through a backlog, parsing a batch in the worker (a process of its own)
 * and classifying, threading and enqueueing the one before take about as
 * long each.  So once a batch is parsed, the next one is read and handed
 * to a thread that streams it through the worker while this thread
 * records the first: the two overlap on two cores.  That thread touches
 * no store: the ids, the attempt counts and the raw mail are read here
 * before it starts, and the poison it finds is recorded here as soon as
 * it ends (before the batch it belongs to is recorded).  At most one
 * batch is ahead, of at most AHEAD_BYTES of mail (one message at least),
 * and none while a look for suspects is due: that look decides what the
 * next batch is.  The batch ahead is taken by the next call on the same
 * store and worker, or given up by pipeline_settle (its counted attempts
 * forgotten): a caller's loop that ends on a call returning 0 or -1
 * leaves none behind, since such a call gives up its own. */
#define AHEAD_BYTES (4 * 1024 * 1024)
/* How often the thread that waits for the batch ahead calls the worker's
 * tick (the watchdog and the processor's health). */
#define AHEAD_TICK 0.1

struct ahead {
	const struct store *st;
	struct parse_worker *w;
	pthread_t thread;
	struct rows r; /* the batch: r.batch, r.n */
	size_t next;   /* the feed's position in it */
	int threaded;  /* thread runs (else it was parsed at once) */
	void (*tick)(void *arg);
	void *tick_arg;
};
static _Thread_local struct ahead *ahead_of; /* the processing thread's */

static struct worker_job *ahead_next(void *ctx)
{
	struct ahead *a = ctx;
	return a->next < a->r.n ? a->r.batch[a->next++].job : NULL;
}

/* Outcomes are taken once the whole batch is parsed. */
static void ahead_parsed(void *ctx, struct worker_job *job)
{
	(void)ctx;
	(void)job;
}

static void *ahead_run(void *arg)
{
	struct ahead *a = arg;
	struct worker_feed feed = {ahead_next, ahead_parsed, a};
	worker_parse_stream(a->w, &feed);
	return NULL;
}

/* Waits for the thread, calling the worker's tick meanwhile, and gives
 * the tick back to the worker. */
static void ahead_join(struct ahead *a)
{
	while (a->threaded) {
		struct timespec until = realtime_after(AHEAD_TICK);
		if (pthread_timedjoin_np(a->thread, NULL, &until) == 0)
			a->threaded = 0;
		else if (a->tick)
			a->tick(a->tick_arg);
	}
	worker_set_tick(a->w, a->tick, a->tick_arg);
}

/* The ids of the batch after the n_cur messages of cur (those are still
 * new until they are recorded), at most limit of them.  0 or -1. */
static int ahead_ids(struct store *st, const struct mf_config *cfg, int limit,
		     const struct pending *cur, size_t n_cur, int64_t **ids, int **attempts,
		     size_t *n)
{
	if (new_ids(st, cfg, 0, limit + (int)n_cur, ids, attempts, n) < 0)
		return -1;
	size_t k = 0;
	for (size_t i = 0; i < *n && k < (size_t)limit; i++) {
		size_t j = 0;
		while (j < n_cur && cur[j].id != (*ids)[i])
			j++;
		if (j < n_cur)
			continue;
		(*ids)[k] = (*ids)[i];
		(*attempts)[k++] = (*attempts)[i];
	}
	*n = k;
	return 0;
}

/* The ids of the n messages of batch (the caller's to free). */
static int64_t *pending_ids(const struct pending *batch, size_t n)
{
	int64_t *ids = xcalloc(n ? n : 1, sizeof *ids);
	for (size_t i = 0; i < n; i++)
		ids[i] = batch[i].id;
	return ids;
}

/* Frees the messages of a batch (parsed or not). */
static void batch_free(struct pending *batch, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		message_free(batch[i].msg);
		if (batch[i].job)
			message_free(batch[i].job->msg);
		free(batch[i].job);
		free(batch[i].raw);
		free(batch[i].mailbox);
	}
	free(batch);
}

/* Reads the batch after cur up to AHEAD_BYTES, counts its attempts and
 * starts its parse.  Returns how many messages it sent to the dead list
 * instead (suspects parsed too often). */
static int ahead_start(struct store *st, const struct mf_config *cfg, struct parse_worker *w,
		       int limit, const struct pending *cur, size_t n_cur)
{
	int64_t *ids;
	int *attempts;
	size_t n_ids, n_parse, bytes = 0;
	if (ahead_ids(st, cfg, limit, cur, n_cur, &ids, &attempts, &n_ids) < 0)
		return 0;
	int dead = quarantine_suspects(st, ids, attempts, n_ids, &n_parse);
	free(attempts);
	struct ahead *a = xcalloc(1, sizeof *a);
	a->st = st;
	a->w = w;
	a->r = (struct rows){.st = st, .ids = ids, .n_ids = n_parse};
	while (bytes < AHEAD_BYTES && next_row(&a->r))
		bytes += a->r.batch[a->r.n - 1].raw_len;
	free(ids);
	a->r.ids = NULL;
	int64_t *taken = pending_ids(a->r.batch, a->r.n);
	int counted = a->r.n > 0 && messages_count_attempts(st, taken, a->r.n) == 0;
	free(taken);
	if (!counted) {
		batch_free(a->r.batch, a->r.n);
		free(a);
		return dead;
	}
	worker_get_tick(w, &a->tick, &a->tick_arg);
	worker_set_tick(w, NULL, NULL);
	a->threaded = pthread_create(&a->thread, NULL, ahead_run, a) == 0;
	if (!a->threaded) {
		worker_set_tick(w, a->tick, a->tick_arg);
		ahead_run(a); /* no thread: parsed here and now */
	}
	ahead_of = a;
	return dead;
}

/* The batch ahead, into r, when it is this store's and worker's; the
 * poison in it is recorded at once.  1 when it was taken, else 0. */
static int ahead_take(struct store *st, struct parse_worker *w, struct rows *r)
{
	struct ahead *a = ahead_of;
	if (!a || a->st != st || a->w != w)
		return 0;
	ahead_of = NULL;
	ahead_join(a);
	*r = a->r;
	for (size_t i = 0; i < r->n; i++)
		row_parsed(r, r->batch[i].job);
	take_outcomes(r->batch, r->n);
	free(a);
	return 1;
}

void pipeline_settle(struct store *st)
{
	struct ahead *a = ahead_of;
	if (!a)
		return;
	ahead_of = NULL;
	ahead_join(a);
	int64_t *ids = pending_ids(a->r.batch, a->r.n);
	if (st)
		messages_forget_attempts(st, ids, a->r.n);
	free(ids);
	batch_free(a->r.batch, a->r.n);
	free(a);
}

/* The batch transaction as its messages are handled in Date order. */
struct batch_tx {
	int *notify;	    /* per message: the sender is told after the commit */
	int in_tx;	    /* a transaction is open */
	int in_batch;	    /* messages in it */
	int done;	    /* messages whose new state is committed */
	int store_failed;   /* the store refused something */
	int deferred;	    /* the parse worker was unavailable for one */
	size_t batch_start; /* first message of the open transaction */
};

/* A reply commits on its own: the open transaction is committed first and
 * a new one begun after it. */
static void handle_reply_in_batch(struct store *st, const struct mf_config *cfg, struct batch_tx *t,
				  struct pending *p, size_t i)
{
	if (batch_commit(st, t->notify, t->batch_start, i, &t->in_batch, &t->done) < 0)
		t->store_failed = 1;
	if (handle_reply(st, cfg, p) == 0)
		t->done++;
	else
		t->store_failed = 1;
	t->in_tx = store_begin(st) == 0;
	t->store_failed |= !t->in_tx;
	t->batch_start = i + 1;
}

/* Records the verdict on message i of the batch. */
static void handle_one(struct store *st, const struct mf_config *cfg, struct batch_tx *t,
		       struct pending *p, size_t i)
{
	char q[300];
	if (p->poison < 0) {
		t->deferred = 1;
		log_error("message.deferred mailbox=%s id=%lld reason=\"parse worker "
			  "unavailable\"",
			  p->mailbox, (long long)p->id);
	} else if (p->poison == 2) {
		t->done++;
	} else if (!t->in_tx) {
		return;
	} else if (p->poison) {
		if (set_state(st, p->id, MSG_DEAD, p->reason, NULL) < 0) {
			t->store_failed = 1;
			return;
		}
		t->in_batch++;
		log_warn("message.quarantined mailbox=%s id=%lld reason=%s", p->mailbox,
			 (long long)p->id, log_quote(p->reason, q, sizeof q));
	} else if (strcmp(p->mailbox, REPLIES_KEY) == 0) {
		handle_reply_in_batch(st, cfg, t, p, i);
	} else if (enqueue_message(st, cfg, config_mailbox(cfg, p->mailbox), p, &t->notify[i]) ==
		   0) {
		t->in_batch++;
		if (t->notify[i]) /* queued with the verdict it explains */
			notify_sender(st, cfg, config_mailbox(cfg, p->mailbox), p);
	} else {
		t->store_failed = 1;
	}
}

/* One transaction (one fsync) for the batch; replies commit on their own
 * and notices are queued in it (sent by the notice sender).  Progress
 * counts the messages whose new state was committed: a store that takes
 * nothing (disk full) must end the caller's loop, not spin on the same
 * batch.  Returns that count; *store_failed tells of a refusal. */
static int record_batch(struct store *st, const struct mf_config *cfg, struct pending *batch,
			size_t n, int *store_failed)
{
	struct batch_tx t = {.notify = xcalloc(n ? n : 1, sizeof *t.notify)};
	t.in_tx = store_begin(st) == 0;
	t.store_failed = !t.in_tx;
	for (size_t i = 0; i < n; i++)
		handle_one(st, cfg, &t, &batch[i], i);
	if (t.in_tx && batch_commit(st, t.notify, t.batch_start, n, &t.in_batch, &t.done) < 0)
		t.store_failed = 1;
	if (t.deferred || t.store_failed) {
		int64_t *ids = pending_ids(batch, n);
		messages_forget_attempts(st, ids, n);
		free(ids);
	}
	free(t.notify);
	*store_failed = t.store_failed;
	return t.done;
}

int pipeline_process_new(struct store *st, const struct mf_config *cfg, struct parse_worker *w,
			 int limit)
{
	struct rows r = {.st = st};
	int done = 0, store_failed = 0;
	double t_start = now_monotonic();

	if (!ahead_take(st, w, &r)) {
		pipeline_settle(st); /* another store's or worker's */
		if (parse_batch(st, cfg, w, limit, &r, &done) < 0) {
			free(r.batch);
			suspects_none_store = NULL;
			return done > 0 ? done : -1;
		}
	}
	struct pending *batch = r.batch;
	size_t n = r.n;
	if (r.suspect && n == 1 && batch[0].poison == 0) {
		/* A suspect that parses is not to blame: it goes back among the
		 * new messages, to be handled with those stored alongside in Date
		 * order (alone, a reply stored before its parent would become the
		 * post). */
		messages_forget_attempts(st, &batch[0].id, 1);
		batch_free(batch, n);
		return 1;
	}
	if (n > 1)
		qsort(batch, n, sizeof *batch, by_date);
	if (!r.suspect && n > 0 && !suspects_look_due(st, now_monotonic()))
		done += ahead_start(st, cfg, w, limit, batch, n);
	double t_parsed = now_monotonic(), cpu_parsed = now_thread_cpu();
	stage_parse_s += t_parsed - t_start;

	done += record_batch(st, cfg, batch, n, &store_failed);
	batch_free(batch, n);
	stage_enqueue_s += now_monotonic() - t_parsed;
	stage_enqueue_cpu_s += now_thread_cpu() - cpu_parsed;
	if (done <= 0 || store_failed) {
		suspects_none_store = NULL; /* the next pass looks again */
		pipeline_settle(st);	    /* the caller may stop here */
	}
	return done == 0 && store_failed ? -1 : done;
}
