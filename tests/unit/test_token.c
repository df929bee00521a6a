/* test_token.c — reply and unsubscribe tokens as a replying user meets
 * them: the address fits in a local part, survives case folding, names the
 * right post and person, and refuses tampering, other secrets and age; and
 * what replies_process makes of a reply carrying one. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "state_file.h"
#include <sqlite3.h>

#include "mailfeed/auth.h"
#include "mailfeed/message.h"
#include "mailfeed/notice.h"
#include "mailfeed/outbox.h"
#include "mailfeed/replies.h"
#include "mailfeed/retention.h"
#include "mailfeed/token.h"

static const unsigned char secret[32] = "0123456789abcdef0123456789abcdef";
static const unsigned char other_secret[32] = "fedcba9876543210fedcba9876543210";

struct fixture {
	char dir[64];
	char path[128];
	char secret_path[128];
	struct store *st;
	struct mf_config cfg;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof *f);
	char err[256];
	strcpy(f->dir, "/tmp/mf-token-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->path, sizeof f->path, "%s/state.db", f->dir);
	f->st = store_open(f->path, err, sizeof err);
	assert_non_null(f->st);
	f->cfg.gateway.reply_address = "feed@example.org";
	snprintf(f->secret_path, sizeof f->secret_path, "%s/secret", f->dir);
	assert_int_equal(file_write_atomic(f->secret_path, secret, sizeof secret, 0600), 0);
	f->cfg.gateway.secret_file = f->secret_path;
	/* notices are queued, never sent here (nothing listens on port 9) */
	f->cfg.smtp.present = 1;
	f->cfg.smtp.url = "smtp://127.0.0.1:9";
	f->cfg.smtp.from = "Feed <digest@example.org>";
	f->cfg.smtp.tls_verify = 1;
	f->cfg.smtp.timeout = 5;
	f->cfg.gateway.notice_max_per_hour = 20;
	f->cfg.gateway.token_lifetime = 30 * 86400L;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	store_close(f->st);
	state_file_remove(f->path);
	unlink(f->secret_path);
	rmdir(f->dir);
	free(f);
	return 0;
}

static void test_round_trip(void **state)
{
	struct fixture *f = *state;
	time_t now = 1795000000;
	struct token_info ti;
	char *tok = token_issue(f->st, secret, sizeof secret, TOKEN_REPLY, "0F9000000000001",
				"0D5000000000042", "Alice@Example.ORG", now + 86400 * 60);
	assert_non_null(tok);
	for (const char *p = tok; *p; p++)
		assert_true((*p >= 'a' && *p <= 'z') || (*p >= '2' && *p <= '7'));

	char *addr = token_address(&f->cfg, tok);
	assert_non_null(addr);
	assert_true(strncmp(addr, "feed+", 5) == 0);
	assert_true(strchr(addr, '@') - addr <= TOKEN_LOCAL_MAX);

	/* An MTA that upper-cases the local part does not break it. */
	char upper[128], found[80];
	snprintf(upper, sizeof upper, "%s", addr);
	for (char *p = upper; *p; p++)
		if (*p >= 'a' && *p <= 'z')
			*p = (char)(*p - 32);
	assert_int_equal(token_from_address(&f->cfg, upper, found, sizeof found), 1);

	assert_int_equal(token_verify(f->st, secret, sizeof secret, found, now, &ti), TOKEN_OK);
	assert_int_equal(ti.kind, TOKEN_REPLY);
	assert_string_equal(ti.grp, "0F9000000000001");
	assert_string_equal(ti.remote_id, "0D5000000000042");
	assert_string_equal(ti.email, "alice@example.org");
	token_info_clear(&ti);
	free(addr);
	free(tok);
}

static void test_refusals(void **state)
{
	struct fixture *f = *state;
	time_t now = 1795000000;
	struct token_info ti;
	char *tok = token_issue(f->st, secret, sizeof secret, TOKEN_REPLY, "g1", "post-1",
				"bob@example.org", now + 86400);
	assert_non_null(tok);

	/* another gateway's secret */
	assert_int_equal(token_verify(f->st, other_secret, sizeof other_secret, tok, now, &ti),
			 TOKEN_FORGED);
	assert_null(ti.email);
	/* any changed character */
	for (size_t i = 0; tok[i]; i++) {
		char *t = strdup(tok);
		t[i] = t[i] == 'a' ? 'b' : 'a';
		assert_int_not_equal(token_verify(f->st, secret, sizeof secret, t, now, &ti),
				     TOKEN_OK);
		token_info_clear(&ti);
		free(t);
	}
	/* cut short, garbage, empty */
	tok[strlen(tok) - 1] = 0;
	assert_int_equal(token_verify(f->st, secret, sizeof secret, tok, now, &ti), TOKEN_FORGED);
	assert_int_equal(token_verify(f->st, secret, sizeof secret, "", now, &ti), TOKEN_FORGED);
	assert_int_equal(token_verify(f->st, secret, sizeof secret, "zz!!", now, &ti),
			 TOKEN_FORGED);
	free(tok);

	/* expired: valid through the day of expiry, refused after it */
	tok = token_issue(f->st, secret, sizeof secret, TOKEN_REPLY, "g1", "post-1",
			  "bob@example.org", now);
	assert_int_equal(token_verify(f->st, secret, sizeof secret, tok, now, &ti), TOKEN_OK);
	token_info_clear(&ti);
	assert_int_equal(token_verify(f->st, secret, sizeof secret, tok, now + 2 * 86400, &ti),
			 TOKEN_EXPIRED);
	assert_string_equal(ti.email, "bob@example.org");
	token_info_clear(&ti);
	free(tok);
}

static void test_unsubscribe_and_people(void **state)
{
	struct fixture *f = *state;
	time_t now = 1795000000;
	struct token_info ti;
	char *a = token_issue(f->st, secret, sizeof secret, TOKEN_UNSUBSCRIBE, NULL, NULL,
			      "carol@example.org", now + 86400);
	char *b = token_issue(f->st, secret, sizeof secret, TOKEN_UNSUBSCRIBE, NULL, NULL,
			      "dave@example.org", now + 86400);
	assert_string_not_equal(a, b);
	assert_int_equal(token_verify(f->st, secret, sizeof secret, a, now, &ti), TOKEN_OK);
	assert_int_equal(ti.kind, TOKEN_UNSUBSCRIBE);
	assert_null(ti.remote_id);
	assert_string_equal(ti.email, "carol@example.org");
	token_info_clear(&ti);
	free(a);
	free(b);
}

static void test_address_matching(void **state)
{
	struct fixture *f = *state;
	char out[80];
	assert_int_equal(token_from_address(&f->cfg, "feed+abc@example.org", out, sizeof out), 1);
	assert_string_equal(out, "abc");
	assert_int_equal(token_from_address(&f->cfg, "<FEED+abc@Example.Org>", out, sizeof out), 1);
	assert_int_equal(token_from_address(&f->cfg, "feed@example.org", out, sizeof out), 0);
	assert_int_equal(token_from_address(&f->cfg, "feedx+abc@example.org", out, sizeof out), 0);
	assert_int_equal(token_from_address(&f->cfg, "feed+abc@example.org.evil", out, sizeof out),
			 0);
	assert_int_equal(token_from_address(&f->cfg, "other+abc@example.org", out, sizeof out), 0);

	/* a reply address that leaves too little room is refused, not cut */
	struct mf_config long_cfg = {0};
	long_cfg.gateway.reply_address =
	    "a-very-long-local-part-for-the-feed-gateway-of-this-org@example.org";
	assert_null(token_address(&long_cfg, "abcdefghijklmnopqrstuvwxyz234567"));
}

static int64_t add_message(struct fixture *f)
{
	assert_int_equal(store_exec(f->st, "INSERT INTO messages(mailbox, uidvalidity, uid, size,"
					   " sha256, received_at) VALUES('[replies]',1,"
					   " (SELECT COUNT(*)+1 FROM messages),1,'x',0)"),
			 0);
	return sqlite3_last_insert_rowid(db_sqlite_handle(store_db(f->st)));
}

static struct mf_message *reply(const char *to, const char *from, const char *subject,
				const char *text)
{
	struct mf_message *m = message_new();
	strlist_add(&m->to, to);
	m->from_email = strdup(from);
	m->from_name = strdup("Bob B");
	m->subject = strdup(subject);
	m->text = strdup(text);
	m->message_id = strdup(subject);
	return m;
}

static long count(struct fixture *f, const char *sql)
{
	struct db_stmt *s;
	long n = -1;
	s = db_prepare(store_db(f->st), sql);
	if (db_step(s) == DB_ROW)
		n = db_column_int64(s, 0);
	db_finalize(s);
	return n;
}

static const char *process(struct fixture *f, struct mf_message *m, char *reason, size_t n)
{
	const char *state = NULL;
	int64_t row = add_message(f);
	/* the header block the verdict is read from, as the mail server left it */
	char *raw = m->auth_results ? xasprintf("Authentication-Results: %s\r\nFrom: <%s>\r\n\r\n",
						m->auth_results, m->from_email)
				    : xasprintf("From: <%s>\r\n\r\n", m->from_email);
	struct auth_verdict av;
	auth_verify(f->cfg.gateway.trusted_authserv, raw, strlen(raw), m->from_email, &av);
	free(raw);
	assert_int_equal(replies_process(f->st, &f->cfg, row, m, &av, &state, reason, n), 0);
	message_free(m);
	return state;
}

static void test_replies(void **state)
{
	struct fixture *f = *state;
	char reason[300];
	time_t now = time(NULL);
	char *tok = token_issue(f->st, secret, sizeof secret, TOKEN_REPLY, "g1", "post-7",
				"bob@example.org", now + 86400);
	char *addr = token_address(&f->cfg, tok);

	/* the person the token was issued to: a comment on post-7 by bob */
	assert_string_equal(
	    process(f, reply(addr, "bob@example.org", "Re: x", "Yes."), reason, sizeof reason),
	    "queued");
	assert_int_equal(count(f,
			       "SELECT COUNT(*) FROM outbox o JOIN outbox_payloads t ON t.item=o.id"
			       " WHERE kind='comment' AND grp='g1'"
			       " AND payload LIKE '%post-7%' AND payload LIKE '%bob@example.org%'"),
			 1);
	assert_int_equal(count(f, "SELECT COUNT(*) FROM messages WHERE state='queued'"), 1);

	/* someone else using bob's address: refused; an unverified stranger
	 * is not mailed (the From may be anyone's), a subscriber is told why */
	assert_string_equal(
	    process(f, reply(addr, "mallory@example.org", "Re: y", "Hi"), reason, sizeof reason),
	    "skipped");
	assert_non_null(strstr(reason, "belongs to someone else"));
	assert_int_equal(count(f, "SELECT COUNT(*) FROM notices WHERE"
				  " address='mallory@example.org'"),
			 0);
	assert_int_equal(store_exec(f->st,
				    "INSERT INTO subscribers(email, groups, frequency, since)"
				    " VALUES('erin@example.org','g1','daily',0)"),
			 0);
	assert_string_equal(
	    process(f, reply(addr, "erin@example.org", "Re: y", "Hi"), reason, sizeof reason),
	    "skipped");
	assert_int_equal(count(f, "SELECT COUNT(*) FROM notices WHERE"
				  " address='erin@example.org' AND reason='reply-wrong-sender'"),
			 1);

	/* forged token */
	char *forged = token_address(&f->cfg, "aebqcagzv7bsqkqxmvxuwgh2y4");
	assert_string_equal(
	    process(f, reply(forged, "bob@example.org", "Re: z", "Hi"), reason, sizeof reason),
	    "skipped");
	assert_non_null(strstr(reason, "not one this feed issued"));

	/* expired token */
	char *old = token_issue(f->st, secret, sizeof secret, TOKEN_REPLY, "g1", "post-7",
				"bob@example.org", now - 3 * 86400);
	char *old_addr = token_address(&f->cfg, old);
	assert_string_equal(
	    process(f, reply(old_addr, "bob@example.org", "Re: old", "Hi"), reason, sizeof reason),
	    "skipped");
	assert_non_null(strstr(reason, "expired"));

	/* no token at all, or a forged one: never answered, even to a
	 * subscriber, since anyone can write such mail in anyone's name */
	assert_string_equal(process(f, reply("feed@example.org", "erin@example.org", "a", "Hi"),
				    reason, sizeof reason),
			    "skipped");
	assert_string_equal(
	    process(f, reply(forged, "erin@example.org", "Re: z", "Hi"), reason, sizeof reason),
	    "skipped");
	assert_int_equal(count(f, "SELECT COUNT(*) FROM notices WHERE address='erin@example.org'"),
			 1);

	/* an out-of-office answer is skipped without an answer */
	struct mf_message *ooo = reply(addr, "dave@example.org", "Out of office", "away");
	ooo->auto_reason = strdup("auto-reply: Auto-Submitted: auto-replied");
	assert_string_equal(process(f, ooo, reason, sizeof reason), "skipped");
	assert_int_equal(count(f, "SELECT COUNT(*) FROM notices WHERE address='dave@example.org'"),
			 0);
	assert_int_equal(count(f, "SELECT COUNT(*) FROM outbox"), 1);

	/* commands change the sender's subscription */
	assert_string_equal(
	    process(f, reply(addr, "bob@example.org", "weekly", ""), reason, sizeof reason),
	    "handled");
	assert_int_equal(count(f, "SELECT COUNT(*) FROM subscribers WHERE email='bob@example.org'"
				  " AND frequency='weekly' AND groups='g1'"),
			 1);
	assert_string_equal(
	    process(f, reply(addr, "bob@example.org", "Re: digest", "  Unsubscribe \n\n> quoted"),
		    reason, sizeof reason),
	    "handled");
	assert_int_equal(count(f, "SELECT COUNT(*) FROM subscribers WHERE frequency='never'"), 1);
	assert_int_equal(count(f, "SELECT COUNT(*) FROM outbox"), 1);

	/* without a trusted authserv the comment is made, but not as bob */
	assert_int_equal(count(f, "SELECT COUNT(*) FROM outbox_payloads WHERE"
				  " json_extract(payload, '$.author.verified') = 0"),
			 1);

	/* with a trusted authserv, only an aligned pass of that server is accepted */
	f->cfg.gateway.trusted_authserv = "mx.example.org";
	struct mf_message *unsigned_m = reply(addr, "bob@example.org", "Re: u", "Hello");
	unsigned_m->auth_results = strdup("evil.example; dkim=pass header.d=example.org");
	assert_string_equal(process(f, unsigned_m, reason, sizeof reason), "skipped");
	assert_non_null(strstr(reason, "no Authentication-Results of mx.example.org"));
	struct mf_message *comment_m = reply(addr, "bob@example.org", "Re: c", "Hello");
	comment_m->auth_results =
	    strdup("mx.example.org; dkim=fail (dkim=pass) header.d=example.org");
	assert_string_equal(process(f, comment_m, reason, sizeof reason), "skipped");
	struct mf_message *signed_m = reply(addr, "bob@example.org", "Re: s", "Hello");
	signed_m->auth_results = strdup("mx.example.org; spf=fail; dkim=pass header.d=example.org");
	assert_string_equal(process(f, signed_m, reason, sizeof reason), "queued");
	assert_int_equal(count(f, "SELECT COUNT(*) FROM outbox_payloads WHERE"
				  " json_extract(payload, '$.author.verified') = 1 AND"
				  " json_extract(payload, '$.author.check') LIKE '%dkim=pass%'"),
			 1);
	f->cfg.gateway.trusted_authserv = NULL;

	free(old);
	free(old_addr);
	free(forged);
	free(addr);
	free(tok);
}

/* A reply found only by In-Reply-To/References lives as long as a token
 * issued with the notification it answers; old sent ids are pruned. */
static void test_reply_by_message_id_expires(void **state)
{
	struct fixture *f = *state;
	char reason[300];
	time_t now = time(NULL);
	long life = f->cfg.gateway.token_lifetime;
	struct token_info ti = {0};
	time_t sent = 0;
	assert_int_equal(token_sent_id_record(f->st, "old@mailfeed", "g1", "post-9",
					      "bob@example.org", now - life - 3600),
			 0);
	assert_int_equal(token_sent_id_record(f->st, "new@mailfeed", "g1", "post-9",
					      "bob@example.org", now - 3600),
			 0);
	/* recorded once: a second record changes nothing */
	assert_int_equal(
	    token_sent_id_record(f->st, "new@mailfeed", NULL, NULL, "eve@example.org", now), 0);
	assert_int_equal(
	    token_sent_id_record(f->st, "digest@mailfeed", NULL, NULL, "bob@example.org", now), 0);
	assert_int_equal(token_sent_id_find(f->st, "new@mailfeed", &ti, &sent), 1);
	assert_int_equal(ti.kind, TOKEN_REPLY);
	assert_string_equal(ti.grp, "g1");
	assert_string_equal(ti.remote_id, "post-9");
	assert_string_equal(ti.email, "bob@example.org");
	assert_int_equal(sent, now - 3600);
	token_info_clear(&ti);
	assert_int_equal(token_sent_id_find(f->st, "digest@mailfeed", &ti, &sent), 1);
	assert_int_equal(ti.kind, TOKEN_UNSUBSCRIBE);
	assert_null(ti.grp);
	token_info_clear(&ti);
	assert_int_equal(token_sent_id_find(f->st, "other@mailfeed", &ti, &sent), 0);
	assert_int_equal(token_sent_id_find(f->st, NULL, &ti, &sent), 0);

	struct mf_message *m = reply("feed@example.org", "bob@example.org", "Re: old", "Late");
	m->in_reply_to = strdup("old@mailfeed");
	assert_string_equal(process(f, m, reason, sizeof reason), "skipped");
	assert_non_null(strstr(reason, "could be answered until"));
	m = reply("feed@example.org", "bob@example.org", "Re: old refs", "Late");
	strlist_add(&m->references, "old@mailfeed");
	assert_string_equal(process(f, m, reason, sizeof reason), "skipped");
	m = reply("feed@example.org", "bob@example.org", "Re: new", "In time");
	m->in_reply_to = strdup("new@mailfeed");
	assert_string_equal(process(f, m, reason, sizeof reason), "queued");

	assert_true(retention_run(f->st, 7 * 86400, life, now) >= 1);
	assert_int_equal(token_sent_id_find(f->st, "old@mailfeed", &ti, &sent), 0);
	assert_int_equal(token_sent_id_find(f->st, "new@mailfeed", &ti, &sent), 1);
	token_info_clear(&ti);
}

/* Refusal notices: a global hourly cap, and the subject quoted short and
 * without controls or bidi overrides. */
static void test_notice_cap_and_subject(void **state)
{
	struct fixture *f = *state;
	char reason[300], q[NOTICE_SUBJECT_MAX * 4 + 16];
	time_t now = time(NULL);
	char *tok = token_issue(f->st, secret, sizeof secret, TOKEN_REPLY, "g1", "post-7",
				"bob@example.org", now + 86400);
	char *addr = token_address(&f->cfg, tok);
	f->cfg.gateway.notice_max_per_hour = 3;
	f->cfg.gateway.trusted_authserv = "mx.example.org";
	for (int i = 0; i < 6; i++) {
		char from[64];
		snprintf(from, sizeof from, "user%d@example.org", i);
		struct mf_message *m = reply(addr, from, "Re: flood", "Hi");
		m->auth_results = strdup("mx.example.org; dmarc=pass header.from=example.org");
		assert_string_equal(process(f, m, reason, sizeof reason), "skipped");
	}
	assert_int_equal(count(f, "SELECT COUNT(*) FROM notices"), 3);
	/* the cap is decided when queued: three wait for the relay */
	assert_int_equal(count(f, "SELECT COUNT(*) FROM notice_queue WHERE state='pending'"), 3);
	assert_int_equal(notice_waiting(f->st), 3);
	f->cfg.gateway.trusted_authserv = NULL;

	notice_quote_subject("Pay \xe2\x80\xae"
			     "exe.pdf\r\n\tnow " /* RLO */
			     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
			     q, sizeof q);
	assert_null(strstr(q, "\xe2\x80\xae"));
	assert_null(strpbrk(q, "\r\n\t"));
	assert_true(strncmp(q, "Pay exe.pdf now aaa", 19) == 0);
	assert_non_null(strstr(q, "\xe2\x80\xa6"));
	assert_true(strlen(q) <= NOTICE_SUBJECT_MAX + 3);
	notice_quote_subject(NULL, q, sizeof q);
	assert_string_equal(q, "");
	free(addr);
	free(tok);
}

/* The key read once per configuration is what every later use gets, even
 * when the file changes or goes; without preloading the file is read. */
static void test_secret_kept_with_config(void **state)
{
	struct fixture *f = *state;
	char err[256];
	unsigned char *got = NULL;
	size_t len = 0;
	assert_int_equal(token_secret_preload(&f->cfg, err, sizeof err), 0);
	assert_int_equal(file_write_atomic(f->secret_path, other_secret, sizeof other_secret, 0600),
			 0);
	assert_int_equal(token_secret_load(&f->cfg, &got, &len, err, sizeof err), 0);
	assert_int_equal(len, sizeof secret);
	assert_memory_equal(got, secret, sizeof secret);
	free(got);
	unlink(f->secret_path);
	assert_int_equal(token_secret_load(&f->cfg, &got, &len, err, sizeof err), 0);
	assert_memory_equal(got, secret, sizeof secret);
	free(got);
	/* a reload reads it again */
	assert_int_equal(file_write_atomic(f->secret_path, other_secret, sizeof other_secret, 0600),
			 0);
	assert_int_equal(token_secret_preload(&f->cfg, err, sizeof err), 0);
	assert_int_equal(token_secret_load(&f->cfg, &got, &len, err, sizeof err), 0);
	assert_memory_equal(got, other_secret, sizeof other_secret);
	free(got);
	free(f->cfg.token_key->data);
	free(f->cfg.token_key);
	f->cfg.token_key = NULL;
	/* not preloaded: read from the file */
	assert_int_equal(token_secret_load(&f->cfg, &got, &len, err, sizeof err), 0);
	assert_memory_equal(got, other_secret, sizeof other_secret);
	free(got);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_secret_kept_with_config, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_refusals, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_unsubscribe_and_people, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_address_matching, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_replies, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_reply_by_message_id_expires, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_notice_cap_and_subject, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
