/* fuzz_auth.c — Authentication-Results and header blocks from untrusted
 * mail: parsing never crashes or reads out of bounds, and a verdict of
 * "verified" always names a pass that the trusted server's header holds. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mailfeed/auth.h"
#include "mailfeed/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct auth_header h;
	struct auth_verdict v;

	if (size > 65536)
		return 0;
	char *in = xstrndup((const char *)data, size);
	if (auth_header_parse(in, &h) == 0) {
		if (h.n > AUTH_MAX_RESULTS)
			abort();
		for (size_t i = 0; i < h.n; i++)
			if (!h.results[i].method[0] || !h.results[i].result[0])
				abort();
	}
	/* the input as a whole header block, too */
	auth_verify("mx.example.org", (const char *)data, size, "someone@example.org", &v);
	char *low = xmalloc(size + 1);
	for (size_t i = 0; i < size; i++)
		low[i] = (char)((data[i] >= 'A' && data[i] <= 'Z') ? data[i] + 32 : data[i]);
	if (v.verified && (!memmem(low, size, "mx.example.org", 14) || !strstr(v.why, "pass")))
		abort();
	free(low);
	free(in);
	return 0;
}
