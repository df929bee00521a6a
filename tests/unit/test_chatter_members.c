/* test_chatter_members.c — reading a Chatter group's members for digests
 * ([digest] subscribers = feed): the CollaborationGroupMember query answer
 * as Salesforce sends it (records with a nested "Member" object, paging by
 * nextRecordsUrl) and what a subscriber list must never take from it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "mailfeed/feed.h"

#define REC(freq, email)                                                                           \
	"{\"attributes\":{\"type\":\"CollaborationGroupMember\",\"url\":\"/services/data/"         \
	"v62.0/sobjects/CollaborationGroupMember/0FBXX0000000001\"},\"MemberId\":"                 \
	"\"005XX0000000001AAA\",\"Member\":{\"attributes\":{\"type\":\"User\",\"url\":"            \
	"\"/services/data/v62.0/sobjects/User/005XX0000000001AAA\"},\"Email\":" email              \
	",\"Name\":\"Some One\"},\"NotificationFrequency\":\"" freq "\"}"

static int parse(const char *json, struct feed_member **m, size_t *n, char **next)
{
	*m = NULL;
	*n = 0;
	return feed_chatter_parse_members(json, strlen(json), m, n, next);
}

static void test_frequencies_and_skips(void **state)
{
	(void)state;
	struct feed_member *m;
	size_t n;
	char *next;
	const char *json =
	    "{\"totalSize\":8,\"done\":true,\"records\":[" REC("P", "\"Alice@Example.ORG\"") "," REC("D", "\"dave@example.org\"") "," REC("W", "\"wendy@example.org\"") "," REC(
		"N",
		"\"nora@example.org\"") "," REC("D",
						"null") "," REC("D",
								"\"not an address\"") "," REC("X",
											      "\"od"
											      "d@"
											      "exam"
											      "ple."
											      "org"
											      "\"") "," REC("D",
													    "\"evil@example.org>\\r\\nBcc: x@y.org\"") "]}";
	assert_int_equal(parse(json, &m, &n, &next), 0);
	assert_null(next);
	assert_int_equal(n, 4);
	assert_string_equal(m[0].email, "alice@example.org");
	assert_int_equal(m[0].frequency, FREQ_EACH);
	assert_string_equal(m[0].name, "Some One");
	assert_int_equal(m[1].frequency, FREQ_DAILY);
	assert_int_equal(m[2].frequency, FREQ_WEEKLY);
	assert_string_equal(m[3].email, "nora@example.org");
	assert_int_equal(m[3].frequency, FREQ_NEVER);
	feed_members_free(m, n);
}

static void test_paging(void **state)
{
	(void)state;
	struct feed_member *m;
	size_t n;
	char *next;
	assert_int_equal(parse("{\"totalSize\":3,\"done\":false,\"nextRecordsUrl\":"
			       "\"/services/data/v62.0/query/01gXX0000000001-2\",\"records\":[" REC(
				   "D", "\"a@example.org\"") "," REC("D", "\"b@example.org\"") "]}",
			       &m, &n, &next),
			 0);
	assert_int_equal(n, 2);
	assert_string_equal(next, "/services/data/v62.0/query/01gXX0000000001-2");
	free(next);
	/* the next page appends */
	assert_int_equal(
	    feed_chatter_parse_members(
		"{\"totalSize\":3,\"done\":true,\"records\":[" REC("W", "\"c@example.org\"") "]}",
		strlen("{\"totalSize\":3,\"done\":true,\"records\":[" REC(
		    "W", "\"c@example.org\"") "]}"),
		&m, &n, &next),
	    0);
	assert_null(next);
	assert_int_equal(n, 3);
	assert_string_equal(m[2].email, "c@example.org");
	feed_members_free(m, n);
}

/* An answer that could cut the list short is refused as a whole: members
 * missing from it would be taken as gone. */
static void test_incomplete_answers_refused(void **state)
{
	(void)state;
	static const char *const bad[] = {
	    "[{\"errorCode\":\"MALFORMED_QUERY\",\"message\":\"x\"}]",
	    "{\"totalSize\":1,\"records\":[]}",
	    "{\"totalSize\":5,\"done\":false,\"records\":[]}",
	    "{\"totalSize\":5,\"done\":false,\"nextRecordsUrl\":\"https://evil.example/q\","
	    "\"records\":[]}",
	    "{\"totalSize\":5,\"done\":false,\"nextRecordsUrl\":\"/services/data/v62.0/query/"
	    "01g x\",\"records\":[]}",
	    "{\"done\":true,\"records\":{}}",
	    "not json",
	};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		struct feed_member *m;
		size_t n;
		char *next = (char *)1;
		assert_int_equal(parse(bad[i], &m, &n, &next), -1);
		assert_null(next);
		assert_int_equal(n, 0);
		feed_members_free(m, n);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_frequencies_and_skips),
	    cmocka_unit_test(test_paging),
	    cmocka_unit_test(test_incomplete_answers_refused),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
