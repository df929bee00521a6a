/* test_health.c — what GET /healthz says: a part in a known wait is
 * healthy and says why (standing by while another instance does its work),
 * an unreachable state database makes the daemon unhealthy with its reason
 * and how long it has waited, and healthy again once it answers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "mailfeed/health.h"

static int reset(void **state)
{
	(void)state;
	health_reset();
	return 0;
}

static void test_standby_is_a_known_wait(void **state)
{
	int slot = health_register("mailbox team");
	assert_true(slot >= 0);
	health_wait(slot, HEALTH_STANDBY, 15, "another instance watches these folders");
	struct buf b;
	buf_init(&b);
	assert_int_equal(health_report(&b), 1);
	assert_non_null(strstr(b.data, "mailbox team: standing by for"));
	assert_non_null(strstr(b.data, "another instance watches these folders"));
	buf_free(&b);
}

static void test_unreachable_state_database(void **state)
{
	int slot = health_register("processor");
	health_beat(slot, 60);
	assert_int_equal(health_report(NULL), 1);
	assert_false(health_unavailable());
	health_set_unavailable("connection refused");
	health_set_unavailable("connection refused again"); /* the reason follows */
	assert_true(health_unavailable());
	struct buf b;
	buf_init(&b);
	assert_int_equal(health_report(&b), 0);
	assert_non_null(strstr(b.data, "state database: unreachable for 0 s, work waits for it: "
				       "connection refused again"));
	assert_non_null(strstr(b.data, "processor: ok"));
	buf_free(&b);
	health_set_unavailable(NULL);
	assert_false(health_unavailable());
	assert_int_equal(health_report(NULL), 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup(test_standby_is_a_known_wait, reset),
	    cmocka_unit_test_setup(test_unreachable_state_database, reset),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
