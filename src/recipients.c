/* recipients.c — the To/Cc addresses of a message that may become mentions.
 *
 * A mention is only worth a look-up at the feed service for a person the
 * mail was written to: the sender is already named in the post, and the
 * gateway's own addresses (the group mailbox the mail came through, the
 * reply address, the digest sender) belong to no user worth notifying.
 * The list is capped at Chatter's 25 mentions per body, To before Cc. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mailfeed/compose.h"
#include "mailfeed/recipients.h"

int recipients_is_gateway(const struct mf_config *cfg, const char *addr)
{
	if (!cfg || !addr)
		return 0;
	const char *ra = cfg->gateway.reply_address;
	const char *at = ra ? strrchr(ra, '@') : NULL;
	const char *aat = strrchr(addr, '@');
	if (!at || !aat || strcasecmp(at, aat) != 0)
		return 0;
	size_t loclen = (size_t)(at - ra);
	/* feed@domain or feed+anything@domain */
	return strncasecmp(addr, ra, loclen) == 0 && (addr[loclen] == '@' || addr[loclen] == '+');
}

static int is_excluded(const struct mf_config *cfg, const struct mf_message *m, const char *author,
		       const char *a)
{
	if (cfg) {
		char *from = compose_address_of(cfg->smtp.from);
		int own = from && strcasecmp(from, a) == 0;
		free(from);
		if (own)
			return 1;
	}
	if ((m->from_email && strcasecmp(a, m->from_email) == 0) ||
	    (m->reply_to && strcasecmp(a, m->reply_to) == 0) ||
	    (author && strcasecmp(a, author) == 0) || strlist_has_ci(&m->recipients_hint, a) ||
	    recipients_is_gateway(cfg, a))
		return 1;
	for (size_t i = 0; cfg && i < cfg->n_accounts; i++)
		if (cfg->accounts[i].username && strcasecmp(a, cfg->accounts[i].username) == 0)
			return 1;
	return 0;
}

void recipients_mentionable(const struct mf_config *cfg, const struct mf_message *m,
			    const char *author, struct strlist *out)
{
	const struct strlist *lists[] = {&m->to, &m->cc};
	size_t start = out->n;
	for (size_t l = 0; l < 2; l++)
		for (size_t i = 0; i < lists[l]->n && out->n - start < RECIPIENTS_MAX; i++) {
			const char *a = lists[l]->v[i];
			if (!a || !email_address_valid(a) || is_excluded(cfg, m, author, a))
				continue;
			int seen = 0;
			for (size_t k = start; k < out->n && !seen; k++)
				seen = strcasecmp(out->v[k], a) == 0;
			if (seen)
				continue;
			char *lower = xstrdup(a);
			str_lower(lower);
			strlist_add(out, lower);
			free(lower);
		}
}
