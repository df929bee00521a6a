/* test_feed_users.c — the backends' memory of users looked up by email:
 * how long a user, a non-user and a restricted user are believed, and that
 * a full cache forgets the stale answers first, then the oldest. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "mailfeed/feed.h"

#define T0 1790000000

static int get(struct feed_user_cache *c, const char *email, time_t now, char **id, char **name,
	       int *restricted)
{
	*id = *name = NULL;
	*restricted = -1;
	return feed_user_cache_get(c, email, now, id, name, restricted);
}

static void test_answers_and_their_lifetimes(void **state)
{
	(void)state;
	struct feed_user_cache *c = feed_user_cache_new(86400, 3600);
	char *id, *name;
	int restricted;
	assert_int_equal(get(c, "alice@example.org", T0, &id, &name, &restricted), -1);
	feed_user_cache_put(c, "alice@example.org", T0, "005A", "alice@acme.example");
	feed_user_cache_put(c, "nobody@example.org", T0, NULL, "ignored");

	/* case does not matter; a user is believed for a day */
	assert_int_equal(get(c, "ALICE@Example.org", T0 + 86399, &id, &name, &restricted), 1);
	assert_string_equal(id, "005A");
	assert_string_equal(name, "alice@acme.example");
	assert_int_equal(restricted, 0);
	free(id);
	free(name);
	assert_int_equal(get(c, "alice@example.org", T0 + 86400, &id, &name, &restricted), -1);
	assert_null(id);

	/* no user: an hour */
	assert_int_equal(get(c, "nobody@example.org", T0 + 3599, &id, &name, &restricted), 0);
	assert_null(id);
	assert_null(name);
	assert_int_equal(get(c, "nobody@example.org", T0 + 3600, &id, &name, &restricted), -1);

	/* restricted: still the user, believed for an hour from then; a new
	 * answer lifts it */
	feed_user_cache_restrict(c, "alice@example.org", T0 + 100);
	feed_user_cache_restrict(c, "unknown@example.org", T0 + 100); /* nothing to mark */
	assert_int_equal(get(c, "alice@example.org", T0 + 3699, &id, &name, &restricted), 1);
	assert_int_equal(restricted, 1);
	free(id);
	free(name);
	assert_int_equal(get(c, "alice@example.org", T0 + 3700, &id, &name, &restricted), -1);
	assert_int_equal(get(c, "unknown@example.org", T0 + 100, &id, &name, &restricted), -1);
	feed_user_cache_put(c, "alice@example.org", T0 + 3700, "005A", NULL);
	assert_int_equal(get(c, "alice@example.org", T0 + 3700, &id, &name, &restricted), 1);
	assert_int_equal(restricted, 0);
	assert_null(name);
	free(id);
	feed_user_cache_free(c);
}

static void test_full_cache_forgets_stale_then_oldest(void **state)
{
	(void)state;
	struct feed_user_cache *c = feed_user_cache_new(86400, 3600);
	char email[64], *id, *name;
	int restricted;
	/* the first half are non-users answered long ago: stale by T0 */
	for (int i = 0; i < FEED_USER_CACHE_MAX; i++) {
		snprintf(email, sizeof email, "u%d@example.org", i);
		if (i < FEED_USER_CACHE_MAX / 2)
			feed_user_cache_put(c, email, T0 - 7200, NULL, NULL);
		else
			feed_user_cache_put(c, email, T0 + i, "005X", "x");
	}
	feed_user_cache_put(c, "new@example.org", T0 + FEED_USER_CACHE_MAX, "005N", "n");
	assert_int_equal(
	    get(c, "new@example.org", T0 + FEED_USER_CACHE_MAX, &id, &name, &restricted), 1);
	free(id);
	free(name);
	snprintf(email, sizeof email, "u%d@example.org", FEED_USER_CACHE_MAX / 2);
	assert_int_equal(get(c, email, T0 + FEED_USER_CACHE_MAX, &id, &name, &restricted), 1);
	free(id);
	free(name);

	/* refill with fresh answers only: the oldest one goes */
	for (int i = 0; i < FEED_USER_CACHE_MAX; i++) {
		snprintf(email, sizeof email, "v%d@example.org", i);
		feed_user_cache_put(c, email, T0 + FEED_USER_CACHE_MAX + 1, NULL, NULL);
	}
	snprintf(email, sizeof email, "u%d@example.org", FEED_USER_CACHE_MAX / 2);
	assert_int_equal(get(c, email, T0 + FEED_USER_CACHE_MAX + 1, &id, &name, &restricted), -1);
	assert_int_equal(
	    get(c, "v0@example.org", T0 + FEED_USER_CACHE_MAX + 1, &id, &name, &restricted), 0);
	feed_user_cache_free(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_answers_and_their_lifetimes),
	    cmocka_unit_test(test_full_cache_forgets_stale_then_oldest),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
