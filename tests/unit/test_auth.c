/* test_auth.c — who may act as a person: Authentication-Results as a
 * forger writes them (comments, reason strings, a second header further
 * down, a look-alike server, an unaligned signature) never verify a
 * sender; what a receiving server really writes does. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "mailfeed/auth.h"

#define MX "mx.example.org"

static struct auth_verdict judge(const char *headers, const char *from)
{
	struct auth_verdict v;
	char *raw = NULL;
	size_t n = strlen(headers) + 64;
	raw = malloc(n);
	snprintf(raw, n, "%s\r\nSubject: hi\r\n\r\nbody\r\n", headers);
	auth_verify(MX, raw, strlen(raw), from, &v);
	free(raw);
	return v;
}

static void assert_verified(const char *headers, const char *from)
{
	struct auth_verdict v = judge(headers, from);
	if (!v.verified)
		fail_msg("not verified: %s (%s)", headers, v.why);
	assert_non_null(strstr(v.why, "verified: "));
}

static void assert_unverified(const char *headers, const char *from)
{
	struct auth_verdict v = judge(headers, from);
	if (v.verified)
		fail_msg("verified: %s (%s)", headers, v.why);
	assert_non_null(strstr(v.why, "unverified"));
}

static void test_parse_grammar(void **state)
{
	(void)state;
	struct auth_header h;
	assert_int_equal(auth_header_parse("MX.Example.org 1; (c) dkim/1 (x) = pass (good)"
					   " header.d=Example.ORG header.b=\"abc\";"
					   " spf=fail smtp.mailfrom=a@b.example; dmarc=pass"
					   " reason=\"aligned; policy\" header.from=example.org",
					   &h),
			 0);
	assert_string_equal(h.authserv_id, "mx.example.org");
	assert_int_equal(h.n, 3);
	assert_string_equal(h.results[0].method, "dkim");
	assert_string_equal(h.results[0].result, "pass");
	assert_string_equal(h.results[0].header_d, "example.org");
	assert_string_equal(h.results[1].smtp_mailfrom, "a@b.example");
	assert_string_equal(h.results[2].method, "dmarc");
	assert_string_equal(h.results[2].header_from, "example.org");

	assert_int_equal(auth_header_parse("mx.example.org; none", &h), 0);
	assert_int_equal(h.n, 0);
	assert_int_equal(auth_header_parse("", &h), -1);
	assert_int_equal(auth_header_parse("(only a comment)", &h), -1);
	/* a malformed resinfo is dropped, the next one still read */
	assert_int_equal(auth_header_parse("mx; dkim=pass =; spf=pass", &h), 0);
	assert_int_equal(h.n, 1);
	assert_string_equal(h.results[0].method, "spf");
}

static void test_pass_in_comment_or_reason_counts_nothing(void **state)
{
	(void)state;
	const char *from = "boss@example.org";
	assert_unverified("Authentication-Results: " MX
			  "; dkim=fail (dkim=pass header.d=example.org)"
			  " header.d=example.org",
			  from);
	assert_unverified("Authentication-Results: " MX "; spf=none reason=\"dmarc=pass\"", from);
	assert_unverified("Authentication-Results: " MX "; spf=none reason=dmarc=pass", from);
	assert_unverified("Authentication-Results: " MX " (dmarc=pass); dkim=neutral", from);
	assert_unverified("Authentication-Results: " MX "; x-note=\"; dmarc=pass\"", from);
	assert_unverified("Authentication-Results: " MX "; dkim=fail header.d=example.org"
			  " (\\) dmarc=pass header.from=example.org)",
			  from);
	assert_unverified("Authentication-Results: " MX "; dkim=\"pass\" header.d=example.org",
			  from);
}

static void test_only_topmost_trusted_header_counts(void **state)
{
	(void)state;
	const char *from = "boss@example.org";
	/* the receiving server's own verdict first; the sender's forged one below */
	assert_unverified("Authentication-Results: " MX "; dkim=none; spf=softfail"
			  " smtp.mailfrom=attacker.example; dmarc=fail\r\n"
			  "Received: from attacker.example\r\n"
			  "Authentication-Results: " MX "; dmarc=pass header.from=example.org",
			  from);
	/* another server's header above does not hide the trusted one */
	assert_verified("Authentication-Results: relay.internal; dkim=fail\r\n"
			"Authentication-Results: " MX "; dkim=pass header.d=example.org",
			from);
	/* a look-alike authserv-id is another server */
	assert_unverified("Authentication-Results: " MX ".attacker.example; dmarc=pass", from);
	assert_unverified("Authentication-Results: evil" MX "; dmarc=pass", from);
	assert_unverified("X-Authentication-Results: " MX "; dmarc=pass", from);
	assert_unverified("Subject: x", from);
}

static void test_alignment(void **state)
{
	(void)state;
	assert_verified("Authentication-Results: " MX "; dmarc=pass header.from=example.org",
			"boss@example.org");
	assert_verified("Authentication-Results: " MX "; dmarc=pass", "boss@example.org");
	assert_unverified("Authentication-Results: " MX "; dmarc=pass header.from=attacker.example",
			  "boss@example.org");
	/* relaxed: a subdomain of the same organisation */
	assert_verified("Authentication-Results: " MX "; dkim=pass header.d=mail.example.org",
			"boss@example.org");
	assert_verified("Authentication-Results: " MX ";\r\n\tdkim=pass header.i=@example.org",
			"boss@lists.example.org");
	assert_unverified("Authentication-Results: " MX "; dkim=pass header.d=attacker.example",
			  "boss@example.org");
	assert_unverified("Authentication-Results: " MX "; dkim=pass header.d=example.org.evil.net",
			  "boss@example.org");
	assert_unverified("Authentication-Results: " MX "; dkim=pass", "boss@example.org");
	/* a shared public suffix is no organisation */
	assert_unverified("Authentication-Results: " MX "; dkim=pass header.d=attacker.co.uk",
			  "boss@charity.co.uk");
	assert_verified("Authentication-Results: " MX "; dkim=pass header.d=mx.charity.co.uk",
			"boss@charity.co.uk");
	assert_verified("Authentication-Results: " MX "; spf=pass smtp.mailfrom=bounce@example.org",
			"boss@example.org");
	assert_verified("Authentication-Results: " MX "; spf=pass smtp.mailfrom=example.org",
			"boss@example.org");
	assert_unverified("Authentication-Results: " MX "; spf=pass smtp.helo=example.org",
			  "boss@example.org");
	assert_unverified("Authentication-Results: " MX "; spf=pass smtp.mailfrom=x@bulk.example",
			  "boss@example.org");
}

static void test_two_from_headers_or_none(void **state)
{
	(void)state;
	assert_unverified("From: boss@example.org\r\nFrom: attacker@attacker.example\r\n"
			  "Authentication-Results: " MX "; dmarc=pass header.from=example.org",
			  "boss@example.org");
	assert_unverified("Authentication-Results: " MX "; dmarc=pass", NULL);
	struct auth_verdict v;
	auth_verify(NULL, "a: b\r\n\r\n", 8, "boss@example.org", &v);
	assert_false(v.verified);
	assert_non_null(strstr(v.why, "trusted_authserv"));
}

static void test_org_domain(void **state)
{
	(void)state;
	char o[256];
	auth_org_domain("a.b.Example.ORG.", o, sizeof o);
	assert_string_equal(o, "example.org");
	auth_org_domain("x.y.charity.org.uk", o, sizeof o);
	assert_string_equal(o, "charity.org.uk");
	auth_org_domain("co.uk", o, sizeof o);
	assert_string_equal(o, "co.uk");
	auth_org_domain("localhost", o, sizeof o);
	assert_string_equal(o, "localhost");
	assert_true(auth_aligned("example.org", "EXAMPLE.org"));
	assert_false(auth_aligned("", ""));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_parse_grammar),
	    cmocka_unit_test(test_pass_in_comment_or_reason_counts_nothing),
	    cmocka_unit_test(test_only_topmost_trusted_header_counts),
	    cmocka_unit_test(test_alignment),
	    cmocka_unit_test(test_two_from_headers_or_none),
	    cmocka_unit_test(test_org_domain),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
