/* test_notice_queue.c — the claims of several senders on queued notices
 * (two instances: two connections, each with its own instance id): a
 * notice another live sender claimed is left to it; one whose claimer
 * stopped before recording the send (its deadline passed, or its process
 * on this host is gone) is claimed again and sent; one recorded 'sending'
 * by a sender that stopped is never sent again. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "state_file.h"

#include "mailfeed/claims.h"
#include "mailfeed/notice.h"
#include "mailfeed/smtp.h"
#include "mailfeed/util.h"

struct fixture {
	char path[128];
	struct store *a, *b;
	struct smtp_client *relay;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof *f);
	char err[256];
	/* nothing listens on port 9 of loopback: every send fails at once */
	struct mf_smtp smtp = {
	    .present = 1, .url = "smtp://127.0.0.1:9", .timeout = 5, .tls_verify = 1};
	state_file_new(f->path, sizeof f->path, "notice-queue");
	f->a = store_open(f->path, err, sizeof err);
	f->b = store_open(f->path, err, sizeof err);
	f->relay = smtp_new(&smtp, err, sizeof err);
	assert_non_null(f->a);
	assert_non_null(f->b);
	assert_non_null(f->relay);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	smtp_free(f->relay);
	store_close(f->a);
	store_close(f->b);
	state_file_remove(f->path);
	store_set_instance_id(NULL);
	free(f);
	return 0;
}

/* One queued notice, claimed as given (by NULL: not claimed), its claim
 * ending until_ms from the database's now. */
static void put_notice(struct store *st, const char *state, const char *by, long long until_ms)
{
	struct buf mail;
	char sql[512];
	buf_init(&mail);
	buf_puts(&mail, "Subject: x\r\n\r\ny\r\n");
	assert_int_equal(store_exec(st, "DELETE FROM notice_queue"), 0);
	assert_int_equal(notice_queue_add(st, "carol@example.org", "too-large", &mail, 1000), 0);
	buf_free(&mail);
	snprintf(sql, sizeof sql,
		 "UPDATE notice_queue SET state='%s', claimed_by=%s%s%s,"
		 " claim_until=%s + %lld",
		 state, by ? "'" : "", by ? by : "NULL", by ? "'" : "", CLAIMS_NOW_SQLITE,
		 until_ms);
	assert_int_equal(store_exec(st, sql), 0);
}

static const char *row(struct store *st)
{
	static char out[400];
	struct db_stmt *s = db_prepare(
	    store_db(st), "SELECT state, COALESCE(claimed_by, '-'), attempts FROM notice_queue");
	out[0] = 0;
	if (db_step(s) == DB_ROW)
		snprintf(out, sizeof out, "%s %s %lld", db_column_text(s, 0), db_column_text(s, 1),
			 (long long)db_column_int64(s, 2));
	db_finalize(s);
	return out;
}

static char *dead_local_claimer(void)
{
	char host[256] = "";
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(0);
	assert_int_equal(waitpid(pid, NULL, 0), pid);
	gethostname(host, sizeof host - 1);
	return xasprintf("%s:%ld", host, (long)pid);
}

static void test_claims(void **state)
{
	struct fixture *f = *state;
	char *dead = dead_local_claimer();
	store_set_instance_id("instance-b.example:1:b");

	/* not claimed: this sender claims it, the relay is down, it waits
	 * for its next attempt unclaimed */
	put_notice(f->a, "pending", NULL, 0);
	assert_int_equal(notice_deliver_due(f->b, f->relay, "feed@example.org", 2000), 1);
	assert_string_equal(row(f->a), "pending - 1");
	assert_int_equal(notice_deliver_due(f->b, f->relay, "feed@example.org", 2000), 0);

	/* claimed by a live sender of another host: left alone, and due for
	 * this one when that claim ends */
	put_notice(f->a, "pending", "instance-a.example:1:a", 600000);
	assert_int_equal(notice_deliver_due(f->b, f->relay, "feed@example.org", 2000), 0);
	assert_string_equal(row(f->a), "pending instance-a.example:1:a 0");
	assert_true(notice_next_due(f->b) > (long)time(NULL) + 590);

	/* its deadline passed: claimed again and tried */
	put_notice(f->a, "pending", "instance-a.example:1:a", -1000);
	assert_int_equal(notice_deliver_due(f->b, f->relay, "feed@example.org", 2000), 1);
	assert_string_equal(row(f->a), "pending - 1");

	/* the claimer was a process of this host that is gone: at once */
	put_notice(f->a, "pending", dead, 600000);
	assert_int_equal(notice_deliver_due(f->b, f->relay, "feed@example.org", 2000), 1);
	assert_string_equal(row(f->a), "pending - 1");

	/* recorded 'sending' by a sender that stopped: maybe delivered,
	 * never sent again */
	put_notice(f->a, "sending", dead, -1000);
	assert_int_equal(notice_deliver_due(f->b, f->relay, "feed@example.org", 2000), 0);
	assert_int_equal(strncmp(row(f->a), "sending ", 8), 0);
	free(dead);
}

/* When a claim may be taken from its claimer (claims.h). */
static void test_claimer_rules(void **state)
{
	char host[256] = "", *self, *init, *dead = dead_local_claimer();
	gethostname(host, sizeof host - 1);
	self = xasprintf("%s:%ld:x", host, (long)getpid());
	init = xasprintf("%s:1", host);
	assert_int_equal(claims_claimer_gone(dead), 1);
	assert_int_equal(claims_claimer_gone(self), 0); /* this process */
	assert_int_equal(claims_claimer_gone(init), 0); /* pid 1: not a claimer's */
	assert_int_equal(claims_claimer_gone("another-host.example:2"), 0);
	assert_int_equal(claims_claimer_gone(host), 0); /* no pid */
	assert_int_equal(claims_claimer_gone(NULL), 0);
	/* stale: nothing recorded, deadline passed, or its process is gone */
	assert_int_equal(claims_stale(NULL, 1, 2000, 1000), 1);
	assert_int_equal(claims_stale("another-host.example:2", 0, 0, 1000), 1);
	assert_int_equal(claims_stale("another-host.example:2", 1, 999, 1000), 1);
	assert_int_equal(claims_stale("another-host.example:2", 1, 2000, 1000), 0);
	assert_int_equal(claims_stale(dead, 1, 2000, 1000), 1);
	assert_int_equal(claims_stale(self, 1, 2000, 1000), 0);
	free(self);
	free(init);
	free(dead);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_claims, setup, teardown),
	    cmocka_unit_test(test_claimer_rules),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
