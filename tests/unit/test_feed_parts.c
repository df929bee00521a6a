/* test_feed_parts.c — the "deliver in parts" loop the HTTP backends share,
 * driven through scripted hooks: what a reader of the feed ends up seeing
 * (each part once, in order, in the right thread) whatever failed on the
 * way. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "mailfeed/feed_http.h"

/* A scripted service: parts already there, answers to give, what was
 * posted. */
struct svc {
	int there[8];	   /* part i already at the service */
	int first_fails;   /* the first post is refused (PERMANENT) this often */
	int fallback_ok;   /* fallback offers a second try */
	int next_fails_at; /* continuation i is refused for good (0: none) */
	int begin_fails;
	char posted[16][64]; /* "first:TEXT" / "next:I:THREAD" */
	size_t n_posted;
	int fallbacks;
};

static int h_begin(void *hook, size_t n, struct feed_result *res)
{
	struct svc *s = hook;
	if (s->begin_fails)
		feed_http_set_error(res, FEED_RETRY, "log-in failed\r\nfor now");
	return s->begin_fails ? -1 : 0;
}

static int h_find(void *hook, size_t i, size_t n, const char *text, const char *thread, char **id,
		  struct feed_result *res)
{
	struct svc *s = hook;
	*id = s->there[i] ? strdup(i ? "old-part" : "old-post") : NULL;
	return s->there[i] ? 1 : 0;
}

static int h_first(void *hook, const char *text, int retry, char **id, struct feed_result *res)
{
	struct svc *s = hook;
	if (s->first_fails > 0) {
		s->first_fails--;
		feed_http_set_error(res, FEED_PERMANENT, "refused");
		return -1;
	}
	snprintf(s->posted[s->n_posted++], 64, "first%s:%.10s", retry ? "(again)" : "", text);
	*id = strdup("new-post");
	return 0;
}

static int h_fallback(void *hook, const struct feed_result *res)
{
	struct svc *s = hook;
	s->fallbacks++;
	return s->fallback_ok;
}

static int h_next(void *hook, size_t i, size_t n, const char *text, const char *thread,
		  struct feed_result *res)
{
	struct svc *s = hook;
	if (s->next_fails_at == (int)i) {
		feed_http_set_error(res, FEED_PERMANENT, "part refused");
		return -1;
	}
	snprintf(s->posted[s->n_posted++], 64, "next:%zu/%zu:%s", i + 1, n, thread);
	return 0;
}

/* A text of 3 parts of 100 characters at most. */
static const char *three = "aaaaaaaaaa aaaaaaaaaa aaaaaaaaaa aaaaaaaaaa aaaaaaaaaa aaaaaaaaaa\n\n"
			   "bbbbbbbbbb bbbbbbbbbb bbbbbbbbbb bbbbbbbbbb bbbbbbbbbb bbbbbbbbbb\n\n"
			   "cccccccccc cccccccccc cccccccccc";

static int run(struct svc *s, const char *text, enum feed_kind kind, struct feed_result *res,
	       size_t *n)
{
	struct feed_parts p = {.service = "Test",
			       .unit = "characters",
			       .text = text,
			       .budget = 180,
			       .fixed = 120,
			       .min_first = 80,
			       .max_parts = 4,
			       .hook = s,
			       .begin = h_begin,
			       .find_part = h_find,
			       .first = h_first,
			       .fallback = h_fallback,
			       .next = h_next};
	struct feed_item it = {.kind = kind,
			       .parent_remote_id = kind == FEED_COMMENT ? "p1" : NULL};
	memset(res, 0, sizeof(*res));
	return feed_http_deliver_parts(&p, &it, res, n);
}

static void test_parts_posted_in_order_in_the_thread(void **state)
{
	(void)state;
	struct svc s = {0};
	struct feed_result res;
	size_t n;
	assert_int_equal(run(&s, three, FEED_POST, &res, &n), 0);
	assert_int_equal(n, 3);
	assert_int_equal(res.status, FEED_OK);
	assert_string_equal(res.remote_id, "new-post");
	assert_int_equal(s.n_posted, 3);
	assert_string_equal(s.posted[0], "first:aaaaaaaaaa");
	assert_string_equal(s.posted[1], "next:2/3:new-post");
	assert_string_equal(s.posted[2], "next:3/3:new-post");
	feed_result_clear(&res);

	/* a comment's continuations go under its post */
	memset(&s, 0, sizeof s);
	assert_int_equal(run(&s, three, FEED_COMMENT, &res, &n), 0);
	assert_string_equal(s.posted[1], "next:2/3:p1");
	feed_result_clear(&res);

	/* one short part: nothing is looked up, nothing continued */
	memset(&s, 0, sizeof s);
	s.there[0] = 1; /* would be found, but a single part is never looked for */
	assert_int_equal(run(&s, "short", FEED_POST, &res, &n), 0);
	assert_int_equal(n, 1);
	assert_string_equal(s.posted[0], "first:short");
	feed_result_clear(&res);
}

static void test_half_delivered_item_is_completed(void **state)
{
	(void)state;
	struct svc s = {.there = {1, 1, 0}};
	struct feed_result res;
	size_t n;
	assert_int_equal(run(&s, three, FEED_POST, &res, &n), 0);
	assert_string_equal(res.remote_id, "old-post");
	assert_int_equal(s.n_posted, 1);
	assert_string_equal(s.posted[0], "next:3/3:old-post");
	feed_result_clear(&res);
}

static void test_refused_continuation_is_retried_not_dead(void **state)
{
	(void)state;
	struct svc s = {.next_fails_at = 2};
	struct feed_result res;
	size_t n;
	assert_int_equal(run(&s, three, FEED_POST, &res, &n), -1);
	/* the first part exists: the retry finds it instead of posting again */
	assert_int_equal(res.status, FEED_RETRY);
	assert_null(res.remote_id);
	assert_string_equal(res.error, "part refused");
}

static void test_first_part_has_one_fallback(void **state)
{
	(void)state;
	struct svc s = {.first_fails = 1, .fallback_ok = 1};
	struct feed_result res;
	size_t n;
	assert_int_equal(run(&s, "short", FEED_POST, &res, &n), 0);
	assert_int_equal(s.fallbacks, 1);
	assert_string_equal(s.posted[0], "first(again):short");
	feed_result_clear(&res);

	/* refused twice: the second refusal stands, no third try */
	memset(&s, 0, sizeof s);
	s.first_fails = 2;
	s.fallback_ok = 1;
	assert_int_equal(run(&s, "short", FEED_POST, &res, &n), -1);
	assert_int_equal(s.fallbacks, 1);
	assert_int_equal(res.status, FEED_PERMANENT);

	/* no fallback offered: refused for good at once */
	memset(&s, 0, sizeof s);
	s.first_fails = 1;
	assert_int_equal(run(&s, "short", FEED_POST, &res, &n), -1);
	assert_int_equal(res.status, FEED_PERMANENT);
	assert_int_equal(s.n_posted, 0);
}

static void test_too_long_and_failed_begin(void **state)
{
	(void)state;
	char text[2000];
	memset(text, 'x', sizeof text - 1);
	text[sizeof text - 1] = '\0';
	struct svc s = {0};
	struct feed_result res;
	size_t n;
	assert_int_equal(run(&s, text, FEED_POST, &res, &n), -1);
	assert_int_equal(res.status, FEED_PERMANENT);
	assert_true(n > 4);
	assert_non_null(strstr(res.error, "text too long for Test:"));
	assert_non_null(strstr(res.error, "parts of 180 characters (limit 4)"));
	assert_int_equal(s.n_posted, 0);

	/* an error keeps to one line */
	s.begin_fails = 1;
	assert_int_equal(run(&s, three, FEED_POST, &res, &n), -1);
	assert_int_equal(res.status, FEED_RETRY);
	assert_string_equal(res.error, "log-in failed  for now");
	assert_int_equal(s.n_posted, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_parts_posted_in_order_in_the_thread),
	    cmocka_unit_test(test_half_delivered_item_is_completed),
	    cmocka_unit_test(test_refused_continuation_is_retried_not_dead),
	    cmocka_unit_test(test_first_part_has_one_fallback),
	    cmocka_unit_test(test_too_long_and_failed_begin),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
