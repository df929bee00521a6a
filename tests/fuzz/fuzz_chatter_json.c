/* fuzz_chatter_json.c — the JSON answers of the HTTP feed backends: a
 * Chatter Feed Element Page, a Chatter CollaborationGroupMember query page
 * and a Mattermost PostList.  The first byte picks the parser; the rest is
 * the answer body as the service would send it. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "mailfeed/feed.h"

static void who(void *arg, const char *uid, struct feed_entry *e)
{
	(void)arg;
	e->author_name = xstrdup(uid);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	struct feed_entry *e = NULL;
	size_t n = 0;
	const char *json = (const char *)data + 1;
	if (data[0] & 2) {
		struct feed_member *m = NULL;
		size_t nm = 0;
		char *next = NULL;
		feed_chatter_parse_members(json, size - 1, &m, &nm, &next);
		free(next);
		feed_members_free(m, nm);
	} else if (data[0] & 1) {
		feed_mattermost_parse_posts(json, size - 1, "4xp9fdt77pncbef59f4k1qe83o", 1000,
					    "https://mm.example.org", who, NULL, &e, &n);
	} else {
		char *next = feed_chatter_parse_page(json, size - 1, "0F9XX0000000001AAA", 1000,
						     "https://acme.my.salesforce.com", &e, &n);
		free(next);
	}
	feed_entries_free(e, n);
	return 0;
}
