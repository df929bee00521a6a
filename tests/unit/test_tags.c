/* test_tags.c — [Tag] subject prefixes and #tags of the new text, as a
 * user would see them on the post. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "mailfeed/tags.h"

/* Joins the list with spaces, for one readable comparison. */
static const char *joined(const struct strlist *l)
{
	static char out[4096];
	out[0] = 0;
	for (size_t i = 0; i < l->n; i++) {
		if (i)
			strcat(out, " ");
		strcat(out, l->v[i]);
	}
	return out;
}

static void check_subject(const char *subject, const char *expect)
{
	struct strlist l = {0};
	tags_from_subject(subject, &l);
	assert_string_equal(joined(&l), expect);
	strlist_free(&l);
}

static void check_text(const char *text, const char *expect)
{
	struct strlist l = {0};
	tags_from_text(text, &l);
	assert_string_equal(joined(&l), expect);
	strlist_free(&l);
}

static void test_subject_prefixes(void **state)
{
	check_subject("[Q3] Re: [Budget] numbers", "Q3 Budget");
	check_subject("Re: RE[2]: Fwd : [Ops] [q3] [Q3] outage", "Ops q3");
	check_subject("AW: 回复：[Team] hi", "Team");
	check_subject("Budget [Q3]", "");
	check_subject("[PATCH v2 3/5] fix", "");
	check_subject("[] [x", "");
	check_subject("Note: nothing", "");
	check_subject(NULL, "");
}

static void test_text_tags(void **state)
{
	check_text("Shipping #release today, see #Release and #ops-team.", "release ops-team");
	check_text("(#q3) #café, #日本", "q3 café 日本");
	check_text("colour #fff and #A0B1C2, issue #1234, but #abcd and #12ab", "abcd 12ab");
	check_text("https://example.com/page#section www.example.com/#x http://x/?a#b", "");
	check_text("C# and issue#3 and &#38; and ##double", "");
	check_text("> #quoted line\n  > #also quoted\nnew #fresh", "fresh");
	check_text("#trailing- #_under", "trailing _under");
}

static void test_limits(void **state)
{
	char text[4096] = "";
	char longtag[80];
	struct strlist l = {0};
	memset(longtag, 'a', sizeof longtag - 1);
	longtag[0] = '#';
	longtag[sizeof longtag - 1] = 0;
	check_text(longtag, "");
	for (int i = 0; i < 40; i++)
		sprintf(text + strlen(text), "#tag%d ", i);
	tags_from_text(text, &l);
	assert_int_equal(l.n, 30);
	assert_string_equal(l.v[29], "tag29");
	strlist_free(&l);
}

static void test_add_unique(void **state)
{
	struct strlist l = {0};
	tags_add_unique(&l, "#Ops");
	tags_add_unique(&l, "ops");
	tags_add_unique(&l, "#");
	tags_add_unique(&l, "Dev");
	assert_string_equal(joined(&l), "Ops Dev");
	strlist_free(&l);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_subject_prefixes),
	    cmocka_unit_test(test_text_tags),
	    cmocka_unit_test(test_limits),
	    cmocka_unit_test(test_add_unique),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
