/* test_classify.c — which mail is posted and which is skipped, with the
 * reason a user sees in `status`, `dead list` and `inspect`.  Each kind is a
 * fixture under tests/fixtures/mime/ parsed by the real MIME layer. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "mailfeed/classify.h"
#include "mailfeed/convert.h"
#include "mailfeed/mime.h"

#define FIXTURES "tests/fixtures/mime/"
#define BULK                                                                                       \
	"bulk: Precedence: bulk, one-click unsubscribe, Feedback-ID or a mailing service's "       \
	"headers (set accept_bulk = yes to post)"

static struct mf_message *load(const char *name)
{
	char path[256];
	snprintf(path, sizeof path, FIXTURES "%s", name);
	size_t len;
	char *raw = file_read_all(path, &len);
	if (!raw)
		fail_msg("cannot read %s", path);
	char err[256];
	struct mf_message *m = mime_parse(raw, len, err, sizeof err);
	if (m)
		convert_message(m);
	free(raw);
	if (!m)
		fail_msg("%s: %s", path, err);
	return m;
}

/* The reason for skipping fixture name (or "post"), with mailbox mb. */
static void expect(const char *name, const struct mf_mailbox *mb, const char *want, int automatic)
{
	struct mf_message *m = load(name);
	char buf[256];
	const char *r = classify_skip(m, mb, NULL, buf, sizeof buf);
	if (strcmp(r ? r : "post", want) != 0)
		fail_msg("%s: got \"%s\", want \"%s\"", name, r ? r : "post", want);
	assert_int_equal(classify_is_automatic(m), automatic);
	message_free(m);
}

static void test_auto_replies(void **state)
{
	(void)state;
	expect("auto_submitted.eml", NULL, "auto-reply: Auto-Submitted: auto-replied", 1);
	expect("x_autoreply.eml", NULL, "auto-reply: X-Autoreply", 1);
	expect("precedence_auto_reply.eml", NULL, "auto-reply: Precedence: auto_reply", 1);
	expect("ooo_subject_en.eml", NULL, "auto-reply: out-of-office subject \"Automatic reply\"",
	       1);
	expect("ooo_subject_de.eml", NULL,
	       "auto-reply: out-of-office subject \"Abwesenheitsnotiz\"", 1);
	expect("ooo_subject_zh.eml", NULL, "auto-reply: out-of-office subject \"自动回复\"", 1);
}

static void test_humans_are_posted(void **state)
{
	(void)state;
	/* Exchange marks human replies with X-Auto-Response-Suppress */
	expect("exchange_human_reply.eml", NULL, "post", 0);
	/* a person writing about out-of-office plans */
	expect("out_of_office_human.eml", NULL, "post", 0);
	/* a team list is ordinary mail */
	expect("list_mail.eml", NULL, "post", 0);
	expect("human_reply.eml", NULL, "post", 0);
}

static void test_bounces(void **state)
{
	(void)state;
	expect("bounce_dsn.eml", NULL, "bounce: multipart/report; report-type=delivery-status", 1);
	expect("bounce_mailer_daemon.eml", NULL, "bounce: From: mailer-daemon", 1);
	expect("bounce_subject.eml", NULL, "bounce: subject \"Undeliverable:\"", 1);
}

static void test_bulk(void **state)
{
	(void)state;
	expect("bulk.eml", NULL, BULK, 1);
	struct mf_mailbox mb;
	memset(&mb, 0, sizeof mb);
	mb.accept_bulk = 1;
	expect("bulk.eml", &mb, "post", 1);
}

/* The reason for skipping a message given as text (or "post"). */
static void expect_raw(const char *raw, const char *want)
{
	char err[256], buf[300];
	struct mf_message *m = mime_parse(raw, strlen(raw), err, sizeof err);
	assert_non_null(m);
	convert_message(m);
	const char *r = classify_skip(m, NULL, NULL, buf, sizeof buf);
	if (strcmp(r ? r : "post", want) != 0)
		fail_msg("%.60s…: got \"%s\", want \"%s\"", raw, r ? r : "post", want);
	message_free(m);
}

#define HDR(from, subject, extra)                                                                  \
	"From: " from "\r\nTo: team@example.org\r\nSubject: " subject                              \
	"\r\nMessage-ID: <c1@example.org>\r\nDate: Mon, 2 Mar 2026 09:00:00 +0000\r\n" extra       \
	"\r\nSome text.\r\n"

/* Delivery reports that are not multipart/report, and delay warnings. */
static void test_nonstandard_bounces(void **state)
{
	(void)state;
	expect_raw(HDR("Mail System <system@example.org>", "Your message", "Return-Path: <>\r\n"),
		   "bounce: Return-Path: <> (null sender)");
	expect_raw(HDR("Mail System <system@example.org>", "Your message",
		       "Return-Path: <MAILER-DAEMON@mx.example.org>\r\n"),
		   "bounce: Return-Path: MAILER-DAEMON@mx.example.org");
	expect_raw(HDR("Mail System <system@example.org>", "Your message",
		       "Sender: postmaster@example.org\r\n"),
		   "bounce: Sender: postmaster@example.org");
	expect_raw(HDR("Mail System <system@example.org>", "Mail Delivery Warning", ""),
		   "bounce: subject \"Mail Delivery Warning\"");
	expect_raw(HDR("System <system@example.org>", "Delivery failed: Budget", ""),
		   "bounce: subject \"Delivery failed\"");
	expect_raw(HDR("System <system@example.org>", "Non remis : Budget", ""),
		   "bounce: subject \"Non remis\"");
	expect_raw(HDR("System <system@example.org>", "[Postmaster] Unzustellbar: Budget", ""),
		   "bounce: subject \"unzustellbar\"");
	expect_raw(HDR("System <system@example.org>",
		       "Warning: could not send message for past 4 hours", ""),
		   "bounce: subject \"Warning: could not send message\"");
	expect_raw(HDR("System <system@example.org>", "Delivery Status Notification (Delay)", ""),
		   "bounce: subject \"Delivery Status Notification\"");
	expect_raw(HDR("System <system@example.org>", "Zustellung verzögert: Budget", ""),
		   "bounce: subject \"Zustellung verzögert\"");
	/* a person asking about a failed delivery */
	expect_raw(HDR("Ann <ann@example.org>", "Re: delivery failed yesterday?", ""), "post");
	expect_raw(HDR("Ann <ann@example.org>", "Why was it undeliverable?", ""), "post");
	expect_raw(HDR("System <system@example.org>", "Warning: delivery delayed for Budget", ""),
		   "bounce: subject \"delivery delayed\"");
	/* an auto-reply with a null Return-Path stays an auto-reply */
	expect_raw(HDR("Ann <ann@example.org>", "Automatic reply: Budget",
		       "Return-Path: <>\r\nAuto-Submitted: auto-replied\r\n"),
		   "auto-reply: Auto-Submitted: auto-replied");
}

/* Newsletters and campaigns are bulk; a discussion list is not. */
static void test_marketing_and_lists(void **state)
{
	(void)state;
	expect_raw(HDR("Shop <news@shop.example>", "Our November deals",
		       "List-Unsubscribe: <https://shop.example/u/1>\r\n"
		       "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"),
		   BULK);
	expect_raw(HDR("Shop <news@shop.example>", "Our November deals",
		       "Feedback-ID: 123:campaign:esp\r\n"),
		   BULK);
	expect_raw(HDR("Shop <news@shop.example>", "Our November deals",
		       "X-Mailer: MailChimp Mailer - **CID1234**\r\n"),
		   BULK);
	expect_raw(HDR("Shop <news@shop.example>", "Our November deals",
		       "List-Id: Deals <deals.shop.example>\r\nList-Post: NO\r\n"
		       "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"),
		   BULK);
	/* discussion lists: people post to them */
	expect_raw(HDR("Ann <ann@example.org>", "[team] Budget",
		       "List-Id: Team <team.lists.example.org>\r\n"
		       "List-Post: <mailto:team@lists.example.org>\r\nPrecedence: list\r\n"
		       "List-Unsubscribe: <mailto:team-leave@lists.example.org>\r\n"
		       "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"),
		   "post");
	expect_raw(HDR("Ann <ann@example.org>", "[team] Budget",
		       "List-Id: <team.lists.example.org>\r\n"
		       "List-Post: <mailto:team@lists.example.org>\r\nPrecedence: bulk\r\n"),
		   "post");
	expect_raw(HDR("Ann <ann@example.org>", "Budget", "X-Mailer: Microsoft Outlook 16.0\r\n"),
		   "post");
}

static void test_own_mail(void **state)
{
	(void)state;
	expect("own_loop.eml", NULL, "loop: mail sent by mailfeed", 1);
	expect("own_listid.eml", NULL, "loop: mail sent by mailfeed", 1);
	expect("no_sender.eml", NULL, "no sender: the From header has no address", 1);
}

static void test_allow_senders(void **state)
{
	(void)state;
	struct mf_mailbox mb;
	memset(&mb, 0, sizeof mb);
	strlist_add(&mb.allow_senders, "partner.org");
	strlist_add(&mb.allow_senders, "ida@example.org");
	expect("human_reply.eml", &mb, "post", 0);
	expect("exchange_human_reply.eml", &mb,
	       "sender not allowed: frank@example.org (allow_senders)", 0);
	assert_true(classify_sender_allowed(&mb.allow_senders, "x@partner.org"));
	assert_true(classify_sender_allowed(&mb.allow_senders, "x@mail.partner.org"));
	assert_false(classify_sender_allowed(&mb.allow_senders, "x@notpartner.org"));
	assert_false(classify_sender_allowed(&mb.allow_senders, "x@partner.org.evil.com"));
	assert_false(classify_sender_allowed(&mb.allow_senders, "other@example.org"));
	strlist_free(&mb.allow_senders);
	assert_true(classify_sender_allowed(&mb.allow_senders, "anyone@anywhere.net"));
}

static void test_reply_parts(void **state)
{
	(void)state;
	struct mf_message *m = load("human_reply.eml");
	assert_string_equal(m->from_email, "ida@example.org");
	assert_string_equal(m->from_name, "Ida Example");
	assert_string_equal(m->in_reply_to, "p1@example.org");
	assert_non_null(strstr(m->text, "Looks good."));
	assert_null(strstr(m->text, "Please review"));
	assert_non_null(strstr(m->removed, "Please review the budget."));
	assert_true(strlist_has_ci(&m->hashtags, "approved"));
	message_free(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_auto_replies),
	    cmocka_unit_test(test_humans_are_posted),
	    cmocka_unit_test(test_bounces),
	    cmocka_unit_test(test_bulk),
	    cmocka_unit_test(test_nonstandard_bounces),
	    cmocka_unit_test(test_marketing_and_lists),
	    cmocka_unit_test(test_own_mail),
	    cmocka_unit_test(test_allow_senders),
	    cmocka_unit_test(test_reply_parts),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
