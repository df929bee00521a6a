/* test_loopback.c — what counts as "loopback only" for the rules that
 * allow plain connections or an unauthenticated listener there, and the
 * liveness table behind /healthz. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "mailfeed/health.h"
#include "mailfeed/loopback.h"

static void literals(void **state)
{
	(void)state;
	assert_true(host_loopback_only("127.0.0.1"));
	assert_true(host_loopback_only("127.255.3.4"));
	assert_true(host_loopback_only("::1"));
	assert_true(host_loopback_only("[::1]"));
	assert_true(host_loopback_only("::ffff:127.0.0.1"));
	assert_false(host_loopback_only("10.0.0.1"));
	assert_false(host_loopback_only("0.0.0.0"));
	assert_false(host_loopback_only("::"));
	assert_false(host_loopback_only("128.0.0.1"));
	assert_false(host_loopback_only("::ffff:10.0.0.1"));
	assert_false(host_loopback_only(""));
	assert_false(host_loopback_only(NULL));
}

static void names_are_resolved_not_matched_by_prefix(void **state)
{
	(void)state;
	assert_true(host_loopback_only("localhost"));
	/* once accepted for starting with "127." */
	assert_false(host_loopback_only("127.attacker.invalid"));
	assert_false(host_loopback_only("127.0.0.1.invalid"));
	assert_false(host_loopback_only("[127.0.0.1"));
}

static void health_table(void **state)
{
	struct buf b;
	(void)state;
	health_reset();
	int w = health_register("mailbox team");
	int p = health_register("processor");
	assert_true(w >= 0 && p >= 0);
	health_beat(w, 60);
	health_beat(p, 60);
	buf_init(&b);
	assert_int_equal(health_report(&b), 1);
	assert_non_null(strstr(b.data, "mailbox team: ok\n"));
	buf_free(&b);

	health_wait(w, HEALTH_AUTH_BACKOFF, 3600, "login failed for alice");
	buf_init(&b);
	assert_int_equal(health_report(&b), 1);
	assert_non_null(strstr(b.data, "mailbox team: login refused, waiting for 3600 s more: "
				       "login failed for alice\n"));
	buf_free(&b);

	/* a promise already broken: beat due long ago */
	health_beat(w, -10000);
	buf_init(&b);
	assert_int_equal(health_report(&b), 0);
	assert_non_null(strstr(b.data, "mailbox team: no progress for"));
	assert_non_null(strstr(b.data, "processor: ok\n"));
	buf_free(&b);

	health_unregister(w);
	assert_int_equal(health_report(NULL), 1);
	health_reset();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(literals),
	    cmocka_unit_test(names_are_resolved_not_matched_by_prefix),
	    cmocka_unit_test(health_table),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
