/* test_outbox.c — the durable outbox against a scripted backend: nothing
 * posted twice (idempotent enqueue, reconcile after a crash), comments after
 * their post, backoff and Retry-After, the dead list and its commands, and
 * the message state that makes the IMAP after-action due. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <sqlite3.h>
#include <sys/wait.h>

#include "../../src/outbox_internal.h"
#include "mailfeed/decide.h"
#include "mailfeed/feed.h"
#include "mailfeed/message.h"
#include "mailfeed/outbox.h"
#include "mailfeed/store.h"
#include "mailfeed/util.h"

/* --- a scripted backend ------------------------------------------------ */

struct fake {
	enum feed_status next[16]; /* statuses to answer, in order; then OK */
	long retry_after[16];
	size_t n_next, used;
	int reconcile_answer;
	int reconciles;
	int deliveries;
	char seen_keys[32][64];
	char seen_parent[32][64];
	char seen_tags[32][128];
	char seen_rcpt[32][256];
	size_t n_att[32];
};

static void fake_deliver(void *ctx, const struct feed_item *items, size_t n,
			 struct feed_result *res)
{
	struct fake *f = ctx;
	for (size_t i = 0; i < n; i++) {
		int k = f->deliveries++;
		snprintf(f->seen_keys[k], sizeof f->seen_keys[k], "%s", items[i].key);
		snprintf(f->seen_parent[k], sizeof f->seen_parent[k], "%s",
			 items[i].parent_remote_id ? items[i].parent_remote_id : "");
		f->seen_tags[k][0] = '\0';
		for (size_t t = 0; t < items[i].hashtags->n; t++) {
			strcat(f->seen_tags[k], items[i].hashtags->v[t]);
			strcat(f->seen_tags[k], ",");
		}
		f->seen_rcpt[k][0] = '\0';
		for (size_t t = 0; items[i].recipients && t < items[i].recipients->n; t++) {
			strcat(f->seen_rcpt[k], items[i].recipients->v[t]);
			strcat(f->seen_rcpt[k], ",");
		}
		f->n_att[k] = items[i].n_attachments;
		enum feed_status s = f->used < f->n_next ? f->next[f->used] : FEED_OK;
		long ra = f->used < f->n_next ? f->retry_after[f->used] : 0;
		f->used++;
		memset(&res[i], 0, sizeof res[i]);
		res[i].status = s;
		res[i].retry_after = ra;
		if (s == FEED_OK)
			res[i].remote_id = xasprintf("r-%s", items[i].key);
		else
			snprintf(res[i].error, sizeof res[i].error, "%s",
				 s == FEED_RETRY ? "HTTP 503: busy"
						 : "HTTP 400: group is archived");
	}
}

static int fake_reconcile(void *ctx, const struct feed_item *item, char **remote_id)
{
	struct fake *f = ctx;
	f->reconciles++;
	if (f->reconcile_answer == 1)
		*remote_id = xasprintf("found-%s", item->key);
	return f->reconcile_answer;
}

static const struct feed_backend_ops fake_ops = {
    .name = "fake", .deliver = fake_deliver, .reconcile = fake_reconcile};

/* --- fixtures ------------------------------------------------------------ */

struct fx {
	char dir[64];
	struct store *st;
	struct mf_config cfg;
	struct mf_message *msg;
	struct fake fake;
};

static int setup(void **state)
{
	struct fx *x = xcalloc(1, sizeof *x);
	char path[128], err[256];
	snprintf(x->dir, sizeof x->dir, "/tmp/test_outbox.XXXXXX");
	assert_non_null(mkdtemp(x->dir));
	snprintf(path, sizeof path, "%s/state.db", x->dir);
	x->st = store_open(path, err, sizeof err);
	assert_non_null(x->st);
	x->cfg.feed.concurrency = 2;
	x->cfg.feed.max_retry_delay = 3600;
	x->cfg.feed.dead_after = 2 * 86400L;
	x->msg = message_new();
	x->msg->subject = xstrdup("Q3 appeal");
	x->msg->from_name = xstrdup("Alice");
	x->msg->from_email = xstrdup("alice@example.org");
	x->msg->message_id = xstrdup("a1@example.org");
	x->msg->text = xstrdup("Let us plan the appeal.");
	x->msg->date = 1790000000;
	strlist_add(&x->msg->hashtags, "Campaign");
	strlist_add(&x->msg->hashtags, "q3");
	*state = x;
	return 0;
}

static int teardown(void **state)
{
	struct fx *x = *state;
	char cmd[160];
	store_close(x->st);
	message_free(x->msg);
	snprintf(cmd, sizeof cmd, "rm -rf %s", x->dir);
	assert_int_equal(system(cmd), 0);
	free(x);
	return 0;
}

static int64_t add_message(struct fx *x, const char *state, const char *reason)
{
	char sql[768];
	snprintf(sql, sizeof sql,
		 "INSERT INTO messages(mailbox, uidvalidity, uid, size, sha256, state,"
		 " reason, received_at) VALUES('fundraising', 1,"
		 " (SELECT COUNT(*)+1 FROM messages), 10, 'x', '%s', %s%s%s, 1790000000);"
		 "INSERT INTO message_bodies(message, raw) VALUES(last_insert_rowid(), 'raw');"
		 "INSERT INTO message_parsed(message, parsed) VALUES(last_insert_rowid(),"
		 " '{\"subject\":\"Hi\",\"from\":{\"email\":\"bob@example.org\"}}')",
		 state, reason ? "'" : "", reason ? reason : "NULL", reason ? "'" : "");
	assert_int_equal(store_exec(x->st, sql), 0);
	return sqlite3_last_insert_rowid(db_sqlite_handle(store_db(x->st)));
}

static int64_t enqueue(struct fx *x, const char *key, const char *kind, int64_t parent,
		       int64_t message)
{
	struct strlist extra = {0};
	strlist_add(&extra, "fundraising");
	strlist_add(&extra, "campaign");
	struct outbox_new n = {.message = message,
			       .key = key,
			       .kind = kind,
			       .group = "G1",
			       .parent = parent,
			       .msg = x->msg,
			       .extra_hashtags = &extra};
	assert_int_equal(store_begin(x->st), 0);
	int64_t id = outbox_enqueue(x->st, &n);
	assert_int_equal(store_commit(x->st), 0);
	strlist_free(&extra);
	return id;
}

static char *col_text(struct fx *x, const char *sql)
{
	struct db_stmt *s;
	char *out = NULL;
	assert_non_null((s = db_prepare(store_db(x->st), sql)));
	if (db_step(s) == DB_ROW && db_column_text(s, 0))
		out = xstrdup(db_column_text(s, 0));
	db_finalize(s);
	return out;
}

static long long col_int(struct fx *x, const char *sql)
{
	char *t = col_text(x, sql);
	long long v = t ? atoll(t) : -1;
	free(t);
	return v;
}

static int deliver(struct fx *x)
{
	long waiting;
	return outbox_deliver_due(x->st, &x->cfg, &fake_ops, &x->fake, &waiting);
}

/* --- tests ----------------------------------------------------------------- */

/* A backend that counts its deliver calls and the largest batch it got. */
struct counting {
	int calls;
	size_t most, total;
};

static void counting_deliver(void *ctx, const struct feed_item *items, size_t n,
			     struct feed_result *res)
{
	struct counting *c = ctx;
	c->calls++;
	c->most = n > c->most ? n : c->most;
	c->total += n;
	for (size_t i = 0; i < n; i++) {
		memset(&res[i], 0, sizeof res[i]);
		res[i].status = FEED_OK;
		res[i].remote_id = xasprintf("r-%s", items[i].key);
	}
}

/* A backend without network round trips asks for big batches; the others
 * get 4 x concurrency items per call. */
static void test_backend_batch_size(void **state)
{
	struct fx *x = *state;
	char key[32];
	for (int i = 0; i < 30; i++) {
		snprintf(key, sizeof key, "b%02d", i);
		enqueue(x, key, "post", 0, 0);
	}
	struct feed_backend_ops big = {.name = "big", .deliver = counting_deliver, .batch = 25};
	struct feed_backend_ops small = {.name = "small", .deliver = counting_deliver};
	assert_int_equal(outbox_batch_size(&x->cfg, &big), 25);
	assert_int_equal(outbox_batch_size(&x->cfg, &small), 8); /* concurrency 2 */

	struct counting c = {0};
	long waiting = -1;
	assert_int_equal(outbox_deliver_due(x->st, &x->cfg, &big, &c, &waiting), 0);
	assert_int_equal(c.calls, 1);
	assert_int_equal(c.total, 25);
	assert_int_equal(waiting, 5);
	assert_int_equal(outbox_deliver_due(x->st, &x->cfg, &small, &c, &waiting), 0);
	assert_int_equal(c.calls, 2);
	assert_int_equal(c.total, 30);
	assert_int_equal(c.most, 25);
	assert_int_equal(waiting, 0);
	assert_int_equal(col_int(x, "SELECT COUNT(*) FROM outbox WHERE state='delivered'"), 30);
}

/* One name per state, as stored in the database; names read back map to
 * their state, and a dropped item is counted as such. */
static void test_state_names(void **state)
{
	struct fx *x = *state;
	const char *want[] = {"pending", "inflight", "retrying", "delivered", "dead", "dropped"};
	assert_int_equal(sizeof want / sizeof want[0], OUTBOX_STATE_COUNT);
	for (int i = 0; i < OUTBOX_STATE_COUNT; i++) {
		enum outbox_state st;
		assert_string_equal(outbox_state_name((enum outbox_state)i), want[i]);
		assert_int_equal(outbox_state_parse(want[i], &st), 0);
		assert_int_equal(st, i);
	}
	enum outbox_state st = OUTBOX_DEAD;
	assert_null(outbox_state_name((enum outbox_state)OUTBOX_STATE_COUNT));
	assert_int_equal(outbox_state_parse("queued", &st), -1);
	assert_int_equal(outbox_state_parse(NULL, &st), -1);
	assert_int_equal(st, OUTBOX_DEAD);

	/* the stored names are those of the table */
	assert_int_equal(outbox_key_exists(store_db(x->st), "s1"), 0);
	int64_t id = enqueue(x, "s1", "post", 0, 0);
	assert_int_equal(outbox_key_exists(store_db(x->st), "s1"), 1);
	char *name = col_text(x, "SELECT state FROM outbox WHERE key='s1'");
	assert_string_equal(name, outbox_state_name(OUTBOX_PENDING));
	free(name);
	assert_int_equal(outbox_count(x->st, OUTBOX_PENDING), 1);
	x->fake.next[0] = FEED_RETRY;
	x->fake.n_next = 1;
	assert_int_equal(deliver(x), 0);
	char *err = NULL;
	time_t next = 0;
	assert_int_equal(outbox_retry_status(x->st, &err, &next), 1);
	assert_true(next > time(NULL) - 5);
	free(err);
	assert_int_equal(outbox_count(x->st, OUTBOX_RETRYING), 1);
	char sql[128];
	snprintf(sql, sizeof sql, "UPDATE outbox SET state='dropped' WHERE id=%lld", (long long)id);
	store_exec(x->st, sql);
	struct outbox_counts c;
	assert_int_equal(outbox_counts(x->st, &c), 0);
	assert_int_equal(c.dropped, 1);
	assert_int_equal(c.retrying, 0);
	assert_int_equal(outbox_retry_status(x->st, &err, &next), 0);
	assert_null(err);
}

static void test_enqueue_is_idempotent(void **state)
{
	struct fx *x = *state;
	x->msg->attachments = xcalloc(1, sizeof *x->msg->attachments);
	x->msg->n_attachments = 1;
	x->msg->attachments[0].filename = xstrdup("plan.pdf");
	x->msg->attachments[0].content_type = xstrdup("application/pdf");
	x->msg->attachments[0].data = (unsigned char *)xstrdup("%PDF");
	x->msg->attachments[0].size = 4;
	int64_t a = enqueue(x, "k1", "post", 0, 0);
	int64_t b = enqueue(x, "k1", "post", 0, 0);
	assert_true(a > 0);
	assert_int_equal(a, b);
	assert_int_equal(col_int(x, "SELECT COUNT(*) FROM outbox"), 1);
	assert_int_equal(col_int(x, "SELECT COUNT(*) FROM attachments"), 1);

	assert_int_equal(deliver(x), 0);
	assert_int_equal(x->fake.deliveries, 1);
	/* configured tags first, then the message's, case-insensitively unique */
	assert_string_equal(x->fake.seen_tags[0], "fundraising,campaign,q3,");
	assert_int_equal(x->fake.n_att[0], 1);
	/* delivering again sends nothing */
	assert_int_equal(deliver(x), 0);
	assert_int_equal(x->fake.deliveries, 1);
	struct outbox_counts c;
	assert_int_equal(outbox_counts(x->st, &c), 0);
	assert_int_equal(c.delivered, 1);
	assert_int_equal(c.pending, 0);
}

static void test_comments_wait_for_post(void **state)
{
	struct fx *x = *state;
	int64_t msg = add_message(x, "queued", NULL);
	int64_t post = enqueue(x, "p", "post", 0, 0);
	enqueue(x, "c1", "comment", post, msg);
	x->fake.next[0] = FEED_RETRY;
	x->fake.n_next = 1;

	assert_int_equal(deliver(x), 0);
	assert_int_equal(x->fake.deliveries, 1); /* only the post was tried */
	assert_string_equal(x->fake.seen_keys[0], "p");
	assert_true(outbox_next_due(x->st) > time(NULL));

	assert_int_equal(store_exec(x->st, "UPDATE outbox SET next_at=0"), 0);
	assert_int_equal(deliver(x), 0);
	assert_int_equal(deliver(x), 0);
	assert_int_equal(x->fake.deliveries, 3);
	assert_string_equal(x->fake.seen_keys[2], "c1");
	assert_string_equal(x->fake.seen_parent[2], "r-p");
	char *st = col_text(x, "SELECT state FROM messages");
	assert_string_equal(st, "delivered");
	free(st);
	assert_int_equal(outbox_next_due(x->st), 0);
}

/* Each batch takes the oldest due items, past those that wait (a post
 * retrying later, a comment waiting for it), whatever their number. */
static void test_batches_take_the_oldest_due(void **state)
{
	struct fx *x = *state;
	static const struct feed_backend_ops three = {
	    .name = "three", .deliver = fake_deliver, .batch = 3};
	long waiting;
	char key[16];
	int64_t late = enqueue(x, "p00", "post", 0, 0);
	enqueue(x, "c00", "comment", late, 0);
	for (int i = 1; i <= 7; i++) {
		snprintf(key, sizeof key, "p%02d", i);
		enqueue(x, key, "post", 0, 0);
	}
	assert_int_equal(store_exec(x->st, "UPDATE outbox SET state='retrying',"
					   " next_at=4000000000 WHERE key='p00'"),
			 0);
	static const char *const want[] = {"p01", "p02", "p03", "p04", "p05", "p06", "p07"};
	for (size_t i = 0; i < 3; i++)
		assert_int_equal(outbox_deliver_due(x->st, &x->cfg, &three, &x->fake, &waiting), 0);
	assert_int_equal(x->fake.deliveries, 7);
	for (size_t i = 0; i < 7; i++)
		assert_string_equal(x->fake.seen_keys[i], want[i]);
	assert_int_equal(waiting, 2);
	assert_int_equal(outbox_next_due(x->st), 4000000000L);
	/* once the post is due, it goes, then its comment */
	assert_int_equal(store_exec(x->st, "UPDATE outbox SET next_at=0 WHERE key='p00'"), 0);
	assert_int_equal(outbox_next_due(x->st), 1);
	for (size_t i = 0; i < 2; i++)
		assert_int_equal(outbox_deliver_due(x->st, &x->cfg, &three, &x->fake, &waiting), 0);
	assert_int_equal(x->fake.deliveries, 9);
	assert_string_equal(x->fake.seen_keys[7], "p00");
	assert_string_equal(x->fake.seen_keys[8], "c00");
	assert_int_equal(waiting, 0);
}

static void test_comments_keep_date_order(void **state)
{
	struct fx *x = *state;
	int64_t post = enqueue(x, "p", "post", 0, 0);
	x->msg->date = 1790000500;
	enqueue(x, "late", "comment", post, 0);
	x->msg->date = 1790000100;
	enqueue(x, "early", "comment", post, 0);
	for (int i = 0; i < 4; i++)
		deliver(x);
	assert_int_equal(x->fake.deliveries, 3);
	assert_string_equal(x->fake.seen_keys[1], "early");
	assert_string_equal(x->fake.seen_keys[2], "late");
}

static void test_backoff_and_retry_after(void **state)
{
	struct fx *x = *state;
	enqueue(x, "k", "post", 0, 0);
	x->fake.n_next = 3;
	x->fake.next[0] = x->fake.next[1] = x->fake.next[2] = FEED_RETRY;
	x->fake.retry_after[2] = 600;

	time_t t0 = time(NULL);
	deliver(x);
	long long next = col_int(x, "SELECT next_at FROM outbox");
	assert_true(next >= t0 + 2 && next <= time(NULL) + 5); /* 5 s, jittered */
	assert_int_equal(col_int(x, "SELECT attempts FROM outbox"), 1);
	char *s = col_text(x, "SELECT state || ' ' || error FROM outbox");
	assert_string_equal(s, "retrying HTTP 503: busy");
	free(s);

	store_exec(x->st, "UPDATE outbox SET next_at=0");
	t0 = time(NULL);
	deliver(x);
	next = col_int(x, "SELECT next_at FROM outbox");
	assert_true(next >= t0 + 5 && next <= time(NULL) + 10); /* doubled */

	/* Retry-After longer than the backoff wins */
	store_exec(x->st, "UPDATE outbox SET next_at=0");
	t0 = time(NULL);
	deliver(x);
	next = col_int(x, "SELECT next_at FROM outbox");
	assert_true(next >= t0 + 600 && next <= time(NULL) + 600);

	/* the cap holds however many attempts there were */
	x->fake.n_next = 4;
	x->fake.next[3] = FEED_RETRY;
	x->fake.retry_after[3] = 0;
	store_exec(x->st, "UPDATE outbox SET next_at=0, attempts=40");
	x->cfg.feed.max_retry_delay = 100;
	t0 = time(NULL);
	deliver(x);
	next = col_int(x, "SELECT next_at FROM outbox");
	assert_true(next >= t0 + 50 && next <= time(NULL) + 100);
}

static void test_gives_up_after_dead_after(void **state)
{
	struct fx *x = *state;
	int64_t msg = add_message(x, "queued", NULL);
	enqueue(x, "k", "post", 0, msg);
	store_exec(x->st, "UPDATE outbox SET created=created-200000");
	x->fake.n_next = 1;
	x->fake.next[0] = FEED_RETRY;
	assert_int_equal(deliver(x), 1);
	char *s = col_text(x, "SELECT state FROM outbox");
	assert_string_equal(s, "dead");
	free(s);
	s = col_text(x, "SELECT error FROM outbox");
	assert_non_null(strstr(s, "gave up"));
	assert_non_null(strstr(s, "HTTP 503: busy"));
	free(s);
}

static void test_permanent_goes_dead_with_comments(void **state)
{
	struct fx *x = *state;
	int64_t m1 = add_message(x, "queued", NULL);
	int64_t m2 = add_message(x, "queued", NULL);
	int64_t post = enqueue(x, "p", "post", 0, m1);
	enqueue(x, "c", "comment", post, m2);
	x->fake.n_next = 1;
	x->fake.next[0] = FEED_PERMANENT;
	assert_int_equal(deliver(x), 2);
	assert_int_equal(x->fake.deliveries, 1);
	char *s = col_text(x, "SELECT error FROM outbox WHERE key='p'");
	assert_string_equal(s, "HTTP 400: group is archived");
	free(s);
	s = col_text(x, "SELECT error FROM outbox WHERE key='c'");
	assert_string_equal(s, "post was not delivered");
	free(s);
	s = col_text(x, "SELECT group_concat(state) FROM (SELECT state FROM messages ORDER BY id)");
	assert_string_equal(s, "dead,dead");
	free(s);
	s = col_text(x, "SELECT reason FROM messages WHERE id=1");
	assert_non_null(strstr(s, "group is archived"));
	free(s);

	/* the dead list shows the two items, not their messages again */
	struct outbox_dead *d;
	size_t n;
	assert_int_equal(outbox_dead_list(x->st, &d, &n), 0);
	assert_int_equal(n, 2);
	assert_string_equal(d[0].subject, "Q3 appeal");
	assert_string_equal(d[0].mailbox, "fundraising");
	outbox_dead_free(d, n);

	/* retrying the post brings its comment back, and both are delivered */
	char err[256];
	char id[24];
	snprintf(id, sizeof id, "o%lld", (long long)post);
	assert_int_equal(outbox_dead_retry(x->st, NULL, id, err, sizeof err), 0);
	assert_int_equal(outbox_dead_retry(x->st, NULL, id, err, sizeof err), 1);
	deliver(x);
	deliver(x);
	assert_int_equal(x->fake.deliveries, 3);
	s = col_text(x, "SELECT group_concat(state) FROM (SELECT state FROM messages ORDER BY id)");
	assert_string_equal(s, "delivered,delivered");
	free(s);
}

static void test_reconcile_after_crash(void **state)
{
	struct fx *x = *state;
	int64_t msg = add_message(x, "queued", NULL);
	enqueue(x, "found", "post", 0, msg);
	enqueue(x, "lost", "post", 0, 0);
	enqueue(x, "unknown", "post", 0, 0);
	/* a crash after "mark inflight": every item is left inflight */
	store_exec(x->st, "UPDATE outbox SET state='inflight'");

	x->fake.reconcile_answer = -1;
	deliver(x);
	assert_int_equal(x->fake.deliveries, 0);
	assert_int_equal(col_int(x, "SELECT COUNT(*) FROM outbox WHERE state='inflight'"), 3);

	x->fake.reconcile_answer = 1;
	store_exec(x->st, "UPDATE outbox SET state='delivered', remote_id='x' WHERE key!='found'");
	deliver(x);
	assert_int_equal(x->fake.deliveries, 0); /* found at the service: not sent again */
	char *s = col_text(x, "SELECT remote_id FROM outbox WHERE key='found'");
	assert_string_equal(s, "found-found");
	free(s);
	s = col_text(x, "SELECT state FROM messages");
	assert_string_equal(s, "delivered");
	free(s);

	/* not at the service: sent once more */
	store_exec(x->st, "UPDATE outbox SET state='inflight' WHERE key='lost'");
	x->fake.reconcile_answer = 0;
	deliver(x);
	assert_int_equal(x->fake.deliveries, 1);
	assert_string_equal(x->fake.seen_keys[0], "lost");
}

/* A dead comment retried after its mailbox was mapped to another group
 * stays with its post: a reply lives where its post is. */
static void test_retried_comment_stays_with_its_post(void **state)
{
	struct fx *x = *state;
	int64_t post = enqueue(x, "p", "post", 0, add_message(x, "delivered", NULL));
	int64_t comment = enqueue(x, "c", "comment", post, add_message(x, "dead", "refused"));
	assert_int_equal(store_exec(x->st, "UPDATE outbox SET state='delivered', remote_id='r1'"
					   " WHERE key='p';"
					   "UPDATE outbox SET state='dead' WHERE key='c'"),
			 0);
	struct mf_mailbox mb = {.name = "fundraising", .group = "G2"};
	x->cfg.mailboxes = &mb;
	x->cfg.n_mailboxes = 1;
	char err[256], id[24];
	snprintf(id, sizeof id, "o%lld", (long long)comment);
	assert_int_equal(outbox_dead_retry(x->st, &x->cfg, id, err, sizeof err), 0);
	char *s = col_text(x, "SELECT state || ' ' || grp FROM outbox WHERE key='c'");
	assert_string_equal(s, "pending G1");
	free(s);
	x->cfg.mailboxes = NULL;
	x->cfg.n_mailboxes = 0;
}

static void test_dead_messages_retry_and_drop(void **state)
{
	struct fx *x = *state;
	add_message(x, "skipped", "sender not allowed: bob@example.org");
	add_message(x, "dead", "parser crashed");
	add_message(x, "delivered", NULL);
	struct outbox_dead *d;
	size_t n;
	char err[256];
	assert_int_equal(outbox_dead_list(x->st, &d, &n), 0);
	assert_int_equal(n, 2);
	assert_string_equal(d[0].id, "m2");
	assert_string_equal(d[0].reason, "parser crashed");
	assert_string_equal(d[1].id, "m1");
	assert_string_equal(d[1].from, "bob@example.org");
	outbox_dead_free(d, n);

	assert_int_equal(outbox_dead_retry(x->st, NULL, "m1", err, sizeof err), 0);
	assert_int_equal(outbox_dead_drop(x->st, "m2", err, sizeof err), 0);
	assert_int_equal(outbox_dead_drop(x->st, "m3", err, sizeof err), 1);
	assert_int_equal(outbox_dead_drop(x->st, "o99", err, sizeof err), 1);
	assert_int_equal(outbox_dead_drop(x->st, "x1", err, sizeof err), 1);
	char *s =
	    col_text(x, "SELECT group_concat(state) FROM (SELECT state FROM messages ORDER BY id)");
	assert_string_equal(s, "new,dropped,delivered");
	free(s);
	assert_int_equal(outbox_dead_list(x->st, &d, &n), 0);
	assert_int_equal(n, 0);
	outbox_dead_free(d, n);
}

/* A message the parser could not read shows its subject and sender from
 * its raw header block (folded, with control characters made harmless),
 * and every entry where it lies: mailbox and UID. */
static void test_dead_unparsed_message_is_recognisable(void **state)
{
	struct fx *x = *state;
	assert_int_equal(store_exec(x->st, "INSERT INTO messages(mailbox, uidvalidity, uid, size,"
					   " sha256, state, reason, received_at) VALUES("
					   "'fundraising', 1, 42, 10, 'x', 'dead',"
					   " 'parser crashed (signal 11)', 1790000000);"
					   "INSERT INTO message_bodies(message, raw) VALUES("
					   "last_insert_rowid(), 'Received: x\r\n"
					   "Subject: Quarterly\r\n\tfigures\x1b[31m\r\n"
					   "From: \"Mallory\" <mallory@example.org>\r\n"
					   "\r\nSubject: not a header')"),
			 0);
	struct outbox_dead *d;
	size_t n;
	assert_int_equal(outbox_dead_list(x->st, &d, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(d[0].uid, 42);
	assert_string_equal(d[0].subject, "Quarterly  figures?[31m");
	assert_string_equal(d[0].from, "mallory@example.org");
	outbox_dead_free(d, n);
	char *v = raw_header_value("A: 1\n\nB: 2\n", 12, "B", 100);
	assert_null(v);
	v = raw_header_value("Subject: abcdef\n", 16, "subject", 3);
	assert_string_equal(v, "abc");
	free(v);
}

static void test_read_delivered(void **state)
{
	struct fx *x = *state;
	int64_t post = enqueue(x, "p", "post", 0, 0);
	enqueue(x, "c", "comment", post, 0);
	enqueue(x, "q", "post", 0, 0);
	x->fake.n_next = 3;
	x->fake.next[0] = FEED_OK;
	x->fake.next[1] = FEED_PERMANENT;
	deliver(x);
	deliver(x);
	struct feed_entry *e;
	size_t n;
	assert_int_equal(outbox_read_delivered(x->st, "G1", 0, &e, &n), 0);
	assert_int_equal(n, 2);
	assert_string_equal(e[0].remote_id, "r-p");
	assert_null(e[0].parent_remote_id);
	assert_string_equal(e[1].remote_id, "r-c");
	assert_string_equal(e[1].parent_remote_id, "r-p");
	assert_string_equal(e[1].author_email, "alice@example.org");
	feed_entries_free(e, n);
	assert_int_equal(outbox_read_delivered(x->st, "G1", time(NULL) + 10, &e, &n), 0);
	assert_int_equal(n, 0);
	feed_entries_free(e, n);
}

/* The To/Cc addresses chosen at enqueue reach the backend with the item,
 * on every attempt; an item without any carries an empty list. */
static void test_recipients_travel_with_item(void **state)
{
	struct fx *x = *state;
	struct strlist rcpt = {0};
	strlist_add(&rcpt, "bob@example.org");
	strlist_add(&rcpt, "carol@example.org");
	struct outbox_new n = {
	    .key = "k1", .kind = "post", .group = "G1", .msg = x->msg, .recipients = &rcpt};
	assert_int_equal(store_begin(x->st), 0);
	assert_true(outbox_enqueue(x->st, &n) > 0);
	assert_int_equal(store_commit(x->st), 0);
	strlist_free(&rcpt);
	enqueue(x, "k2", "post", 0, 0);

	x->fake.next[0] = FEED_RETRY;
	x->fake.n_next = 1;
	assert_int_equal(deliver(x), 0);
	assert_string_equal(x->fake.seen_keys[0], "k1");
	assert_string_equal(x->fake.seen_rcpt[0], "bob@example.org,carol@example.org,");
	assert_string_equal(x->fake.seen_rcpt[1], "");
	assert_int_equal(store_exec(x->st, "UPDATE outbox SET next_at=0"), 0);
	assert_int_equal(deliver(x), 0);
	assert_string_equal(x->fake.seen_keys[2], "k1");
	assert_string_equal(x->fake.seen_rcpt[2], "bob@example.org,carol@example.org,");
}

/* --- the payload as stored --------------------------------------------- */

/* The payload as the jansson object it was first built as, dumped: the
 * reference the written text must equal byte for byte. */
static char *payload_by_jansson(const struct outbox_new *n)
{
	const struct mf_message *m = n->msg;
	json_t *o = json_object(), *author = json_object(), *tags = json_array();
	struct strlist seen = {0};
	char datebuf[32];
	json_object_set_new(author, "name",
			    json_str_or_null(n->author_name ? n->author_name : m->from_name));
	json_object_set_new(author, "email",
			    json_str_or_null(n->author_email ? n->author_email : m->from_email));
	json_object_set_new(author, "verified", json_boolean(n->author_verified));
	if (n->author_check)
		json_object_set_new(author, "check", json_string(n->author_check));
	json_object_set_new(o, "author", author);
	json_object_set_new(o, "subject", json_string(m->subject ? m->subject : ""));
	json_object_set_new(o, "text", json_string(m->text ? m->text : ""));
	decide_hashtags(n->extra_hashtags, m, &seen);
	for (size_t i = 0; i < seen.n; i++)
		json_array_append_new(tags, json_string(seen.v[i]));
	strlist_free(&seen);
	json_object_set_new(o, "hashtags", tags);
	json_object_set_new(o, "message_id", json_str_or_null(m->message_id));
	json_object_set_new(o, "date",
			    m->date ? json_string(time_iso(m->date, datebuf, sizeof datebuf))
				    : json_null());
	if (n->parent_remote_id)
		json_object_set_new(o, "parent_remote_id", json_string(n->parent_remote_id));
	if (n->recipients && n->recipients->n) {
		json_t *rcpt = json_array();
		for (size_t i = 0; i < n->recipients->n; i++)
			json_array_append_new(rcpt, json_string(n->recipients->v[i]));
		json_object_set_new(o, "recipients", rcpt);
	}
	char *out = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	return out;
}

/* A short random string with bytes to escape, multibyte UTF-8 and bytes
 * that are not UTF-8 anywhere in it; NULL now and then when may_null. */
static char *random_text(int may_null)
{
	static const unsigned char pick[] = {'a',  ' ',	 0x1f, 0x01, '"',  '\\', 0x7f, 0x21, 0x5b,
					     0x5d, 0xc3, 0xa9, 0xff, 0x80, '\n', '/',  0xe2, 0x82,
					     0xac, 0xf0, 0x9f, 0x98, 0x80, '\t', 0xed, 0xa0};
	if (may_null && rand() % 5 == 0)
		return NULL;
	size_t len = (size_t)(rand() % 40);
	char *t = xmalloc(len + 1);
	for (size_t i = 0; i < len; i++)
		t[i] = (char)(rand() % 3 ? 'a' + rand() % 26 : pick[rand() % sizeof pick]);
	t[len] = 0;
	return t;
}

static void random_list(struct strlist *l)
{
	for (int k = rand() % 4; k > 0; k--) {
		char *t = random_text(0);
		if (*t)
			strlist_add(l, t);
		free(t);
	}
}

static void same_payload(struct fx *x, const struct outbox_new *n)
{
	char *want = payload_by_jansson(n), sql[160];
	assert_int_equal(store_begin(x->st), 0);
	int64_t id = outbox_enqueue(x->st, n);
	assert_true(id > 0);
	assert_int_equal(store_commit(x->st), 0);
	snprintf(sql, sizeof sql, "SELECT payload FROM outbox_payloads WHERE item=%lld",
		 (long long)id);
	char *got = col_text(x, sql);
	assert_non_null(got);
	assert_string_equal(got, want);
	free(got);
	free(want);
}

/* The stored payload is what jansson made of it, byte for byte: escapes,
 * control characters, a string that is not UTF-8 (a '?' where
 * json_str_or_null took it, the key or list entry left out where
 * json_string refused it), absent fields, overrides and lists. */
static void test_payload_text_is_the_json_form(void **state)
{
	struct fx *x = *state;
	struct strlist extra = {0}, rcpt = {0};
	strlist_add(&extra, "fundraising");
	struct outbox_new n = {
	    .key = "p0", .kind = "post", .group = "G1", .msg = x->msg, .extra_hashtags = &extra};
	same_payload(x, &n);
	char key[32];
	srand(11);
	for (int k = 1; k < 1500; k++) {
		struct mf_message *m = message_new();
		m->subject = random_text(1);
		m->text = random_text(1);
		m->from_name = random_text(1);
		m->from_email = random_text(1);
		m->message_id = random_text(1);
		m->date = rand() % 2 ? (time_t)1790000000 + rand() % 100000000 : 0;
		random_list(&m->hashtags);
		random_list(&extra);
		random_list(&rcpt);
		char *name = rand() % 3 ? NULL : random_text(1);
		char *email = rand() % 3 ? NULL : random_text(1);
		char *check = random_text(1), *parent = random_text(1);
		snprintf(key, sizeof key, "p%d", k);
		n = (struct outbox_new){.key = key,
					.kind = "post",
					.group = "G1",
					.msg = m,
					.author_name = name,
					.author_email = email,
					.author_verified = rand() % 2,
					.author_check = check,
					.extra_hashtags = &extra,
					.parent_remote_id = parent,
					.recipients = rand() % 2 ? &rcpt : NULL};
		same_payload(x, &n);
		free(name);
		free(email);
		free(check);
		free(parent);
		strlist_free(&extra);
		strlist_free(&rcpt);
		message_free(m);
	}
	strlist_free(&extra);
}

static void same_str(const char *a, const char *b)
{
	if (!a || !b)
		assert_ptr_equal(a, b);
	else
		assert_string_equal(a, b);
}

static void same_list(const struct strlist *a, const struct strlist *b)
{
	assert_int_equal(a->n, b->n);
	for (size_t i = 0; i < a->n; i++)
		assert_string_equal(a->v[i], b->v[i]);
}

/* A payload read in one pass gives what jansson reads from it. */
static void same_reading(const char *text, const char *parent)
{
	struct outbox_loaded f = {0}, j = {0};
	f.parent_remote_id = parent ? xstrdup(parent) : NULL;
	j.parent_remote_id = parent ? xstrdup(parent) : NULL;
	int rf = outbox_payload_read(text, &f, 1), rj = outbox_payload_read(text, &j, 0);
	assert_int_equal(rf, rj);
	if (rj == 0) {
		same_str(f.parent_remote_id, j.parent_remote_id);
		same_str(f.author_name, j.author_name);
		same_str(f.author_email, j.author_email);
		same_str(f.subject, j.subject);
		same_str(f.text, j.text);
		same_str(f.message_id, j.message_id);
		assert_int_equal(f.item.author_verified, j.item.author_verified);
		assert_int_equal(f.item.date, j.item.date);
		same_list(&f.tags, &j.tags);
		same_list(&f.recipients, &j.recipients);
	}
	outbox_loaded_free(&f);
	outbox_loaded_free(&j);
}

/* The fields delivery reads back from a payload are those jansson reads:
 * for every payload the gateway writes, and for text it never writes
 * (escapes it does not use, spaces, other keys and values, repeated keys,
 * values of the wrong type, broken JSON). */
static void test_payload_reading_is_jansson_s(void **state)
{
	struct fx *x = *state;
	static const char *const odd[] = {
	    "{}",
	    " { \"subject\" : \"a\\/b\\u00e9\\u20ac\\ud83d\\ude00\" "
	    ",\n\"text\":\"\\b\\f\\n\\r\\t\"} ",
	    "{\"subject\":\"\\u0000\"}",
	    "{\"subject\":\"\\ud800\"}",
	    "{\"subject\":\"\\x\"}",
	    "{\"subject\":\"a\",\"subject\":\"b\"}",
	    "{\"author\":{\"name\":\"A\",\"name\":\"B\"}}",
	    "{\"author\":{\"name\":1,\"email\":null,\"verified\":\"true\"},\"date\":7}",
	    "{\"author\":[],\"hashtags\":{\"a\":\"b\"},\"recipients\":\"x\"}",
	    "{\"hashtags\":[\"a\",1,null,[\"b\"],{\"c\":\"d\"},\"e\"],\"x\":{\"y\":[true,false]}}",
	    "{\"author\":{\"verified\":true,\"check\":\"dkim\"},\"date\":\"2026-12-05T03:00:00Z\"}",
	    "{\"parent_remote_id\":\"p-1\",\"text\":null}",
	    "{\"subject\":\"raw\ttab\"}",
	    "{\"subject\":\"open",
	    "{\"subject\":\"a\"} x",
	    "{\"subject\":\"a\",}",
	    "[\"subject\"]",
	    "\"subject\"",
	    "{\"subject\":\"\xff\"}",
	    "{\"subject\":tru}",
	    "",
	};
	for (size_t i = 0; i < sizeof odd / sizeof odd[0]; i++) {
		same_reading(odd[i], NULL);
		same_reading(odd[i], "from-row");
	}
	/* what the gateway writes, for random fields */
	test_payload_text_is_the_json_form(state);
	struct db_stmt *s;
	assert_non_null((s = db_prepare(store_db(x->st), "SELECT payload FROM outbox_payloads")));
	int rows = 0;
	while (db_step(s) == DB_ROW) {
		same_reading(db_column_text(s, 0), rows % 2 ? "from-row" : NULL);
		rows++;
	}
	db_finalize(s);
	assert_true(rows > 1000);
}

/* --- claims: two connections are two instances ------------------------ */

/* The database's clock in ms, plus delta, as SQL. */
#define DB_NOW_PLUS(delta)                                                                         \
	"(CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER) + " delta ")"

/* Instance A's backend: while it delivers A's batch, instance B (another
 * connection) runs a pass of its own. */
struct two {
	struct fx *x;
	struct store *st_b;
	struct fake fake_b;
	int calls;
	size_t got;
	unsigned slow_ms; /* A's delivery takes this long before B's pass */
};

static void a_deliver(void *ctx, const struct feed_item *items, size_t n, struct feed_result *res)
{
	struct two *t = ctx;
	long waiting;
	t->calls++;
	t->got += n;
	if (t->slow_ms)
		usleep(t->slow_ms * 1000);
	store_set_instance_id("host-b:2:b");
	assert_int_equal(outbox_deliver_due(t->st_b, &t->x->cfg, &fake_ops, &t->fake_b, &waiting),
			 0);
	store_set_instance_id("host-a:1:a");
	for (size_t i = 0; i < n; i++) {
		memset(&res[i], 0, sizeof res[i]);
		res[i].status = FEED_OK;
		res[i].remote_id = xasprintf("a-%s", items[i].key);
	}
}

static const struct feed_backend_ops a_ops = {.name = "a", .deliver = a_deliver};

static struct store *second_instance(struct fx *x)
{
	char path[160], err[256];
	snprintf(path, sizeof path, "%s/state.db", x->dir);
	struct store *st = store_open(path, err, sizeof err);
	assert_non_null(st);
	return st;
}

/* Items claimed by one instance are not taken by another meanwhile; each
 * is delivered once, and finishing ends the claim. */
static void test_claimed_items_are_not_taken_twice(void **state)
{
	struct fx *x = *state;
	struct two t = {.x = x, .st_b = second_instance(x)};
	long waiting;
	char key[16];
	for (int i = 1; i <= 10; i++) {
		snprintf(key, sizeof key, "p%02d", i);
		enqueue(x, key, "post", 0, 0);
	}
	store_set_instance_id("host-a:1:a");
	assert_int_equal(outbox_deliver_due(x->st, &x->cfg, &a_ops, &t, &waiting), 0);
	/* A claimed a batch of 8 (4 x concurrency); B took the other two */
	assert_int_equal(t.got, 8);
	assert_int_equal(t.fake_b.deliveries, 2);
	assert_string_equal(t.fake_b.seen_keys[0], "p09");
	assert_string_equal(t.fake_b.seen_keys[1], "p10");
	assert_int_equal(t.fake_b.reconciles, 0);
	assert_int_equal(col_int(x, "SELECT COUNT(*) FROM outbox WHERE state='delivered'"
				    " AND remote_id LIKE 'a-%'"),
			 8);
	assert_int_equal(col_int(x, "SELECT COUNT(*) FROM outbox WHERE claimed_by IS NOT NULL"
				    " OR claim_until IS NOT NULL"),
			 0);
	store_close(t.st_b);
	store_set_instance_id(NULL);
}

/* A delivery longer than the claim time keeps its claims: they are
 * renewed while it runs, so another instance does not take them over. */
static void test_long_delivery_keeps_its_claims(void **state)
{
	struct fx *x = *state;
	struct two t = {.x = x, .st_b = second_instance(x), .slow_ms = 3500};
	long waiting;
	x->cfg.feed.claim_timeout = 2;
	enqueue(x, "big", "post", 0, 0);
	store_set_instance_id("host-a:1:a");
	assert_int_equal(outbox_deliver_due(x->st, &x->cfg, &a_ops, &t, &waiting), 0);
	assert_int_equal(t.got, 1);
	assert_int_equal(t.fake_b.reconciles, 0);
	assert_int_equal(t.fake_b.deliveries, 0);
	char *s = col_text(x, "SELECT remote_id FROM outbox WHERE key='big'");
	assert_string_equal(s, "a-big");
	free(s);
	store_close(t.st_b);
	store_set_instance_id(NULL);
}

/* An item claimed by an instance that died while sending it: another
 * instance leaves it alone until the claim's deadline, then looks for it
 * at the service before sending it again. */
static void test_lapsed_claim_is_reconciled(void **state)
{
	struct fx *x = *state;
	struct store *st_b = second_instance(x);
	long waiting;
	enqueue(x, "sent", "post", 0, 0);
	enqueue(x, "unsent", "post", 0, 0);
	assert_int_equal(store_exec(x->st,
				    "UPDATE outbox SET state='inflight',"
				    " claimed_by='host-a:1:a', claim_until=" DB_NOW_PLUS("60000")),
			 0);
	store_set_instance_id("host-b:2:b");
	assert_int_equal(outbox_deliver_due(st_b, &x->cfg, &fake_ops, &x->fake, &waiting), 0);
	assert_int_equal(x->fake.reconciles, 0);
	assert_int_equal(x->fake.deliveries, 0);
	assert_int_equal(waiting, 2);

	/* A's deadline passes: B takes both over; one is at the service */
	assert_int_equal(store_exec(x->st, "UPDATE outbox SET claim_until=" DB_NOW_PLUS("-1")), 0);
	x->fake.reconcile_answer = 1;
	assert_int_equal(
	    store_exec(x->st, "UPDATE outbox SET state='delivered', claimed_by=NULL, claim_until="
			      "NULL, remote_id='x' WHERE key='unsent'"),
	    0);
	assert_int_equal(outbox_deliver_due(st_b, &x->cfg, &fake_ops, &x->fake, &waiting), 0);
	assert_int_equal(x->fake.reconciles, 1);
	assert_int_equal(x->fake.deliveries, 0); /* found: not sent again */
	char *s = col_text(x, "SELECT remote_id FROM outbox WHERE key='sent'");
	assert_string_equal(s, "found-sent");
	free(s);

	/* not at the service: sent once by B */
	assert_int_equal(store_exec(x->st, "UPDATE outbox SET state='inflight',"
					   " claimed_by='host-a:1:a', claim_until=" DB_NOW_PLUS(
					       "-1") " WHERE key='unsent'"),
			 0);
	x->fake.reconcile_answer = 0;
	assert_int_equal(outbox_deliver_due(st_b, &x->cfg, &fake_ops, &x->fake, &waiting), 0);
	assert_int_equal(x->fake.reconciles, 2);
	assert_int_equal(x->fake.deliveries, 1);
	assert_string_equal(x->fake.seen_keys[0], "unsent");
	assert_int_equal(waiting, 0);
	store_close(st_b);
	store_set_instance_id(NULL);
}

/* A claim of a process of this host that no longer runs lapses at once (a
 * daemon restarted after a crash does not wait for the deadline). */
static void test_claim_of_gone_process_lapses_at_once(void **state)
{
	struct fx *x = *state;
	char host[256] = "", sql[512];
	pid_t pid = fork();
	if (pid == 0)
		_exit(0);
	assert_true(pid > 0);
	assert_int_equal(waitpid(pid, NULL, 0), pid);
	gethostname(host, sizeof host - 1);
	enqueue(x, "p", "post", 0, 0);
	snprintf(sql, sizeof sql,
		 "UPDATE outbox SET state='inflight', claimed_by='%s:%ld:ab',"
		 " claim_until=" DB_NOW_PLUS("600000"),
		 host, (long)pid);
	assert_int_equal(store_exec(x->st, sql), 0);
	deliver(x);
	assert_int_equal(x->fake.reconciles, 1);
	assert_int_equal(x->fake.deliveries, 1);

	/* a live one is waited for */
	enqueue(x, "q", "post", 0, 0);
	snprintf(sql, sizeof sql,
		 "UPDATE outbox SET state='inflight', claimed_by='%s:%ld:ab',"
		 " claim_until=" DB_NOW_PLUS("600000") " WHERE key='q'",
		 host, (long)getppid());
	assert_int_equal(store_exec(x->st, sql), 0);
	deliver(x);
	assert_int_equal(x->fake.reconciles, 1);
	assert_int_equal(x->fake.deliveries, 1);
}

/* A batch whose results could not be recorded (the database went away)
 * is looked at again by the next pass of the same instance, without
 * waiting for the claim's deadline. */
static void test_own_unrecorded_claims_are_reconciled_next_pass(void **state)
{
	struct fx *x = *state;
	char sql[512];
	enqueue(x, "p", "post", 0, 0);
	snprintf(sql, sizeof sql,
		 "UPDATE outbox SET state='inflight', claimed_by='%s',"
		 " claim_until=" DB_NOW_PLUS("600000"),
		 store_instance(x->st));
	assert_int_equal(store_exec(x->st, sql), 0);
	x->fake.reconcile_answer = 1;
	deliver(x);
	assert_int_equal(x->fake.reconciles, 1);
	assert_int_equal(x->fake.deliveries, 0);
	assert_int_equal(col_int(x, "SELECT COUNT(*) FROM outbox WHERE state='delivered'"), 1);
}

/* A comment waits while an earlier comment of its thread is claimed by
 * another instance, and goes out after it. */
static void test_comment_waits_for_sibling_claimed_elsewhere(void **state)
{
	struct fx *x = *state;
	int64_t post = enqueue(x, "p", "post", 0, 0);
	x->msg->date = 1790000100;
	enqueue(x, "early", "comment", post, 0);
	x->msg->date = 1790000500;
	enqueue(x, "late", "comment", post, 0);
	deliver(x); /* the post */
	assert_int_equal(x->fake.deliveries, 1);
	assert_int_equal(store_exec(x->st, "UPDATE outbox SET state='inflight',"
					   " claimed_by='host-a:1:a', claim_until=" DB_NOW_PLUS(
					       "60000") " WHERE key='early'"),
			 0);
	deliver(x);
	deliver(x);
	assert_int_equal(x->fake.deliveries, 1); /* "late" waits */
	assert_int_equal(store_exec(x->st, "UPDATE outbox SET claim_until=0 WHERE key='early'"), 0);
	deliver(x);
	deliver(x);
	assert_int_equal(x->fake.deliveries, 3);
	assert_string_equal(x->fake.seen_keys[1], "early");
	assert_string_equal(x->fake.seen_keys[2], "late");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_state_names, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_enqueue_is_idempotent, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_backend_batch_size, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_comments_wait_for_post, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_comments_keep_date_order, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_backoff_and_retry_after, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_gives_up_after_dead_after, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_permanent_goes_dead_with_comments, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_reconcile_after_crash, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_retried_comment_stays_with_its_post, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_dead_messages_retry_and_drop, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_dead_unparsed_message_is_recognisable, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_read_delivered, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_recipients_travel_with_item, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_payload_text_is_the_json_form, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_payload_reading_is_jansson_s, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_claimed_items_are_not_taken_twice, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_lapsed_claim_is_reconciled, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_long_delivery_keeps_its_claims, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_claim_of_gone_process_lapses_at_once, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_own_unrecorded_claims_are_reconciled_next_pass,
					    setup, teardown),
	    cmocka_unit_test_setup_teardown(test_comment_waits_for_sibling_claimed_elsewhere, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_batches_take_the_oldest_due, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
