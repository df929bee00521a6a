/* fuzz_html.c — HTML to text on arbitrary bytes; the output is bounded
 * and always a C string. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mailfeed/html.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 1 << 20)
		return 0;
	char *t = html_to_text((const char *)data, size);
	if (strlen(t) > HTML_TEXT_MAX + 1)
		abort();
	free(t);
	return 0;
}
