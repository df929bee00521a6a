/* notice.h — short explanations mailed to a human sender (refused reply,
 * sender not allowed, subscription changed).  At most one per address,
 * reason and UTC day, at most [gateway] notice_max_per_hour in all; never
 * to automatic or no-reply addresses. */
#ifndef MAILFEED_NOTICE_H
#define MAILFEED_NOTICE_H

#include "mailfeed/config.h"
#include "mailfeed/store.h"

/* Records (to, reason_key, day) before sending.  subject and body are
 * UTF-8 text (body's lines end in \n).  Returns 0 sent, 1 suppressed
 * (already sent today, unsuitable address, no [smtp]), -1 error (logged). */
int notice_send(struct store *st, const struct mf_config *cfg, const char *to,
		const char *reason_key, const char *subject, const char *body);

/* A refusal ("your email was not posted") to `to`, the From of the mail:
 * sent only when that sender was verified (auth.h) or is a known
 * subscriber, through notice_send.  The body quotes the mail's subject
 * shortened (notice_quote_subject), then says what happened, why and what
 * to do.  Returns as notice_send; 1 when refused here. */
int notice_refusal(struct store *st, const struct mf_config *cfg, const char *to, int verified,
		   const char *subject, const char *reason_key, const char *title,
		   const char *what, const char *why, const char *advice);

/* The subject as a notice quotes it: at most NOTICE_SUBJECT_MAX
 * characters (then "…"), control and bidi control characters as single
 * spaces, invalid UTF-8 left out.  out: >= NOTICE_SUBJECT_MAX * 4 + 16. */
#define NOTICE_SUBJECT_MAX 60
void notice_quote_subject(const char *subject, char *out, size_t outlen);

/* 1 when mail must never be sent to addr (empty, MAILER-DAEMON, postmaster,
 * no-reply look-alikes, mailfeed's own reply address). */
int notice_address_refused(const struct mf_config *cfg, const char *addr);

#endif
