/* test_route.c — why a new thread goes where it goes (route_explain), told
 * without the service: the first rule with something to look up, the
 * sender then the recipients for sender-account, none, a comment, and what
 * a hostile address does to the JSON form. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "mailfeed/route.h"

#define REF "reference:\\[(OPP-[0-9]+)\\] -> Opportunity.Reference__c"

static void test_reference_first_then_sender(void **state)
{
	(void)state;
	struct strlist specs = {0}, rcpt = {0};
	struct route_why w;
	strlist_add(&specs, REF);
	strlist_add(&specs, "sender-account");
	route_explain(&specs, "[OPP-1042] Pricing", "text", "alice@example.org", &rcpt, &w);
	assert_int_equal(w.rule, 0);
	assert_string_equal(w.kind, "reference");
	assert_string_equal(w.value, "OPP-1042");
	assert_string_equal(w.object, "Opportunity");
	assert_string_equal(w.field, "Reference__c");
	assert_string_equal(w.text, "reference OPP-1042 \u2192 Opportunity.Reference__c (looked "
				    "up when posted)");
	/* found in the text when the subject has none */
	route_explain(&specs, "Re: numbers", "About [OPP-7].", "alice@example.org", &rcpt, &w);
	assert_string_equal(w.value, "OPP-7");
	/* no reference: the sender */
	route_explain(&specs, "Lunch", "See you", "alice@example.org", &rcpt, &w);
	assert_int_equal(w.rule, 1);
	assert_string_equal(w.kind, "sender-account");
	assert_string_equal(w.value, "alice@example.org");
	/* no sender: the first recipient */
	strlist_add(&rcpt, "hank@globex.example");
	route_explain(&specs, "Lunch", "See you", NULL, &rcpt, &w);
	assert_string_equal(w.value, "hank@globex.example");
	json_t *o = route_why_json(&w, &specs);
	assert_string_equal(json_string_value(json_object_get(o, "rule")), "sender-account");
	json_decref(o);
	strlist_free(&specs);
	strlist_free(&rcpt);
}

static void test_none_and_comment(void **state)
{
	(void)state;
	struct strlist specs = {0};
	struct route_why w;
	strlist_add(&specs, REF);
	route_explain(&specs, "Lunch", NULL, "alice@example.org", NULL, &w);
	assert_int_equal(w.rule, -1);
	assert_string_equal(w.kind, "none");
	assert_string_equal(w.text, "none matched \u2192 group");
	json_t *o = route_why_json(&w, &specs);
	assert_true(json_is_null(json_object_get(o, "rule")));
	assert_true(json_is_null(json_object_get(o, "value")));
	json_decref(o);
	route_explain_comment(&w);
	assert_string_equal(w.kind, "thread");
	/* no rules at all */
	route_explain(NULL, "[OPP-1] x", "y", "a@b.example", NULL, &w);
	assert_string_equal(w.kind, "none");
	strlist_free(&specs);
}

static void test_hostile_address_stays_out_of_json(void **state)
{
	(void)state;
	struct strlist specs = {0};
	struct route_why w;
	char addr[400];
	/* a long address of two-byte characters: cut in the middle of one */
	memset(addr, 0, sizeof addr);
	for (size_t i = 0; i + 2 < sizeof addr - 20; i += 2)
		memcpy(addr + i, "\xc3\xa9", 2);
	strcat(addr, "@example.org");
	strlist_add(&specs, "sender-account");
	route_explain(&specs, "s", "t", addr, NULL, &w);
	assert_string_equal(w.kind, "sender-account");
	assert_true(strlen(w.value) < sizeof w.value);
	json_t *o = route_why_json(&w, &specs);
	assert_non_null(o);
	json_t *v = json_object_get(o, "value");
	assert_true(json_is_null(v) || json_is_string(v));
	json_decref(o);
	strlist_free(&specs);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_reference_first_then_sender),
	    cmocka_unit_test(test_none_and_comment),
	    cmocka_unit_test(test_hostile_address_stays_out_of_json),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
