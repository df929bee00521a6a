/* test_smtp.c — what the transport reports when a mail cannot go: an
 * address no SMTP command may carry is refused for good before any
 * connection, a relay that cannot be reached is a temporary failure, and
 * a group whose transfers never reached the end of their data is never
 * handed to the recording callback. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "mailfeed/smtp.h"

static const char mail[] = "From: a@example.org\r\nTo: b@example.org\r\nSubject: x\r\n\r\nhi\r\n";

static struct smtp_client *client(void)
{
	struct mf_smtp cfg;
	char err[256];
	memset(&cfg, 0, sizeof cfg);
	cfg.present = 1;
	/* nothing listens on port 9 of loopback: every connection fails at once */
	cfg.url = "smtp://127.0.0.1:9";
	cfg.timeout = 5;
	cfg.tls_verify = 1;
	struct smtp_client *c = smtp_new(&cfg, err, sizeof err);
	assert_non_null(c);
	return c;
}

static void test_new_refuses_other_urls(void **state)
{
	(void)state;
	struct mf_smtp cfg;
	char err[256];
	memset(&cfg, 0, sizeof cfg);
	assert_null(smtp_new(&cfg, err, sizeof err));
	assert_non_null(strstr(err, "[smtp]"));
	cfg.present = 1;
	cfg.url = "http://127.0.0.1:25";
	assert_null(smtp_new(&cfg, err, sizeof err));
	assert_non_null(strstr(err, "smtp://"));
}

static void test_send_results(void **state)
{
	(void)state;
	struct smtp_client *c = client();
	char err[512] = "";
	enum smtp_result r;
	r = smtp_send(c, "a@example.org", "b@example.org>\r\nRCPT TO:<c@example.org", mail,
		      strlen(mail), err, sizeof err);
	assert_int_equal(r, SMTP_PERMANENT);
	assert_string_equal(err, "recipient address is not usable");
	r = smtp_send(c, NULL, "b@example.org", mail, strlen(mail), err, sizeof err);
	assert_int_equal(r, SMTP_PERMANENT);
	r = smtp_send(c, "a@example.org", "b@example.org", mail, strlen(mail), err, sizeof err);
	assert_int_equal(r, SMTP_TEMPORARY);
	assert_non_null(strstr(err, "(smtp 0)"));
	smtp_free(c);
}

static void never_called(void *arg, struct smtp_message **held, size_t n)
{
	(void)arg;
	(void)held;
	(void)n;
	fail_msg("before_end called without a held message");
}

static void test_group_results(void **state)
{
	(void)state;
	struct smtp_client *c = client();
	struct smtp_message good = {.to = "b@example.org", .data = mail, .len = strlen(mail)};
	struct smtp_message bad = {.to = "b c@example.org", .data = mail, .len = strlen(mail)};
	struct smtp_message *msgs[] = {&good, &bad};
	smtp_send_group(c, "a@example.org", msgs, 2, never_called, NULL);
	assert_int_equal(good.result, SMTP_TEMPORARY);
	assert_int_equal(good.held, 0);
	assert_int_equal(bad.result, SMTP_PERMANENT);
	assert_string_equal(bad.err, "recipient address is not usable");
	smtp_free(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_new_refuses_other_urls),
	    cmocka_unit_test(test_send_results),
	    cmocka_unit_test(test_group_results),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
