/* mention.h — mentions people write in a text: "@First Last" (two or three
 * capitalised words) and "@address", after a space or an opening bracket.
 * Which user they name is the feed backend's look-up. */
#ifndef MAILFEED_MENTION_H
#define MAILFEED_MENTION_H

#include <stddef.h>

/* May text have a mention starting at p (p in text)? */
int mention_at(const char *text, const char *p);

/* The forms a mention at s ('@' at s, end the end of the text) may take,
 * longest first, as lengths from s ('@' included): the address, or the
 * name of three then two words.  Returns how many (at most 2);
 * *is_address tells which kind. */
size_t mention_forms(const char *s, const char *end, size_t len[2], int *is_address);

#endif
