/* digest.c — the run engine of digests and per-post notifications by
 * email: for each subscriber (subscribers.c) whose period is due
 * (digest_schedule.c), what is new in the groups they follow (read back
 * from the feed service), rendered by digest_render.c, and the
 * record-then-send bookkeeping that keeps a period from going out twice.
 *
 * Order of a send: mails are rendered (reply tokens recorded) and sent
 * in groups of up to SMTP_GROUP_MAX side by side, each over its own
 * connection.  Every transfer goes through MAIL, RCPT, DATA and the
 * message and waits just before its last bytes and the end-of-data mark;
 * then one durable commit records, for each mail of the group,
 * digest_runs(email, period, 'sending'), the Message-ID and the new
 * last_sent, and the transfers are let go.  A relay takes a message only
 * at the end-of-data mark, so a crash before that commit delivered nothing
 * and the period is sent by the next run; from the commit on, the mail
 * counts as sent and is never sent again.  After the relay's 250 the row
 * becomes 'sent' (in the next commit); a 4xx/5xx answer to the data undoes
 * the record.  What remains is the instant between the commit and the
 * last bytes leaving the process: a crash exactly there leaves periods
 * recorded that the relay never got.  One fsync per group, not per mail,
 * is what lets a run send hundreds of digests a second.
 *
 * Several instances sharing the state (PostgreSQL, or daemons on one
 * SQLite file) each run digests on their own schedule.  Before a mail is
 * composed, its period is claimed: digest_runs(email, period) inserted as
 * 'claimed' with this instance's id and a deadline in the database's
 * clock, an insert only one instance wins; the others skip that period.
 * The record above then turns the row into 'sending' only while the claim
 * is still this run's, so a period is recorded, and sent, by one instance.
 * A claim whose claimer stopped before recording (its process is gone
 * from this host, or its deadline passed) delivered nothing: another run
 * takes it over and sends the period.  A 'sending' row whose claimer
 * stopped is the crash above: it becomes 'maybe-sent' and is never sent
 * again; while its claimer lives, others leave it alone.  A run gives up
 * the claims of the periods it did not send (relay down, feed unread).
 *
 * The only module that touches digest_runs; metrics ask through
 * digest_sent_total. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mailfeed/claims.h"
#include "mailfeed/compose.h"
#include "mailfeed/digest.h"
#include "mailfeed/log.h"
#include "mailfeed/outbox.h"
#include "mailfeed/smtp.h"
#include "mailfeed/subscribers.h"
#include "mailfeed/token.h"
#include "mailfeed/util.h"

/* ------------------------------------------------------------------ */
/* Runs                                                                */

enum run_query {
	Q_CLAIM_NEW,
	Q_CLAIM_LOOK,
	Q_CLAIM_TAKE,
	Q_CLAIM_MAYBE_SENT,
	Q_CLAIM_END,
	Q_CLAIM_DROP,
	Q_RECORD,
	Q_SET_STATE,
	Q_FORGET,
	Q_SYNC_FULL,
	Q_SYNC_NORMAL,
	Q_SAVEPOINT,
	Q_RELEASE,
	Q_ROLLBACK_TO,
	Q_COUNT
};

/* Parameters: ?1 email, ?2 period, ?3 state, ?4 at (seconds), ?5 this
 * instance, ?6 claim length (ms); ?7 and ?8 the claim as it was read. */
#define CLAIM_NEW(NOW)                                                                             \
	"INSERT INTO digest_runs(email, period, state, at, claimed_by, claim_until)"               \
	" VALUES(?1, ?2, 'claimed', ?4, ?5, " NOW " + ?6) ON CONFLICT DO NOTHING"
#define CLAIM_LOOK(NOW)                                                                            \
	"SELECT state, claimed_by, claim_until, " NOW " FROM digest_runs"                          \
	" WHERE email=?1 AND period=?2"
#define CLAIM_TAKE(NOW)                                                                            \
	"UPDATE digest_runs SET claimed_by=?5, claim_until=" NOW " + ?6, at=?4"                    \
	" WHERE email=?1 AND period=?2 AND state='claimed'"                                        \
	" AND claimed_by IS NOT DISTINCT FROM ?7 AND claim_until IS NOT DISTINCT FROM ?8"
#define RECORD(NOW)                                                                                \
	"UPDATE digest_runs SET state='sending', at=?4, claim_until=" NOW " + ?6"                  \
	" WHERE email=?1 AND period=?2 AND state='claimed' AND claimed_by=?5"

static const char *const run_sql[Q_COUNT][2] = {
    [Q_CLAIM_NEW] = {CLAIM_NEW(CLAIMS_NOW_SQLITE), CLAIM_NEW(CLAIMS_NOW_PG)},
    [Q_CLAIM_LOOK] = {CLAIM_LOOK(CLAIMS_NOW_SQLITE), CLAIM_LOOK(CLAIMS_NOW_PG)},
    [Q_CLAIM_TAKE] = {CLAIM_TAKE(CLAIMS_NOW_SQLITE), CLAIM_TAKE(CLAIMS_NOW_PG)},
    [Q_CLAIM_MAYBE_SENT] = {"UPDATE digest_runs SET state='maybe-sent', at=?4"
			    " WHERE email=?1 AND period=?2 AND state='sending'"
			    " AND claimed_by IS NOT DISTINCT FROM ?7"
			    " AND claim_until IS NOT DISTINCT FROM ?8"},
    [Q_CLAIM_END] = {"UPDATE digest_runs SET state=?3, at=?4"
		     " WHERE email=?1 AND period=?2 AND state='claimed' AND claimed_by=?5"},
    [Q_CLAIM_DROP] = {"DELETE FROM digest_runs"
		      " WHERE email=?1 AND period=?2 AND state='claimed' AND claimed_by=?5"},
    [Q_RECORD] = {RECORD(CLAIMS_NOW_SQLITE), RECORD(CLAIMS_NOW_PG)},
    [Q_SET_STATE] = {"UPDATE digest_runs SET state=?3, at=?4 WHERE email=?1 AND period=?2"},
    [Q_FORGET] = {"DELETE FROM digest_runs WHERE email=?1 AND period=?2"},
    [Q_SYNC_FULL] = {"PRAGMA synchronous=FULL"},
    [Q_SYNC_NORMAL] = {"PRAGMA synchronous=NORMAL"},
    [Q_SAVEPOINT] = {"SAVEPOINT mail"},
    [Q_RELEASE] = {"RELEASE mail"},
    [Q_ROLLBACK_TO] = {"ROLLBACK TO mail"},
};

/* How long a claim on a period lasts beyond the relay's time (seconds). */
#define DIGEST_CLAIM_BASE 600

/* Everything one digest_run needs across subscribers. */
struct run {
	struct store *st;
	const struct mf_config *cfg;
	const struct feed_backend_ops *ops;
	void *feed_ctx;
	time_t now;
	unsigned char *secret;
	size_t secretlen;
	struct smtp_client *smtp;
	char *from_addr;
	struct db_stmt *q[Q_COUNT];
	int64_t claim_ms;
	struct strlist sent_email, sent_period; /* accepted, still 'sending' */
	struct group_read *reads;
	size_t n_reads;
	struct job *jobs[SMTP_GROUP_MAX]; /* rendered, not yet sent */
	size_t n_jobs;
	int sent;
	int failed;
};

/* A cached statement of run_sql, reset and unbound; NULL on error. */
static struct db_stmt *run_stmt(struct run *r, enum run_query id)
{
	if (!r->q[id]) {
		struct db *db = store_db(r->st);
		if (!(r->q[id] = db_prepare(db, db_sql(db, run_sql[id][0], run_sql[id][1])))) {
			log_error("digest.error error=%s", LOG_Q(store_errmsg(r->st)));
			return NULL;
		}
	} else {
		db_reset(r->q[id]);
	}
	return r->q[id];
}

/* Steps a statement without results: rows changed, or -1. */
static int run_exec(struct run *r, struct db_stmt *s)
{
	int rc = s && db_step(s) == DB_DONE ? (int)db_changes(store_db(r->st)) : -1;
	if (s)
		db_reset(s);
	return rc;
}

/* The run writes with synchronous=NORMAL (WAL: durable against a crash of
 * the process, not yet of the machine); the record that makes a mail count
 * as sent is committed with FULL, whose fsync of the WAL also makes every
 * earlier write durable, reply tokens included.  SQLite only: a
 * PostgreSQL commit is durable (synchronous_commit, the server's). */
static void run_sync(struct run *r, int full)
{
	if (db_engine(store_db(r->st)) != DB_SQLITE)
		return; /* PostgreSQL: every commit is durable */
	run_exec(r, run_stmt(r, full ? Q_SYNC_FULL : Q_SYNC_NORMAL));
}

/* A transaction committed with FULL (the level cannot change inside one). */
static int begin_full(struct run *r)
{
	run_sync(r, 1);
	if (store_begin(r->st) == 0)
		return 0;
	run_sync(r, 0);
	return -1;
}

static int end_full(struct run *r, int commit)
{
	int rc = 0;
	if (commit)
		rc = store_commit(r->st);
	else
		store_rollback(r->st);
	run_sync(r, 0);
	return rc;
}

static void bind_text(struct db_stmt *s, int i, const char *v)
{
	if (s && v)
		db_bind_text(s, i, v, -1);
}

/* Statement q of the run with the parameters its SQL names (run_sql):
 * (email, period, state, now, this instance, claim length) bound, every
 * one up to the highest the SQL names, typed (PostgreSQL cannot tell the
 * type of a parameter the SQL leaves out). */
static struct db_stmt *period_stmt(struct run *r, enum run_query q, const char *email,
				   const char *period, const char *state)
{
	struct db_stmt *s = run_stmt(r, q);
	if (!s)
		return NULL;
	int np = db_param_count(s);
	bind_text(s, 1, email);
	bind_text(s, 2, period);
	if (np >= 3)
		bind_text(s, 3, state ? state : "");
	if (np >= 4)
		db_bind_int64(s, 4, (int64_t)r->now);
	if (np >= 5)
		bind_text(s, 5, store_instance(r->st));
	if (np >= 6)
		db_bind_int64(s, 6, r->claim_ms);
	return s;
}

/* Runs statement q of the run with (email, period, state, now, ...). */
static int run_period_stmt(struct run *r, enum run_query q, const char *email, const char *period,
			   const char *state)
{
	return run_exec(r, period_stmt(r, q, email, period, state));
}

static int set_run_state(struct run *r, const char *email, const char *period, const char *state)
{
	return run_period_stmt(r, Q_SET_STATE, email, period, state);
}

/* Ends this run's claim on a period with a final state ('empty',
 * 'failed'): 1, 0 when the claim is no longer ours, -1 error. */
static int end_claim(struct run *r, const char *email, const char *period, const char *state)
{
	return run_period_stmt(r, Q_CLAIM_END, email, period, state);
}

/* Gives up this run's claim on a period that was not sent: the next run
 * (of any instance) sends it. */
static void drop_claim(struct run *r, const char *email, const char *period)
{
	run_period_stmt(r, Q_CLAIM_DROP, email, period, NULL);
}

/* A claim as read, to take it over only if it is still the same one. */
struct claim_seen {
	char state[32];
	char *by;
	int has_until;
	int64_t until, now;
};

/* 1 read, 0 no row, -1 error. */
static int claim_look(struct run *r, const char *email, const char *period, struct claim_seen *c)
{
	struct db_stmt *s = period_stmt(r, Q_CLAIM_LOOK, email, period, NULL);
	int rc;
	if (!s)
		return -1;
	rc = db_step(s);
	if (rc == DB_ROW) {
		const char *by = db_column_text(s, 1);
		snprintf(c->state, sizeof c->state, "%s", db_column_text(s, 0));
		c->by = by ? xstrdup(by) : NULL;
		c->has_until = !db_column_is_null(s, 2);
		c->until = db_column_int64(s, 2);
		c->now = db_column_int64(s, 3);
	}
	db_reset(s);
	return rc == DB_ROW ? 1 : rc == DB_DONE ? 0 : -1;
}

/* Runs q (Q_CLAIM_TAKE, Q_CLAIM_MAYBE_SENT) on the claim c still as read. */
static int claim_swap(struct run *r, enum run_query q, const char *email, const char *period,
		      const struct claim_seen *c)
{
	struct db_stmt *s = period_stmt(r, q, email, period, NULL);
	if (s) {
		bind_text(s, 7, c->by);
		if (c->has_until)
			db_bind_int64(s, 8, c->until);
	}
	return run_exec(r, s);
}

/* Claims (email, period) for this run before its mail is composed.  1 the
 * claim is ours: a new row, or the claim of an instance that died or let
 * it expire before recording the send (it delivered nothing), taken over.
 * 0 not ours: the period is done, or another instance is at it (the
 * subscriber is skipped).  A period found 'sending' whose claimer died or
 * let it expire may have reached the relay: it becomes 'maybe-sent' and
 * is not sent again (the rule of digest.c's banner).  -1 error. */
static int claim_period(struct run *r, const char *email, const char *period)
{
	char q[300];
	for (int attempt = 0; attempt < 2; attempt++) {
		struct claim_seen c = {0};
		int rc = run_period_stmt(r, Q_CLAIM_NEW, email, period, NULL);
		if (rc != 0)
			return rc;
		rc = claim_look(r, email, period, &c);
		if (rc == 0)
			continue; /* its claimer gave it up meanwhile */
		if (rc > 0 && claims_stale(c.by, c.has_until, c.until, c.now)) {
			if (strcmp(c.state, "claimed") == 0) {
				rc = claim_swap(r, Q_CLAIM_TAKE, email, period, &c);
				if (rc > 0)
					log_info("digest.claim_taken to=%s period=%s from=%s "
						 "reason=\"its claimer stopped before sending\"",
						 log_quote(email, q, sizeof q), period,
						 LOG_Q(c.by ? c.by : ""));
			} else if (strcmp(c.state, "sending") == 0) {
				if (claim_swap(r, Q_CLAIM_MAYBE_SENT, email, period, &c) > 0)
					log_warn("digest.maybe_sent to=%s period=%s action=\"not "
						 "sent again; an earlier run stopped between "
						 "recording the send and the relay's answer\"",
						 log_quote(email, q, sizeof q), period);
				rc = 0;
			} else {
				rc = 0;
			}
		} else if (rc > 0) {
			rc = 0; /* done, or another instance holds it */
		}
		free(c.by);
		return rc;
	}
	return 0;
}

/* 1 when another run holds (email, period) and may still give it up:
 * claimed, or recorded and waiting for the relay's answer. */
static int claim_held(struct run *r, const char *email, const char *period)
{
	struct claim_seen c = {0};
	int held = claim_look(r, email, period, &c) > 0 &&
		   (strcmp(c.state, "claimed") == 0 || strcmp(c.state, "sending") == 0);
	free(c.by);
	return held;
}

/* Moves last_sent from what this run read to `to` (0 = none).  1 moved, 0
 * another run moved it meanwhile, -1 error. */
static int move_last_sent(struct run *r, const struct subscriber *sub, time_t from, int from_set,
			  time_t to, int to_set)
{
	return subscribers_move_last_sent(r->st, sub, from, from_set, to, to_set);
}

/* Entries are taken up to the second before now: one created later in
 * the current second still counts as new on the next run. */
static time_t window_end(const struct run *r) { return r->now - 1; }

/* Marks the mails the relay accepted as 'sent'; call inside a
 * transaction.  0 or -1. */
static int mark_accepted(struct run *r)
{
	for (size_t i = 0; i < r->sent_email.n; i++)
		if (set_run_state(r, r->sent_email.v[i], r->sent_period.v[i], "sent") < 0)
			return -1;
	return 0;
}

static void forget_accepted(struct run *r)
{
	strlist_free(&r->sent_email);
	strlist_free(&r->sent_period);
}

/* A rendered mail waiting to be sent with its group. */
struct job {
	struct subscriber *sub;
	char period[300];
	char *grp, *remote_id; /* notifications: the post */
	int advance;	       /* digests move last_sent to the window's end */
	enum { NOT_RECORDED, RECORDED, TAKEN, STORE_FAILED } state;
	struct digest_mail mail;
	struct smtp_message m;
};

/* Records one held mail inside the group's transaction: its period,
 * claimed by this run, becomes 'sending' (counted as sent from now on),
 * its Message-ID is kept for replies, a digest's last_sent moves to the
 * end of its window.  1, 0 when the claim was taken over by another
 * instance or another run moved last_sent since it was read (nothing
 * written), -1 on error. */
static int record_one(struct run *r, struct job *j)
{
	int rc = run_period_stmt(r, Q_RECORD, j->sub->email, j->period, NULL);
	if (rc <= 0)
		return rc;
	if (token_sent_id_record(r->st, j->mail.message_id, j->grp, j->remote_id, j->sub->email,
				 r->now) < 0)
		return -1;
	if (!j->advance)
		return 1;
	return move_last_sent(r, j->sub, j->sub->last_sent, j->sub->has_last, window_end(r), 1);
}

static struct job *job_of(struct run *r, const struct smtp_message *m)
{
	for (size_t i = 0; i < r->n_jobs; i++)
		if (&r->jobs[i]->m == m)
			return r->jobs[i];
	return NULL;
}

/* Called by smtp_send_group when every mail of the group waits just
 * before the end of its data, the moment from which a relay may take it:
 * one durable commit records them all (and marks the mails accepted
 * earlier as 'sent'); only then are they let go.  A mail another run has
 * sent meanwhile, or every mail when the commit fails, is stopped short,
 * so the relay discards it. */
static void record_group(void *arg, struct smtp_message **held, size_t n)
{
	struct run *r = arg;
	int ok = begin_full(r) == 0;
	if (ok && mark_accepted(r) < 0)
		ok = 0;
	for (size_t i = 0; i < n && ok; i++) {
		struct job *j = job_of(r, held[i]);
		int rc = run_exec(r, run_stmt(r, Q_SAVEPOINT)) < 0 ? -1 : record_one(r, j);
		if (rc == 0 && run_exec(r, run_stmt(r, Q_ROLLBACK_TO)) < 0)
			rc = -1;
		if (rc < 0 || run_exec(r, run_stmt(r, Q_RELEASE)) < 0)
			ok = 0;
		j->state = rc > 0 ? RECORDED : TAKEN;
	}
	if (!ok || end_full(r, 1) < 0) {
		if (ok == 0)
			end_full(r, 0);
		for (size_t i = 0; i < n; i++)
			job_of(r, held[i])->state = STORE_FAILED;
		return;
	}
	forget_accepted(r);
	for (size_t i = 0; i < n; i++)
		held[i]->go = job_of(r, held[i])->state == RECORDED;
}

/* The relay did not take a mail (or could not be reached).  A recorded
 * period is forgotten when the refusal is temporary (tried again on the
 * next run) or kept as 'failed' when it is permanent; a digest's
 * last_sent goes back, so that its content comes in the next mail.  A
 * permanent refusal before the data (an unknown recipient) is recorded as
 * 'failed' too, so that the period is not tried again every minute. */
static void record_refusal(struct run *r, const struct job *j, int res)
{
	const char *email = j->sub->email;
	int rc = 0;
	if (res == SMTP_TEMPORARY && j->state != RECORDED)
		return; /* the claim is dropped by job_finish */
	if (begin_full(r) < 0)
		return;
	if (j->state == RECORDED) {
		struct db_stmt *s = run_stmt(r, Q_FORGET);
		if (res == SMTP_TEMPORARY) {
			bind_text(s, 1, email);
			bind_text(s, 2, j->period);
			rc = run_exec(r, s);
		} else {
			rc = set_run_state(r, email, j->period, "failed");
		}
		if (rc >= 0 && j->advance)
			rc = move_last_sent(r, j->sub, window_end(r), 1, j->sub->last_sent,
					    j->sub->has_last);
	} else {
		rc = end_claim(r, email, j->period, "failed");
	}
	end_full(r, rc >= 0);
}

/* What became of one mail of a sent group. */
static void job_finish(struct run *r, struct job *j)
{
	char q[300], q2[600];
	int res = j->m.result;
	if (j->state == TAKEN) {
		log_info("digest.skipped to=%s period=%s reason=\"another run sent it first\"",
			 log_quote(j->sub->email, q, sizeof q), j->period);
		return;
	}
	if (j->state == STORE_FAILED) {
		log_error("digest.error to=%s period=%s error=\"cannot record the send, not sent\" "
			  "detail=%s",
			  log_quote(j->sub->email, q, sizeof q), j->period,
			  LOG_Q(store_errmsg(r->st)));
		r->failed++;
		j->sub->retry = 1;
		return;
	}
	if (res == SMTP_SENT) {
		log_info("digest.sent to=%s period=%s", log_quote(j->sub->email, q, sizeof q),
			 j->period);
		strlist_add(&r->sent_email, j->sub->email);
		strlist_add(&r->sent_period, j->period);
		r->sent++;
		return;
	}
	log_warn("digest.not_sent to=%s period=%s result=%s error=%s",
		 log_quote(j->sub->email, q, sizeof q), j->period,
		 res == SMTP_TEMPORARY	 ? "temporary"
		 : res == SMTP_PERMANENT ? "permanent"
					 : "unknown-maybe-sent",
		 log_quote(j->m.err, q2, sizeof q2));
	/* SMTP_UNKNOWN: the data went out and the answer was lost; the
	 * period stays 'sending', counted as sent */
	if (res != SMTP_UNKNOWN)
		record_refusal(r, j, res);
	if (res == SMTP_TEMPORARY)
		j->sub->retry = 1;
	r->failed++;
}

/* Sends the queued mails side by side, recorded as described at the top
 * of this file. */
static void flush_jobs(struct run *r)
{
	struct smtp_message *msgs[SMTP_GROUP_MAX];
	char err[512] = "";
	if (r->n_jobs == 0)
		return;
	if (!r->smtp)
		r->smtp = smtp_new(&r->cfg->smtp, err, sizeof err);
	for (size_t i = 0; i < r->n_jobs; i++) {
		msgs[i] = &r->jobs[i]->m;
		msgs[i]->result = SMTP_TEMPORARY;
		snprintf(msgs[i]->err, sizeof msgs[i]->err, "%s", err);
	}
	if (r->smtp)
		smtp_send_group(r->smtp, r->from_addr, msgs, r->n_jobs, record_group, r);
	for (size_t i = 0; i < r->n_jobs; i++) {
		struct job *j = r->jobs[i];
		job_finish(r, j);
		/* not recorded: the period goes to the next run (of any instance) */
		if (j->state == NOT_RECORDED || j->state == STORE_FAILED)
			drop_claim(r, j->sub->email, j->period);
		digest_mail_free(&j->mail);
		free(j->grp);
		free(j->remote_id);
		free(j);
	}
	r->n_jobs = 0;
}

/* Queues a rendered mail (taken over) for sub's period. */
static void queue_mail(struct run *r, struct subscriber *sub, const char *period,
		       struct digest_mail *mail, const char *grp, const char *remote_id,
		       int advance)
{
	struct job *j = xcalloc(1, sizeof *j);
	if (r->n_jobs == SMTP_GROUP_MAX)
		flush_jobs(r);
	j->sub = sub;
	snprintf(j->period, sizeof j->period, "%s", period);
	j->grp = grp ? xstrdup(grp) : NULL;
	j->remote_id = remote_id ? xstrdup(remote_id) : NULL;
	j->advance = advance;
	j->mail = *mail;
	memset(mail, 0, sizeof *mail);
	j->m.to = sub->email;
	j->m.data = j->mail.data;
	j->m.len = j->mail.len;
	r->jobs[r->n_jobs++] = j;
}

static const char *group_id(const struct mf_config *cfg, const char *name)
{
	const struct mf_mailbox *mb = config_mailbox(cfg, name);
	return mb ? mb->group : name;
}

/* What one group holds after `since`, read from the feed once per run
 * and shared by every subscriber whose window starts then or later, so
 * that a run reads each group about once, not once per subscriber. */
struct group_read {
	char *gid;
	time_t since;
	struct feed_entry *entries; /* oldest first */
	size_t n;
	int failed; /* not tried again in this run */
};

/* The gateway's own posts and comments show the person whose mail they
 * carry, and a post its subject: not the integration user, nor the "From"
 * and subject lines written into the text for the feed's readers. */
static void entry_as_mailed(struct feed_entry *e, struct outbox_origin *o)
{
	const char *name = o->author_name && *o->author_name ? o->author_name : NULL;
	const char *email = o->author_email && *o->author_email ? o->author_email : NULL;
	char *t = e->text;
	while (t && *t == '\n')
		t++;
	if (t && strncmp(t, "From ", 5) == 0 && ((email && strstr(t, email) == NULL) ? 0 : 1)) {
		const char *nl = strchr(t, '\n');
		size_t n = nl ? (size_t)(nl - t) : strlen(t);
		int unverified = n >= 12 && memcmp(t + n - 12, "(unverified)", 12) == 0;
		if (name || email) {
			free(e->author_name);
			e->author_name = unverified
					     ? xasprintf("%s (unverified)", name ? name : email)
					     : xstrdup(name ? name : email);
		}
		t = nl ? (char *)nl + 1 : t + n;
		while (*t == '\n')
			t++;
	} else if (name || email) {
		/* posted as the author: the service already names them */
		if (!e->author_name || !*e->author_name) {
			free(e->author_name);
			e->author_name = xstrdup(name ? name : email);
		}
	}
	if (!e->parent_remote_id && o->subject && *o->subject) {
		size_t sl = strlen(o->subject);
		if (t && strncmp(t, o->subject, sl) == 0 && (t[sl] == '\n' || !t[sl])) {
			t += sl;
			while (*t == '\n')
				t++;
		}
		if (!e->subject || !*e->subject) {
			free(e->subject);
			e->subject = xstrdup(o->subject);
		}
	}
	if (t && t != e->text) {
		char *rest = xstrdup(t);
		free(e->text);
		e->text = rest;
	}
	if (!e->author_email && email)
		e->author_email = xstrdup(email);
}

static void entries_as_mailed(struct store *st, struct feed_entry *e, size_t n)
{
	const char *last_parent = NULL;
	char *last_subject = NULL;
	for (size_t i = 0; i < n; i++) {
		struct outbox_origin o;
		if (outbox_origin(st, e[i].remote_id, &o) == 1)
			entry_as_mailed(&e[i], &o);
		outbox_origin_clear(&o);
		const char *p = e[i].parent_remote_id;
		if (!p)
			continue;
		if (!last_parent || strcmp(last_parent, p) != 0) {
			free(last_subject);
			last_subject = NULL;
			last_parent = p;
			if (outbox_origin(st, p, &o) == 1 && o.subject && *o.subject)
				last_subject = xstrdup(o.subject);
			outbox_origin_clear(&o);
		}
		if (last_subject)
			e[i].post_subject = xstrdup(last_subject);
	}
	free(last_subject);
}

static struct group_read *group_read_get(struct run *r, const char *gid, time_t since)
{
	struct group_read *g = NULL;
	char err[256] = "", q[300];
	for (size_t i = 0; i < r->n_reads && !g; i++)
		if (strcmp(r->reads[i].gid, gid) == 0)
			g = &r->reads[i];
	if (g && (g->failed || g->since <= since))
		return g->failed ? NULL : g;
	if (!g) {
		r->reads = xrealloc(r->reads, (r->n_reads + 1) * sizeof *r->reads);
		g = &r->reads[r->n_reads++];
		memset(g, 0, sizeof *g);
		g->gid = xstrdup(gid);
	}
	feed_entries_free(g->entries, g->n);
	g->entries = NULL;
	g->n = 0;
	g->since = since;
	if (outbox_read_group(r->st, r->ops, r->feed_ctx, gid, since, &g->entries, &g->n, err,
			      sizeof err) < 0) {
		log_warn("digest.read_failed group=%s error=%s action=\"its subscribers are tried "
			 "again on the next run\"",
			 gid, log_quote(err, q, sizeof q));
		g->failed = 1;
		return NULL;
	}
	entries_as_mailed(r->st, g->entries, g->n);
	return g;
}

static void group_reads_free(struct run *r)
{
	for (size_t i = 0; i < r->n_reads; i++) {
		free(r->reads[i].gid);
		feed_entries_free(r->reads[i].entries, r->reads[i].n);
	}
	free(r->reads);
}

static const char *root_of(const struct feed_entry *e)
{
	return e->parent_remote_id ? e->parent_remote_id : e->remote_id;
}

static int listed(const struct strlist *l, const char *s)
{
	for (size_t i = 0; s && i < l->n; i++)
		if (strcmp(l->v[i], s) == 0)
			return 1;
	return 0;
}

/* Is email's part in e: its author, or named in its text? */
static int concerns(const struct feed_entry *e, const char *email)
{
	if (e->author_email && strcasecmp(e->author_email, email) == 0)
		return 1;
	return e->text && strcasestr(e->text, email) != NULL;
}

/* Leaves out of g the threads sub muted and, with `mine`, those sub has no
 * part in; the kept entries are copied to *kept (owned by the caller). */
static void keep_wanted(const struct subscriber *sub, const struct strlist *muted,
			struct digest_group *g, struct feed_entry **kept)
{
	struct strlist mine = {0};
	if (sub->freq == FREQ_MINE)
		for (size_t i = 0; i < g->n; i++)
			if (concerns(&g->entries[i], sub->email) && root_of(&g->entries[i]))
				strlist_add(&mine, root_of(&g->entries[i]));
	struct feed_entry *k = xcalloc(g->n ? g->n : 1, sizeof *k);
	size_t n = 0;
	for (size_t i = 0; i < g->n; i++) {
		const char *root = root_of(&g->entries[i]);
		if (listed(muted, root) || (sub->freq == FREQ_MINE && !listed(&mine, root)))
			continue;
		k[n++] = g->entries[i];
	}
	strlist_free(&mine);
	g->entries = k;
	g->n = n;
	*kept = k;
}

/* Fills groups (one per group sub follows) with what is new since `since`;
 * kept[] receives arrays the caller frees.  -1 when a group cannot be read. */
static int read_groups(struct run *r, const struct subscriber *sub, time_t since,
		       struct digest_group *groups, size_t *total, struct feed_entry **kept)
{
	struct strlist muted = {0};
	*total = 0;
	subscribers_muted(r->st, sub->email, &muted);
	for (size_t i = 0; i < sub->groups.n; i++) {
		const char *gid = group_id(r->cfg, sub->groups.v[i]);
		struct group_read *g = group_read_get(r, gid, since);
		size_t lo = 0, hi;
		if (!g) {
			strlist_free(&muted);
			return -1;
		}
		while (lo < g->n && g->entries[lo].created <= since)
			lo++;
		for (hi = lo; hi < g->n && g->entries[hi].created <= window_end(r); hi++)
			;
		groups[i].label = sub->groups.v[i];
		groups[i].gid = gid;
		groups[i].entries = g->entries + lo;
		groups[i].n = hi - lo;
		if (muted.n || sub->freq == FREQ_MINE)
			keep_wanted(sub, &muted, &groups[i], &kept[i]);
		*total += groups[i].n;
	}
	strlist_free(&muted);
	return 0;
}

static void kept_free(struct feed_entry **kept, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(kept[i]);
	free(kept);
}

static void digest_one(struct run *r, struct subscriber *sub, const char *period, const char *label)
{
	size_t ng = sub->groups.n, total;
	struct digest_group *groups = xcalloc(ng ? ng : 1, sizeof *groups);
	/* A first digest also covers the period before the subscription, so a
	 * new reader starts with the current conversations, not an empty mail. */
	time_t since = sub->has_last ? sub->last_sent
				     : sub->since - (sub->freq == FREQ_WEEKLY ? 7 * 86400 : 86400);
	struct digest_mail mail = {0};
	char q[300];
	struct feed_entry **kept = xcalloc(ng ? ng : 1, sizeof *kept);

	int claimed = claim_period(r, sub->email, period);
	if (claimed < 0) {
		log_error(
		    "digest.error to=%s period=%s error=\"cannot claim the period, tried again "
		    "on the next run\" detail=%s",
		    log_quote(sub->email, q, sizeof q), period, LOG_Q(store_errmsg(r->st)));
		r->failed++;
	}
	if (claimed <= 0)
		goto out; /* done, or another instance's */
	if (read_groups(r, sub, since, groups, &total, kept) < 0) {
		drop_claim(r, sub->email, period); /* tried again on the next run */
		goto out;
	}
	if (total == 0) {
		/* nothing new: the period passes without mail */
		int done = store_begin(r->st) == 0;
		if (done &&
		    (end_claim(r, sub->email, period, "empty") <= 0 ||
		     move_last_sent(r, sub, sub->last_sent, sub->has_last, window_end(r), 1) < 0))
			done = 0, store_rollback(r->st);
		else if (done)
			done = store_commit(r->st) == 0;
		if (!done)
			drop_claim(r, sub->email, period);
		log_debug("digest.empty to=%s period=%s", log_quote(sub->email, q, sizeof q),
			  period);
		goto out;
	}
	/* the reply tokens of one mail in one transaction */
	int rc = store_begin(r->st);
	if (rc == 0) {
		rc = digest_render(r->st, r->cfg, r->secret, r->secretlen, sub->email,
				   sub->tz ? sub->tz : r->cfg->digest.timezone, label, groups, ng,
				   r->now, &mail);
		if (rc < 0)
			store_rollback(r->st);
		else
			rc = store_commit(r->st);
	}
	if (rc < 0) {
		drop_claim(r, sub->email, period);
		r->failed++;
		goto out;
	}
	queue_mail(r, sub, period, &mail, NULL, NULL, 1);
out:
	digest_mail_free(&mail);
	kept_free(kept, ng);
	free(groups);
}

/* `each`: one notification per new post, each its own period. */
static void notify_each(struct run *r, struct subscriber *sub)
{
	size_t ng = sub->groups.n, total;
	struct digest_group *groups = xcalloc(ng ? ng : 1, sizeof *groups);
	time_t since = sub->has_last ? sub->last_sent : sub->since;
	struct feed_entry **kept = xcalloc(ng ? ng : 1, sizeof *kept);

	if (read_groups(r, sub, since, groups, &total, kept) < 0)
		goto out;
	/* last_sent moves once every notification is sent (each_finish) */
	sub->each_due = 1;
	for (size_t i = 0; i < ng; i++) {
		for (size_t k = 0; k < groups[i].n; k++) {
			const struct feed_entry *e = &groups[i].entries[k];
			struct feed_entry copy;
			struct digest_mail mail = {0};
			char period[300];
			if (e->parent_remote_id || !e->remote_id)
				continue;
			snprintf(period, sizeof period, "e:%s", e->remote_id);
			int claimed = claim_period(r, sub->email, period);
			if (claimed == 0 && claim_held(r, sub->email, period))
				sub->retry = 1; /* last_sent waits for the other instance */
			if (claimed <= 0)
				continue;
			copy = *e;
			/* comments by email go to the group the subscriber follows */
			copy.group = (char *)groups[i].gid;
			int rc = store_begin(r->st);
			if (rc == 0) {
				rc = digest_render_notification(
				    r->st, r->cfg, r->secret, r->secretlen, sub->email,
				    sub->tz ? sub->tz : r->cfg->digest.timezone, groups[i].label,
				    &copy, r->now, &mail);
				if (rc < 0)
					store_rollback(r->st);
				else
					rc = store_commit(r->st);
			}
			if (rc < 0) {
				drop_claim(r, sub->email, period);
				digest_mail_free(&mail);
				r->failed++;
				sub->retry = 1;
				continue;
			}
			queue_mail(r, sub, period, &mail, copy.group, e->remote_id, 0);
		}
	}
out:
	kept_free(kept, ng);
	free(groups);
}

/* After the mails of a batch are sent: an `each` subscriber whose
 * notifications all went out starts its next window now. */
static void each_finish(struct run *r, struct subscriber *sub)
{
	if (sub->each_due && !sub->retry)
		move_last_sent(r, sub, sub->last_sent, sub->has_last, window_end(r), 1);
}

static void subscriber_due(struct run *r, struct subscriber *sub, int force)
{
	char period[96], q[300], q2[300];
	time_t sched;
	const char *tz = sub->tz ? sub->tz : r->cfg->digest.timezone;
	int hour = sub->hour >= 0 ? sub->hour : r->cfg->digest.hour;

	if (sub->freq == FREQ_NEVER)
		return;
	if (sub->freq == FREQ_EACH) {
		notify_each(r, sub);
		return;
	}
	if (force) {
		char iso[32], label[40];
		time_iso(r->now, iso, sizeof iso);
		/* a feed member may have a daily and a weekly subscription */
		snprintf(period, sizeof period, "n:%s%s%s", iso, sub->feed ? ":" : "",
			 sub->feed ? frequency_name(sub->freq) : "");
		snprintf(label, sizeof label, "%.10s", iso);
		digest_one(r, sub, period, label);
		return;
	}
	if (digest_period(r->now, sub->freq, hour, r->cfg->digest.weekly_day, tz, period,
			  sizeof period, &sched) < 0) {
		log_warn("digest.bad_zone to=%s tz=%s", log_quote(sub->email, q, sizeof q),
			 log_quote(tz, q2, sizeof q2));
		return;
	}
	if (sched < sub->since)
		return; /* subscribed after this period's moment */
	digest_one(r, sub, period, period + 2);
}

static int run_prepare(struct run *r)
{
	char err[512];
	if (token_secret_load(r->cfg, &r->secret, &r->secretlen, err, sizeof err) < 0) {
		log_error("digest.error error=%s", LOG_Q(err));
		return -1;
	}
	r->from_addr = compose_address_of(r->cfg->smtp.from);
	if (!r->from_addr) {
		log_error("digest.error error=\"[smtp] from holds no address\"");
		return -1;
	}
	return 0;
}

static int run_all(struct store *st, const struct mf_config *cfg,
		   const struct feed_backend_ops *ops, void *feed_ctx, time_t now, int force,
		   const char *only_email, int (*keep_going)(void *arg), void *arg);

long long digest_sent_total(struct store *st)
{
	struct db_stmt *s;
	long long n = 0;
	if (!(s = db_prepare(store_db(st), "SELECT COUNT(*) FROM digest_runs WHERE state='sent'")))
		return 0;
	if (db_step(s) == DB_ROW)
		n = db_column_int64(s, 0);
	db_finalize(s);
	return n;
}

int digest_run(struct store *st, const struct mf_config *cfg, const struct feed_backend_ops *ops,
	       void *feed_ctx, time_t now, int force, const char *only_email)
{
	return run_all(st, cfg, ops, feed_ctx, now, force, only_email, NULL, NULL);
}

int digest_run_paced(struct store *st, const struct mf_config *cfg,
		     const struct feed_backend_ops *ops, void *feed_ctx, time_t now,
		     int (*keep_going)(void *arg), void *arg)
{
	return run_all(st, cfg, ops, feed_ctx, now, 0, NULL, keep_going, arg);
}

/* One pass over the subscriptions of their own (pass 0) or the feed
 * members (pass 1), a batch at a time, each batch's mails sent before the
 * next is read.  1 when keep_going said stop, else 0 (r->failed < 0 on a
 * store error). */
static int run_pass(struct run *r, int pass, int force, const char *only_email,
		    int (*keep_going)(void *arg), void *arg, struct subscriber *subs)
{
	char *after_email = xstrdup(""), *after_freq = xstrdup("");
	int stopped = 0;
	for (;;) {
		int n = subscribers_load(r->st, r->cfg, pass, only_email, after_email, after_freq,
					 subs);
		if (n < 0) {
			log_error("digest.error error=\"cannot read the subscribers\" detail=%s",
				  LOG_Q(store_errmsg(r->st)));
			r->failed = -1;
			break;
		}
		if (n > 0 && !r->from_addr && run_prepare(r) < 0)
			r->failed = -1;
		for (int i = 0; i < n && r->failed >= 0 && !stopped; i++) {
			if (keep_going && !keep_going(arg))
				stopped = 1;
			else
				subscriber_due(r, &subs[i], force);
		}
		flush_jobs(r);
		for (int i = 0; i < n; i++)
			each_finish(r, &subs[i]);
		if (n > 0) {
			free(after_email);
			free(after_freq);
			after_email = xstrdup(subs[n - 1].email);
			after_freq = xstrdup(frequency_name(subs[n - 1].freq));
		}
		for (int i = 0; i < n; i++)
			subscribers_clear(&subs[i]);
		if (n < SUBSCRIBERS_BATCH || r->failed < 0 || stopped)
			break;
	}
	free(after_email);
	free(after_freq);
	return stopped;
}

/* Marks the last accepted mails 'sent' and lets go of what the run held. */
static void run_end(struct run *r)
{
	if (r->sent_email.n && store_begin(r->st) == 0) {
		if (mark_accepted(r) < 0)
			store_rollback(r->st);
		else
			store_commit(r->st);
	}
	run_sync(r, 1);
	forget_accepted(r);
	group_reads_free(r);
	for (int i = 0; i < Q_COUNT; i++)
		db_finalize(r->q[i]);
	smtp_free(r->smtp);
	free(r->from_addr);
	if (r->secret) {
		memset(r->secret, 0, r->secretlen);
		free(r->secret);
	}
}

static int run_all(struct store *st, const struct mf_config *cfg,
		   const struct feed_backend_ops *ops, void *feed_ctx, time_t now, int force,
		   const char *only_email, int (*keep_going)(void *arg), void *arg)
{
	struct run r = {.st = st, .cfg = cfg, .ops = ops, .feed_ctx = feed_ctx, .now = now};
	/* a claim covers composing a mail and sending its group: the relay's
	 * stall limit at each step of the dialogue, with room to spare */
	r.claim_ms =
	    (DIGEST_CLAIM_BASE + 6 * (cfg->smtp.timeout > 0 ? cfg->smtp.timeout : 60)) * 1000;
	struct subscriber *subs;
	int feed = cfg->digest.subscribers == SUBSCRIBERS_FEED && ops && ops->read_members;
	int stopped = 0;

	if (!ops) {
		log_error("digest.error error=\"the feed backend cannot read groups\"");
		return -1;
	}
	if (feed)
		subscribers_refresh_members(st, cfg, ops, feed_ctx, now, 0);
	subs = xcalloc(SUBSCRIBERS_BATCH, sizeof *subs);
	run_sync(&r, 0);
	for (int pass = 0; pass <= feed && r.failed >= 0 && !stopped; pass++)
		stopped = run_pass(&r, pass, force, only_email, keep_going, arg, subs);
	run_end(&r);
	free(subs);
	if (stopped)
		log_info("digest.paused sent=%d reason=\"stopping; the rest goes with the next "
			 "run\"",
			 r.sent);
	return r.failed != 0 ? -1 : r.sent;
}
