/* recipients.h — who else an email was addressed to.
 *
 * The To and Cc addresses of a message that may become mentions at the feed
 * service ([feed] mentions): people, not the sender and not the gateway's
 * own mailboxes.  Decided when the message is enqueued and carried with the
 * outbox item; the backends look the addresses up at delivery. */
#ifndef MAILFEED_RECIPIENTS_H
#define MAILFEED_RECIPIENTS_H

#include "mailfeed/config.h"
#include "mailfeed/message.h"
#include "mailfeed/util.h"

/* Chatter takes at most 25 mentions in one body; no backend gets more. */
#define RECIPIENTS_MAX 25

/* 1 when addr (any case) is the gateway's reply_address or a local+tag@
 * form of it (the addresses of reply tokens).  cfg may be NULL. */
int recipients_is_gateway(const struct mf_config *cfg, const char *addr);

/* Appends to out the To addresses, then the Cc addresses, of m that may be
 * mentioned: well-formed (local@domain, printable, no spaces), each once
 * (case-insensitive, lower-cased), at most RECIPIENTS_MAX.  Left out: the
 * sender (From, Reply-To, and author when non-NULL), the addresses the
 * message was delivered through (Delivered-To, X-Original-To: the mapped
 * mailbox), every [account]'s login, the reply address and its +tag forms,
 * and the [smtp] from address.  cfg and author may be NULL. */
void recipients_mentionable(const struct mf_config *cfg, const struct mf_message *m,
			    const char *author, struct strlist *out);

#endif
