/* notice.c — the short explanation a human sender gets when mailfeed did
 * not do what their mail asked (not allowed, reply refused) or did it
 * (subscription changed).  Rate-limited to one per address, reason and UTC
 * day through the notices table, recorded before sending so that a crash
 * can only lose a notice, never repeat it; never sent to addresses that
 * cannot or must not answer. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mailfeed/log.h"
#include "mailfeed/notice.h"
#include "mailfeed/smtp.h"
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
	char *from = smtp_address_of(cfg->smtp.from);
	int own = from && strcasecmp(from, addr) == 0;
	free(from);
	return own;
}

/* 1 recorded now, 0 already recorded today, -1 error. */
static int notice_record(struct store *st, const char *to, const char *reason_key, time_t now)
{
	sqlite3_stmt *s;
	char day[32];
	int rc;
	time_iso(now, day, sizeof day);
	day[10] = 0;
	if (store_begin(st) < 0)
		return -1;
	if (sqlite3_prepare_v2(
		store_db(st),
		"INSERT OR IGNORE INTO notices(address, reason, day) VALUES(lower(?),?,?)", -1, &s,
		NULL) != SQLITE_OK) {
		store_rollback(st);
		return -1;
	}
	sqlite3_bind_text(s, 1, to, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, reason_key, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 3, day, -1, SQLITE_STATIC);
	rc = sqlite3_step(s) == SQLITE_DONE ? sqlite3_changes(store_db(st)) : -1;
	sqlite3_finalize(s);
	if (rc < 0) {
		store_rollback(st);
		return -1;
	}
	if (store_commit(st) < 0)
		return -1;
	return rc > 0 ? 1 : 0;
}

int notice_send(struct store *st, const struct mf_config *cfg, const char *to,
		const char *reason_key, const char *subject, const char *body)
{
	char q[200], q2[300], err[512];
	struct buf mail;
	char *from_addr, *msgid;
	struct smtp_client *c;
	int rec, res;

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
	from_addr = smtp_address_of(cfg->smtp.from);
	if (!from_addr) {
		log_error("notice.error error=\"[smtp] from holds no address\"");
		return -1;
	}
	rec = notice_record(st, to, reason_key, time(NULL));
	if (rec <= 0) {
		free(from_addr);
		if (rec == 0)
			log_info("notice.suppressed to=%s reason=%s why=\"already told today\"",
				 log_quote(to, q, sizeof q), reason_key);
		return rec == 0 ? 1 : -1;
	}

	buf_init(&mail);
	msgid = smtp_new_message_id(cfg);
	smtp_put_address(&mail, "From", cfg->smtp.from);
	smtp_put_address(&mail, "To", to);
	smtp_put_header(&mail, "Subject", subject);
	smtp_put_date(&mail, time(NULL));
	buf_printf(&mail, "Message-ID: <%s>\r\n", msgid);
	smtp_put_robot_headers(&mail, cfg, "auto-replied");
	buf_puts(&mail, "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=UTF-8\r\n"
			"Content-Transfer-Encoding: base64\r\n\r\n");
	smtp_put_base64(&mail, body);

	c = smtp_new(&cfg->smtp, err, sizeof err);
	res =
	    c ? smtp_send(c, from_addr, to, mail.data, mail.len, err, sizeof err) : SMTP_TEMPORARY;
	smtp_free(c);
	if (res == SMTP_SENT)
		log_info("notice.sent to=%s reason=%s", log_quote(to, q, sizeof q), reason_key);
	else
		log_warn("notice.not_sent to=%s reason=%s error=%s", log_quote(to, q, sizeof q),
			 reason_key, log_quote(err, q2, sizeof q2));
	free(msgid);
	free(from_addr);
	buf_free(&mail);
	return res == SMTP_SENT ? 0 : -1;
}
