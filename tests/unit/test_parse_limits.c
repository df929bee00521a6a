/* test_parse_limits.c — the cost check the daemon makes before a message
 * reaches the parse worker: it reads Content-Type as the parser does, so
 * that white space, comments and folding around "multipart" do not hide
 * nesting (the crafted mails that held the parser for minutes); every
 * message of the test corpora passes; and what passes parses quickly. */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "mailfeed/cli.h"
#include "mailfeed/message.h"
#include "mailfeed/parse_limits.h"
#include "mailfeed/util.h"
#include "mailfeed/worker.h"

#define HEAD "From: m@example.org\r\nSubject: x\r\nMessage-ID: <n@example.org>\r\n"

/* tmpl with each '@' replaced by i. */
static void put_level(struct buf *b, const char *tmpl, int i)
{
	for (const char *p = tmpl; *p; p++)
		if (*p == '@')
			buf_printf(b, "%d", i);
		else
			buf_putc(b, *p);
}

/* levels nested multiparts, each level's Content-Type written with tmpl
 * ('@' for its number, which makes its boundary b@), then filler bytes of
 * text. */
static char *nested(int levels, const char *tmpl, size_t filler, size_t *len)
{
	struct buf b;
	buf_init(&b);
	buf_puts(&b, HEAD);
	put_level(&b, tmpl, 0);
	buf_puts(&b, "\r\n\r\n");
	for (int i = 1; i < levels; i++) {
		buf_printf(&b, "--b%d\r\n", i - 1);
		put_level(&b, tmpl, i);
		buf_puts(&b, "\r\n\r\n");
	}
	buf_puts(&b, "--b0\r\nContent-Type: text/plain\r\n\r\n");
	for (size_t n = 0; n < filler; n += 78)
		buf_puts(&b, "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
			     "xxxxxxx\r\n");
	*len = b.len;
	return buf_steal(&b);
}

static void refused(const char *fmt, const char *why)
{
	size_t len;
	char *raw = nested(PARSE_MAX_DEPTH + 50, fmt, 0, &len);
	char reason[256] = "";
	struct parse_cost c;
	assert_int_equal(parse_limits_check(raw, len, 0, &c, reason, sizeof reason), -1);
	assert_non_null(strstr(reason, why));
	assert_int_equal(c.depth, PARSE_MAX_DEPTH);
	free(raw);
}

static void test_nesting_seen_through_disguises(void **state)
{
	const char *why = "nesting deeper than";
	refused("Content-Type: multipart/mixed; boundary=b@", why);
	refused("Content-Type: multipart /mixed; boundary=b@", why);
	refused("Content-Type:multipart (a comment) / mixed ;boundary=\"b@\"", why);
	refused("Content-Type: (x (nested) y) MULTIPART/mixed; boundary=b@", why);
	refused("content-type :\r\n\tmultipart\r\n /mixed;\r\n boundary=b@", why);
	refused("Content-Type: multipart/mixed; charset=x; boundary=\"b@\"", why);
	refused("Content-Type: message/rfc822 ; x=\"b@\"", why);
}

static void test_siblings_are_not_nesting(void **state)
{
	/* 300 multipart/alternative parts side by side, each closed */
	struct buf b;
	buf_init(&b);
	buf_puts(&b, HEAD "Content-Type: multipart/mixed; boundary=top\r\n\r\n");
	for (int i = 0; i < 300; i++)
		buf_printf(&b,
			   "--top\r\nContent-Type: multipart/alternative; boundary=\"a%d\"\r\n\r\n"
			   "--a%d\r\nContent-Type: text/plain\r\n\r\nhi\r\n--a%d--\r\n",
			   i, i, i);
	buf_puts(&b, "--top--\r\n");
	struct parse_cost c;
	char reason[256] = "";
	assert_int_equal(parse_limits_check(b.data, b.len, 0, &c, reason, sizeof reason), 0);
	assert_int_equal(c.depth, 2);
	assert_int_equal(c.containers, 301);
	assert_int_equal(c.parts, 600);
	buf_free(&b);
}

static void test_too_many_containers(void **state)
{
	struct buf b;
	buf_init(&b);
	buf_puts(&b, HEAD "Content-Type: multipart/mixed; boundary=top\r\n\r\n");
	for (int i = 0; i < PARSE_MAX_CONTAINERS + 5; i++)
		buf_puts(&b,
			 "--top\r\nContent-Type: message/rfc822\r\n\r\nSubject: y\r\n\r\nz\r\n");
	char reason[256] = "";
	assert_int_equal(parse_limits_check(b.data, b.len, 0, NULL, reason, sizeof reason), -1);
	assert_non_null(strstr(reason, "more than 1000 multipart or message parts"));
	buf_free(&b);
}

static void test_too_many_parts(void **state)
{
	struct buf b;
	buf_init(&b);
	buf_puts(&b, HEAD "Content-Type: multipart/mixed; boundary=\"=_p\"\r\n\r\n");
	for (int i = 0; i < PARSE_MAX_PARTS + 1; i++)
		buf_puts(&b, "--=_p  \r\n\r\nx\r\n");
	char reason[256] = "";
	assert_int_equal(parse_limits_check(b.data, b.len, 0, NULL, reason, sizeof reason), -1);
	assert_non_null(strstr(reason, "more than 10000 parts"));
	buf_free(&b);
}

static void test_too_many_bytes(void **state)
{
	char reason[256] = "";
	assert_int_equal(
	    parse_limits_check(HEAD "\r\nhi\r\n", sizeof HEAD + 5, 10, NULL, reason, sizeof reason),
	    -1);
	assert_non_null(strstr(reason, "too large"));
}

/* ---- nothing real is refused ------------------------------------------- */

static char *slurp(const char *path, size_t *len)
{
	struct buf b;
	buf_init(&b);
	FILE *f = fopen(path, "rb");
	assert_non_null(f);
	char chunk[8192];
	size_t n;
	while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
		buf_append(&b, chunk, n);
	fclose(f);
	*len = b.len;
	buf_putc(&b, 0);
	return buf_steal(&b);
}

static void check_dir(const char *dir, size_t *n)
{
	DIR *d = opendir(dir);
	if (!d)
		return;
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.')
			continue;
		char *path = xasprintf("%s/%s", dir, e->d_name);
		struct stat st;
		size_t len = strlen(e->d_name);
		if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
			check_dir(path, n);
		} else if (len > 4 && !strcmp(e->d_name + len - 4, ".eml")) {
			size_t size;
			char *raw = slurp(path, &size);
			char reason[256] = "";
			if (parse_limits_check(raw, size, 25 << 20, NULL, reason, sizeof reason) <
			    0)
				fail_msg("%s refused: %s", path, reason);
			free(raw);
			(*n)++;
		}
		free(path);
	}
	closedir(d);
}

static void test_corpus_passes(void **state)
{
	size_t n = 0;
	check_dir("tests/corpus", &n);
	check_dir("tests/fixtures", &n);
	assert_true(n >= 100);
}

/* ---- the daemon's side ------------------------------------------------- */

static struct parse_worker *worker(void)
{
	struct mf_gateway gw;
	memset(&gw, 0, sizeof gw);
	gw.parse_timeout = 20;
	gw.max_message_size = 25LL * 1024 * 1024;
	return worker_new(&gw);
}

/* The crafted mail of the report: a few MB of nesting disguised with a
 * comment.  It never reaches the worker: refused at once. */
static void test_worker_refuses_before_parsing(void **state)
{
	size_t len;
	char *raw = nested(40000, "Content-Type:multipart (c)/mixed;boundary=b@", 0, &len);
	assert_true(len > 2 * 1000 * 1000);
	struct parse_worker *w = worker();
	struct mf_message *m = NULL;
	char reason[256];
	double t = now_monotonic();
	assert_int_equal(worker_parse(w, raw, len, &m, reason, sizeof reason), 1);
	assert_true(now_monotonic() - t < 2);
	assert_null(m);
	assert_non_null(strstr(reason, "nesting deeper than"));
	worker_free(w);
	free(raw);
}

/* The costliest shape that passes: the deepest nesting allowed over 2 MB
 * of text parses in well under the default 20 s timeout. */
static void test_worst_allowed_is_quick(void **state)
{
	size_t len;
	char *raw = nested(PARSE_MAX_DEPTH - 1, "Content-Type: multipart/mixed; boundary=b@",
			   2 << 20, &len);
	struct parse_worker *w = worker();
	struct mf_message *m = NULL;
	char reason[256];
	double t = now_monotonic();
	assert_int_equal(worker_parse(w, raw, len, &m, reason, sizeof reason), 0);
	double took = now_monotonic() - t;
	print_message("depth %d, %zu bytes: parsed in %.2f s\n", PARSE_MAX_DEPTH - 1, len, took);
	assert_true(took < 10);
	message_free(m);
	worker_free(w);
	free(raw);
}

int main(int argc, char **argv)
{
	if (argc > 1 && !strcmp(argv[1], "parse-worker"))
		return cmd_parse_worker(argc - 1, argv + 1, "");
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_nesting_seen_through_disguises),
	    cmocka_unit_test(test_siblings_are_not_nesting),
	    cmocka_unit_test(test_too_many_containers),
	    cmocka_unit_test(test_too_many_parts),
	    cmocka_unit_test(test_too_many_bytes),
	    cmocka_unit_test(test_corpus_passes),
	    cmocka_unit_test(test_worker_refuses_before_parsing),
	    cmocka_unit_test(test_worst_allowed_is_quick),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
