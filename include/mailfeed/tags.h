/* tags.h — hashtags: [Tag] subject prefixes and #tags of the new text. */
#ifndef MAILFEED_TAGS_H
#define MAILFEED_TAGS_H

#include "mailfeed/util.h"

/* Appends the [Tag] prefixes of a subject ("[Q3] Re: [Budget] x"). */
void tags_from_subject(const char *subject, struct strlist *tags);
/* Appends #tags of text: not inside URLs, not HTML colours (#fff, #a0b1c2),
 * not pure numbers (#1234), not in "> " quoted lines. */
void tags_from_text(const char *text, struct strlist *tags);
/* Adds tag unless an equal one (case-insensitive) is present; a leading '#'
 * is dropped. */
void tags_add_unique(struct strlist *tags, const char *tag);

#endif
