/* test_compose.c — what goes into the headers and body of the mail
 * mailfeed writes: hostile text stays on one line and in ASCII, long values
 * fold, non-ASCII becomes encoded words that decode back to the same
 * text, and the bare address of a From value is only ever one that an
 * SMTP command can carry. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "mailfeed/compose.h"
#include "mailfeed/util.h"

static void expect_address(const char *from, const char *want)
{
	char *got = compose_address_of(from);
	if (!want) {
		if (got)
			fail_msg("\"%s\" gave \"%s\", expected none", from, got);
		return;
	}
	if (!got)
		fail_msg("\"%s\" gave none, expected \"%s\"", from, want);
	assert_string_equal(got, want);
	free(got);
}

static void test_address_of(void **state)
{
	(void)state;
	expect_address("Feed digest <digest@example.org>", "digest@example.org");
	expect_address("digest@example.org", "digest@example.org");
	expect_address("  digest@example.org (the feed)", "digest@example.org");
	expect_address("\"Smith, Ann\" <ann@example.org>", "ann@example.org");
	/* the last <...> counts: a display name cannot smuggle another one */
	expect_address("<evil@example.net> Ann <ann@example.org>", "ann@example.org");
	expect_address(NULL, NULL);
	expect_address("", NULL);
	expect_address("Feed digest", NULL);
	expect_address("Feed <digest@example.org", NULL);
	expect_address("Feed <>", NULL);
	expect_address("Feed <di gest@example.org>", NULL);
	expect_address("Feed <digest@example.org\r\n>", NULL);
	expect_address("digest@example.org\r\nRCPT", "digest@example.org");
	expect_address("Feed <dïgest@example.org>", NULL);
	expect_address("Feed <a\"b@example.org>", NULL);
	expect_address("Feed <a,b@example.org>", NULL);
	char long_local[300];
	memset(long_local, 'a', 250);
	strcpy(long_local + 250, "@example.org");
	expect_address(long_local, NULL);
}

static void test_header_text_is_one_line(void **state)
{
	(void)state;
	char *s = compose_header_text("Budget\r\nBcc: everyone@example.org\t  now\x7f");
	assert_string_equal(s, "Budget Bcc: everyone@example.org now ");
	free(s);
	/* a right-to-left override would show the reader another text */
	s = compose_header_text("invoice \xe2\x80\xae"
				"fdp.exe");
	assert_null(strstr(s, "\xe2\x80\xae"));
	assert_non_null(strstr(s, "fdp.exe"));
	free(s);
	s = compose_header_text(NULL);
	assert_string_equal(s, "");
	free(s);
}

/* The value of a header as a reader sees it: unfolded, each encoded word
 * decoded. */
static char *header_value(const char *hdr)
{
	struct buf b;
	const char *p = strchr(hdr, ':') + 2;
	buf_init(&b);
	while (*p) {
		if (strncmp(p, "\r\n ", 3) == 0) {
			p += 2; /* folding: the space stays, unless between two words */
			if (strncmp(p + 1, "=?", 2) == 0)
				p++;
			continue;
		}
		if (strncmp(p, "\r\n", 2) == 0)
			break;
		if (strncmp(p, "=?UTF-8?B?", 10) == 0) {
			const char *end = strstr(p + 10, "?=");
			unsigned char out[256];
			assert_non_null(end);
			int n = EVP_DecodeBlock(out, (const unsigned char *)p + 10,
						(int)(end - p - 10));
			assert_true(n >= 0);
			for (const char *q = end - 1; *q == '='; q--)
				n--;
			buf_append(&b, (const char *)out, (size_t)n);
			p = end + 2;
			continue;
		}
		buf_putc(&b, *p++);
	}
	return buf_steal(&b);
}

/* Every line of a header block ends in CRLF, none passes 998 octets, and
 * only the first starts without folding white space. */
static void assert_one_header(const char *h)
{
	const char *p = h;
	int first = 1;
	while (*p) {
		const char *crlf = strstr(p, "\r\n");
		assert_non_null(crlf);
		assert_true(crlf - p <= 998);
		assert_null(memchr(p, '\r', (size_t)(crlf - p)));
		assert_null(memchr(p, '\n', (size_t)(crlf - p)));
		for (const char *c = p; c < crlf; c++)
			assert_true((unsigned char)*c < 0x80);
		if (!first)
			assert_true(*p == ' ');
		first = 0;
		p = crlf + 2;
	}
}

static void test_put_header(void **state)
{
	(void)state;
	struct buf b;
	buf_init(&b);
	compose_put_header(&b, "Subject", "Board minutes");
	assert_string_equal(b.data, "Subject: Board minutes\r\n");

	b.len = 0;
	compose_put_header(&b, "Subject", "Hi\r\nBcc: evil@example.net");
	assert_string_equal(b.data, "Subject: Hi Bcc: evil@example.net\r\n");

	b.len = 0;
	compose_put_header(&b, "Subject", "Grüße");
	assert_string_equal(b.data, "Subject: =?UTF-8?B?R3LDvMOfZQ==?=\r\n");

	/* long ASCII folds at spaces, lines within 78 columns */
	const char *words = "The quarterly report of the regional fundraising committee, with "
			    "the notes of every meeting held since the spring, and the plans";
	b.len = 0;
	compose_put_header(&b, "Subject", words);
	assert_one_header(b.data);
	for (const char *p = b.data; *p;) {
		const char *crlf = strstr(p, "\r\n");
		assert_true(crlf - p <= 78);
		p = crlf + 2;
	}
	char *v = header_value(b.data);
	assert_string_equal(v, words);
	free(v);

	/* long non-ASCII: several encoded words, no character cut in two */
	struct buf want;
	buf_init(&want);
	for (int i = 0; i < 30; i++)
		buf_puts(&want, "Übersicht ");
	buf_puts(&want, "€");
	b.len = 0;
	compose_put_header(&b, "Subject", want.data);
	assert_one_header(b.data);
	v = header_value(b.data);
	assert_string_equal(v, want.data);
	free(v);
	buf_free(&want);
	buf_free(&b);
}

static void test_put_address(void **state)
{
	(void)state;
	struct buf b;
	buf_init(&b);
	compose_put_address(&b, "From", "Feed digest <digest@example.org>");
	assert_string_equal(b.data, "From: \"Feed digest\" <digest@example.org>\r\n");

	b.len = 0;
	compose_put_address(&b, "To", "bob@example.org");
	assert_string_equal(b.data, "To: bob@example.org\r\n");

	b.len = 0;
	compose_put_address(&b, "To", "\"Ann \\\"the\\\" Boss\" <ann@example.org>");
	assert_string_equal(b.data, "To: \"Ann the Boss\" <ann@example.org>\r\n");

	b.len = 0;
	compose_put_address(&b, "To", "Jürgen <j@example.org>");
	assert_string_equal(b.data, "To: =?UTF-8?B?SsO8cmdlbg==?= <j@example.org>\r\n");

	/* no usable address: the header stays empty rather than carry junk */
	b.len = 0;
	compose_put_address(&b, "Reply-To", "someone");
	assert_string_equal(b.data, "Reply-To: \r\n");

	/* a display name is cut, on a character boundary */
	struct buf name;
	buf_init(&name);
	for (int i = 0; i < 150; i++)
		buf_puts(&name, "é");
	buf_puts(&name, " <long@example.org>");
	b.len = 0;
	compose_put_address(&b, "From", name.data);
	assert_one_header(b.data);
	assert_non_null(strstr(b.data, " <long@example.org>\r\n"));
	char *v = header_value(b.data);
	assert_int_equal(strlen(v), 200 + strlen(" <long@example.org>"));
	free(v);
	buf_free(&name);
	buf_free(&b);
}

static void test_date_and_robot_headers(void **state)
{
	(void)state;
	struct mf_config cfg;
	struct buf b;
	memset(&cfg, 0, sizeof cfg);
	cfg.gateway.reply_address = "feed@lists.example.org";
	buf_init(&b);
	compose_put_date(&b, 1764849600); /* 2025-12-04 12:00 UTC */
	assert_string_equal(b.data, "Date: Thu, 04 Dec 2025 12:00:00 +0000\r\n");
	b.len = 0;
	compose_put_robot_headers(&b, &cfg, "auto-replied");
	assert_string_equal(b.data, "Auto-Submitted: auto-replied\r\n"
				    "X-Auto-Response-Suppress: All\r\n"
				    "List-Id: <mailfeed.lists.example.org>\r\n"
				    "X-Mailfeed-Loop: yes\r\n");
	buf_free(&b);

	char *a = compose_new_message_id(&cfg), *c = compose_new_message_id(&cfg);
	assert_string_not_equal(a, c);
	assert_null(strpbrk(a, "<> \r\n"));
	assert_non_null(strstr(a, "@lists.example.org"));
	free(a);
	free(c);
	cfg.gateway.reply_address = NULL;
	a = compose_new_message_id(&cfg);
	assert_non_null(strstr(a, "@localhost"));
	free(a);
}

static void test_put_base64(void **state)
{
	(void)state;
	struct buf b;
	buf_init(&b);
	compose_put_base64(&b, "a\nb");
	assert_string_equal(b.data, "YQ0KYg==\r\n");

	/* lines of 76 columns; the text comes back with CRLF line ends */
	struct buf text;
	buf_init(&text);
	for (int i = 0; i < 40; i++)
		buf_printf(&text, "line %d of the digest, with ümlauts\n", i);
	b.len = 0;
	compose_put_base64(&b, text.data);
	struct buf joined;
	buf_init(&joined);
	for (const char *p = b.data; *p;) {
		const char *crlf = strstr(p, "\r\n");
		assert_non_null(crlf);
		assert_true(crlf - p <= 76);
		buf_append(&joined, p, (size_t)(crlf - p));
		p = crlf + 2;
	}
	unsigned char *out = xmalloc(joined.len);
	int n = EVP_DecodeBlock(out, (const unsigned char *)joined.data, (int)joined.len);
	for (size_t i = joined.len; i > 0 && joined.data[i - 1] == '='; i--)
		n--;
	struct buf want;
	buf_init(&want);
	for (const char *p = text.data; *p; p++) {
		if (*p == '\n')
			buf_putc(&want, '\r');
		buf_putc(&want, *p);
	}
	assert_int_equal(n, (int)want.len);
	assert_memory_equal(out, want.data, want.len);
	free(out);
	buf_free(&want);
	buf_free(&joined);
	buf_free(&text);
	buf_free(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_address_of),
	    cmocka_unit_test(test_header_text_is_one_line),
	    cmocka_unit_test(test_put_header),
	    cmocka_unit_test(test_put_address),
	    cmocka_unit_test(test_date_and_robot_headers),
	    cmocka_unit_test(test_put_base64),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
