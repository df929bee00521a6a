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
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mailfeed/auth.h"
#include "mailfeed/classify.h"
#include "mailfeed/decide.h"
#include "mailfeed/log.h"
#include "mailfeed/message.h"
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

static int set_state(struct store *st, int64_t id, const char *state, const char *reason,
		     const struct mf_message *m)
{
	sqlite3_stmt *s;
	char *parsed = NULL;
	if (m) {
		json_t *j = message_to_json(m, 0);
		parsed = json_dumps(j, JSON_COMPACT);
		json_decref(j);
	}
	/* once per message: kept prepared */
	if (!(s = store_stmt(st, "UPDATE messages SET state=?2, reason=?3,"
				 " parsed=COALESCE(?4, parsed) WHERE id=?1"))) {
		free(parsed);
		return -1;
	}
	sqlite3_bind_int64(s, 1, id);
	sqlite3_bind_text(s, 2, state, -1, SQLITE_STATIC);
	if (reason)
		sqlite3_bind_text(s, 3, reason, -1, SQLITE_STATIC);
	if (parsed)
		sqlite3_bind_text(s, 4, parsed, -1, free);
	int rc = sqlite3_step(s);
	store_stmt_done(st, s);
	return rc == SQLITE_DONE ? 0 : -1;
}

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
	if (decide_message(store_db(st), cfg, mb, m, p->raw, p->raw_len, &d) < 0) {
		log_error("message.error mailbox=%s id=%lld error=%s", mb->name, (long long)p->id,
			  LOG_Q(store_errmsg(st)));
		decision_free(&d);
		return -1;
	}
	if (d.action == DECIDE_SKIP) {
		const char *reason = d.reason;
		if (set_state(st, p->id, d.duplicate ? "handled" : "skipped", reason, m) < 0) {
			log_error("message.error mailbox=%s id=%lld error=%s", mb->name,
				  (long long)p->id, LOG_Q(store_errmsg(st)));
			decision_free(&d);
			return -1;
		}
		if (!d.duplicate)
			log_info("message.skipped mailbox=%s id=%lld from=%s reason=%s", mb->name,
				 (long long)p->id, log_quote(m->from_email, q1, sizeof q1),
				 log_quote(reason, q2, sizeof q2));
		if (!d.duplicate && !classify_is_automatic(m) && m->from_email &&
		    strncmp(reason, "sender not allowed", 18) == 0) {
			*notify = 1;
			p->sender_verified = d.auth.verified;
			snprintf(p->reason, sizeof p->reason, "%.250s", reason);
		}
		decision_free(&d);
		return 0;
	}

	if (store_exec(st, "SAVEPOINT message") < 0) {
		decision_free(&d);
		return -1;
	}
	int64_t thread_id = 0;
	int is_new = 0;
	if (thread_record(st, mb->group, mb->name, m, d.thread_id, &thread_id, &is_new) < 0)
		goto fail;
	if (mb->attach_original) {
		/* the whole message as it arrived, so nothing trimmed is out of sight */
		m->attachments =
		    xrealloc(m->attachments, (m->n_attachments + 1) * sizeof *m->attachments);
		struct mf_attachment *a = &m->attachments[m->n_attachments++];
		memset(a, 0, sizeof *a);
		a->filename = xstrdup("original.eml");
		a->content_type = xstrdup("message/rfc822");
		a->size = p->raw_len;
		a->data = xmalloc(p->raw_len ? p->raw_len : 1);
		memcpy(a->data, p->raw, p->raw_len);
		sha256_hex(p->raw, p->raw_len, a->sha256);
	}
	struct strlist recipients = {0};
	recipients_mentionable(cfg, m, NULL, &recipients);
	/* a thread known by id whose post never became an item (e.g. its first
	 * message was skipped): this one starts it (decide_message said so) */
	int comment = d.action == DECIDE_COMMENT;
	struct outbox_new n = {
	    .message = p->id,
	    .key = d.key,
	    .kind = decide_action_name(d.action),
	    .group = mb->group,
	    .thread_id = thread_id,
	    .parent = comment ? d.root_item : 0,
	    .msg = m,
	    .author_verified = d.auth.verified,
	    .author_check = d.auth.why,
	    .extra_hashtags = &mb->hashtags,
	    .recipients = &recipients,
	};
	is_new = !comment;
	int64_t item = outbox_enqueue(st, &n);
	strlist_free(&recipients);
	if (item < 0)
		goto fail;
	if (is_new && thread_set_root(st, thread_id, item) < 0)
		goto fail;
	if (set_state(st, p->id, "queued", d.note[0] ? d.note : NULL, m) < 0)
		goto fail;
	if (d.note[0])
		log_warn("message.id_reused mailbox=%s id=%lld message_id=%s note=%s", mb->name,
			 (long long)p->id, log_quote(m->message_id, q1, sizeof q1),
			 log_quote(d.note, q2, sizeof q2));
	store_exec(st, "RELEASE message");
	log_info("message.queued mailbox=%s id=%lld kind=%s key=%s thread=%lld sender=%s", mb->name,
		 (long long)p->id, n.kind, d.key, (long long)thread_id,
		 log_quote(d.auth.why, q1, sizeof q1));
	decision_free(&d);
	return 0;
fail:
	decision_free(&d);
	log_error("message.error mailbox=%s id=%lld error=%s", mb->name, (long long)p->id,
		  LOG_Q(store_errmsg(st)));
	store_exec(st, "ROLLBACK TO message");
	store_exec(st, "RELEASE message");
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
	if (state && strcmp(state, "queued") != 0)
		return set_state(st, p->id, state, reason[0] ? reason : NULL, p->msg);
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

/* A message whose parse was started this many times and never ended —
 * the daemon itself was stopped while parsing it — goes to the dead list
 * instead of being parsed again after the next start. */
#define PARSE_MAX_ATTEMPTS 2

/* The new messages of a batch, read from the store one by one as the parse
 * worker asks for them. */
struct rows {
	struct store *st;
	sqlite3_stmt *s; /* one message by id */
	const int64_t *ids;
	size_t n_ids, next_id;
	struct pending *batch;
	size_t n, cap;
};

static struct worker_job *next_row(void *ctx)
{
	struct rows *r = ctx;
	while (r->next_id < r->n_ids) {
		sqlite3_reset(r->s);
		sqlite3_bind_int64(r->s, 1, r->ids[r->next_id++]);
		if (sqlite3_step(r->s) != SQLITE_ROW)
			continue; /* gone meanwhile (dead drop) */
		const char *mailbox = (const char *)sqlite3_column_text(r->s, 1);
		if (r->n == r->cap) {
			r->cap = r->cap ? r->cap * 2 : 32;
			r->batch = xrealloc(r->batch, r->cap * sizeof *r->batch);
		}
		struct pending *p = &r->batch[r->n++];
		memset(p, 0, sizeof *p);
		p->id = sqlite3_column_int64(r->s, 0);
		p->mailbox = xstrdup(mailbox);
		p->raw_len = (size_t)sqlite3_column_bytes(r->s, 2);
		p->raw = xmalloc(p->raw_len + 1);
		memcpy(p->raw, sqlite3_column_blob(r->s, 2), p->raw_len);
		p->raw[p->raw_len] = 0;
		/* apart from the batch, which may move as it grows */
		p->job = xcalloc(1, sizeof *p->job);
		p->job->raw = p->raw;
		p->job->len = p->raw_len;
		sqlite3_reset(r->s); /* no read open while verdicts are written */
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
		if (set_state(r->st, p->id, "dead", job->reason, NULL) == 0) {
			p->poison = 2; /* recorded */
			log_warn("message.quarantined mailbox=%s id=%lld reason=%s", p->mailbox,
				 (long long)p->id, log_quote(job->reason, q, sizeof q));
		}
		return;
	}
}

/* The ids of the next batch: messages whose parse was started before and
 * never ended come first, one at a time, so that the one that stops the
 * daemon is found and the others are not blamed with it.  0 or -1. */
static int batch_ids(struct store *st, const struct mf_config *cfg, int limit, int64_t **ids,
		     int **attempts, size_t *n)
{
	*ids = NULL;
	*attempts = NULL;
	*n = 0;
	for (int suspects = 1; suspects >= 0 && *n == 0; suspects--) {
		/* only messages of mappings in the config: those of a removed
		 * mapping stay stored for when it comes back, and must not take
		 * the batch */
		struct buf sql;
		sqlite3_stmt *s;
		buf_init(&sql);
		buf_puts(&sql, "SELECT id, parse_attempts FROM messages WHERE state='new'"
			       " AND raw IS NOT NULL AND mailbox IN (?1");
		for (size_t i = 0; i < cfg->n_mailboxes; i++)
			buf_printf(&sql, ",?%zu", i + 3);
		buf_printf(&sql, ") AND parse_attempts >= %d ORDER BY internaldate, id LIMIT ?2",
			   suspects);
		int prc = sqlite3_prepare_v2(store_db(st), sql.data, -1, &s, NULL);
		buf_free(&sql);
		if (prc != SQLITE_OK)
			return -1;
		/* ?1: the replies mailbox, or a name no mapping can have */
		sqlite3_bind_text(s, 1, cfg->replies.present ? REPLIES_KEY : "", -1,
				  SQLITE_STATIC);
		sqlite3_bind_int(s, 2, suspects ? 1 : limit);
		for (size_t i = 0; i < cfg->n_mailboxes; i++)
			sqlite3_bind_text(s, (int)i + 3, cfg->mailboxes[i].name, -1,
					  SQLITE_STATIC);
		while (sqlite3_step(s) == SQLITE_ROW) {
			*ids = xrealloc(*ids, (*n + 1) * sizeof **ids);
			*attempts = xrealloc(*attempts, (*n + 1) * sizeof **attempts);
			(*ids)[*n] = sqlite3_column_int64(s, 0);
			(*attempts)[(*n)++] = sqlite3_column_int(s, 1);
		}
		sqlite3_finalize(s);
	}
	return 0;
}

/* Counts a parse started for each of ids, durably before the first byte
 * reaches the worker.  The commit needs no fsync: it must survive the
 * daemon being killed, which the write alone ensures (the next full
 * commit syncs it with the rest), not a power cut. */
static int count_attempts(struct store *st, const int64_t *ids, size_t n)
{
	sqlite3_stmt *s;
	int rc = -1;
	if (n == 0)
		return 0;
	store_exec(st, "PRAGMA synchronous=NORMAL");
	if (store_begin(st) == 0) {
		if (sqlite3_prepare_v2(store_db(st),
				       "UPDATE messages SET parse_attempts=parse_attempts+1 WHERE id=?",
				       -1, &s, NULL) == SQLITE_OK) {
			rc = 0;
			for (size_t i = 0; i < n && rc == 0; i++) {
				sqlite3_reset(s);
				sqlite3_bind_int64(s, 1, ids[i]);
				rc = sqlite3_step(s) == SQLITE_DONE ? 0 : -1;
			}
			sqlite3_finalize(s);
		}
		if (rc == 0)
			rc = store_commit(st);
		else
			store_rollback(st);
	}
	store_exec(st, "PRAGMA synchronous=FULL");
	return rc;
}

/* A message whose parse ended (or was not its fault) and that is still new
 * — deferred, or the store failed — starts again with no attempt counted. */
static void forget_attempts(struct store *st, const struct pending *batch, size_t n)
{
	sqlite3_stmt *s;
	if (sqlite3_prepare_v2(store_db(st),
			       "UPDATE messages SET parse_attempts=0 WHERE id=? AND state='new'", -1,
			       &s, NULL) != SQLITE_OK)
		return;
	for (size_t i = 0; i < n; i++) {
		sqlite3_reset(s);
		sqlite3_bind_int64(s, 1, batch[i].id);
		sqlite3_step(s);
	}
	sqlite3_finalize(s);
}

/* Seconds spent in each stage since the start, for the pass summary. */
static double stage_parse_s, stage_enqueue_s, stage_enqueue_cpu_s;

void pipeline_stage_seconds(double *parse_s, double *enqueue_s, double *enqueue_cpu_s)
{
	*parse_s = stage_parse_s;
	*enqueue_s = stage_enqueue_s;
	*enqueue_cpu_s = stage_enqueue_cpu_s;
}

int pipeline_process_new(struct store *st, const struct mf_config *cfg, struct parse_worker *w,
			 int limit)
{
	struct rows r = {.st = st};
	int64_t *ids;
	int *attempts;
	size_t n_ids, n_parse = 0;
	int done = 0;
	double t_start = now_monotonic();

	if (batch_ids(st, cfg, limit, &ids, &attempts, &n_ids) < 0)
		return -1;
	for (size_t i = 0; i < n_ids; i++) {
		if (attempts[i] < PARSE_MAX_ATTEMPTS) {
			ids[n_parse++] = ids[i];
			continue;
		}
		const char *why = "parse never finished: the daemon stopped twice while parsing it";
		if (set_state(st, ids[i], "dead", why, NULL) == 0) {
			done++;
			log_warn("message.quarantined id=%lld reason=%s", (long long)ids[i],
				 LOG_Q(why));
		}
	}
	free(attempts);
	if (count_attempts(st, ids, n_parse) < 0 ||
	    sqlite3_prepare_v2(store_db(st), "SELECT id, mailbox, raw FROM messages WHERE id=?",
			       -1, &r.s, NULL) != SQLITE_OK) {
		free(ids);
		return done > 0 ? done : -1;
	}
	r.ids = ids;
	r.n_ids = n_parse;
	struct worker_feed feed = {next_row, row_parsed, &r};
	worker_parse_stream(w, &feed);
	sqlite3_finalize(r.s);
	free(ids);
	struct pending *batch = r.batch;
	size_t n = r.n;
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
	if (n > 1)
		qsort(batch, n, sizeof *batch, by_date);
	double t_parsed = now_monotonic(), cpu_parsed = now_thread_cpu();
	stage_parse_s += t_parsed - t_start;

	/* One transaction (one fsync) for the batch; replies commit on their own
	 * and notices are queued in it (sent by the notice sender).  Progress
	 * counts the messages whose new state was committed: a store that
	 * takes nothing (disk full) must end the caller's loop, not spin on the
	 * same batch. */
	int *notify = xcalloc(n ? n : 1, sizeof *notify);
	int in_tx = store_begin(st) == 0;
	int in_batch = 0, store_failed = !in_tx, deferred = 0;
	size_t batch_start = 0; /* first message of the open transaction */
	for (size_t i = 0; i < n; i++) {
		struct pending *p = &batch[i];
		char q[300];
		if (p->poison < 0) {
			deferred = 1;
			log_error("message.deferred mailbox=%s id=%lld reason=\"parse worker "
				  "unavailable\"",
				  p->mailbox, (long long)p->id);
		} else if (p->poison == 2) {
			done++;
		} else if (!in_tx) {
			continue;
		} else if (p->poison) {
			if (set_state(st, p->id, "dead", p->reason, NULL) < 0) {
				store_failed = 1;
				continue;
			}
			in_batch++;
			log_warn("message.quarantined mailbox=%s id=%lld reason=%s", p->mailbox,
				 (long long)p->id, log_quote(p->reason, q, sizeof q));
		} else if (strcmp(p->mailbox, REPLIES_KEY) == 0) {
			if (batch_commit(st, notify, batch_start, i, &in_batch, &done) < 0)
				store_failed = 1;
			if (handle_reply(st, cfg, p) == 0)
				done++;
			else
				store_failed = 1;
			in_tx = store_begin(st) == 0;
			store_failed |= !in_tx;
			batch_start = i + 1;
		} else if (enqueue_message(st, cfg, config_mailbox(cfg, p->mailbox), p,
					   &notify[i]) == 0) {
			in_batch++;
			if (notify[i]) /* queued with the verdict it explains */
				notify_sender(st, cfg, config_mailbox(cfg, p->mailbox), p);
		} else {
			store_failed = 1;
		}
	}
	if (in_tx && batch_commit(st, notify, batch_start, n, &in_batch, &done) < 0)
		store_failed = 1;
	if (deferred || store_failed)
		forget_attempts(st, batch, n);
	for (size_t i = 0; i < n; i++) {
		struct pending *p = &batch[i];
		message_free(p->msg);
		free(p->raw);
		free(p->mailbox);
	}
	free(notify);
	free(batch);
	stage_enqueue_s += now_monotonic() - t_parsed;
	stage_enqueue_cpu_s += now_thread_cpu() - cpu_parsed;
	return done == 0 && store_failed ? -1 : done;
}
