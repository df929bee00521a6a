/* notice.h — short explanations mailed to a human sender (refused reply,
 * sender not allowed, subscription changed).  At most one per address,
 * reason and UTC day; never to automatic or no-reply addresses. */
#ifndef MAILFEED_NOTICE_H
#define MAILFEED_NOTICE_H

#include "mailfeed/config.h"
#include "mailfeed/store.h"

/* Records (to, reason_key, day) before sending.  subject and body are
 * UTF-8 text (body's lines end in \n).  Returns 0 sent, 1 suppressed
 * (already sent today, unsuitable address, no [smtp]), -1 error (logged). */
int notice_send(struct store *st, const struct mf_config *cfg, const char *to,
		const char *reason_key, const char *subject, const char *body);

/* 1 when mail must never be sent to addr (empty, MAILER-DAEMON, postmaster,
 * no-reply look-alikes, mailfeed's own reply address). */
int notice_address_refused(const struct mf_config *cfg, const char *addr);

#endif
