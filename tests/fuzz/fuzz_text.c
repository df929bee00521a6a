/* fuzz_text.c — the shared text helpers that see mail as it came: the
 * bounded header-block scan (every field inside the input, values of
 * bounded length, Message-IDs without control characters), the address
 * rule, and UTF-8 counting, cutting and splitting into feed parts (a cut
 * never splits a character, parts keep to their budget and lose no
 * character other than the blanks at a cut). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mailfeed/utf8.h"
#include "mailfeed/util.h"

struct scan {
	const char *raw;
	size_t len;
};

static int field_inside(void *arg, const struct raw_field *f)
{
	const struct scan *sc = arg;
	const char *end = sc->raw + sc->len;
	if (f->name < sc->raw || f->name + f->namelen > end || f->value < sc->raw ||
	    f->value + f->valuelen > end)
		abort();
	return 0;
}

static void check_split(const char *text, size_t first, size_t budget)
{
	struct strlist parts = {0};
	utf8_split(text, first, budget, &parts);
	size_t kept = 0;
	for (size_t i = 0; i < parts.n; i++) {
		size_t n = strlen(parts.v[i]);
		if (utf8_count(parts.v[i], n) > (i == 0 ? first : budget))
			abort();
		kept += utf8_count(parts.v[i], n);
	}
	if (kept > utf8_count(text, strlen(text)))
		abort();
	strlist_free(&parts);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 65536)
		return 0;
	struct scan sc = {(const char *)data, size};
	/* the fields lie inside the header block, which ends at an empty
	 * line ("\n", "\r\n", or a "\r" ending the input), at the end of the
	 * input or at the scan's bound */
	struct scan block = {sc.raw, raw_header_block_len(sc.raw, sc.len)};
	const char *rest = sc.raw + block.len;
	size_t left = size - (block.len < size ? block.len : size);
	if (block.len > size || (left && block.len < RAW_HEADER_SCAN && rest[0] != '\n' &&
				 (rest[0] != '\r' || (left > 1 && rest[1] != '\n'))))
		abort();
	raw_header_each(sc.raw, sc.len, field_inside, &block);
	char *v = raw_header_value(sc.raw, sc.len, "Subject", 200);
	if (v && strlen(v) > 200)
		abort();
	free(v);
	char *id = raw_header_message_id(sc.raw, sc.len);
	if (id && (strpbrk(id, "\r\n <>") || strlen(id) > 998))
		abort();
	free(id);

	char *s = xstrndup((const char *)data, size);
	size_t n = strlen(s);
	(void)email_address_valid(s);
	size_t max = size ? data[0] : 0;
	size_t cut = utf8_cut(s, n, max);
	if (cut > max || cut > n || (cut > 0 && cut < n && (s[cut] & 0xc0) == 0x80))
		abort();
	if (n)
		check_split(s, 1 + data[0] % 64, 1 + (size > 1 ? data[1] : 7) % 64);
	free(s);
	return 0;
}
