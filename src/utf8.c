/* utf8.c — counting, cutting and splitting UTF-8 text by characters (the
 * one implementation the outbox and the feed backends share). */
#include <stdlib.h>
#include <string.h>

#include "mailfeed/utf8.h"

static int continuation(unsigned char c) { return (c & 0xC0) == 0x80; }

size_t utf8_count(const char *s, size_t n)
{
	size_t c = 0;
	for (size_t i = 0; i < n; i++)
		if (!continuation((unsigned char)s[i]))
			c++;
	return c;
}

size_t utf8_cut(const char *s, size_t n, size_t max)
{
	if (n <= max)
		return n;
	while (max > 0 && continuation((unsigned char)s[max]))
		max--;
	return max;
}

size_t utf8_offset(const char *s, size_t n, size_t chars)
{
	size_t off = 0;
	for (size_t c = 0; off < n && c < chars; c++) {
		off++;
		while (off < n && continuation((unsigned char)s[off]))
			off++;
	}
	return off;
}

/* Where the part of p that must end by byte cut ends: after the last sep
 * that ends in (cut/2, cut], or 0. */
static size_t last_sep(const char *p, size_t cut, const char *sep)
{
	size_t k = strlen(sep);
	for (size_t i = cut; i > cut / 2 && i >= k; i--)
		if (memcmp(p + i - k, sep, k) == 0)
			return i;
	return 0;
}

/* The last line end or space that ends in (cut/2, cut], or 0. */
static size_t last_blank(const char *p, size_t cut)
{
	for (size_t i = cut; i > cut / 2 && i >= 1; i--)
		if (p[i - 1] == '\n' || p[i - 1] == ' ')
			return i;
	return 0;
}

static void split(const char *text, size_t first, size_t budget, int late, struct strlist *out)
{
	const char *p = text;
	size_t lim = first ? first : 1;
	while (*p) {
		size_t len = strlen(p);
		if (utf8_count(p, len) <= lim) {
			strlist_add(out, p);
			return;
		}
		size_t cut = utf8_offset(p, len, lim), best = last_sep(p, cut, "\n\n");
		if (!best && late)
			best = last_blank(p, cut);
		if (!best)
			best = last_sep(p, cut, "\n");
		if (!best)
			best = last_sep(p, cut, " ");
		if (!best)
			best = cut;
		char *part = xstrndup(p, best);
		strlist_add(out, part);
		free(part);
		p += best;
		while (*p == '\n' || *p == ' ')
			p++;
		lim = budget ? budget : 1;
	}
}

void utf8_split(const char *text, size_t first, size_t budget, struct strlist *out)
{
	split(text, first, budget, 0, out);
}

void utf8_split_late(const char *text, size_t first, size_t budget, struct strlist *out)
{
	split(text, first, budget, 1, out);
}
