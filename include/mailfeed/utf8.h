/* utf8.h — UTF-8 text by characters: counting, cutting on a character
 * boundary, and splitting a long text into parts under a budget.  The
 * input is taken as it is: a byte that is not a continuation byte
 * (10xxxxxx) starts a character, so invalid sequences are counted and cut
 * like the valid ones and never make a function read past its end. */
#ifndef MAILFEED_UTF8_H
#define MAILFEED_UTF8_H

#include <stddef.h>

#include "mailfeed/util.h"

/* Characters (code points) in s[0..n). */
size_t utf8_count(const char *s, size_t n);
/* Length of the longest start of s[0..n) of at most max bytes that ends on
 * a character boundary: a cut there never splits a sequence. */
size_t utf8_cut(const char *s, size_t n, size_t max);
/* Bytes taken by the first chars characters of s[0..n) (n when it has
 * fewer). */
size_t utf8_offset(const char *s, size_t n, size_t chars);

/* Appends text to out in parts of at most first characters (the first
 * part) and budget characters (the others).  A part ends at the last blank
 * line in the second half of its window, else at the last line end there,
 * else at the last space there, else after its last whole character; the
 * line ends and spaces at a cut start no part.  Nothing is appended for an
 * empty text. */
void utf8_split(const char *text, size_t first, size_t budget, struct strlist *out);
/* As utf8_split, but after no blank line a part ends at the last line end
 * or space of the second half of its window, whichever is later: the
 * parts stay as long as they may (Mattermost's cut points). */
void utf8_split_late(const char *text, size_t first, size_t budget, struct strlist *out);

#endif
