/* test_acks.c — after-actions the IMAP server refused, as ingest asks
 * messages.c about them: a refused message waits a minute, then twice as
 * long after each further refusal up to an hour; success clears the
 * record; only messages still waiting for their after-action are shown;
 * the record survives a restart. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "mailfeed/messages.h"
#include "mailfeed/store.h"
#include "state_file.h"

static char path[64];

static int setup(void **state)
{
	state_file_new(path, sizeof path, "acks");
	return 0;
}

static int teardown(void **state)
{
	state_file_remove(path);
	return 0;
}

static struct store *open_ok(void)
{
	char err[256];
	struct store *st = store_open(path, err, sizeof err);
	assert_non_null(st);
	assert_int_equal(messages_acks_table(st), 0);
	return st;
}

static void add(struct store *st, uint32_t uid)
{
	int inserted = -1;
	char id[32];
	snprintf(id, sizeof id, "m%u@x", uid);
	struct stored_message m = {.mailbox = "team",
				   .uidvalidity = 9,
				   .uid = uid,
				   .message_id = id,
				   .size = 1,
				   .raw = "a",
				   .raw_len = 1,
				   .state = MSG_DELIVERED};
	assert_int_equal(store_message_add(st, &m, &inserted), 0);
	assert_int_equal(inserted, 1);
}

/* How many of uids 1..3 may be tried at now. */
static size_t tryable(struct store *st, time_t now)
{
	uint32_t uids[] = {1, 2, 3};
	size_t n = 3;
	messages_acks_not_waiting(st, "team", 9, uids, &n, now);
	return n;
}

static void test_backoff_and_clear(void **state)
{
	struct store *st = open_ok();
	uint32_t refused[] = {1, 2};
	time_t next;
	char *error;
	add(st, 1);
	add(st, 2);
	add(st, 3);
	assert_int_equal(tryable(st, 1000), 3);
	messages_acks_note(st, "team", 9, refused, 2, "NO [TRYCREATE] no such folder", 1000);
	assert_int_equal(tryable(st, 1000), 1);
	assert_int_equal(tryable(st, 1060), 3);
	/* a second refusal waits twice as long */
	messages_acks_note(st, "team", 9, refused, 1, "NO still missing", 1060);
	assert_int_equal(tryable(st, 1179), 2);
	assert_int_equal(tryable(st, 1180), 3);
	assert_int_equal(messages_acks_refused(st, "team", 9, &next, &error), 2);
	assert_int_equal(next, 1060);
	assert_non_null(error);
	free(error);
	/* kept across a restart */
	store_close(st);
	st = open_ok();
	assert_int_equal(tryable(st, 1100), 2);
	/* success clears the record; a message acknowledged otherwise is
	 * not shown */
	messages_acks_note(st, "team", 9, refused, 1, NULL, 1100);
	assert_int_equal(tryable(st, 1100), 3);
	assert_int_equal(messages_acks_refused(st, "team", 9, &next, &error), 1);
	free(error);
	assert_int_equal(store_acks_done(st, "team", 9, refused + 1, 1), 0);
	assert_int_equal(messages_acks_refused(st, "team", 9, &next, &error), 0);
	assert_null(error);
	store_close(st);
}

/* The delay stops growing at an hour. */
static void test_backoff_capped(void **state)
{
	struct store *st = open_ok();
	uint32_t uid = 1;
	add(st, 1);
	for (int i = 0; i < 10; i++)
		messages_acks_note(st, "team", 9, &uid, 1, "NO", 5000);
	assert_int_equal(tryable(st, 5000 + 3599), 2);
	assert_int_equal(tryable(st, 5000 + 3600), 3);
	store_close(st);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_backoff_and_clear, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_backoff_capped, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
