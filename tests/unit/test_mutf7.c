/* test_mutf7.c — folder names written in UTF-8 in the config reach the
 * server in modified UTF-7 (RFC 3501 5.1.3), as Cyrus, Courier and
 * Dovecot spell them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "mailfeed/mutf7.h"

static void check(const char *utf8, const char *wire)
{
	char *e = mutf7_encode(utf8);
	assert_non_null(e);
	assert_string_equal(e, wire);
	char *d = mutf7_decode(wire);
	assert_non_null(d);
	assert_string_equal(d, utf8);
	free(e);
	free(d);
}

static void examples(void **state)
{
	(void)state;
	check("INBOX", "INBOX");
	check("Förderung", "F&APY-rderung");
	check("Entwürfe", "Entw&APw-rfe");
	check("Tom & Jerry", "Tom &- Jerry");
	check("&", "&-");
	check("日本語", "&ZeVnLIqe-");
	check("~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-");
	check("Éléments envoyés", "&AMk-l&AOk-ments envoy&AOk-s");
	check("Archiv/2026/März", "Archiv/2026/M&AOQ-rz");
	check("🎉 Party", "&2DzfiQ- Party");
	check("", "");
}

static void invalid_utf8_is_refused(void **state)
{
	(void)state;
	assert_null(mutf7_encode("F\xf6rderung"));     /* Latin-1 */
	assert_null(mutf7_encode("\xc0\xaf"));	       /* overlong */
	assert_null(mutf7_encode("\xed\xa0\x80"));     /* surrogate */
	assert_null(mutf7_encode("\xf4\x90\x80\x80")); /* beyond U+10FFFF */
	assert_null(mutf7_encode("abc\xe2\x82"));      /* cut off */
}

static void malformed_wire_names_are_refused(void **state)
{
	(void)state;
	assert_null(mutf7_decode("F&APY")); /* no closing - */
	assert_null(mutf7_decode("&AGE-")); /* "a" must not be encoded */
	assert_null(mutf7_decode("&2Dw-")); /* lone high surrogate */
	assert_null(mutf7_decode("&-&"));
	assert_null(mutf7_decode("F\xc3\xb6"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(examples),
	    cmocka_unit_test(invalid_utf8_is_refused),
	    cmocka_unit_test(malformed_wire_names_are_refused),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
