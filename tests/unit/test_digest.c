/* test_digest.c — when digests fall due (across DST changes, weekly, never
 * twice after a crash) and what the rendered email shows a subscriber
 * when the feed's content is hostile. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "state_file.h"

#include "mailfeed/claims.h"
#include "mailfeed/digest.h"
#include "mailfeed/token.h"
#include "mailfeed/util.h"

static time_t utc(int y, int mon, int d, int h, int mi)
{
	struct tm t = {
	    .tm_year = y - 1900, .tm_mon = mon - 1, .tm_mday = d, .tm_hour = h, .tm_min = mi};
	return timegm(&t);
}

/* Walks `now` in 5-minute steps over [from, to) and checks that the
 * schedule yields each expected period exactly once, first due at the
 * expected instant. */
static void check_schedule(enum frequency f, int hour, int wday, const char *tz, time_t from,
			   time_t to, const char *const *keys, const time_t *due, size_t n)
{
	char key[64], last[64] = "";
	size_t seen = 0;
	for (time_t now = from; now < to; now += 300) {
		time_t sched;
		assert_int_equal(digest_period(now, f, hour, wday, tz, key, sizeof key, &sched), 0);
		assert_true(sched <= now);
		if (strcmp(key, last) == 0)
			continue;
		if (last[0]) {
			/* a new period: it must be the next expected one, due now */
			assert_true(seen < n);
			assert_string_equal(key, keys[seen]);
			assert_int_equal(sched, due[seen]);
			assert_true(now - sched < 300);
			seen++;
		}
		snprintf(last, sizeof last, "%s", key);
	}
	assert_int_equal(seen, n);
}

static void test_daily_new_york_dst(void **state)
{
	/* 2026-03-08: 02:00 EST -> 03:00 EDT;  2026-11-01: 02:00 EDT -> 01:00 EST */
	const char *spring[] = {"d:2026-03-07", "d:2026-03-08", "d:2026-03-09"};
	const time_t spring_due[] = {utc(2026, 3, 7, 12, 0), utc(2026, 3, 8, 11, 0),
				     utc(2026, 3, 9, 11, 0)};
	check_schedule(FREQ_DAILY, 7, 1, "America/New_York", utc(2026, 3, 7, 0, 0),
		       utc(2026, 3, 10, 0, 0), spring, spring_due, 3);

	const char *fall[] = {"d:2026-10-31", "d:2026-11-01", "d:2026-11-02"};
	const time_t fall_due[] = {utc(2026, 10, 31, 11, 0), utc(2026, 11, 1, 12, 0),
				   utc(2026, 11, 2, 12, 0)};
	check_schedule(FREQ_DAILY, 7, 1, "America/New_York", utc(2026, 10, 31, 0, 0),
		       utc(2026, 11, 3, 0, 0), fall, fall_due, 3);

	/* the hour itself in the gap: 02:00 does not exist on 03-08, the
	 * digest goes at the end of the gap (03:00 EDT), not skipped */
	const char *gap[] = {"d:2026-03-08", "d:2026-03-09"};
	const time_t gap_due[] = {utc(2026, 3, 8, 7, 0), utc(2026, 3, 9, 6, 0)};
	check_schedule(FREQ_DAILY, 2, 1, "America/New_York", utc(2026, 3, 7, 12, 0),
		       utc(2026, 3, 9, 12, 0), gap, gap_due, 2);

	/* the hour that happens twice on 11-01: sent at the first 01:00 only */
	const char *twice[] = {"d:2026-11-01", "d:2026-11-02"};
	const time_t twice_due[] = {utc(2026, 11, 1, 5, 0), utc(2026, 11, 2, 6, 0)};
	check_schedule(FREQ_DAILY, 1, 1, "America/New_York", utc(2026, 10, 31, 12, 0),
		       utc(2026, 11, 2, 12, 0), twice, twice_due, 2);
}

static void test_daily_berlin_dst(void **state)
{
	/* 2026-03-29 02:00 CET -> 03:00 CEST; 2026-10-25 03:00 CEST -> 02:00 CET */
	const char *spring[] = {"d:2026-03-29", "d:2026-03-30"};
	const time_t spring_due[] = {utc(2026, 3, 29, 1, 0), utc(2026, 3, 30, 0, 0)};
	check_schedule(FREQ_DAILY, 2, 1, "Europe/Berlin", utc(2026, 3, 28, 12, 0),
		       utc(2026, 3, 30, 12, 0), spring, spring_due, 2);

	const char *fall[] = {"d:2026-10-25", "d:2026-10-26"};
	const time_t fall_due[] = {utc(2026, 10, 25, 0, 0), utc(2026, 10, 26, 1, 0)};
	check_schedule(FREQ_DAILY, 2, 1, "Europe/Berlin", utc(2026, 10, 24, 12, 0),
		       utc(2026, 10, 26, 12, 0), fall, fall_due, 2);
}

static void test_weekly(void **state)
{
	/* Mondays 07:00 Berlin: CEST before 2026-10-25, CET after */
	const char *keys[] = {"w:2026-W43", "w:2026-W44", "w:2026-W45"};
	const time_t due[] = {utc(2026, 10, 19, 5, 0), utc(2026, 10, 26, 6, 0),
			      utc(2026, 11, 2, 6, 0)};
	check_schedule(FREQ_WEEKLY, 7, 1, "Europe/Berlin", utc(2026, 10, 15, 0, 0),
		       utc(2026, 11, 5, 0, 0), keys, due, 3);

	char key[64];
	time_t sched;
	assert_int_equal(digest_period(0, FREQ_EACH, 7, 1, "UTC", key, sizeof key, &sched), -1);
	assert_int_equal(digest_period(0, FREQ_DAILY, 7, 1, "Not/AZone", key, sizeof key, &sched),
			 -1);
	assert_int_equal(
	    digest_period(0, FREQ_DAILY, 7, 1, "../../etc/passwd", key, sizeof key, &sched), -1);
}

/* --- rendering and runs ------------------------------------------- */

struct fixture {
	char dir[64];
	char path[128];
	char secret_path[128];
	struct store *st;
	struct mf_config cfg;
};

static const unsigned char secret[32] = "0123456789abcdef0123456789abcdef";

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof *f);
	char err[256];
	strcpy(f->dir, "/tmp/mf-digest-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->path, sizeof f->path, "%s/state.db", f->dir);
	snprintf(f->secret_path, sizeof f->secret_path, "%s/secret", f->dir);
	assert_int_equal(file_write_atomic(f->secret_path, secret, sizeof secret, 0600), 0);
	f->st = store_open(f->path, err, sizeof err);
	assert_non_null(f->st);
	f->cfg.gateway.reply_address = "feed@example.org";
	f->cfg.gateway.secret_file = f->secret_path;
	f->cfg.gateway.token_lifetime = 60L * 86400;
	f->cfg.smtp.present = 1;
	/* nothing listens on port 9 of loopback: every send fails at once */
	f->cfg.smtp.url = "smtp://127.0.0.1:9";
	f->cfg.smtp.from = "Feed digest <digest@example.org>";
	f->cfg.smtp.timeout = 5;
	f->cfg.smtp.tls_verify = 1;
	f->cfg.digest.hour = 7;
	f->cfg.digest.timezone = "UTC";
	f->cfg.digest.weekly_day = 1;
	f->cfg.digest.max_items = 50;
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

static struct feed_entry entry(const char *id, const char *parent, const char *subject,
			       const char *text, time_t created)
{
	struct feed_entry e = {0};
	e.remote_id = (char *)id;
	e.parent_remote_id = (char *)parent;
	e.group = (char *)"g1";
	e.author_name = (char *)"Ann \"A\" <ann@x>";
	e.author_email = (char *)"ann@example.org";
	e.subject = (char *)subject;
	e.text = (char *)text;
	e.created = created;
	return e;
}

static void assert_lines_sane(const char *data)
{
	/* every line ends in CRLF, none over 998 octets, headers ASCII */
	const char *p = data;
	int in_headers = 1;
	while (*p) {
		const char *nl = strchr(p, '\n');
		assert_non_null(nl);
		assert_true(nl > p ? nl[-1] == '\r' : 0);
		assert_true(nl - p <= 1000);
		if (in_headers) {
			for (const char *q = p; q < nl; q++)
				assert_true((unsigned char)*q < 0x80);
			if (nl - p == 1)
				in_headers = 0;
		}
		p = nl + 1;
	}
}

static void test_render_hostile(void **state)
{
	struct fixture *f = *state;
	char long_line[3000];
	memset(long_line, 'x', sizeof long_line - 1);
	long_line[sizeof long_line - 1] = 0;
	struct feed_entry e[] = {
	    entry("p1", NULL, "Old\r\nBcc: victim@example.org", "first post", 1000),
	    entry("p2", NULL,
		  "<script>alert(1)</script> \xd7\xa9\xd7\x9c\xd7\x95\xd7\x9d \xf0\x9f\x8e\x89",
		  "<b>bold</b> & \"quotes\"\nRTL: \xd9\x85\xd8\xb1\xd8\xad\xd8\xa8\xd8\xa7 emoji "
		  "\xf0\x9f\x98\x80",
		  2000),
	    entry("c1", "p1", NULL, "a comment on the old post", 3000),
	    entry("p3", NULL, "long", long_line, 1500),
	};
	struct digest_group g = {.label = "fund<raising>", .gid = "g1", .entries = e, .n = 4};
	struct digest_mail m;

	assert_int_equal(digest_render(f->st, &f->cfg, secret, sizeof secret, "bob@example.org",
				       NULL, "2026-11-23", &g, 1, 5000, &m),
			 0);
	assert_lines_sane(m.data);
	/* no header injection: the CR/LF of the subject went away */
	assert_null(strstr(m.data, "\r\nBcc:"));
	assert_null(strstr(m.text, "\nBcc:"));
	assert_non_null(strstr(m.text, "Old Bcc: victim@example.org"));
	/* HTML is escaped in the HTML part, kept as text in the plain part */
	assert_null(strstr(m.html, "<script>"));
	assert_non_null(strstr(m.html, "&lt;script&gt;alert(1)&lt;/script&gt;"));
	assert_non_null(strstr(m.html, "&lt;b&gt;bold&lt;/b&gt; &amp; &quot;quotes&quot;"));
	assert_non_null(strstr(m.html, "fund&lt;raising&gt;"));
	assert_non_null(strstr(m.text, "<b>bold</b> & \"quotes\""));
	/* RTL and emoji intact */
	assert_non_null(strstr(m.text, "RTL: \xd9\x85\xd8\xb1\xd8\xad\xd8\xa8\xd8\xa7 emoji "
				       "\xf0\x9f\x98\x80"));
	assert_non_null(strstr(m.html, "\xf0\x9f\x8e\x89"));
	/* newest threads first: p1 has the newest comment (3000), then p2, p3 */
	const char *a = strstr(m.text, "* Old"), *b = strstr(m.text, "* <script>"),
		   *c = strstr(m.text, "* long");
	assert_true(a && b && c && a < b && b < c);
	/* the long line is cut, not lost in a broken header */
	assert_non_null(strstr(m.text, "xxx \xe2\x80\xa6"));
	/* one reply link per post, to a token address, with a Re: subject */
	assert_non_null(strstr(m.text, "mailto:feed+"));
	assert_non_null(strstr(m.text, "?subject=Re%3A%20long"));
	/* headers */
	assert_non_null(strstr(m.data, "\r\nAuto-Submitted: auto-generated\r\n"));
	assert_non_null(strstr(m.data, "\r\nX-Auto-Response-Suppress: All\r\n"));
	assert_non_null(strstr(m.data, "\r\nList-Id: <mailfeed.example.org>\r\n"));
	assert_non_null(strstr(m.data, "\r\nList-Unsubscribe: <mailto:feed+"));
	assert_non_null(strstr(m.data, "?subject=unsubscribe>\r\n"));
	assert_non_null(strstr(m.data, "\r\nSubject: =?UTF-8?B?"));
	assert_non_null(strstr(m.data, "Content-Type: multipart/alternative"));
	assert_string_equal(m.subject, "Digest: fund<raising> \xe2\x80\x94 2026-11-23");
	digest_mail_free(&m);
}

/* Files of a post and a comment: a line each in the text (name, size for
 * people, link), a list in HTML where only web links become links and a
 * hostile name stays text. */
static void test_render_files(void **state)
{
	struct fixture *f = *state;
	struct feed_entry e[] = {
	    entry("p1", NULL, "Board pack", "attached", 1000),
	    entry("c1", "p1", NULL, "and one more", 2000),
	};
	struct feed_file pf[] = {
	    {(char *)"q3.pdf", 48211, (char *)"https://files.example.org/q3.pdf"},
	    {(char *)"<img src=x onerror=alert(1)>.png", 3 * 1024 * 1024 + 200000,
	     (char *)"javascript:alert(1)"},
	};
	struct feed_file cf[] = {{(char *)"minutes.txt", 812, NULL}, {(char *)"one.bin", 1, NULL}};
	e[0].files = pf;
	e[0].n_files = 2;
	e[1].files = cf;
	e[1].n_files = 2;
	struct digest_group g = {.label = "team", .gid = "g1", .entries = e, .n = 2};
	struct digest_mail m;
	assert_int_equal(digest_render(f->st, &f->cfg, secret, sizeof secret, "bob@example.org",
				       NULL, "2026-11-23", &g, 1, 5000, &m),
			 0);
	assert_lines_sane(m.data);
	assert_non_null(
	    strstr(m.text, "    Files: q3.pdf (47 KB) https://files.example.org/q3.pdf\n"));
	assert_non_null(strstr(m.text, "           <img src=x onerror=alert(1)>.png (3.2 MB) "
				       "javascript:alert(1)\n"));
	assert_non_null(strstr(m.text, "      Files: minutes.txt (812 bytes)\n"));
	assert_non_null(strstr(m.text, "             one.bin (1 byte)\n"));
	assert_non_null(strstr(m.html, "<li><a href=\"https://files.example.org/q3.pdf\""));
	assert_null(strstr(m.html, "href=\"javascript"));
	assert_null(strstr(m.html, "<img"));
	assert_non_null(strstr(m.html, "<li>&lt;img src=x onerror=alert(1)&gt;.png "));
	digest_mail_free(&m);
}

/* The token of the one-click link in m's List-Unsubscribe, checked. */
static void assert_one_click(struct fixture *f, const char *data, time_t now)
{
	const char *pfx = "\r\nList-Unsubscribe: <https://mail.example.org/feed/unsubscribe/";
	const char *p = strstr(data, pfx);
	assert_non_null(p);
	p += strlen(pfx);
	const char *end = strchr(p, '>');
	assert_non_null(end);
	char tok[80];
	assert_true(end - p > 0 && (size_t)(end - p) < sizeof tok);
	memcpy(tok, p, (size_t)(end - p));
	tok[end - p] = 0;
	/* the https link first, then the mailto: one, folded */
	assert_int_equal(strncmp(end, ">,\r\n <mailto:feed+", strlen(">,\r\n <mailto:feed+")), 0);
	assert_non_null(strstr(data, "?subject=unsubscribe>\r\n"
				     "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"));
	struct token_info ti;
	assert_int_equal(token_verify(f->st, secret, sizeof secret, tok, now, &ti), TOKEN_OK);
	assert_int_equal(ti.kind, TOKEN_UNSUBSCRIBE);
	assert_string_equal(ti.email, "bob@example.org");
	token_info_clear(&ti);
	assert_lines_sane(data);
}

/* [digest] public_url adds the RFC 8058 one-click link to digests and
 * notifications; without it there is only the mailto: link and no
 * List-Unsubscribe-Post. */
static void test_render_one_click(void **state)
{
	struct fixture *f = *state;
	struct feed_entry e[] = {entry("p1", NULL, "Hello", "first post", 1000)};
	struct digest_group g = {.label = "fundraising", .gid = "g1", .entries = e, .n = 1};
	struct digest_mail m;

	assert_int_equal(digest_render(f->st, &f->cfg, secret, sizeof secret, "bob@example.org",
				       NULL, "2026-11-23", &g, 1, 5000, &m),
			 0);
	assert_non_null(strstr(m.data, "\r\nList-Unsubscribe: <mailto:feed+"));
	assert_null(strstr(m.data, "List-Unsubscribe-Post"));
	assert_null(strstr(m.data, "https://"));
	digest_mail_free(&m);

	f->cfg.digest.public_url = "https://mail.example.org/feed/";
	assert_int_equal(digest_render(f->st, &f->cfg, secret, sizeof secret, "Bob@Example.org",
				       NULL, "2026-11-23", &g, 1, 5000, &m),
			 0);
	assert_one_click(f, m.data, 5000);
	/* the footer links the page with the button, not the mailto: */
	assert_non_null(strstr(m.text, "Unsubscribe: https://mail.example.org/feed/unsubscribe/"));
	assert_non_null(strstr(m.html, "<a href=\"https://mail.example.org/feed/unsubscribe/"));
	digest_mail_free(&m);

	f->cfg.digest.public_url = "https://mail.example.org/feed";
	assert_int_equal(digest_render_notification(f->st, &f->cfg, secret, sizeof secret,
						    "bob@example.org", NULL, "fundraising", &e[0],
						    5000, &m),
			 0);
	assert_one_click(f, m.data, 5000);
	digest_mail_free(&m);
	f->cfg.digest.public_url = NULL;
}

/* Bidi overrides in a post's subject, author or text, which make a line
 * read differently from what it says, never reach the digest. */
static void test_render_bidi(void **state)
{
	struct fixture *f = *state;
	static const char *const bidi[] = {"\xe2\x80\xae", "\xe2\x80\xab", "\xe2\x81\xa6",
					   "\xe2\x81\xa9"};
	struct feed_entry e[] = {entry("p1", NULL,
				       "Invoice \xe2\x80\xae"
				       "fdp.exe",
				       "Open \xe2\x81\xa6"
				       "this\xe2\x81\xa9 now",
				       1000)};
	e[0].author_name = (char *)"Eve \xe2\x80\xab"
				   "Admin";
	struct digest_group g = {.label = "team", .gid = "g1", .entries = e, .n = 1};
	struct digest_mail m;

	assert_int_equal(digest_render(f->st, &f->cfg, secret, sizeof secret, "bob@example.org",
				       NULL, "2026-11-23", &g, 1, 5000, &m),
			 0);
	for (size_t i = 0; i < 4; i++) {
		assert_null(strstr(m.text, bidi[i]));
		assert_null(strstr(m.html, bidi[i]));
	}
	assert_non_null(strstr(m.text, "Invoice fdp.exe"));
	assert_non_null(strstr(m.text, "Open this now"));
	assert_non_null(strstr(m.text, "Eve Admin"));
	digest_mail_free(&m);
}

static void test_render_cap(void **state)
{
	struct fixture *f = *state;
	struct feed_entry e[6];
	char ids[6][16];
	for (int i = 0; i < 6; i++) {
		snprintf(ids[i], sizeof ids[i], "p%d", i);
		e[i] = entry(ids[i], NULL, ids[i], "text", 100 + i);
	}
	struct digest_group g = {.label = "g", .gid = "g1", .entries = e, .n = 6};
	struct digest_mail m;
	f->cfg.digest.max_items = 4;
	assert_int_equal(digest_render(f->st, &f->cfg, secret, sizeof secret, "bob@example.org",
				       NULL, "2026-11-23", &g, 1, 5000, &m),
			 0);
	assert_non_null(strstr(m.text, "and 2 more"));
	assert_non_null(strstr(m.text, "* p5"));
	assert_null(strstr(m.text, "* p1\n"));
	digest_mail_free(&m);
}

/* A fake feed: two posts in g1 after the subscription. */
static int fake_calls;
static int fake_read_group(void *ctx, const char *group, time_t since, struct feed_entry **entries,
			   size_t *n, char *err, size_t errlen)
{
	fake_calls++;
	*entries = xcalloc(2, sizeof **entries);
	*n = 2;
	for (int i = 0; i < 2; i++) {
		struct feed_entry *e = &(*entries)[i];
		e->remote_id = xasprintf("post-%d", i);
		e->group = xstrdup(group);
		e->subject = xstrdup("hello");
		e->text = xstrdup("body");
		e->created = since + 10 + i;
	}
	return 0;
}
static const struct feed_backend_ops fake_ops = {.name = "fake", .read_group = fake_read_group};

static const char *run_row(struct store *st, const char *period)
{
	static char out[32];
	struct db_stmt *s;
	out[0] = 0;
	s = db_prepare(store_db(st), "SELECT state FROM digest_runs WHERE period=?");
	db_bind_text(s, 1, period, -1);
	if (db_step(s) == DB_ROW)
		snprintf(out, sizeof out, "%s", db_column_text(s, 0));
	db_finalize(s);
	return out;
}

static void test_run_at_most_once(void **state)
{
	struct fixture *f = *state;
	time_t sub_time = utc(2026, 11, 22, 12, 0), now = utc(2026, 11, 23, 8, 0);
	char sql[256];
	snprintf(sql, sizeof sql,
		 "INSERT INTO subscribers(email, groups, frequency, since) VALUES"
		 "('bob@example.org','g1','daily',%lld)",
		 (long long)sub_time);
	assert_int_equal(store_exec(f->st, sql), 0);

	/* the relay is down: nothing recorded as sent, the period stays open */
	fake_calls = 0;
	assert_int_equal(digest_run(f->st, &f->cfg, &fake_ops, NULL, now, 0, NULL), -1);
	assert_int_equal(fake_calls, 1);
	assert_string_equal(run_row(f->st, "d:2026-11-23"), "");

	/* a crash between recording and the relay's answer left 'sending':
	 * the period is never tried again */
	assert_int_equal(store_exec(f->st,
				    "INSERT INTO digest_runs(email, period, state, at) VALUES"
				    "('bob@example.org','d:2026-11-23','sending',0)"),
			 0);
	fake_calls = 0;
	assert_int_equal(digest_run(f->st, &f->cfg, &fake_ops, NULL, now, 0, NULL), 0);
	assert_int_equal(fake_calls, 0);
	assert_string_equal(run_row(f->st, "d:2026-11-23"), "maybe-sent");
	/* only what the relay accepted counts as sent */
	assert_int_equal(digest_sent_total(f->st), 0);
	assert_int_equal(store_exec(f->st,
				    "INSERT INTO digest_runs(email, period, state, at) VALUES"
				    "('bob@example.org','d:2026-11-20','sent',0),"
				    "('bob@example.org','d:2026-11-21','sent',0)"),
			 0);
	assert_int_equal(digest_sent_total(f->st), 2);
	assert_int_equal(digest_run(f->st, &f->cfg, &fake_ops, NULL, now + 3600, 0, NULL), 0);
	assert_int_equal(fake_calls, 0);

	/* before the subscriber's hour nothing is due for a subscription
	 * made after yesterday's moment */
	assert_int_equal(store_exec(f->st, "DELETE FROM digest_runs"), 0);
	fake_calls = 0;
	assert_int_equal(
	    digest_run(f->st, &f->cfg, &fake_ops, NULL, utc(2026, 11, 23, 6, 0), 0, NULL), 0);
	assert_int_equal(fake_calls, 0);
}

/* A claim row for bob's period of 2026-11-23 as another instance left it:
 * state, claimer, deadline relative to the database's clock (ms). */
static void put_claim(struct store *st, const char *state, const char *by, long long until_ms)
{
	char sql[512];
	assert_int_equal(store_exec(st, "DELETE FROM digest_runs"), 0);
	snprintf(sql, sizeof sql,
		 "INSERT INTO digest_runs(email, period, state, at, claimed_by, claim_until)"
		 " VALUES('bob@example.org','d:2026-11-23','%s',0,'%s',%s + %lld)",
		 state, by, CLAIMS_NOW_SQLITE, until_ms);
	assert_int_equal(store_exec(st, sql), 0);
}

static const char *claimer(struct store *st)
{
	static char out[300];
	struct db_stmt *s = db_prepare(store_db(st), "SELECT claimed_by FROM digest_runs");
	out[0] = 0;
	if (db_step(s) == DB_ROW && db_column_text(s, 0))
		snprintf(out, sizeof out, "%s", db_column_text(s, 0));
	db_finalize(s);
	return out;
}

/* "<this host>:<pid of a process that has ended>" */
static char *dead_local_claimer(void)
{
	char host[256] = "";
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(0);
	assert_int_equal(waitpid(pid, NULL, 0), pid);
	gethostname(host, sizeof host - 1);
	return xasprintf("%s:%ld:0badc0de", host, (long)pid);
}

/* Two instances (two connections with their own instance ids) and the
 * claims on a period: one claimer composes and sends it; a live claim is
 * left alone; a claim whose claimer stopped before recording is taken
 * over (it delivered nothing); a 'sending' row whose claimer stopped may
 * have reached the relay and is never sent again. */
static void test_run_claims(void **state)
{
	struct fixture *f = *state;
	time_t sub_time = utc(2026, 11, 22, 12, 0), now = utc(2026, 11, 23, 8, 0);
	char sql[256], err[256];
	char *dead = dead_local_claimer();
	struct store *b = store_open(f->path, err, sizeof err);
	assert_non_null(b);
	snprintf(sql, sizeof sql,
		 "INSERT INTO subscribers(email, groups, frequency, since) VALUES"
		 "('bob@example.org','g1','daily',%lld)",
		 (long long)sub_time);
	assert_int_equal(store_exec(f->st, sql), 0);
	store_set_instance_id("instance-b.example:1:b");

	/* another instance (another host) is composing the digest: skipped */
	put_claim(f->st, "claimed", "instance-a.example:1:a", 600000);
	fake_calls = 0;
	assert_int_equal(digest_run(b, &f->cfg, &fake_ops, NULL, now, 0, NULL), 0);
	assert_int_equal(fake_calls, 0);
	assert_string_equal(run_row(f->st, "d:2026-11-23"), "claimed");
	assert_string_equal(claimer(f->st), "instance-a.example:1:a");

	/* its deadline passed: taken over and composed (the relay is down
	 * here, so the claim is given up again for the next run) */
	put_claim(f->st, "claimed", "instance-a.example:1:a", -1000);
	fake_calls = 0;
	assert_int_equal(digest_run(b, &f->cfg, &fake_ops, NULL, now, 0, NULL), -1);
	assert_int_equal(fake_calls, 1);
	assert_string_equal(run_row(f->st, "d:2026-11-23"), "");

	/* a claimer of this host that was killed: taken over at once */
	put_claim(f->st, "claimed", dead, 600000);
	fake_calls = 0;
	assert_int_equal(digest_run(b, &f->cfg, &fake_ops, NULL, now, 0, NULL), -1);
	assert_int_equal(fake_calls, 1);
	assert_string_equal(run_row(f->st, "d:2026-11-23"), "");

	/* recorded by a live instance, waiting for the relay's answer: left */
	put_claim(f->st, "sending", "instance-a.example:1:a", 600000);
	fake_calls = 0;
	assert_int_equal(digest_run(b, &f->cfg, &fake_ops, NULL, now, 0, NULL), 0);
	assert_int_equal(fake_calls, 0);
	assert_string_equal(run_row(f->st, "d:2026-11-23"), "sending");
	/* ... its claimer stopped (deadline passed, or killed here): maybe
	 * delivered, never sent again */
	put_claim(f->st, "sending", "instance-a.example:1:a", -1000);
	assert_int_equal(digest_run(b, &f->cfg, &fake_ops, NULL, now, 0, NULL), 0);
	assert_string_equal(run_row(f->st, "d:2026-11-23"), "maybe-sent");
	put_claim(f->st, "sending", dead, 600000);
	assert_int_equal(digest_run(b, &f->cfg, &fake_ops, NULL, now, 0, NULL), 0);
	assert_int_equal(fake_calls, 0);
	assert_string_equal(run_row(f->st, "d:2026-11-23"), "maybe-sent");

	/* this instance's own live claim (another run of this process) is
	 * not taken by a second connection of it either */
	put_claim(f->st, "claimed", store_instance(b), 600000);
	assert_int_equal(digest_run(f->st, &f->cfg, &fake_ops, NULL, now, 0, NULL), 0);
	assert_int_equal(fake_calls, 0);
	assert_string_equal(run_row(f->st, "d:2026-11-23"), "claimed");

	store_set_instance_id(NULL);
	store_close(b);
	free(dead);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_daily_new_york_dst),
	    cmocka_unit_test(test_daily_berlin_dst),
	    cmocka_unit_test(test_weekly),
	    cmocka_unit_test_setup_teardown(test_render_hostile, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_render_bidi, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_render_files, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_render_one_click, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_render_cap, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_run_at_most_once, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_run_claims, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
