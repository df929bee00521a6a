/* notice.c — the short explanation a human sender gets when mailfeed did
 * not do what their mail asked (not allowed, reply refused) or did it
 * (subscription changed).  Rate-limited to one per address, reason and UTC
 * day through the notices table (this module's alone) and composed into
 * notice_queue.c's queue (notice_queue_add) in the same commit; never sent to
 * addresses that cannot or must not answer.  All notices together are capped per hour
 * ([gateway] notice_max_per_hour), and a refusal goes only to a sender the
 * mail server vouched for or to a known subscriber, so forged mail cannot
 * turn the gateway into a source of backscatter. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mailfeed/compose.h"
#include "mailfeed/log.h"
#include "mailfeed/notice.h"
#include "mailfeed/subscribers.h"
#include "mailfeed/token.h"
#include "mailfeed/util.h"

int notice_address_refused(const struct mf_config *cfg, const char *addr)
{
	static const char *const robots[] = {
	    "mailer-daemon", "postmaster",   "noreply", "no-reply", "no_reply", "donotreply",
	    "do-not-reply",  "do_not_reply", "bounce",	"bounces",  "listserv", "majordomo"};
	char local[128], tok[80];
	const char *at;
	size_t n;

	if (!addr || !*addr || strpbrk(addr, "\r\n<> \t\"") || !(at = strrchr(addr, '@')))
		return 1;
	if (at == addr || !at[1])
		return 1;
	n = (size_t)(at - addr);
	if (n >= sizeof local)
		return 1;
	memcpy(local, addr, n);
	local[n] = 0;
	str_lower(local);
	for (size_t i = 0; i < sizeof robots / sizeof robots[0]; i++) {
		size_t rl = strlen(robots[i]);
		/* "noreply", "noreply-billing", "bounces+x" … */
		if (strncmp(local, robots[i], rl) == 0 &&
		    (local[rl] == 0 || strchr("-+._", local[rl])))
			return 1;
	}
	if (cfg->gateway.reply_address && (strcasecmp(addr, cfg->gateway.reply_address) == 0 ||
					   token_from_address(cfg, addr, tok, sizeof tok)))
		return 1;
	char *from = compose_address_of(cfg->smtp.from);
	int own = from && strcasecmp(from, addr) == 0;
	free(from);
	return own;
}

/* Notices recorded since `since`, or -1. */
static long notices_since(struct store *st, time_t since)
{
	struct db_stmt *s;
	long n = -1;
	if (!(s = db_prepare(store_db(st), "SELECT COUNT(*) FROM notices WHERE at >= ?")))
		return -1;
	db_bind_int64(s, 1, (int64_t)since);
	if (db_step(s) == DB_ROW)
		n = db_column_int64(s, 0);
	db_finalize(s);
	return n;
}

/* Ends what notice_queue_mail began: the savepoint inside the caller's
 * transaction, or a transaction of its own. */
static int queue_end(struct store *st, int nested, int commit)
{
	if (nested) {
		if (!commit)
			store_exec(st, "ROLLBACK TO notice");
		return store_exec(st, "RELEASE notice") < 0 || !commit ? -1 : 0;
	}
	if (!commit) {
		store_rollback(st);
		return -1;
	}
	return store_commit(st);
}

/* Records (to, reason, day) and queues the composed mail, inside the
 * caller's open transaction when there is one (so that the notice and the
 * message's verdict are kept or lost together), else in one of its own.
 * 1 queued, 0 already recorded today, 2 the hourly cap is reached, -1
 * error. */
static int notice_queue_mail(struct store *st, const char *to, const char *reason_key, time_t now,
			     int max_per_hour, const struct buf *mail)
{
	struct db_stmt *s;
	char day[32];
	int rc, nested = db_in_transaction(store_db(st));
	time_iso(now, day, sizeof day);
	day[10] = 0;
	if ((nested ? store_exec(st, "SAVEPOINT notice") : store_begin(st)) < 0)
		return -1;
	long recent = notices_since(st, now - 3600);
	if (recent < 0)
		return queue_end(st, nested, 0);
	if (recent >= max_per_hour) {
		queue_end(st, nested, 0);
		return 2;
	}
	if (!(s = db_prepare(store_db(st), "INSERT INTO notices(address, reason, day, at)"
					   " VALUES(lower(?),?,?,?) ON CONFLICT DO NOTHING")))
		return queue_end(st, nested, 0);
	db_bind_text(s, 1, to, -1);
	db_bind_text(s, 2, reason_key, -1);
	db_bind_text(s, 3, day, -1);
	db_bind_int64(s, 4, (int64_t)now);
	rc = db_step(s) == DB_DONE ? (int)db_changes(store_db(st)) : -1;
	db_finalize(s);
	if (rc < 0)
		return queue_end(st, nested, 0);
	if (rc == 0) {
		queue_end(st, nested, 1);
		return 0;
	}
	if (notice_queue_add(st, to, reason_key, mail, now) < 0)
		return queue_end(st, nested, 0);
	return queue_end(st, nested, 1) < 0 ? -1 : 1;
}

int notice_send(struct store *st, const struct mf_config *cfg, const char *to,
		const char *reason_key, const char *subject, const char *body)
{
	char q[200];
	struct buf mail;
	char *from_addr, *msgid;
	int rec;

	if (notice_address_refused(cfg, to)) {
		log_info("notice.suppressed to=%s reason=%s why=\"automatic or unusable address\"",
			 log_quote(to, q, sizeof q), reason_key);
		return 1;
	}
	if (!cfg->smtp.present) {
		log_info("notice.suppressed to=%s reason=%s why=\"no [smtp] configured\"",
			 log_quote(to, q, sizeof q), reason_key);
		return 1;
	}
	from_addr = compose_address_of(cfg->smtp.from);
	if (!from_addr) {
		log_error("notice.error error=\"[smtp] from holds no address\"");
		return -1;
	}
	free(from_addr);

	buf_init(&mail);
	msgid = compose_new_message_id(cfg);
	compose_put_address(&mail, "From", cfg->smtp.from);
	compose_put_address(&mail, "To", to);
	compose_put_header(&mail, "Subject", subject);
	compose_put_date(&mail, time(NULL));
	buf_printf(&mail, "Message-ID: <%s>\r\n", msgid);
	compose_put_robot_headers(&mail, cfg, "auto-replied");
	buf_puts(&mail, "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=UTF-8\r\n"
			"Content-Transfer-Encoding: base64\r\n\r\n");
	compose_put_base64(&mail, body);
	free(msgid);

	rec = notice_queue_mail(st, to, reason_key, time(NULL), cfg->gateway.notice_max_per_hour,
				&mail);
	buf_free(&mail);
	if (rec == 1) {
		log_info("notice.queued to=%s reason=%s", log_quote(to, q, sizeof q), reason_key);
		notice_sender_wake();
		return 0;
	}
	if (rec == 0)
		log_info("notice.suppressed to=%s reason=%s why=\"already told today\"",
			 log_quote(to, q, sizeof q), reason_key);
	else if (rec == 2)
		log_warn("notice.suppressed to=%s reason=%s why=\"notice_max_per_hour (%d) "
			 "reached\"",
			 log_quote(to, q, sizeof q), reason_key, cfg->gateway.notice_max_per_hour);
	else
		log_error("notice.error to=%s reason=%s error=\"cannot queue\" detail=%s",
			  log_quote(to, q, sizeof q), reason_key, LOG_Q(store_errmsg(st)));
	return rec < 0 ? -1 : 1;
}

void notice_quote_subject(const char *subject, char *out, size_t outlen)
{
	const unsigned char *p = (const unsigned char *)(subject ? subject : "");
	const unsigned char *end = p + strlen((const char *)p);
	size_t n = 0, chars = 0;
	int space = 0;
	while (p < end && n + 8 < outlen) {
		size_t k = utf8_seq(p, (size_t)(end - p));
		if (k == 0) { /* not UTF-8: left out */
			p++;
			continue;
		}
		if (chars >= NOTICE_SUBJECT_MAX) {
			memcpy(out + n, "\xe2\x80\xa6", 3); /* … */
			n += 3;
			break;
		}
		if ((k == 1 && (*p < 0x20 || *p == 0x7f || *p == ' ')) || text_bidi_control(p, k)) {
			/* controls and bidi overrides become one space */
			if (n && !space) {
				out[n++] = ' ';
				chars++;
			}
			space = 1;
		} else {
			memcpy(out + n, p, k);
			n += k;
			chars++;
			space = 0;
		}
		p += k;
	}
	while (n && out[n - 1] == ' ')
		n--;
	out[n] = 0;
}

int notice_refusal(struct store *st, const struct mf_config *cfg, const char *to, int verified,
		   const char *subject, const char *reason_key, const char *title, const char *what,
		   const char *why, const char *advice)
{
	char q[200], quoted[NOTICE_SUBJECT_MAX * 4 + 16];
	if (!verified && !subscribers_known(st, to, 1, 1)) {
		log_info("notice.suppressed to=%s reason=%s why=\"sender neither verified nor a "
			 "subscriber\"",
			 log_quote(to, q, sizeof q), reason_key);
		return 1;
	}
	notice_quote_subject(subject, quoted, sizeof quoted);
	char *body = xasprintf("Your email \"%s\" %s:\n%s.\n\n%s\n", quoted, what, why, advice);
	int rc = notice_send(st, cfg, to, reason_key, title, body);
	free(body);
	return rc;
}

int notice_prune(struct store *st, time_t cutoff)
{
	return store_prune_rows(st, "DELETE FROM notices WHERE COALESCE(at, 0) < ?1", cutoff);
}
