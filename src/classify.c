/* classify.c — posting decisions from the facts facts.c gathered.
 *
 * Kept apart from facts.c because it runs in the daemon (not the parse
 * worker) and needs the mailbox's settings.  Every "no" carries a reason a
 * user can read in `status`, `dead list` or `inspect`. */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "mailfeed/classify.h"
#include "mailfeed/recipients.h"

int classify_sender_allowed(const struct strlist *list, const char *addr)
{
	if (!list || list->n == 0)
		return 1;
	if (!addr)
		return 0;
	const char *at = strrchr(addr, '@');
	const char *domain = at ? at + 1 : NULL;
	for (size_t i = 0; i < list->n; i++) {
		const char *e = list->v[i];
		if (*e == '@')
			e++;
		if (strchr(e, '@')) {
			if (!strcasecmp(e, addr))
				return 1;
			continue;
		}
		if (!domain)
			continue;
		size_t dl = strlen(domain), el = strlen(e);
		if (dl == el && !strcasecmp(domain, e))
			return 1;
		if (dl > el && domain[dl - el - 1] == '.' && !strcasecmp(domain + dl - el, e))
			return 1;
	}
	return 0;
}

const char *classify_skip(const struct mf_message *m, const struct mf_mailbox *mb,
			  const struct mf_config *cfg, char *buf, size_t buflen)
{
	/* our own marker, or sent from one of the gateway's own addresses */
	if (m->own || (cfg && recipients_is_gateway(cfg, m->from_email))) {
		snprintf(buf, buflen, "loop: mail sent by mailfeed");
		return buf;
	}
	if (m->bounce_reason) {
		snprintf(buf, buflen, "bounce: %s", m->bounce_reason);
		return buf;
	}
	if (m->auto_reason) {
		snprintf(buf, buflen, "auto-reply: %s", m->auto_reason);
		return buf;
	}
	if (m->bulk && !(mb && mb->accept_bulk)) {
		snprintf(buf, buflen,
			 "bulk: Precedence: bulk, one-click unsubscribe, Feedback-ID or a mailing "
			 "service's headers (set accept_bulk = yes to post)");
		return buf;
	}
	if (!m->from_email || !strchr(m->from_email, '@')) {
		snprintf(buf, buflen, "no sender: the From header has no address");
		return buf;
	}
	if (mb && !classify_sender_allowed(&mb->allow_senders, m->from_email)) {
		snprintf(buf, buflen, "sender not allowed: %s (allow_senders)", m->from_email);
		return buf;
	}
	return NULL;
}

int classify_is_automatic(const struct mf_message *m)
{
	return m->own || m->bounce_reason || m->auto_reason || m->bulk || !m->from_email ||
	       !strchr(m->from_email, '@');
}
