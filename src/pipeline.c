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
#include <errno.h>
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
	int raw_cut; /* raw holds only the header block (raw_cut_to_header) */
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

/* Once a message is parsed, its raw form is needed whole only to attach
 * it (attach_original) or to key a message without a usable Message-ID;
 * the rest reads its header block (raw_header_each, auth_verify).  Through
 * a backlog the batches parsed and waiting to be recorded would otherwise
 * hold all of their mail. */
static void raw_cut_to_header(struct pending *batch, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		struct pending *p = &batch[i];
		size_t keep = p->raw ? raw_header_block_len(p->raw, p->raw_len) : 0;
		if (!p->raw || keep >= p->raw_len)
			continue;
		p->raw_len = keep;
		p->raw = xrealloc(p->raw, keep + 1);
		p->raw[keep] = '\0';
		p->raw_cut = 1;
		if (p->job)
			p->job->raw = p->raw;
	}
}

/* The whole raw form of p again when what comes needs it.  0 or -1. */
static int raw_whole(struct store *st, const struct mf_mailbox *mb, struct pending *p)
{
	if (!p->raw_cut || (!mb->attach_original && p->msg && thread_id_usable(p->msg->message_id)))
		return 0;
	char *mailbox, *raw;
	size_t len;
	if (messages_raw(st, p->id, &mailbox, &raw, &len) != 1)
		return -1;
	free(mailbox);
	free(p->raw);
	p->raw = raw;
	p->raw_len = len;
	p->raw_cut = 0;
	return 0;
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
	if (raw_whole(st, mb, p) < 0) {
		log_error("message.error mailbox=%s id=%lld error=%s", mb->name, (long long)p->id,
			  LOG_Q(store_errmsg(st)));
		return -1;
	}
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
	raw_cut_to_header(r->batch, r->n);
	free(ids);
	r->ids = NULL;
	take_outcomes(r->batch, r->n);
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

/* The counted parse attempts of a batch given up before it was recorded
 * are forgotten: they never ended in a verdict. */
static void batch_forget_attempts(struct store *st, const struct pending *batch, size_t n)
{
	int64_t *ids = pending_ids(batch, n);
	messages_forget_attempts(st, ids, n);
	free(ids);
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

/* --- the next batches, parsed ahead -------------------------------------
 * Through a backlog, parsing a batch in the worker (a process of its own)
 * and classifying, threading and enqueueing the one before take about as
 * long each, but not batch by batch: with a single batch ahead, whichever
 * side finished its batch first waited for the other, and through 10,000
 * messages this thread waited half a second for parses.  So up to
 * AHEAD_BATCHES batches are read and queued on a line, whose thread
 * streams them through the worker one after the other while this thread
 * records the batch before them.  The line's thread touches no store: the
 * ids, the attempt counts and the raw mail of a batch are read here before
 * it is queued, and the poison it finds is recorded here as soon as the
 * batch is taken (before the batch itself is recorded).  The raw mail on
 * the line is at most AHEAD_BYTES (one message at least), and nothing is
 * queued while a look for suspects is due: that look decides what the next
 * batch is.  The line is taken batch by batch by the next calls on the same
 * store and worker, or given up by pipeline_settle (the counted attempts
 * of its batches forgotten): a caller's loop that ends on a call returning
 * 0 or -1 leaves none behind, since such a call gives up its own. */
#define AHEAD_BATCHES 2
#define AHEAD_BYTES (4 * 1024 * 1024)
/* How often the thread that waits for the line calls the worker's tick
 * (the watchdog and the processor's health). */
#define AHEAD_TICK 0.1

struct ahead {
	struct rows r;	     /* the batch: r.batch, r.n */
	size_t next;	     /* the feed's position in it */
	size_t bytes;	     /* its raw mail */
	int parsed;	     /* the line's thread is done with it (under mu) */
	struct ahead *later; /* the batch queued after it */
};

/* The batches ahead of one processing thread, oldest first, and the
 * thread that parses them.  The worker's tick is this thread's to call
 * while the line exists (the line's thread has none). */
struct ahead_line {
	const struct store *st;
	struct parse_worker *w;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct ahead *first, *last;
	size_t n, bytes;
	int running;  /* the thread is at work (under mu) */
	int stopping; /* it is to start no more batches (under mu) */
	int threaded; /* a thread to join */
	pthread_t thread;
	void (*tick)(void *arg);
	void *tick_arg;
};
static _Thread_local struct ahead_line *line_of; /* the processing thread's */

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

/* The line's thread: every batch queued, in order, until none is left. */
static void *line_run(void *arg)
{
	struct ahead_line *l = arg;
	pthread_mutex_lock(&l->mu);
	for (;;) {
		struct ahead *a = l->first;
		while (a && a->parsed)
			a = a->later;
		if (!a || l->stopping)
			break;
		pthread_mutex_unlock(&l->mu);
		struct worker_feed feed = {ahead_next, ahead_parsed, a};
		worker_parse_stream(l->w, &feed);
		raw_cut_to_header(a->r.batch, a->r.n);
		pthread_mutex_lock(&l->mu);
		a->parsed = 1;
		pthread_cond_broadcast(&l->cv);
	}
	l->running = 0;
	pthread_cond_broadcast(&l->cv);
	pthread_mutex_unlock(&l->mu);
	return NULL;
}

/* Waits, calling the worker's tick meanwhile, until a is parsed (NULL:
 * until the thread is idle).  Called with l->mu held. */
static void line_wait(struct ahead_line *l, const struct ahead *a)
{
	while (a ? !a->parsed : l->running) {
		struct timespec until = realtime_after(AHEAD_TICK);
		if (pthread_cond_timedwait(&l->cv, &l->mu, &until) == ETIMEDOUT && l->tick) {
			pthread_mutex_unlock(&l->mu);
			l->tick(l->tick_arg);
			pthread_mutex_lock(&l->mu);
		}
	}
}

static struct ahead_line *line_new(const struct store *st, struct parse_worker *w)
{
	struct ahead_line *l = xcalloc(1, sizeof *l);
	l->st = st;
	l->w = w;
	pthread_mutex_init(&l->mu, NULL);
	pthread_cond_init(&l->cv, NULL);
	worker_get_tick(w, &l->tick, &l->tick_arg);
	return l;
}

/* Sets the thread to work on what was queued, unless it is at work. */
static void line_wake(struct ahead_line *l)
{
	pthread_mutex_lock(&l->mu);
	int start = !l->running;
	l->running = 1;
	pthread_mutex_unlock(&l->mu);
	if (!start)
		return;
	if (l->threaded)
		pthread_join(l->thread, NULL); /* it left its loop */
	worker_set_tick(l->w, NULL, NULL);
	l->threaded = pthread_create(&l->thread, NULL, line_run, l) == 0;
	if (!l->threaded) {
		worker_set_tick(l->w, l->tick, l->tick_arg);
		line_run(l); /* no thread: parsed here and now */
	}
}

/* Ends the line: its thread stopped and joined, the worker's tick given
 * back, and every batch still on it freed (their counted attempts
 * forgotten through st unless it is NULL). */
static void line_end(struct ahead_line *l, struct store *st)
{
	pthread_mutex_lock(&l->mu);
	l->stopping = 1;
	line_wait(l, NULL);
	pthread_mutex_unlock(&l->mu);
	if (l->threaded)
		pthread_join(l->thread, NULL);
	worker_set_tick(l->w, l->tick, l->tick_arg);
	while (l->first) {
		struct ahead *a = l->first;
		l->first = a->later;
		if (st)
			batch_forget_attempts(st, a->r.batch, a->r.n);
		batch_free(a->r.batch, a->r.n);
		free(a);
	}
	pthread_cond_destroy(&l->cv);
	pthread_mutex_destroy(&l->mu);
	free(l);
}

/* The ids of the batch after the n_cur messages of cur and those on the
 * line (they are still new until they are recorded), at most limit of
 * them.  0 or -1. */
static int ahead_ids(struct store *st, const struct mf_config *cfg, int limit,
		     const struct pending *cur, size_t n_cur, const struct ahead_line *l,
		     int64_t **ids, int **attempts, size_t *n)
{
	size_t n_skip = n_cur;
	for (const struct ahead *a = l ? l->first : NULL; a; a = a->later)
		n_skip += a->r.n;
	int64_t *skip = xcalloc(n_skip ? n_skip : 1, sizeof *skip);
	size_t k = 0;
	for (size_t i = 0; i < n_cur; i++)
		skip[k++] = cur[i].id;
	for (const struct ahead *a = l ? l->first : NULL; a; a = a->later)
		for (size_t i = 0; i < a->r.n; i++)
			skip[k++] = a->r.batch[i].id;
	int rc = new_ids(st, cfg, 0, limit + (int)n_skip, ids, attempts, n);
	k = 0;
	for (size_t i = 0; rc == 0 && i < *n && k < (size_t)limit; i++) {
		size_t j = 0;
		while (j < n_skip && skip[j] != (*ids)[i])
			j++;
		if (j < n_skip)
			continue;
		(*ids)[k] = (*ids)[i];
		(*attempts)[k++] = (*attempts)[i];
	}
	*n = k;
	free(skip);
	return rc;
}

/* Reads the batch after cur and the line, up to what is left of
 * AHEAD_BYTES, counts its attempts and queues it on the line.  Returns
 * how many messages it sent to the dead list instead (suspects parsed too
 * often); *queued tells whether a batch was queued. */
static int ahead_start(struct store *st, const struct mf_config *cfg, struct parse_worker *w,
		       int limit, const struct pending *cur, size_t n_cur, int *queued)
{
	int64_t *ids;
	int *attempts;
	size_t n_ids, n_parse;
	struct ahead_line *l = line_of;
	*queued = 0;
	if (l && (l->n >= AHEAD_BATCHES || l->bytes >= AHEAD_BYTES))
		return 0;
	if (ahead_ids(st, cfg, limit, cur, n_cur, l, &ids, &attempts, &n_ids) < 0)
		return 0;
	int dead = quarantine_suspects(st, ids, attempts, n_ids, &n_parse);
	free(attempts);
	struct ahead *a = xcalloc(1, sizeof *a);
	a->r = (struct rows){.st = st, .ids = ids, .n_ids = n_parse};
	size_t room = AHEAD_BYTES - (l ? l->bytes : 0);
	while (a->bytes < room && next_row(&a->r))
		a->bytes += a->r.batch[a->r.n - 1].raw_len;
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
	if (!l)
		l = line_of = line_new(st, w);
	pthread_mutex_lock(&l->mu);
	if (l->last)
		l->last->later = a;
	else
		l->first = a;
	l->last = a;
	l->n++;
	l->bytes += a->bytes;
	pthread_mutex_unlock(&l->mu);
	line_wake(l);
	*queued = 1;
	return dead;
}

/* The oldest batch of the line, into r, once parsed, when the line is
 * this store's and worker's; the poison in it is recorded at once.  1 when
 * it was taken, else 0. */
static int ahead_take(struct store *st, struct parse_worker *w, struct rows *r)
{
	struct ahead_line *l = line_of;
	if (!l || l->st != st || l->w != w || !l->first)
		return 0;
	pthread_mutex_lock(&l->mu);
	struct ahead *a = l->first;
	line_wait(l, a);
	l->first = a->later;
	if (!l->first)
		l->last = NULL;
	l->n--;
	l->bytes -= a->bytes;
	pthread_mutex_unlock(&l->mu);
	*r = a->r;
	for (size_t i = 0; i < r->n; i++)
		row_parsed(r, r->batch[i].job);
	take_outcomes(r->batch, r->n);
	free(a);
	return 1;
}

/* Queues batches on the line until it is full (none while a look for
 * suspects is due).  Returns the messages sent to the dead list. */
static int ahead_fill(struct store *st, const struct mf_config *cfg, struct parse_worker *w,
		      int limit, const struct pending *cur, size_t n_cur)
{
	int dead = 0, queued = 1;
	for (int k = 0; k < AHEAD_BATCHES && queued; k++) {
		if (suspects_look_due(st, now_monotonic()))
			break;
		dead += ahead_start(st, cfg, w, limit, cur, n_cur, &queued);
	}
	return dead;
}

void pipeline_settle(struct store *st)
{
	struct ahead_line *l = line_of;
	if (!l)
		return;
	line_of = NULL;
	line_end(l, st);
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
	if (t.deferred || t.store_failed)
		batch_forget_attempts(st, batch, n);
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
	if (!r.suspect && n > 0)
		done += ahead_fill(st, cfg, w, limit, batch, n);
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
