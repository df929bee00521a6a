/* test_utf8.c — characters counted as a reader counts them, cuts that
 * never leave half a character, and long texts split where a reader
 * expects a break: a blank line, else a line end, else a space. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "mailfeed/utf8.h"

/* "Grüße 日本 🎉" in 1-, 2-, 3- and 4-byte characters */
static const char *mixed = "Gr\xc3\xbc\xc3\x9f"
			   "e \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x8e\x89";

static void test_count(void **state)
{
	(void)state;
	assert_int_equal(utf8_count("", 0), 0);
	assert_int_equal(utf8_count("hello", 5), 5);
	assert_int_equal(utf8_count(mixed, strlen(mixed)), 10);
	/* a part of the string: only the characters that start in it */
	assert_int_equal(utf8_count(mixed, 3), 3);
	/* a stray continuation byte is no character; a lone lead byte is one */
	assert_int_equal(utf8_count("a\x80"
				    "b",
				    3),
			 2);
	assert_int_equal(utf8_count("a\xe6", 2), 2);
}

static void test_cut_never_splits_a_character(void **state)
{
	(void)state;
	size_t n = strlen(mixed);
	for (size_t max = 0; max <= n + 2; max++) {
		size_t c = utf8_cut(mixed, n, max);
		assert_true(c <= max && c <= n);
		/* ends on a boundary: the next byte starts a character */
		assert_true(c == n || ((unsigned char)mixed[c] & 0xC0) != 0x80);
		/* and is the longest such start */
		if (c < n && max < n)
			assert_true(c + 4 > max);
	}
	assert_int_equal(utf8_cut(mixed, n, n), n);
	assert_int_equal(utf8_cut(mixed, n, 3), 2); /* "Gr" + half of "ü": "Gr" */
	assert_int_equal(utf8_cut(mixed, n, 4), 4);
	assert_int_equal(utf8_cut(mixed, n, 2), 2);
	assert_int_equal(utf8_cut(mixed, n, 10), 8);  /* inside "日" */
	assert_int_equal(utf8_cut(mixed, n, 17), 15); /* inside "🎉" */
}

static void test_offset(void **state)
{
	(void)state;
	size_t n = strlen(mixed);
	assert_int_equal(utf8_offset(mixed, n, 0), 0);
	assert_int_equal(utf8_offset(mixed, n, 3), 4);	/* "Grü" */
	assert_int_equal(utf8_offset(mixed, n, 7), 11); /* "Grüße 日" */
	assert_int_equal(utf8_offset(mixed, n, 10), n);
	assert_int_equal(utf8_offset(mixed, n, 99), n);
}

static const char *part(const struct strlist *l, size_t i) { return i < l->n ? l->v[i] : NULL; }

static void test_split_cut_points(void **state)
{
	(void)state;
	struct strlist l = {0};
	/* short enough: one part, as written */
	utf8_split("one part", 20, 20, &l);
	assert_int_equal(l.n, 1);
	assert_string_equal(part(&l, 0), "one part");
	strlist_free(&l);

	/* nothing to split */
	utf8_split("", 20, 20, &l);
	assert_int_equal(l.n, 0);

	/* a blank line in the second half wins over a later line end or space;
	 * a line end in the first half loses to a space in the second */
	utf8_split("aaaaaaa\n\nbb\ncc dd eeeeeeeeee", 16, 16, &l);
	assert_string_equal(part(&l, 0), "aaaaaaa\n\n");
	assert_string_equal(part(&l, 1), "bb\ncc dd ");
	assert_string_equal(part(&l, 2), "eeeeeeeeee");
	strlist_free(&l);

	/* a line end wins over a later space */
	utf8_split("aaaaaaa\nbbb cc dddddddd", 12, 12, &l);
	assert_string_equal(part(&l, 0), "aaaaaaa\n");
	assert_string_equal(part(&l, 1), "bbb cc ");
	assert_string_equal(part(&l, 2), "dddddddd");
	strlist_free(&l);

	/* the late rule (Mattermost): the later of a line end and a space
	 * wins; a blank line still wins over both */
	utf8_split_late("aaaaaaa\nbbb cc dddddddd", 12, 12, &l);
	assert_string_equal(part(&l, 0), "aaaaaaa\nbbb ");
	assert_string_equal(part(&l, 1), "cc dddddddd");
	strlist_free(&l);
	utf8_split_late("aaaaaaa\n\nbb\ncc dd eeeeeeeeee", 16, 16, &l);
	assert_string_equal(part(&l, 0), "aaaaaaa\n\n");
	assert_string_equal(part(&l, 1), "bb\ncc dd ");
	strlist_free(&l);

	/* a blank line in the first half of the window is too early: the
	 * part is cut after its last whole character */
	utf8_split("ab\n\ncdefghij klmnop", 12, 12, &l);
	assert_string_equal(part(&l, 0), "ab\n\ncdefghij");
	assert_string_equal(part(&l, 1), "klmnop");
	strlist_free(&l);

	/* no break at all: cut after the last whole character */
	utf8_split("\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9", 2, 3, &l);
	assert_int_equal(l.n, 2);
	assert_string_equal(part(&l, 0), "\xc3\xa9\xc3\xa9");
	assert_string_equal(part(&l, 1), "\xc3\xa9\xc3\xa9\xc3\xa9");
	strlist_free(&l);
}

static void test_split_keeps_every_word_within_budget(void **state)
{
	(void)state;
	char text[4096] = "";
	for (int i = 0; i < 60; i++)
		strcat(text, i % 7 == 6 ? "Zürich\n\n" : "straße 日本 ");
	struct strlist l = {0};
	utf8_split(text, 50, 80, &l);
	assert_true(l.n > 3);
	size_t words = 0;
	for (size_t i = 0; i < l.n; i++) {
		assert_true(utf8_count(l.v[i], strlen(l.v[i])) <= (i ? 80u : 50u));
		assert_true(l.v[i][0] != ' ' && l.v[i][0] != '\n');
		for (const char *p = l.v[i]; (p = strstr(p, "stra")); p++)
			words++;
	}
	/* parts joined give back the text: no word lost or cut */
	assert_int_equal(words, 60 - 60 / 7);
	strlist_free(&l);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_count),
	    cmocka_unit_test(test_cut_never_splits_a_character),
	    cmocka_unit_test(test_offset),
	    cmocka_unit_test(test_split_cut_points),
	    cmocka_unit_test(test_split_keeps_every_word_within_budget),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
