/* fuzz_clean.c — reply cleaning and hashtag extraction on arbitrary text.
 *
 * The first line of the input is the sender's name, the rest the body.
 * Besides memory errors this checks the promise of clean.h: nothing is
 * lost, every visible ASCII character of the body is in text or removed. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mailfeed/clean.h"
#include "mailfeed/tags.h"
#include "mailfeed/util.h"

static size_t visible(const char *s)
{
	size_t n = 0;
	for (; *s; s++)
		n += *s > ' ' && *s < 0x7f;
	return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *in = xstrndup((const char *)data, size);
	char *nl = strchr(in, '\n');
	const char *sender = NULL, *body = in;
	struct clean_result r;
	struct strlist tags = {0};
	if (nl) {
		*nl = 0;
		sender = in;
		body = nl + 1;
	}
	clean_reply(body, sender, &r);
	if (visible(r.text) + visible(r.removed) != visible(body))
		abort();
	tags_from_text(r.text, &tags);
	tags_from_subject(sender, &tags);
	if (tags.n > 30)
		abort();
	strlist_free(&tags);
	clean_result_free(&r);
	free(in);
	return 0;
}
