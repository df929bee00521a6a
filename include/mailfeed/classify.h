/* classify.h — whether a parsed message is posted, and if not, why.
 *
 * The facts (auto-reply, bounce, bulk, loop marker) are gathered in the
 * parse worker (facts.c) into struct mf_message; this module turns them,
 * together with a mailbox's settings, into a decision with a reason a user
 * can act on. */
#ifndef MAILFEED_CLASSIFY_H
#define MAILFEED_CLASSIFY_H

#include <stddef.h>

#include "mailfeed/config.h"
#include "mailfeed/message.h"

/* NULL when m is to be posted; otherwise the reason, written into buf, e.g.
 * "auto-reply: Auto-Submitted: auto-replied", "bounce: multipart/report",
 * "bulk: Precedence: bulk (set accept_bulk = yes to post)",
 * "loop: mail sent by mailfeed" (its loop marker, or From: one of the
 * gateway's own addresses when cfg is given),
 * "sender not allowed: x@y.org (allow_senders)".
 * mb and cfg may be NULL (then only mailbox-independent checks are made). */
const char *classify_skip(const struct mf_message *m, const struct mf_mailbox *mb,
			  const struct mf_config *cfg, char *buf, size_t buflen);
/* 1 when m must never be answered: auto-reply, bounce, bulk, our own mail,
 * or no usable sender address. */
int classify_is_automatic(const struct mf_message *m);
/* 1 when addr (lower-case) is allowed by list: an entry is a full address
 * or a domain that matches the address's domain or any subdomain of it.
 * An empty list allows everyone. */
int classify_sender_allowed(const struct strlist *list, const char *addr);

#endif
