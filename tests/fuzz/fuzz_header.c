/* fuzz_header.c — header-level decoders on arbitrary bytes: RFC 2047
 * words, RFC 2231 parameters, charset conversion, format=flowed and
 * attachment name sanitising.  Checks that decoded header values never
 * carry CR or LF and that safe filenames hold no path separator. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mailfeed/mime.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 65536)
		return 0;
	char *in = xstrndup((const char *)data, size);
	char *s = mime_decode_header(in);
	if (strpbrk(s, "\r\n"))
		abort();
	free(s);
	s = mime_param_2231(in, "filename");
	char *safe = mime_safe_filename(s);
	if (safe && (strpbrk(safe, "/\\\r\n") || strlen(safe) > 200))
		abort();
	free(safe);
	free(s);
	s = mime_unflow(in, size & 1);
	free(s);
	/* the first line names a charset for the rest */
	char *nl = strchr(in, '\n');
	if (nl) {
		*nl = 0;
		struct buf warn;
		buf_init(&warn);
		s = mime_to_utf8(nl + 1, strlen(nl + 1), in, &warn);
		free(s);
		buf_free(&warn);
	}
	free(in);
	return 0;
}
