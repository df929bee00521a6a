/* convert.c — the parsed message into the text and tags a feed shows.
 *
 * One step after parsing, before the message leaves the parse worker:
 * reply cleaning, forwarded blocks, hashtags, normalised subject.  See
 * convert.h. */
#include <stdlib.h>

#include "mailfeed/clean.h"
#include "mailfeed/convert.h"
#include "mailfeed/tags.h"
#include "mailfeed/thread.h"

void convert_message(struct mf_message *m)
{
	if (!m->full_text)
		m->full_text = xstrdup("");
	struct clean_result cr;
	clean_reply(m->full_text, m->from_name, &cr);
	if (m->forwarded) {
		/* Forwarded messages follow the new text; cleaning never eats them. */
		char *t = xasprintf("%s%s", cr.text ? cr.text : "", m->forwarded);
		free(cr.text);
		cr.text = t;
		char *full = xasprintf("%s%s", m->full_text, m->forwarded);
		free(m->full_text);
		m->full_text = full;
		free(m->forwarded);
		m->forwarded = NULL;
	}
	free(m->text);
	free(m->removed);
	m->text = cr.text ? cr.text : xstrdup("");
	m->removed = cr.removed ? cr.removed : xstrdup("");
	tags_from_subject(m->subject, &m->hashtags);
	tags_from_text(m->text, &m->hashtags);
	free(m->subject_norm);
	m->subject_norm = thread_subject_normalise(m->subject);
}
