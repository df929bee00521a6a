/* test_util.c — the shared helpers every module uses for the same idea:
 * the e-mail address rule, base64, the header-block scan and the date of
 * IMAP INTERNALDATE and RFC 5322 Date. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "mailfeed/config.h"
#include "mailfeed/util.h"

static void test_email_address_rule(void **state)
{
	(void)state;
	static const char *const good[] = {
	    "anna@example.org",
	    "a@b",
	    "root@localhost",
	    "first.last+tag@sub.example.org",
	    "j\xc3\xbcrgen@example.de",
	    "x@[192.0.2.1]",
	    "o'brien@example.ie",
	    "x@[IPv6:2001:db8::1]",
	    "a!#$%&*+-/=?^_`{|}~@mail_relay.example.org",
	};
	static const char *const bad[] = {
	    "",
	    "anna",
	    "@example.org",
	    "anna@",
	    "a@b@c",
	    "a b@example.org",
	    "a\"b@example.org",
	    "a<b@example.org",
	    "a>b@example.org",
	    "a,b@example.org",
	    "a;b@example.org",
	    "a(b)@example.org",
	    "a\tb@example.org",
	    "a\r\nBcc: x@y.org",
	    "a\x7f@example.org",
	    "a:b@example.org",
	    "a[b]@example.org",
	    "a\\b@example.org",
	    "anna@exa:mple.org",
	    "anna@exa mple.org",
	    "anna@.example.org",
	    "anna@example.org.",
	    "anna@example..org",
	    "anna@[]",
	    "anna@[192.0.2.1",
	    "anna@[19[2.0.2.1]",
	    "anna@exam\\ple.org",
	};
	for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
		assert_true(email_address_valid(good[i]));
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		assert_false(email_address_valid(bad[i]));
	assert_false(email_address_valid(NULL));
	char longest[256];
	memset(longest, 'a', sizeof longest);
	memcpy(longest + 254 - 12, "@example.org", 13);
	assert_int_equal(strlen(longest), 254);
	assert_true(email_address_valid(longest));
	longest[0] = '\0';
	memset(longest, 'a', 243);
	strcpy(longest + 243, "@example.org");
	assert_false(email_address_valid(longest));
}

static void test_base64(void **state)
{
	(void)state;
	static const struct {
		const char *in, *b64, *url;
	} v[] = {
	    {"", "", ""},
	    {"f", "Zg==", "Zg"},
	    {"fo", "Zm8=", "Zm8"},
	    {"foo", "Zm9v", "Zm9v"},
	    {"foobar", "Zm9vYmFy", "Zm9vYmFy"},
	    {"\xfb\xff\xbf", "+/+/", "-_-_"},
	};
	for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
		char *e = base64_encode(v[i].in, strlen(v[i].in));
		assert_string_equal(e, v[i].b64);
		free(e);
		e = base64url_encode(v[i].in, strlen(v[i].in));
		assert_string_equal(e, v[i].url);
		free(e);
	}
	struct buf b;
	buf_init(&b);
	buf_puts(&b, "=?UTF-8?B?");
	buf_put_base64(&b, "foob", 4);
	buf_puts(&b, "?=");
	assert_string_equal(b.data, "=?UTF-8?B?Zm9vYg==?=");
	buf_free(&b);
}

static const char raw_mail[] = "Received: from a\r\n"
			       "\tby b\r\n"
			       "Subject: Hello\r\n"
			       " folded \x01 world\r\n"
			       "Message-ID:\r\n"
			       " <abc def@example.org>\r\n"
			       "Message-ID: <second@example.org>\r\n"
			       "\r\n"
			       "Subject: in the body\r\n";

static int count_field(void *arg, const struct raw_field *f)
{
	int *n = arg;
	(*n)++;
	return f->namelen == 7 && strncmp(f->name, "Subject", 7) == 0;
}

static void test_header_scan(void **state)
{
	(void)state;
	size_t len = sizeof raw_mail - 1;
	char *v = raw_header_value(raw_mail, len, "subject", 200);
	assert_string_equal(v, "Hello  folded ? world");
	free(v);
	v = raw_header_value(raw_mail, len, "Subject", 5);
	assert_string_equal(v, "Hello");
	free(v);
	assert_null(raw_header_value(raw_mail, len, "From", 200));
	v = raw_header_message_id(raw_mail, len);
	assert_string_equal(v, "abc_def@example.org");
	free(v);
	int n = 0;
	raw_header_each(raw_mail, len, count_field, &n);
	assert_int_equal(n, 2); /* stopped at Subject */
	/* what the scan reads: the block up to its empty line, bounded */
	assert_int_equal(raw_header_block_len(raw_mail, len),
			 strstr(raw_mail, "\r\n\r\n") + 2 - raw_mail);
	assert_int_equal(raw_header_block_len("A: b\n\nbody", 11), 5);
	assert_int_equal(raw_header_block_len("\r\nbody", 6), 0);
	assert_int_equal(raw_header_block_len("A: b\r\n", 6), 6); /* no body */
	/* the scan ends at the empty line, and is bounded */
	assert_null(raw_header_message_id("Subject: x\r\n\r\nMessage-ID: <a@b>\r\n", 33));
	assert_null(raw_header_message_id("Message-ID: <>\r\n", 16));
	/* never a '<' inside the id */
	v = raw_header_message_id("Message-ID: << p`>\r\n", 20);
	assert_string_equal(v, "_p`");
	free(v);
	assert_null(raw_header_message_id("Message-ID: x <<>\r\n", 19));
	size_t big = RAW_HEADER_SCAN + 100;
	char *huge = malloc(big);
	memset(huge, 'X', big);
	memcpy(huge, "X-Pad: ", 7);
	memcpy(huge + RAW_HEADER_SCAN - 10, "\r\nMessage-ID: <late@example.org>\r\n", 34);
	assert_null(raw_header_message_id(huge, big));
	assert_int_equal(raw_header_block_len(huge, big), RAW_HEADER_SCAN);
	free(huge);
}

static void test_time_from_parts(void **state)
{
	(void)state;
	/* 2026-12-04 10:30:00 +0100 is 09:30 UTC */
	assert_int_equal(time_from_parts(2026, 12, 4, 10, 30, 0, 100), 1796376600);
	assert_int_equal(time_from_parts(2026, 12, 4, 8, 0, 0, -130), 1796376600);
	assert_int_equal(time_from_parts(1970, 1, 1, 0, 0, 0, 0), 0);
	assert_int_equal(time_from_parts(1969, 12, 31, 23, 0, 0, 0), 0);
	assert_int_equal(time_from_parts(2026, 13, 1, 0, 0, 0, 0), 0);
	assert_int_equal(time_from_parts(2026, 1, 1, 24, 0, 0, 0), 0);
}

static void test_backend_names(void **state)
{
	(void)state;
	assert_string_equal(feed_backend_name(FEED_LOCAL), "local");
	assert_string_equal(feed_backend_name(FEED_CHATTER), "chatter");
	assert_string_equal(feed_backend_name(FEED_MATTERMOST), "mattermost");
	assert_string_equal(feed_backend_name(FEED_WEBHOOK), "webhook");
}

/* Without a file, every key has the default of its row: the one place a
 * default is written. */
static void test_config_default(void **state)
{
	(void)state;
	const struct mf_config *c = config_default();
	assert_ptr_equal(c, config_default());
	assert_int_equal(c->feed.concurrency, 4);
	assert_int_equal(c->feed.backend, FEED_LOCAL);
	assert_int_equal(c->feed.max_files, 10);
	assert_int_equal(c->feed.max_file_size, 25LL * 1024 * 1024);
	assert_int_equal(c->feed.dead_after, 2 * 86400);
	assert_int_equal(c->gateway.parse_timeout, 20);
	assert_int_equal(c->gateway.parse_memory, 512LL * 1024 * 1024);
	assert_int_equal(c->gateway.max_message_size, 25LL * 1024 * 1024);
	assert_string_equal(c->gateway.state, "/var/lib/mailfeed/state.db");
	assert_string_equal(c->gateway.log_level, "info");
	assert_int_equal(c->smtp.timeout, 60);
	assert_int_equal(c->digest.weekly_day, 1);
	assert_string_equal(c->digest.timezone, "UTC");
	assert_int_equal(c->n_accounts, 0);
}

static void check_redact(const char *in, const char *want)
{
	char *got = dsn_redact(in);
	assert_string_equal(got, want);
	free(got);
}

/* A DSN shown in logs and status never shows its password. */
static void test_dsn_redact(void **unused)
{
	(void)unused;
	assert_true(is_pg_dsn("postgresql://h/db"));
	assert_true(is_pg_dsn("postgres://h/db"));
	assert_false(is_pg_dsn("/var/lib/mailfeed/state.db"));
	assert_false(is_pg_dsn("postgresql.db"));
	check_redact("/var/lib/mailfeed/state.db", "/var/lib/mailfeed/state.db");
	check_redact("postgresql://mf:s3cret@db.example.org:5432/mailfeed",
		     "postgresql://mf:***@db.example.org:5432/mailfeed");
	check_redact("postgresql://mf:p@ss@h/db", "postgresql://mf:***@h/db");
	check_redact("postgresql://mf@h/db", "postgresql://mf@h/db");
	check_redact("postgresql://h/db?user=mf&password=x&sslmode=require",
		     "postgresql://h/db?user=mf&password=***&sslmode=require");
	check_redact("postgresql://h/db?password=x", "postgresql://h/db?password=***");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_email_address_rule), cmocka_unit_test(test_base64),
	    cmocka_unit_test(test_header_scan),	       cmocka_unit_test(test_time_from_parts),
	    cmocka_unit_test(test_backend_names),      cmocka_unit_test(test_dsn_redact),
	    cmocka_unit_test(test_config_default),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
