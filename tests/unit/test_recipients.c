/* test_recipients.c — which To/Cc addresses of a mail may become mentions:
 * people only (not the sender, not the gateway's own mailboxes), each once,
 * at most 25.  Messages go through the real MIME layer. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "mailfeed/convert.h"
#include "mailfeed/mime.h"
#include "mailfeed/recipients.h"

static struct mf_message *parse(const char *headers)
{
	char *raw = xasprintf("%s\r\nSubject: Q3 appeal\r\nMessage-ID: <q3@example.org>\r\n"
			      "\r\nThe draft is ready.\r\n",
			      headers);
	char err[256];
	struct mf_message *m = mime_parse(raw, strlen(raw), err, sizeof err);
	if (m)
		convert_message(m);
	free(raw);
	if (!m)
		fail_msg("parse: %s", err);
	return m;
}

/* The candidates of headers as "a,b,c". */
static char *candidates(const struct mf_config *cfg, const char *headers, const char *author)
{
	struct mf_message *m = parse(headers);
	struct strlist out = {0};
	recipients_mentionable(cfg, m, author, &out);
	struct buf b;
	buf_init(&b);
	for (size_t i = 0; i < out.n; i++)
		buf_printf(&b, "%s%s", i ? "," : "", out.v[i]);
	strlist_free(&out);
	message_free(m);
	return buf_steal(&b);
}

static void expect(const struct mf_config *cfg, const char *headers, const char *author,
		   const char *want)
{
	char *got = candidates(cfg, headers, author);
	if (strcmp(got, want) != 0)
		fail_msg("got \"%s\", want \"%s\"", got, want);
	free(got);
}

static void test_to_then_cc_each_once(void **state)
{
	(void)state;
	expect(NULL,
	       "From: Dave <dave@example.org>\r\n"
	       "To: \"Example, Alice\" <Alice@Example.org>, bob@example.org\r\n"
	       "Cc: carol@example.org, ALICE@example.org, Bob <BOB@EXAMPLE.ORG>\r\n"
	       "Cc: erin@example.net",
	       NULL, "alice@example.org,bob@example.org,carol@example.org,erin@example.net");
}

static void test_sender_is_left_out(void **state)
{
	(void)state;
	/* From, Reply-To and the author given (a reply's subscriber) */
	expect(NULL,
	       "From: Dave <Dave@example.org>\r\n"
	       "Reply-To: dave.private@example.net\r\n"
	       "To: dave@example.org, dave.private@example.net, frank@example.org, "
	       "bob@example.org",
	       "frank@example.org", "bob@example.org");
}

static void test_gateway_addresses_are_left_out(void **state)
{
	(void)state;
	struct mf_config cfg;
	memset(&cfg, 0, sizeof cfg);
	cfg.gateway.reply_address = "feed@example.org";
	cfg.smtp.from = "Mailfeed Digest <digest@example.org>";
	struct mf_account accts[2];
	memset(accts, 0, sizeof accts);
	accts[0].username = "Fundraising@example.org";
	accts[1].username = "board-login"; /* a login that is no address */
	cfg.accounts = accts;
	cfg.n_accounts = 2;
	const char *h =
	    "From: dave@example.org\r\n"
	    "Delivered-To: team-list@example.org\r\n"
	    "X-Original-To: all-staff@example.org\r\n"
	    "To: fundraising@example.org, team-list@example.org, all-staff@example.org\r\n"
	    "Cc: feed@example.org, FEED+abc123@example.org, digest@example.org,\r\n"
	    " feed@other.example, board-login@example.org, bob@example.org";
	/* feed@ of another domain and a login that only looks similar stay */
	expect(&cfg, h, NULL, "feed@other.example,board-login@example.org,bob@example.org");
	assert_true(recipients_is_gateway(&cfg, "Feed+x@EXAMPLE.org"));
	assert_true(recipients_is_gateway(&cfg, "feed@example.org"));
	assert_false(recipients_is_gateway(&cfg, "feeds@example.org"));
	assert_false(recipients_is_gateway(&cfg, "feed@example.net"));
	assert_false(recipients_is_gateway(NULL, "feed@example.org"));
}

static void test_unusable_addresses_are_left_out(void **state)
{
	(void)state;
	expect(NULL,
	       "From: dave@example.org\r\n"
	       "To: undisclosed-recipients:;\r\n"
	       "Cc: MAILER-DAEMON, @example.org, bob@, team: carol@example.org, x@y@z;",
	       NULL, "carol@example.org");
	/* what a hand-made message could hold */
	struct mf_message *m = message_new();
	strlist_add(&m->to, "a b@example.org");
	strlist_add(&m->to, "a\"b@example.org");
	strlist_add(&m->to, "a<b@example.org");
	strlist_add(&m->cc, "ok@example.org");
	struct strlist out = {0};
	recipients_mentionable(NULL, m, NULL, &out);
	assert_int_equal(out.n, 1);
	assert_string_equal(out.v[0], "ok@example.org");
	strlist_free(&out);
	message_free(m);
}

static void test_at_most_25(void **state)
{
	(void)state;
	struct buf h, want;
	buf_init(&h);
	buf_init(&want);
	buf_puts(&h, "From: dave@example.org\r\nTo: ");
	for (int i = 0; i < 40; i++) {
		buf_printf(&h, "%suser%02d@example.org", i ? ",\r\n " : "", i);
		if (i < RECIPIENTS_MAX)
			buf_printf(&want, "%suser%02d@example.org", i ? "," : "", i);
	}
	buf_puts(&h, "\r\nCc: late@example.org");
	expect(NULL, h.data, NULL, want.data);
	/* duplicates and exclusions do not use up places */
	buf_reset(&h);
	buf_puts(&h, "From: dave@example.org\r\nTo: ");
	for (int i = 0; i < 30; i++)
		buf_printf(&h, "dave@example.org, user00@example.org,\r\n ");
	buf_puts(&h, "last@example.org");
	expect(NULL, h.data, NULL, "user00@example.org,last@example.org");
	buf_free(&h);
	buf_free(&want);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_to_then_cc_each_once),
	    cmocka_unit_test(test_sender_is_left_out),
	    cmocka_unit_test(test_gateway_addresses_are_left_out),
	    cmocka_unit_test(test_unusable_addresses_are_left_out),
	    cmocka_unit_test(test_at_most_25),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
