/* test_feed_webhook.c — the webhook backend driven by the real outbox
 * against tests/integration/doubles/webhook_double.py on loopback: the
 * receiver recomputes every signature, and the test checks what it got
 * (the body fields README documents, the same delivery key on every retry, the post's id as
 * the comment's parent) and what mailfeed made of its answers (500 and 429
 * retried, Retry-After honoured, 400 dead with a one-line reason, 204 keyed).
 * Run from the top of the tree (make check does). */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "mailfeed/feed.h"
#include "mailfeed/message.h"
#include "mailfeed/outbox.h"
#include "mailfeed/store.h"
#include "mailfeed/util.h"

#define DOUBLE "tests/integration/doubles/webhook_double.py"

struct fx {
	char dir[64];
	char secret[128], log[128], url[64];
	pid_t pid;
	struct store *st;
	struct mf_config cfg;
	void *ctx;
	struct mf_message *msg;
};

static pid_t start_double(const char *secret, const char *log, const char *script, int *port)
{
	int p[2];
	char line[64] = "";
	assert_int_equal(access(DOUBLE, R_OK), 0);
	assert_int_equal(pipe(p), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		dup2(p[1], 1);
		close(p[0]);
		close(p[1]);
		execl("/usr/bin/python3", "python3", DOUBLE, "--secret", secret, "--log", log,
		      "--script", script, (char *)NULL);
		_exit(127);
	}
	close(p[1]);
	FILE *f = fdopen(p[0], "r");
	assert_non_null(fgets(line, sizeof line, f));
	fclose(f);
	assert_int_equal(sscanf(line, "PORT %d", port), 1);
	return pid;
}

static int setup(void **state)
{
	struct fx *x = xcalloc(1, sizeof *x);
	char path[128], err[256];
	unsigned char key[32];
	int port;
	snprintf(x->dir, sizeof x->dir, "/tmp/test_feed_webhook.XXXXXX");
	assert_non_null(mkdtemp(x->dir));
	snprintf(x->secret, sizeof x->secret, "%s/secret", x->dir);
	snprintf(x->log, sizeof x->log, "%s/requests.jsonl", x->dir);
	assert_int_equal(random_bytes(key, sizeof key), 0);
	assert_int_equal(file_write_atomic(x->secret, key, sizeof key, 0600), 0);
	x->pid = start_double(x->secret, x->log, "500,429:7,200,400,204", &port);
	snprintf(x->url, sizeof x->url, "http://127.0.0.1:%d/hook", port);

	snprintf(path, sizeof path, "%s/state.db", x->dir);
	x->st = store_open(path, err, sizeof err);
	assert_non_null(x->st);
	x->cfg.feed.url = x->url;
	x->cfg.feed.secret_file = x->secret;
	x->cfg.feed.tls_verify = 1;
	x->cfg.feed.concurrency = 2;
	x->cfg.feed.timeout = 10;
	x->cfg.feed.connect_timeout = 5;
	x->cfg.feed.max_retry_delay = 3600;
	x->cfg.feed.dead_after = 2 * 86400L;
	x->cfg.feed.max_file_size = 1024;
	x->cfg.feed.max_files = 10;
	assert_int_equal(feed_webhook_ops.open(&x->cfg, x->st, &x->ctx, err, sizeof err), 0);

	x->msg = message_new();
	x->msg->subject = xstrdup("Q3 appeal");
	x->msg->from_name = xstrdup("Alice");
	x->msg->from_email = xstrdup("alice@example.org");
	x->msg->message_id = xstrdup("a1@example.org");
	x->msg->text = xstrdup("Let us plan the appeal.");
	x->msg->date = 1790000000;
	strlist_add(&x->msg->hashtags, "q3");
	*state = x;
	return 0;
}

static int teardown(void **state)
{
	struct fx *x = *state;
	char cmd[160];
	feed_webhook_ops.close(x->ctx);
	store_close(x->st);
	message_free(x->msg);
	kill(x->pid, SIGTERM);
	waitpid(x->pid, NULL, 0);
	snprintf(cmd, sizeof cmd, "rm -rf %s", x->dir);
	assert_int_equal(system(cmd), 0);
	free(x);
	return 0;
}

static int64_t enqueue(struct fx *x, const char *key, const char *kind, int64_t parent)
{
	struct strlist extra = {0};
	strlist_add(&extra, "fundraising");
	struct outbox_new n = {.key = key,
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

static void expect(struct fx *x, const char *sql, const char *want)
{
	char *got = col_text(x, sql);
	assert_non_null(got);
	assert_string_equal(got, want);
	free(got);
}

static int deliver(struct fx *x)
{
	long waiting;
	return outbox_deliver_due(x->st, &x->cfg, &feed_webhook_ops, x->ctx, &waiting);
}

static json_t *requests(struct fx *x)
{
	char *s = file_read_all(x->log, NULL);
	json_t *arr = json_array();
	assert_non_null(s);
	for (char *line = strtok(s, "\n"); line; line = strtok(NULL, "\n")) {
		json_t *j = json_loads(line, 0, NULL);
		assert_non_null(j);
		json_array_append_new(arr, j);
	}
	free(s);
	return arr;
}

static const char *jpath(json_t *o, const char *a, const char *b)
{
	json_t *v = json_object_get(o, a);
	if (b)
		v = json_object_get(v, b);
	return json_string_value(v);
}

static void test_webhook_through_outbox(void **state)
{
	struct fx *x = *state;
	x->msg->attachments = xcalloc(2, sizeof *x->msg->attachments);
	x->msg->n_attachments = 2;
	x->msg->attachments[0].filename = xstrdup("plan.pdf");
	x->msg->attachments[0].content_type = xstrdup("application/pdf");
	x->msg->attachments[0].data = (unsigned char *)xstrdup("%PDF-1");
	x->msg->attachments[0].size = 6;
	x->msg->attachments[1].filename = xstrdup("big.bin");
	x->msg->attachments[1].content_type = xstrdup("application/octet-stream");
	x->msg->attachments[1].data = xcalloc(1, 2048);
	x->msg->attachments[1].size = 2048;
	int64_t post = enqueue(x, "key-p", "post", 0);
	x->msg->n_attachments = 0;
	enqueue(x, "key-c", "comment", post);
	x->msg->n_attachments = 2;

	/* 500: retried, the comment waits */
	assert_int_equal(deliver(x), 0);
	expect(x, "SELECT state FROM outbox WHERE key='key-p'", "retrying");
	expect(x, "SELECT state FROM outbox WHERE key='key-c'", "pending");
	char *err = col_text(x, "SELECT error FROM outbox WHERE key='key-p'");
	assert_non_null(strstr(err, "HTTP 500"));
	free(err);

	/* 429 with Retry-After: 7 */
	store_exec(x->st, "UPDATE outbox SET next_at=0");
	time_t t0 = time(NULL);
	assert_int_equal(deliver(x), 0);
	char *next = col_text(x, "SELECT next_at FROM outbox WHERE key='key-p'");
	assert_true(atoll(next) >= t0 + 7);
	free(next);

	/* 200 {"id": "wh-1"}; then the comment, refused with 400 */
	store_exec(x->st, "UPDATE outbox SET next_at=0");
	assert_int_equal(deliver(x), 0);
	expect(x, "SELECT state || ' ' || remote_id FROM outbox WHERE key='key-p'",
	       "delivered wh-1");
	assert_int_equal(deliver(x), 1);
	err = col_text(x, "SELECT state || ' ' || error FROM outbox WHERE key='key-c'");
	assert_non_null(strstr(err, "dead webhook answered HTTP 400"));
	assert_non_null(strstr(err, "group archived"));
	assert_null(strpbrk(err, "\r\n"));
	free(err);

	/* 204 without a body: the key is the id */
	enqueue(x, "key-q", "post", 0);
	assert_int_equal(deliver(x), 0);
	expect(x, "SELECT remote_id FROM outbox WHERE key='key-q'", "key-q");

	json_t *reqs = requests(x);
	assert_int_equal(json_array_size(reqs), 5);
	size_t i;
	json_t *r;
	json_array_foreach(reqs, i, r)
	{
		assert_true(json_is_true(json_object_get(r, "signature_ok")));
		assert_string_equal(jpath(r, "content_type", NULL), "application/json");
		assert_string_equal(jpath(r, "delivery", NULL), jpath(r, "body", "key"));
	}
	for (i = 0; i < 3; i++)
		assert_string_equal(jpath(json_array_get(reqs, i), "delivery", NULL), "key-p");
	json_t *p = json_object_get(json_array_get(reqs, 0), "body");
	assert_string_equal(jpath(p, "type", NULL), "post");
	assert_true(json_is_null(json_object_get(p, "parent")));
	assert_string_equal(jpath(p, "group", NULL), "G1");
	assert_string_equal(jpath(p, "author", "name"), "Alice");
	assert_string_equal(jpath(p, "author", "email"), "alice@example.org");
	assert_string_equal(jpath(p, "subject", NULL), "Q3 appeal");
	assert_string_equal(jpath(p, "text", NULL), "Let us plan the appeal.");
	assert_string_equal(jpath(p, "message_id", NULL), "a1@example.org");
	assert_string_equal(jpath(p, "date", NULL), "2026-09-21T14:13:20Z");
	json_t *tags = json_object_get(p, "hashtags");
	assert_int_equal(json_array_size(tags), 2);
	assert_string_equal(json_string_value(json_array_get(tags, 0)), "fundraising");
	json_t *a0 = json_array_get(json_object_get(p, "attachments"), 0);
	json_t *a1 = json_array_get(json_object_get(p, "attachments"), 1);
	assert_string_equal(jpath(a0, "filename", NULL), "plan.pdf");
	assert_string_equal(jpath(a0, "data", NULL), "JVBERi0x");
	assert_int_equal(json_integer_value(json_object_get(a0, "size")), 6);
	/* over max_file_size: listed without its bytes */
	assert_true(json_is_null(json_object_get(a1, "data")));
	assert_int_equal(json_integer_value(json_object_get(a1, "size")), 2048);
	json_t *c = json_object_get(json_array_get(reqs, 3), "body");
	assert_string_equal(jpath(c, "type", NULL), "comment");
	assert_string_equal(jpath(c, "parent", NULL), "wh-1");
	json_decref(reqs);

	/* digests read back what was delivered */
	struct feed_entry *e;
	size_t n;
	char msg[256];
	assert_null(feed_webhook_ops.read_group);
	assert_int_equal(
	    outbox_read_group(x->st, &feed_webhook_ops, x->ctx, "G1", 0, &e, &n, msg, sizeof msg),
	    0);
	assert_int_equal(n, 2);
	assert_string_equal(e[0].remote_id, "wh-1");
	assert_string_equal(e[1].remote_id, "key-q");
	feed_entries_free(e, n);
}

static void test_open_refuses_short_secret(void **state)
{
	struct fx *x = *state;
	char err[256];
	void *ctx = NULL;
	assert_int_equal(file_write_atomic(x->secret, "short", 5, 0600), 0);
	assert_int_equal(feed_webhook_ops.open(&x->cfg, x->st, &ctx, err, sizeof err), -1);
	assert_non_null(strstr(err, "webhook secret"));
	assert_null(ctx);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_webhook_through_outbox, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_open_refuses_short_secret, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
