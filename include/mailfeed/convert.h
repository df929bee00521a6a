/* convert.h — the step after parsing: what the parsed text becomes.
 *
 * The parser (mime.c) reads the message as it is; convert_message turns
 * its full text into the new text a feed shows: quoted history and
 * signature removed (clean.c), forwarded blocks kept after the new text,
 * hashtags from subject and text (tags.c), and the normalised subject
 * threading matches on (thread.c).  Runs in the parse worker's child after
 * mime_parse, and in-process wherever a message is parsed directly. */
#ifndef MAILFEED_CONVERT_H
#define MAILFEED_CONVERT_H

#include "mailfeed/message.h"

/* Fills m->text, m->removed, m->hashtags and m->subject_norm from the
 * parsed fields, and joins m->forwarded to m->full_text and m->text. */
void convert_message(struct mf_message *m);

#endif
