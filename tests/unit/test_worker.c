/* test_worker.c — the parse worker as the daemon sees it: messages come
 * back parsed; a message that crashes or hangs the parser is reported as
 * poison with a reason, and the next message is parsed by a fresh worker.
 *
 * The worker is spawned as /proc/self/exe, which here is this test binary:
 * main() below acts as the worker when called as "parse-worker" (running the
 * real cmd_parse_worker, or hanging or answering garbage when the test asks
 * it to). */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "mailfeed/cli.h"
#include "mailfeed/convert.h"
#include "mailfeed/mime.h"
#include "mailfeed/worker.h"

static const char good[] = "From: Ann <ann@example.org>\nSubject: hello\n"
			   "Content-Type: multipart/mixed; boundary=b\n\n--b\n"
			   "Content-Type: text/plain\n\nHi all\n--b\nContent-Type: "
			   "application/pdf; name=a.pdf\nContent-Transfer-Encoding: base64\n\n"
			   "aGVsbG8=\n--b--\n";
/* No message is known to crash the parser any more: the test's worker
 * dies on this one as a crashing parser would (crashing_worker). */
static const char crash[] = "From: x@example.org\nSubject: boom\n\nCRASH-THE-PARSER\n";

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

/* A richer message: what the daemon gets from the worker is what parsing
 * in-process gives, field for field. */
static void test_same_as_in_process(void **state)
{
	(void)state;
	static const char rich[] =
	    "From: =?utf-8?q?Ren=C3=A9?= <rene@example.org>\nTo: a@example.org, b@example.org\n"
	    "Subject: Re: [Budget] caf\xe9\nMessage-ID: <m2@example.org>\n"
	    "In-Reply-To: <m1@example.org>\nReferences: <m0@example.org> <m1@example.org>\n"
	    "Date: Mon, 2 Nov 2026 10:00:00 +0100\nList-Id: Team <team.example.org>\n"
	    "Content-Type: multipart/mixed; boundary=b\n\n--b\n"
	    "Content-Type: text/plain; charset=utf-8\n\nThanks! #campaign\n\n"
	    "On Mon, 2 Nov 2026, Ann wrote:\n> old text\n--b\n"
	    "Content-Type: image/png; name=logo.png\nContent-ID: <c1>\n"
	    "Content-Transfer-Encoding: base64\n\niVBORw0KGgo=\n--b\n"
	    "Content-Type: application/octet-stream; name=\"x.bin\"\n"
	    "Content-Transfer-Encoding: base64\n\nAAECAwQ=\n--b--\n";
	struct mf_gateway gw = gateway(20);
	struct parse_worker *w = worker_new(&gw);
	struct mf_message *m = NULL;
	char reason[256] = "";
	assert_int_equal(worker_parse(w, rich, strlen(rich), &m, reason, sizeof reason), 0);
	struct mf_message *local = mime_parse(rich, strlen(rich), reason, sizeof reason);
	if (local)
		convert_message(local);
	assert_non_null(local);
	json_t *a = message_to_json(m, 1), *b = message_to_json(local, 1);
	char *ja = json_dumps(a, JSON_SORT_KEYS), *jb = json_dumps(b, JSON_SORT_KEYS);
	assert_string_equal(ja, jb);
	assert_non_null(strstr(ja, "\"data\": \"AAECAwQ=\""));
	free(ja);
	free(jb);
	json_decref(a);
	json_decref(b);
	message_free(m);
	message_free(local);
	worker_free(w);
}

/* A stream: jobs are taken a few at a time, handed back in order and not
 * touched after (each is freed in done, so a later use would be caught). */
struct feed_state {
	int taken, done, most_ahead;
};

static struct worker_job *feed_next(void *ctx)
{
	struct feed_state *f = ctx;
	if (f->taken == 20)
		return NULL;
	struct worker_job *j = calloc(1, sizeof *j);
	const char *raw = f->taken == 7 ? crash : good;
	j->raw = strdup(raw);
	j->len = strlen(raw);
	f->taken++;
	if (f->taken - f->done > f->most_ahead)
		f->most_ahead = f->taken - f->done;
	return j;
}

static void feed_done(void *ctx, struct worker_job *j)
{
	struct feed_state *f = ctx;
	if (f->done == 7) {
		assert_int_equal(j->rc, 1);
		assert_string_equal(j->raw, crash);
	} else {
		assert_int_equal(j->rc, 0);
		assert_string_equal(j->msg->text, "Hi all");
	}
	f->done++;
	message_free(j->msg);
	free((char *)j->raw);
	free(j);
}

static void test_stream(void **state)
{
	(void)state;
	struct mf_gateway gw = gateway(20);
	struct parse_worker *w = worker_new(&gw);
	struct feed_state f = {0};
	struct worker_feed feed = {feed_next, feed_done, &f};
	worker_parse_stream(w, &feed);
	assert_int_equal(f.taken, 20);
	assert_int_equal(f.done, 20);
	/* ahead of the worker, but not the whole stream at once */
	assert_true(f.most_ahead > 1 && f.most_ahead < 20);
	worker_free(w);
}

/* Messages and answers larger than any buffer on the way come through
 * whole, in a batch with small ones. */
static void test_large_messages(void **state)
{
	(void)state;
	struct buf big;
	buf_init(&big);
	buf_puts(&big, "From: a@example.org\nSubject: big\nContent-Type: multipart/mixed; "
		       "boundary=b\n\n--b\nContent-Type: text/plain\n\nsee attached\n--b\n"
		       "Content-Type: application/octet-stream; name=big.bin\n"
		       "Content-Transfer-Encoding: base64\n\n");
	/* 3 MB of bytes 0..255 over and over */
	for (int line = 0; line < 3 * 1024 * 1024 / 57; line++) {
		unsigned char raw[57];
		char enc[80];
		for (int i = 0; i < 57; i++)
			raw[i] = (unsigned char)(line * 57 + i);
		EVP_EncodeBlock((unsigned char *)enc, raw, 57);
		buf_puts(&big, enc);
		buf_putc(&big, '\n');
	}
	buf_puts(&big, "--b--\n");
	struct mf_gateway gw = gateway(20);
	struct parse_worker *w = worker_new(&gw);
	struct worker_job jobs[3] = {{.raw = good, .len = strlen(good)},
				     {.raw = big.data, .len = big.len},
				     {.raw = good, .len = strlen(good)}};
	worker_parse_batch(w, jobs, 3);
	for (int i = 0; i < 3; i++)
		assert_int_equal(jobs[i].rc, 0);
	const struct mf_attachment *a = &jobs[1].msg->attachments[0];
	assert_int_equal(a->size, 3 * 1024 * 1024 / 57 * 57);
	for (size_t i = 0; i < a->size; i++)
		if (a->data[i] != (unsigned char)i)
			fail_msg("byte %zu differs", i);
	assert_string_equal(jobs[2].msg->text, "Hi all");
	for (int i = 0; i < 3; i++)
		message_free(jobs[i].msg);
	worker_free(w);
	buf_free(&big);
}

/* A subverted worker may send anything; the daemon refuses it, blames
 * itself rather than the message, and starts a fresh worker. */
static void test_garbage_answer_refused(void **state)
{
	(void)state;
	struct mf_gateway gw = gateway(20);
	struct parse_worker *w = worker_new(&gw);
	setenv("TEST_WORKER_GARBAGE", "1", 1);
	struct mf_message *m = NULL;
	char reason[256] = "";
	assert_int_equal(worker_parse(w, good, strlen(good), &m, reason, sizeof reason), -1);
	assert_null(m);
	assert_string_equal(reason, "parse worker answered an unusable message; restarted");
	unsetenv("TEST_WORKER_GARBAGE");
	parse_good(w);
	worker_free(w);
}

/* In a batch, the message that kills the worker is poison; the ones after
 * it, already written to the dead worker, are parsed by a fresh one. */
static void test_batch_survives_crash(void **state)
{
	(void)state;
	struct mf_gateway gw = gateway(20);
	struct parse_worker *w = worker_new(&gw);
	const char *raws[] = {good, crash, good, "no headers, no body", good};
	struct worker_job jobs[5];
	memset(jobs, 0, sizeof jobs);
	for (int i = 0; i < 5; i++) {
		jobs[i].raw = raws[i];
		jobs[i].len = strlen(raws[i]);
	}
	worker_parse_batch(w, jobs, 5);
	int want[] = {0, 1, 0, 0, 0};
	for (int i = 0; i < 5; i++)
		assert_int_equal(jobs[i].rc, want[i]);
	assert_non_null(strstr(jobs[1].reason, "parser crashed"));
	assert_null(jobs[1].msg);
	for (int i = 0; i < 5; i += 2) {
		assert_string_equal(jobs[i].msg->text, "Hi all");
		assert_memory_equal(jobs[i].msg->attachments[0].data, "hello", 5);
	}
	for (int i = 0; i < 5; i++)
		message_free(jobs[i].msg);
	worker_free(w);
}

/* A message that hangs the worker times out on its own; the others of the
 * batch are answered. */
static void test_batch_survives_hang(void **state)
{
	(void)state;
	struct mf_gateway gw = gateway(1);
	struct parse_worker *w = worker_new(&gw);
	setenv("TEST_WORKER_FAKE", "1", 1);
	const char *raws[] = {"one", "HANG", "three", "four"};
	struct worker_job jobs[4];
	memset(jobs, 0, sizeof jobs);
	for (int i = 0; i < 4; i++) {
		jobs[i].raw = raws[i];
		jobs[i].len = strlen(raws[i]);
	}
	double t0 = now_monotonic();
	worker_parse_batch(w, jobs, 4);
	assert_true(now_monotonic() - t0 < 5);
	unsetenv("TEST_WORKER_FAKE");
	assert_int_equal(jobs[1].rc, 1);
	assert_string_equal(jobs[1].reason, "parser timed out after 1 s");
	const int others[] = {0, 2, 3};
	for (int k = 0; k < 3; k++) {
		int i = others[k];
		assert_int_equal(jobs[i].rc, 1);
		char want[64];
		snprintf(want, sizeof want, "unparseable: %s", raws[i]);
		assert_string_equal(jobs[i].reason, want);
	}
	worker_free(w);
}

/* Reads one message (0 at EOF, -1 on error). */
static int fake_read(char *raw, size_t cap, size_t *len)
{
	uint64_t n;
	ssize_t k = read(0, &n, sizeof n);
	if (k == 0)
		return 0;
	if (k != sizeof n || n >= cap)
		return -1;
	for (size_t got = 0; got < n; got += (size_t)k)
		if ((k = read(0, raw + got, n - got)) <= 0)
			return -1;
	raw[n] = 0;
	*len = n;
	return 1;
}

/* Answers every message with 'E' and its text, but hangs on "HANG". */
static int fake_worker(void)
{
	static char raw[65536];
	size_t len;
	int r;
	while ((r = fake_read(raw, sizeof raw, &len)) > 0) {
		if (!strcmp(raw, "HANG"))
			sleep(30);
		char frame[128];
		int n = snprintf(frame + 8, sizeof frame - 8, "Eunparseable: %s", raw);
		uint64_t flen = (uint64_t)n;
		memcpy(frame, &flen, sizeof flen);
		if (write(1, frame, 8 + (size_t)n) != 8 + n)
			return 1;
	}
	return r < 0;
}

/* Reads one message and answers a frame whose only string is not UTF-8. */
static int garbage_worker(void)
{
	static char raw[65536];
	size_t len;
	if (fake_read(raw, sizeof raw, &len) <= 0)
		return 1;
	const char frame[] = {9, 0, 0, 0, 0, 0, 0, 0, 'M', 4, 0, 0, 0, '\xff', 'a', 'b', 'c'};
	if (write(1, frame, sizeof frame) != (ssize_t)sizeof frame)
		return 1;
	sleep(30);
	return 0;
}

/* The real worker behind a filter that, on a message holding
 * "CRASH-THE-PARSER", lets the worker answer what came before and then
 * dies by a signal, as a parser crash does. */
static int crashing_worker(int argc, char **argv)
{
	int p[2]; /* the worker reads a socket */
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, p) < 0)
		return 1;
	pid_t pid = fork();
	if (pid == 0) {
		close(p[1]);
		dup2(p[0], 0);
		close(p[0]);
		_exit(cmd_parse_worker(argc - 1, argv + 1, ""));
	}
	close(p[0]);
	uint64_t n;
	while (read(0, &n, sizeof n) == (ssize_t)sizeof n && n < (1u << 30)) {
		char *raw = malloc(n + 1);
		size_t got = 0;
		for (ssize_t k; raw && got < n && (k = read(0, raw + got, n - got)) > 0;)
			got += (size_t)k;
		if (!raw || got < n)
			break;
		raw[n] = 0;
		if (strstr(raw, "CRASH-THE-PARSER")) {
			close(p[1]);
			waitpid(pid, NULL, 0);
			signal(SIGSEGV, SIG_DFL);
			raise(SIGSEGV);
		}
		int ok = write(p[1], &n, sizeof n) == (ssize_t)sizeof n &&
			 write(p[1], raw, n) == (ssize_t)n;
		free(raw);
		if (!ok)
			break;
	}
	close(p[1]);
	int st = 0;
	waitpid(pid, &st, 0);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 1;
}

int main(int argc, char **argv)
{
	if (argc > 1 && !strcmp(argv[1], "parse-worker")) {
		if (getenv("TEST_WORKER_HANG")) {
			sleep(30);
			return 0;
		}
		if (getenv("TEST_WORKER_GARBAGE"))
			return garbage_worker();
		if (getenv("TEST_WORKER_FAKE"))
			return fake_worker();
		return crashing_worker(argc, argv);
	}
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_parse_many),
	    cmocka_unit_test(test_crash_is_poison),
	    cmocka_unit_test(test_hang_is_poison),
	    cmocka_unit_test(test_unparseable_is_poison),
	    cmocka_unit_test(test_same_as_in_process),
	    cmocka_unit_test(test_garbage_answer_refused),
	    cmocka_unit_test(test_batch_survives_crash),
	    cmocka_unit_test(test_batch_survives_hang),
	    cmocka_unit_test(test_large_messages),
	    cmocka_unit_test(test_stream),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
