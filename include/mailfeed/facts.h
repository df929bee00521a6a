/* facts.h — auto-reply, bounce, bulk, list and loop facts of a message.
 *
 * Filled from the top-level headers and the decoded subject and sender
 * (m->subject, m->from_email must be set first) into m->auto_reason,
 * m->bounce_reason, m->bulk, m->list_id and m->own.  classify.c decides
 * from them. */
#ifndef MAILFEED_FACTS_H
#define MAILFEED_FACTS_H

#include "mailfeed/message.h"
#include "mailfeed/mime.h"

void facts_gather(struct mf_message *m, const struct mime_headers *h);

#endif
