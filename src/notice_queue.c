/* notice_queue.c — the notice_queue table: the composed notices
 * notice.c queues (notice_queue_add) and their sending to the [smtp]
 * relay, away from ingestion: the daemon's notice sender thread, and `run
 * --once`.  The only module that touches notice_queue; the notices table
 * (who was told what, when) is notice.c's.
 *
 * Order of a send: up to SMTP_GROUP_MAX due notices go out side by side,
 * each over its own connection (kept open for the next group).  Every
 * transfer waits just before its last bytes and the end-of-data mark; one
 * commit then turns each 'pending' row into 'sending', and only the rows
 * this commit took are let go.  A relay takes a message only at the
 * end-of-data mark, so a crash before the commit delivered nothing and the
 * notice goes out later; from the commit on it counts as sent and is never
 * sent again.  The instant between the commit and the last bytes leaving
 * the process is the one place where a crash loses a notice.
 *
 * After the data: 250 makes the row 'sent'; a 4xx answer or a failed
 * connection puts it back to 'pending' with a growing delay (30 s, 60 s,
 * … 1 h); a 5xx answer, or a notice still not taken a day after it was
 * queued, makes it 'failed' with a log line.  An answer lost after the
 * data leaves it 'sending' (maybe delivered: not repeated).
 *
 * Several instances sharing the state each run a sender: a sender first
 * claims the due notices it is about to send (claimed_by = its instance,
 * claim_until = a deadline in the database's clock), picked with FOR
 * UPDATE SKIP LOCKED on PostgreSQL, in one BEGIN IMMEDIATE transaction on
 * SQLite, so two senders never pick the same notice; the commit above
 * turns a row into 'sending' only while the claim is still this sender's.
 * A claim whose claimer stopped before that commit (its process is gone
 * from this host, or the deadline passed) delivered nothing: the notice
 * is claimed again and sent.  A 'sending' row whose claimer stopped
 * follows the rule above: maybe delivered, never repeated. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "mailfeed/claims.h"
#include "mailfeed/compose.h"
#include "mailfeed/log.h"
#include "mailfeed/notice.h"
#include "mailfeed/smtp.h"
#include "mailfeed/util.h"

#define NOTICE_GIVE_UP 86400	/* a notice not taken after this long is dropped */
#define NOTICE_BACKOFF_MIN 30	/* first retry after a temporary failure */
#define NOTICE_BACKOFF_MAX 3600 /* the longest wait between two attempts */
/* How long a claim on due notices lasts (ms): a group's transfers to the
 * relay take far less; a sender that stops holds them up this long at
 * most (one of this host: not at all). */
#define NOTICE_CLAIM_MS (15 * 60 * 1000)

/* One due notice of a group. */
struct due {
	int64_t id;
	char *address, *reason;
	char *mail;
	long attempts;
	time_t created;
	int claimed; /* 1 this send recorded it 'sending', 2 another sender did */
	struct smtp_message m;
};

struct group_ctx {
	struct store *st;
	struct due *d;
	size_t n;
};

int notice_queue_add(struct store *st, const char *to, const char *reason_key,
		     const struct buf *mail, time_t now)
{
	struct db_stmt *s;
	int rc;
	if (!(s = db_prepare(store_db(st),
			     "INSERT INTO notice_queue(address, reason, mail, created)"
			     " VALUES(?,?,?,?)")))
		return -1;
	db_bind_text(s, 1, to, -1);
	db_bind_text(s, 2, reason_key, -1);
	db_bind_blob(s, 3, mail->data, mail->len);
	db_bind_int64(s, 4, (int64_t)now);
	rc = db_step(s) == DB_DONE ? 0 : -1;
	db_finalize(s);
	return rc;
}

long notice_waiting(struct store *st)
{
	struct db_stmt *s;
	long n = -1;
	if (!(s = db_prepare(store_db(st),
			     "SELECT COUNT(*) FROM notice_queue WHERE state='pending'")))
		return -1;
	if (db_step(s) == DB_ROW)
		n = db_column_int64(s, 0);
	db_finalize(s);
	return n;
}

long notice_next_due(struct store *st)
{
	struct db_stmt *s;
	struct db *db = store_db(st);
	long at = 0;
	/* a notice another sender claimed is due for this one when the claim
	 * ends (if it has not been sent by then) */
	char *sql = xasprintf("SELECT MIN(CASE WHEN claimed_by IS NOT NULL AND claim_until >= %s"
			      " THEN claim_until / 1000 + 1 ELSE next_at END)"
			      " FROM notice_queue WHERE state='pending'",
			      claims_now_sql(db));
	s = db_prepare(db, sql);
	free(sql);
	if (!s)
		return 0;
	if (db_step(s) == DB_ROW && !db_column_is_null(s, 0))
		at = (long)db_column_int64(s, 0);
	db_finalize(s);
	return at;
}

static struct due *due_of(struct group_ctx *g, const struct smtp_message *m)
{
	for (size_t i = 0; i < g->n; i++)
		if (&g->d[i].m == m)
			return &g->d[i];
	return NULL;
}

/* smtp_send_group's before_end: one commit records the held notices as
 * 'sending' (those still claimed by this sender); only those this commit
 * took are let go. */
static void record_sending(void *arg, struct smtp_message **held, size_t n)
{
	struct group_ctx *g = arg;
	struct db_stmt *s = NULL;
	int ok = store_begin(g->st) == 0 &&
		 (s = db_prepare(store_db(g->st),
				 "UPDATE notice_queue SET state='sending', attempts=attempts+1"
				 " WHERE id=?1 AND state='pending' AND claimed_by=?2"));
	for (size_t i = 0; i < n && ok; i++) {
		struct due *d = due_of(g, held[i]);
		db_reset(s);
		db_bind_int64(s, 1, d->id);
		db_bind_text(s, 2, store_instance(g->st), -1);
		if (db_step(s) != DB_DONE)
			ok = 0;
		else
			d->claimed = (int)db_changes(store_db(g->st)) == 1 ? 1 : 2;
	}
	db_finalize(s);
	if (!ok || store_commit(g->st) < 0) {
		store_rollback(g->st);
		for (size_t i = 0; i < n; i++)
			due_of(g, held[i])->claimed = 0;
		log_error("notice.error error=\"cannot record the send, not sent\" detail=%s",
			  LOG_Q(store_errmsg(g->st)));
		return;
	}
	for (size_t i = 0; i < n; i++)
		held[i]->go = due_of(g, held[i])->claimed == 1;
}

static void set_row(struct store *st, int64_t id, const char *state, long next_at,
		    const char *error)
{
	struct db_stmt *s;
	/* back to 'pending': the claim goes with it, for any sender to take */
	if (!(s = db_prepare(store_db(st),
			     "UPDATE notice_queue SET state=?1, next_at=?2, error=?3,"
			     " attempts=attempts+CASE WHEN state='pending' THEN 1 ELSE 0 END,"
			     " claimed_by=CASE WHEN ?1='pending' THEN NULL ELSE claimed_by END,"
			     " claim_until=CASE WHEN ?1='pending' THEN NULL ELSE claim_until END"
			     " WHERE id=?4 AND state IN ('pending','sending') AND claimed_by=?5")))
		return;
	db_bind_text(s, 1, state, -1);
	db_bind_int64(s, 2, next_at);
	db_bind_text(s, 3, error, -1);
	db_bind_int64(s, 4, id);
	db_bind_text(s, 5, store_instance(st), -1);
	if (db_step(s) != DB_DONE)
		log_error("notice.error error=\"cannot record the result\" detail=%s",
			  LOG_Q(store_errmsg(st)));
	db_finalize(s);
}

/* What became of one notice of a sent group. */
static void due_finish(struct store *st, struct due *d, time_t now)
{
	char q[200], q2[600];
	int res = d->m.result;
	if (d->claimed == 2)
		return; /* another sender has it */
	log_quote(d->address, q, sizeof q);
	if (res == SMTP_SENT) {
		set_row(st, d->id, "sent", 0, NULL);
		log_info("notice.sent to=%s reason=%s", q, d->reason);
		return;
	}
	log_quote(d->m.err, q2, sizeof q2);
	if (res == SMTP_UNKNOWN) {
		log_warn("notice.not_sent to=%s reason=%s result=unknown-maybe-sent error=%s "
			 "note=\"counted as sent\"",
			 q, d->reason, q2);
		return; /* stays 'sending' */
	}
	if (res == SMTP_PERMANENT) {
		set_row(st, d->id, "failed", 0, d->m.err);
		log_warn("notice.failed to=%s reason=%s why=\"refused by the relay\" error=%s", q,
			 d->reason, q2);
		return;
	}
	if (now - d->created >= NOTICE_GIVE_UP) {
		set_row(st, d->id, "failed", 0, d->m.err);
		log_warn("notice.failed to=%s reason=%s why=\"not taken for a day\" error=%s", q,
			 d->reason, q2);
		return;
	}
	long wait = NOTICE_BACKOFF_MIN;
	for (long i = 0; i < d->attempts && wait < NOTICE_BACKOFF_MAX; i++)
		wait *= 2;
	if (wait > NOTICE_BACKOFF_MAX)
		wait = NOTICE_BACKOFF_MAX;
	set_row(st, d->id, "pending", (long)now + wait, d->m.err);
	log_warn("notice.not_sent to=%s reason=%s result=temporary retry_in=%lds error=%s", q,
		 d->reason, wait, q2);
}

/* Claims of this host's senders that were killed are given up at once,
 * not at their deadline. */
static void release_dead_claims(struct store *st)
{
	struct db *db = store_db(st);
	struct strlist dead = {0};
	char *sql = xasprintf("SELECT DISTINCT claimed_by FROM notice_queue WHERE state='pending'"
			      " AND claimed_by IS NOT NULL AND claim_until >= %s",
			      claims_now_sql(db));
	struct db_stmt *s = db_prepare(db, sql);
	free(sql);
	while (s && db_step(s) == DB_ROW)
		if (claims_claimer_gone(db_column_text(s, 0)))
			strlist_add(&dead, db_column_text(s, 0));
	db_finalize(s);
	for (size_t i = 0; i < dead.n; i++) {
		if (!(s = db_prepare(db, "UPDATE notice_queue SET claimed_by=NULL, claim_until=NULL"
					 " WHERE state='pending' AND claimed_by=?1")))
			break;
		db_bind_text(s, 1, dead.v[i], -1);
		db_step(s);
		db_finalize(s);
	}
	strlist_free(&dead);
}

/* Parameters: ?1 this sender, ?2 claim length (ms), ?3 now, ?4 how many. */
#define DUE_PICK(NOW)                                                                              \
	"SELECT id FROM notice_queue WHERE state='pending' AND next_at <= ?3"                      \
	" AND (claimed_by IS NULL OR claim_until IS NULL OR claim_until < " NOW ")"                \
	" ORDER BY next_at, id LIMIT ?4"
#define DUE_SET(NOW) " SET claimed_by=?1, claim_until=" NOW " + ?2"
#define DUE_COLUMNS "id, address, reason, mail, attempts, created"
/* PostgreSQL: rows locked as they are picked, those another sender is
 * picking skipped; SQLite: one writer at a time (BEGIN IMMEDIATE). */
static const char claim_pg[] = "WITH picked AS (" DUE_PICK(
    CLAIMS_NOW_PG) " FOR UPDATE SKIP LOCKED)"
		   " UPDATE notice_queue" DUE_SET(
		       CLAIMS_NOW_PG) " FROM picked WHERE notice_queue.id=picked.id"
				      " RETURNING notice_queue.id, address, reason, mail, "
				      "attempts, created";
static const char claim_sqlite[] = "UPDATE notice_queue" DUE_SET(
    CLAIMS_NOW_SQLITE) " WHERE id IN (" DUE_PICK(CLAIMS_NOW_SQLITE) ") RETURNING " DUE_COLUMNS;

static void due_fill(struct db_stmt *s, struct due *x)
{
	size_t len = 0;
	const void *blob = db_column_blob(s, 3, &len);
	x->id = db_column_int64(s, 0);
	x->address = xstrdup(db_column_text(s, 1));
	x->reason = xstrdup(db_column_text(s, 2));
	x->mail = xmalloc(len + 1);
	if (len)
		memcpy(x->mail, blob, len);
	x->mail[len] = 0;
	x->attempts = (long)db_column_int64(s, 4);
	x->created = (time_t)db_column_int64(s, 5);
	x->m.to = x->address;
	x->m.data = x->mail;
	x->m.len = len;
}

static void due_free(struct due *d, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(d[i].address);
		free(d[i].reason);
		free(d[i].mail);
	}
	free(d);
}

/* Claims up to SMTP_GROUP_MAX notices due at now for this sender (rules
 * at the top); *n how many. */
static struct due *due_claim(struct store *st, time_t now, size_t *n)
{
	struct db *db = store_db(st);
	struct due *d = xcalloc(SMTP_GROUP_MAX, sizeof *d);
	int own_tx = db_engine(db) == DB_SQLITE && !db_in_transaction(db), rc = DB_FAIL;
	struct db_stmt *s = NULL;
	*n = 0;
	release_dead_claims(st);
	if (own_tx && store_begin(st) < 0)
		return d;
	if ((s = db_prepare(db, db_sql(db, claim_sqlite, claim_pg)))) {
		db_bind_text(s, 1, store_instance(st), -1);
		db_bind_int64(s, 2, NOTICE_CLAIM_MS);
		db_bind_int64(s, 3, (int64_t)now);
		db_bind_int64(s, 4, SMTP_GROUP_MAX);
		while ((rc = db_step(s)) == DB_ROW && *n < SMTP_GROUP_MAX)
			due_fill(s, &d[(*n)++]);
		db_finalize(s);
	}
	if (own_tx && (rc != DB_DONE || store_commit(st) < 0)) {
		store_rollback(st);
		rc = DB_FAIL;
	}
	if (rc != DB_DONE) {
		log_error("notice.error error=\"cannot claim the due notices\" detail=%s",
			  LOG_Q(store_errmsg(st)));
		due_free(d, *n);
		*n = 0;
		return xcalloc(SMTP_GROUP_MAX, sizeof *d);
	}
	return d;
}

int notice_deliver_due(struct store *st, struct smtp_client *c, const char *from_addr, time_t now)
{
	struct smtp_message *msgs[SMTP_GROUP_MAX];
	size_t n;
	struct due *d = due_claim(st, now, &n);
	struct group_ctx g = {st, d, n};
	for (size_t i = 0; i < n; i++)
		msgs[i] = &d[i].m;
	if (n)
		smtp_send_group(c, from_addr, msgs, n, record_sending, &g);
	for (size_t i = 0; i < n; i++)
		due_finish(st, &d[i], now);
	due_free(d, n);
	return (int)n;
}

/* The relay client and sender address for cfg; 0, or -1 logged. */
static int sender_prepare(const struct mf_config *cfg, struct smtp_client **c, char **from)
{
	char err[512];
	*from = compose_address_of(cfg->smtp.from);
	*c = *from ? smtp_new(&cfg->smtp, err, sizeof err) : NULL;
	if (!*from)
		snprintf(err, sizeof err, "[smtp] from holds no address");
	if (*c)
		return 0;
	log_error("notice.error error=%s", LOG_Q(err));
	free(*from);
	*from = NULL;
	return -1;
}

int notice_send_queued(struct store *st, const struct mf_config *cfg)
{
	struct smtp_client *c;
	char *from;
	int total = 0, n;
	if (!cfg->smtp.present || notice_waiting(st) <= 0)
		return 0;
	if (sender_prepare(cfg, &c, &from) < 0)
		return -1;
	/* each round takes only what is still due: a retried notice waits */
	while ((n = notice_deliver_due(st, c, from, time(NULL))) > 0 && total < 10000)
		total += n;
	smtp_free(c);
	free(from);
	return total;
}

/* The daemon's sender thread.  It owns copies of what it needs, so that a
 * reload can leave an old one to finish a slow transfer on its own. */
struct sender {
	pthread_t thread;
	atomic_int stop;
	int wake_fd;
	char *state_path, *from;
	struct smtp_client *c;
	pthread_mutex_t mu;
	int done, orphaned;
};

static pthread_mutex_t current_mu = PTHREAD_MUTEX_INITIALIZER;
static struct sender *current;

static void sender_free(struct sender *s)
{
	smtp_free(s->c);
	free(s->from);
	free(s->state_path);
	close(s->wake_fd);
	pthread_mutex_destroy(&s->mu);
	free(s);
}

static void *sender_main(void *arg)
{
	struct sender *s = arg;
	char err[512];
	struct store *st = store_open(s->state_path, err, sizeof err);
	if (!st)
		log_error("notice.error error=%s note=\"notices are not sent\"", LOG_Q(err));
	while (st && !atomic_load(&s->stop)) {
		time_t now = time(NULL);
		int n = notice_deliver_due(st, s->c, s->from, now);
		long next = notice_next_due(st), wait_ms = 30000;
		if (n > 0 && next > 0 && next <= (long)time(NULL))
			wait_ms = 0;
		else if (next > 0 && (next - (long)now) * 1000 < wait_ms)
			wait_ms = next > (long)now ? (next - (long)now) * 1000 : 1000;
		struct pollfd pf = {.fd = s->wake_fd, .events = POLLIN};
		if (wait_ms && poll(&pf, 1, (int)wait_ms) > 0) {
			uint64_t v;
			if (read(s->wake_fd, &v, sizeof v) < 0 && errno != EAGAIN)
				break;
		}
	}
	store_close(st);
	pthread_mutex_lock(&s->mu);
	s->done = 1;
	int orphan = s->orphaned;
	pthread_mutex_unlock(&s->mu);
	if (orphan)
		sender_free(s);
	return NULL;
}

int notice_sender_start(const struct mf_config *cfg)
{
	if (!cfg->smtp.present)
		return 0;
	struct sender *s = xcalloc(1, sizeof *s);
	s->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	pthread_mutex_init(&s->mu, NULL);
	s->state_path = xstrdup(cfg->gateway.state);
	if (s->wake_fd < 0 || sender_prepare(cfg, &s->c, &s->from) < 0 ||
	    pthread_create(&s->thread, NULL, sender_main, s) != 0) {
		log_error("notice.error error=\"cannot start the notice sender\"");
		sender_free(s);
		return -1;
	}
	pthread_mutex_lock(&current_mu);
	current = s;
	pthread_mutex_unlock(&current_mu);
	return 0;
}

void notice_sender_stop(double seconds)
{
	pthread_mutex_lock(&current_mu);
	struct sender *s = current;
	current = NULL;
	pthread_mutex_unlock(&current_mu);
	if (!s)
		return;
	uint64_t one = 1;
	atomic_store(&s->stop, 1);
	ssize_t w = write(s->wake_fd, &one, sizeof one);
	(void)w; /* a full counter: it is awake anyway */
	struct timespec until = realtime_after((double)seconds);
	if (pthread_timedjoin_np(s->thread, NULL, &until) == 0) {
		sender_free(s);
		return;
	}
	pthread_mutex_lock(&s->mu);
	int done = s->done;
	if (!done) {
		s->orphaned = 1; /* it frees itself when its transfer ends */
		pthread_detach(s->thread);
	}
	pthread_mutex_unlock(&s->mu);
	if (done) {
		pthread_join(s->thread, NULL);
		sender_free(s);
	} else {
		log_warn("notice.sender_busy note=\"a transfer to the relay is still under way; "
			 "it ends within [smtp] timeout\"");
	}
}

void notice_sender_wake(void)
{
	uint64_t one = 1;
	pthread_mutex_lock(&current_mu);
	if (current) {
		ssize_t w = write(current->wake_fd, &one, sizeof one);
		(void)w; /* a full counter: it is awake anyway */
	}
	pthread_mutex_unlock(&current_mu);
}

int notice_queue_prune(struct store *st, time_t cutoff)
{
	return store_prune_rows(
	    st,
	    "DELETE FROM notice_queue WHERE state IN ('sent','sending','failed') AND created < ?1",
	    cutoff);
}
