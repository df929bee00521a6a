/* tags.c — hashtags of a message: the [Tag] prefixes of its subject and the
 * #tags its sender wrote in the new text.
 *
 * Both come from untrusted mail, so tags are bounded (TAGS_MAX_LEN bytes,
 * TAGS_MAX in a list) and the text scan is one pass.  What is not a tag:
 * anything inside a URL, HTML colours (#fff, #a0b1c2), numbers (#1234),
 * entities (&#38;), a '#' inside a word (C#, issue#3) and quoted lines. */
#include <ctype.h>
#include <string.h>
#include <strings.h>

#include "mailfeed/tags.h"

#define TAGS_MAX 30
#define TAGS_MAX_LEN 64

void tags_add_unique(struct strlist *tags, const char *tag)
{
	if (*tag == '#')
		tag++;
	if (!*tag || tags->n >= TAGS_MAX || strlist_has_ci(tags, tag))
		return;
	strlist_add(tags, tag);
}

/* Length of a reply/forward prefix word at s ("Re:", "RE[2]:", "Fwd :",
 * "回复："), with the spaces after it, or 0. */
static size_t subject_prefix_len(const char *s)
{
	size_t n = 0;
	while (s[n] && s[n] != ':' && s[n] != '[' && !isspace((unsigned char)s[n]) && n < 16 &&
	       strncmp(s + n, "\xef\xbc\x9a", 3) != 0)
		n++;
	if (n == 0)
		return 0;
	if (s[n] == '[') {
		size_t d = n + 1;
		while (isdigit((unsigned char)s[d]))
			d++;
		if (d == n + 1 || s[d] != ']')
			return 0;
		n = d + 1;
	}
	if (s[n] == ' ' && s[n + 1] == ':')
		n++;
	if (s[n] == ':')
		n++;
	else if (strncmp(s + n, "\xef\xbc\x9a", 3) == 0)
		n += 3;
	else
		return 0;
	while (s[n] && isspace((unsigned char)s[n]))
		n++;
	return n;
}

void tags_from_subject(const char *subject, struct strlist *tags)
{
	const char *s = subject;
	if (!s)
		return;
	for (;;) {
		size_t n;
		while (isspace((unsigned char)*s))
			s++;
		if (*s == '[') {
			const char *end = s + 1;
			int blank = 0;
			while (*end && *end != ']' && *end != '[' && end - s <= TAGS_MAX_LEN) {
				blank |= isspace((unsigned char)*end) != 0;
				end++;
			}
			if (*end != ']')
				return;
			/* a hashtag is one word: "[PATCH v2 3/5]" is not one */
			if (!blank && end > s + 1) {
				char tag[TAGS_MAX_LEN + 1];
				memcpy(tag, s + 1, (size_t)(end - s - 1));
				tag[end - s - 1] = 0;
				tags_add_unique(tags, tag);
			}
			s = end + 1;
			continue;
		}
		n = subject_prefix_len(s);
		if (!n)
			return;
		s += n;
	}
}

static int tag_char(unsigned char c) { return isalnum(c) || c == '_' || c == '-' || c >= 0x80; }

/* Whether the tag body t (n bytes) is a colour, a number or too long. */
static int tag_rejected(const char *t, size_t n)
{
	size_t digits = 0, hex = 0;
	if (n == 0 || n > TAGS_MAX_LEN)
		return 1;
	for (size_t i = 0; i < n; i++) {
		digits += isdigit((unsigned char)t[i]) != 0;
		hex += isxdigit((unsigned char)t[i]) != 0;
	}
	if (digits == n)
		return 1;
	return (n == 3 || n == 6) && hex == n;
}

/* Scans one line (not quoted) for tags. */
static void tags_from_line(const char *s, size_t len, struct strlist *tags)
{
	size_t i = 0;
	while (i < len) {
		size_t start, end;
		int url;
		if (isspace((unsigned char)s[i])) {
			i++;
			continue;
		}
		/* one whitespace-separated token: a URL is skipped whole */
		start = i;
		url = 0;
		while (i < len && !isspace((unsigned char)s[i])) {
			if (s[i] == ':' && i + 2 < len && s[i + 1] == '/' && s[i + 2] == '/')
				url = 1;
			i++;
		}
		end = i;
		if (url || (end - start > 4 && strncasecmp(s + start, "www.", 4) == 0))
			continue;
		for (size_t k = start; k < end; k++) {
			size_t b;
			char tag[TAGS_MAX_LEN + 1];
			if (s[k] != '#')
				continue;
			if (k > start && (tag_char((unsigned char)s[k - 1]) || s[k - 1] == '&' ||
					  s[k - 1] == '#' || s[k - 1] == '/'))
				continue;
			b = k + 1;
			while (b < end && tag_char((unsigned char)s[b]))
				b++;
			while (b > k + 1 && s[b - 1] == '-')
				b--;
			if (!tag_rejected(s + k + 1, b - k - 1)) {
				memcpy(tag, s + k + 1, b - k - 1);
				tag[b - k - 1] = 0;
				tags_add_unique(tags, tag);
			}
			k = b - 1;
		}
	}
}

void tags_from_text(const char *text, struct strlist *tags)
{
	const char *s = text;
	if (!s)
		return;
	/* only lines with a '#' can hold a tag: go from one to the next */
	const char *line;
	while ((line = strchr(s, '#')) != NULL) {
		while (line > s && line[-1] != '\n')
			line--;
		s = line;
		const char *nl = strchr(s, '\n');
		size_t len = nl ? (size_t)(nl - s) : strlen(s);
		const char *p = s;
		while (p < s + len && (*p == ' ' || *p == '\t'))
			p++;
		if (p == s + len || *p != '>')
			tags_from_line(s, len, tags);
		if (!nl)
			break;
		s = nl + 1;
	}
}
