/* test_worker.c — the parse worker as the daemon sees it: messages come
 * back parsed; a message that crashes or hangs the parser is reported as
 * poison with a reason, and the next message is parsed by a fresh worker.
 *
 * The worker is spawned as /proc/self/exe, which here is this test binary:
 * main() below acts as the worker when called as "parse-worker" (running the
 * real cmd_parse_worker, or hanging when the test asks it to). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "mailfeed/cli.h"
#include "mailfeed/worker.h"

static const char good[] = "From: Ann <ann@example.org>\nSubject: hello\n"
			   "Content-Type: multipart/mixed; boundary=b\n\n--b\n"
			   "Content-Type: text/plain\n\nHi all\n--b\nContent-Type: "
			   "application/pdf; name=a.pdf\nContent-Transfer-Encoding: base64\n\n"
			   "aGVsbG8=\n--b--\n";
/* libetpan 1.9.4 overflows its heap on this boundary. */
static const char crash[] = "From: x@example.org\nSubject: boom\n"
			    "Content-Type: multipart/mixed; boundary=\"\\\"\"\n\nx\n";

static struct mf_gateway gateway(long timeout)
{
	struct mf_gateway gw;
	memset(&gw, 0, sizeof gw);
	gw.parse_timeout = timeout;
	gw.parse_memory = 512LL * 1024 * 1024;
	gw.max_message_size = 25LL * 1024 * 1024;
	return gw;
}

static void parse_good(struct parse_worker *w)
{
	struct mf_message *m = NULL;
	char reason[256] = "";
	assert_int_equal(worker_parse(w, good, strlen(good), &m, reason, sizeof reason), 0);
	assert_string_equal(m->subject, "hello");
	assert_string_equal(m->from_email, "ann@example.org");
	assert_string_equal(m->text, "Hi all");
	assert_int_equal(m->n_attachments, 1);
	/* attachment bytes cross the pipe intact */
	assert_int_equal(m->attachments[0].size, 5);
	assert_memory_equal(m->attachments[0].data, "hello", 5);
	message_free(m);
}

static void test_parse_many(void **state)
{
	(void)state;
	struct mf_gateway gw = gateway(20);
	struct parse_worker *w = worker_new(&gw);
	for (int i = 0; i < 5; i++)
		parse_good(w);
	worker_free(w);
}

static void test_crash_is_poison(void **state)
{
	(void)state;
	struct mf_gateway gw = gateway(20);
	struct parse_worker *w = worker_new(&gw);
	parse_good(w);
	struct mf_message *m = NULL;
	char reason[256] = "";
	assert_int_equal(worker_parse(w, crash, strlen(crash), &m, reason, sizeof reason), 1);
	assert_null(m);
	assert_non_null(strstr(reason, "parser crashed"));
	parse_good(w);
	worker_free(w);
}

static void test_hang_is_poison(void **state)
{
	(void)state;
	struct mf_gateway gw = gateway(1);
	struct parse_worker *w = worker_new(&gw);
	setenv("TEST_WORKER_HANG", "1", 1);
	struct mf_message *m = NULL;
	char reason[256] = "";
	double t0 = now_monotonic();
	assert_int_equal(worker_parse(w, good, strlen(good), &m, reason, sizeof reason), 1);
	assert_true(now_monotonic() - t0 < 5);
	assert_string_equal(reason, "parser timed out after 1 s");
	unsetenv("TEST_WORKER_HANG");
	parse_good(w);
	worker_free(w);
}

static void test_unparseable_is_poison(void **state)
{
	(void)state;
	struct mf_gateway gw = gateway(20);
	struct parse_worker *w = worker_new(&gw);
	struct buf b;
	buf_init(&b);
	buf_puts(&b, "From: a@example.org\nContent-Type: multipart/mixed; boundary=b0\n\n");
	for (int i = 1; i < 20000; i++)
		buf_printf(&b, "--b%d\nContent-Type: multipart/mixed; boundary=b%d\n\n", i - 1, i);
	struct mf_message *m = NULL;
	char reason[256] = "";
	assert_int_equal(worker_parse(w, b.data, b.len, &m, reason, sizeof reason), 1);
	assert_non_null(strstr(reason, "unparseable"));
	buf_free(&b);
	parse_good(w);
	worker_free(w);
}

int main(int argc, char **argv)
{
	if (argc > 1 && !strcmp(argv[1], "parse-worker")) {
		if (getenv("TEST_WORKER_HANG")) {
			sleep(30);
			return 0;
		}
		return cmd_parse_worker(argc - 1, argv + 1, "");
	}
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_parse_many),
	    cmocka_unit_test(test_crash_is_poison),
	    cmocka_unit_test(test_hang_is_poison),
	    cmocka_unit_test(test_unparseable_is_poison),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
