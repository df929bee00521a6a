/* pipeline.c — turns stored messages into posts and comments.
 *
 * Each message in state 'new' is parsed by the sandboxed worker (a crash or
 * hang there quarantines the message, never the daemon), classified
 * (auto-replies, bounces, bulk, loops, senders outside allow_senders are
 * skipped with a reason), threaded, and enqueued in the outbox.  The state
 * change of the message and its outbox item commit in one transaction, so a
 * crash anywhere leaves the message either untouched or fully queued.
 * Messages of one batch are handled in Date order, so a parent fetched
 * together with its replies becomes the post. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mailfeed/auth.h"
#include "mailfeed/classify.h"
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
	if (sqlite3_prepare_v2(store_db(st),
			       "UPDATE messages SET state=?2, reason=?3,"
			       " parsed=COALESCE(?4, parsed) WHERE id=?1",
			       -1, &s, NULL) != SQLITE_OK) {
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
	sqlite3_finalize(s);
	return rc == SQLITE_DONE ? 0 : -1;
}

static int outbox_key_exists(struct store *st, const char *key)
{
	sqlite3_stmt *s;
	int found = 0;
	if (sqlite3_prepare_v2(store_db(st), "SELECT 1 FROM outbox WHERE key=?", -1, &s, NULL) !=
	    SQLITE_OK)
		return 0;
	sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
	found = sqlite3_step(s) == SQLITE_ROW;
	sqlite3_finalize(s);
	return found;
}

/* The idempotency key of a message in a group: the same message seen in
 * two folders of one group, or fetched again after a UIDVALIDITY change,
 * gets the same key and so at most one post or comment. */
static void item_key(const char *group, const struct mf_message *m, const char *raw, size_t len,
		     char out[40])
{
	char h[65];
	struct buf b;
	buf_init(&b);
	buf_puts(&b, group);
	buf_putc(&b, '\n');
	if (m->message_id && *m->message_id) {
		buf_puts(&b, m->message_id);
	} else {
		sha256_hex(raw, len, h);
		buf_puts(&b, h);
	}
	sha256_hex(b.data, b.len, h);
	buf_free(&b);
	snprintf(out, 40, "mf-%.32s", h);
}

/* Runs inside the batch transaction; one savepoint per message so a store
 * error undoes only that message (which stays 'new': -1).  *notify = 1 when
 * the sender is to be told (after the commit: no network I/O inside a
 * transaction). */
static int enqueue_message(struct store *st, const struct mf_config *cfg,
			   const struct mf_mailbox *mb, struct pending *p, int *notify)
{
	struct mf_message *m = p->msg;
	char reasonbuf[300];
	const char *reason = classify_skip(m, mb, cfg, reasonbuf, sizeof reasonbuf);
	char q1[128], q2[128];
	struct auth_verdict av;
	auth_verify(cfg->gateway.trusted_authserv, p->raw, p->raw_len, m->from_email, &av);
	/* with a trusted server, allow_senders admits only a vouched-for From */
	if (!reason && mb->allow_senders.n && cfg->gateway.trusted_authserv && !av.verified) {
		snprintf(reasonbuf, sizeof reasonbuf, "sender not allowed: %.80s is %.160s",
			 m->from_email ? m->from_email : "(none)", av.why);
		reason = reasonbuf;
	}

	if (!reason && recipients_is_gateway(cfg, m->from_email))
		reason = "loop: mail sent by mailfeed";
	if (reason) {
		if (set_state(st, p->id, "skipped", reason, m) < 0) {
			log_error("message.error mailbox=%s id=%lld error=\"%s\"", mb->name,
				  (long long)p->id, store_errmsg(st));
			return -1;
		}
		log_info("message.skipped mailbox=%s id=%lld from=%s reason=%s", mb->name,
			 (long long)p->id, log_quote(m->from_email, q1, sizeof q1),
			 log_quote(reason, q2, sizeof q2));
		if (!classify_is_automatic(m) && m->from_email &&
		    strncmp(reason, "sender not allowed", 18) == 0) {
			*notify = 1;
			p->sender_verified = av.verified;
			snprintf(p->reason, sizeof p->reason, "%.250s", reason);
		}
		return 0;
	}

	char key[40];
	item_key(mb->group, m, p->raw, p->raw_len, key);
	if (store_exec(st, "SAVEPOINT message") < 0)
		return -1;
	if (outbox_key_exists(st, key)) {
		if (set_state(st, p->id, "handled", "duplicate: already posted from another folder",
			      m) < 0)
			goto fail;
		store_exec(st, "RELEASE message");
		return 0;
	}
	int64_t thread_id = 0;
	int is_new = 0;
	if (thread_assign(st, mb->group, mb->name, m, cfg->gateway.thread_window, &thread_id,
			  &is_new) < 0)
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
	struct outbox_new n = {
	    .message = p->id,
	    .key = key,
	    .kind = is_new ? "post" : "comment",
	    .group = mb->group,
	    .thread_id = thread_id,
	    .parent = is_new ? 0 : thread_root(st, thread_id),
	    .msg = m,
	    .author_verified = av.verified,
	    .author_check = av.why,
	    .extra_hashtags = &mb->hashtags,
	    .recipients = &recipients,
	};
	if (!is_new && n.parent <= 0) {
		/* thread known by id but its post never became an item (e.g. the
		 * first message was skipped): this one starts it */
		n.kind = "post";
		n.parent = 0;
		is_new = 1;
	}
	int64_t item = outbox_enqueue(st, &n);
	strlist_free(&recipients);
	if (item < 0)
		goto fail;
	if (is_new && thread_set_root(st, thread_id, item) < 0)
		goto fail;
	if (set_state(st, p->id, "queued", NULL, m) < 0)
		goto fail;
	store_exec(st, "RELEASE message");
	log_info("message.queued mailbox=%s id=%lld kind=%s key=%s thread=%lld sender=%s", mb->name,
		 (long long)p->id, n.kind, key, (long long)thread_id,
		 log_quote(av.why, q1, sizeof q1));
	return 0;
fail:
	log_error("message.error mailbox=%s id=%lld error=\"%s\"", mb->name, (long long)p->id,
		  store_errmsg(st));
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

/* The new messages of a batch, read from the store one by one as the parse
 * worker asks for them. */
struct rows {
	sqlite3_stmt *s;
	struct pending *batch;
	size_t n, cap;
};

static struct worker_job *next_row(void *ctx)
{
	struct rows *r = ctx;
	/* the query takes only mapped mailboxes (and [replies] when configured) */
	while (sqlite3_step(r->s) == SQLITE_ROW) {
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
		return p->job;
	}
	return NULL;
}

/* Outcomes are taken from the jobs once the whole batch is parsed. */
static void row_parsed(void *ctx, struct worker_job *job)
{
	(void)ctx;
	(void)job;
}

int pipeline_process_new(struct store *st, const struct mf_config *cfg, struct parse_worker *w,
			 int limit)
{
	struct rows r = {0};

	/* only messages of mappings in the config: those of a removed mapping
	 * stay stored for when it comes back, and must not take the batch */
	struct buf sql;
	buf_init(&sql);
	buf_puts(&sql, "SELECT id, mailbox, raw FROM messages WHERE state='new'"
		       " AND raw IS NOT NULL AND mailbox IN (?1");
	for (size_t i = 0; i < cfg->n_mailboxes; i++)
		buf_printf(&sql, ",?%zu", i + 3);
	buf_puts(&sql, ") ORDER BY internaldate, id LIMIT ?2");
	int prc = sqlite3_prepare_v2(store_db(st), sql.data, -1, &r.s, NULL);
	buf_free(&sql);
	if (prc != SQLITE_OK)
		return -1;
	/* ?1: the replies mailbox, or a name no mapping can have */
	sqlite3_bind_text(r.s, 1, cfg->replies.present ? REPLIES_KEY : "", -1, SQLITE_STATIC);
	sqlite3_bind_int(r.s, 2, limit);
	for (size_t i = 0; i < cfg->n_mailboxes; i++)
		sqlite3_bind_text(r.s, (int)i + 3, cfg->mailboxes[i].name, -1, SQLITE_STATIC);
	struct worker_feed feed = {next_row, row_parsed, &r};
	worker_parse_stream(w, &feed);
	sqlite3_finalize(r.s);
	struct pending *batch = r.batch;
	size_t n = r.n;
	for (size_t i = 0; i < n; i++) {
		struct pending *p = &batch[i];
		p->msg = p->job->msg;
		snprintf(p->reason, sizeof p->reason, "%s", p->job->reason);
		if (p->job->rc > 0)
			p->poison = 1;
		else if (p->job->rc < 0)
			p->poison = -1; /* our fault, not the message's: try again later */
		free(p->job);
		p->job = NULL;
	}
	if (n > 1)
		qsort(batch, n, sizeof *batch, by_date);

	/* One transaction (one fsync) for the batch; replies commit on their own
	 * and notices go out after the commit.  Progress counts the messages
	 * whose new state was committed: a store that takes nothing (disk full)
	 * must end the caller's loop, not spin on the same batch. */
	int *notify = xcalloc(n ? n : 1, sizeof *notify);
	int in_tx = store_begin(st) == 0;
	int done = 0, in_batch = 0, store_failed = !in_tx;
	size_t batch_start = 0; /* first message of the open transaction */
	for (size_t i = 0; i < n; i++) {
		struct pending *p = &batch[i];
		char q[300];
		if (p->poison < 0) {
			log_error("message.deferred mailbox=%s id=%lld reason=\"parse worker "
				  "unavailable\"",
				  p->mailbox, (long long)p->id);
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
		} else {
			store_failed = 1;
		}
	}
	if (in_tx && batch_commit(st, notify, batch_start, n, &in_batch, &done) < 0)
		store_failed = 1;
	for (size_t i = 0; i < n; i++) {
		struct pending *p = &batch[i];
		if (notify[i])
			notify_sender(st, cfg, config_mailbox(cfg, p->mailbox), p);
		message_free(p->msg);
		free(p->raw);
		free(p->mailbox);
	}
	free(notify);
	free(batch);
	return done == 0 && store_failed ? -1 : done;
}
