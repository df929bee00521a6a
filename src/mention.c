/* mention.c — finding the mentions people write in a text (mention.h). */
#include <ctype.h>
#include <string.h>

#include "mailfeed/mention.h"

/* A letter of a name: ASCII letters, any byte of a UTF-8 sequence, and the
 * hyphen and apostrophe of double and Irish names. */
static int name_byte(unsigned char c)
{
	return isalpha(c) || c >= 0x80 || c == '-' || c == '\'';
}

/* The end of a name word at s (a capital or non-ASCII first letter), or s. */
static const char *name_word(const char *s, const char *end)
{
	if (s >= end || !((*s >= 'A' && *s <= 'Z') || (unsigned char)*s >= 0xC0))
		return s;
	const char *p = s + 1;
	while (p < end && name_byte((unsigned char)*p))
		p++;
	while (p > s + 1 && (p[-1] == '-' || p[-1] == '\''))
		p--;
	return p;
}

/* The length of an address at s ("local@domain.tld"), or 0. */
static size_t address_len(const char *s, const char *end)
{
	const char *p = s, *at = NULL, *dot = NULL;
	while (p < end && (isalnum((unsigned char)*p) || strchr(".-_+@", *p))) {
		if (*p == '@') {
			if (at)
				return 0;
			at = p;
		} else if (*p == '.' && at) {
			dot = p;
		}
		p++;
	}
	while (p > s && (p[-1] == '.' || p[-1] == '-'))
		p--;
	if (!at || at == s || !dot || dot >= p - 1 || dot < at + 2)
		return 0;
	return (size_t)(p - s);
}

/* The forms a mention at s ('@' at s) may take, longest first: the address,
 * or the name of three then two words.  Returns how many (at most 2). */
size_t mention_forms(const char *s, const char *end, size_t len[2], int *is_address)
{
	*is_address = 0;
	if (s > end - 2 || *s != '@')
		return 0;
	size_t al = address_len(s + 1, end);
	if (al) {
		*is_address = 1;
		len[0] = al + 1;
		return 1;
	}
	const char *w1 = name_word(s + 1, end);
	if (w1 == s + 1 || w1 >= end || *w1 != ' ')
		return 0;
	const char *w2 = name_word(w1 + 1, end);
	if (w2 == w1 + 1)
		return 0;
	size_t n = 0;
	if (w2 < end && *w2 == ' ') {
		const char *w3 = name_word(w2 + 1, end);
		if (w3 != w2 + 1)
			len[n++] = (size_t)(w3 - s);
	}
	len[n++] = (size_t)(w2 - s);
	return n;
}

/* See mention.h: at the start of the text, or after a space
 * or an opening bracket)? */
int mention_at(const char *text, const char *p)
{
	return *p == '@' && (p == text || isspace((unsigned char)p[-1]) || p[-1] == '(' ||
			     p[-1] == '[' || p[-1] == '"');
}

