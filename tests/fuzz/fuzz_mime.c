/* fuzz_mime.c — a whole raw message through the MIME layer and across the
 * worker's wire form, as the parse worker and the daemon do, holding the
 * output to the corpus properties (tests/unit/mime_props.h). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../unit/mime_props.h"
#include "mailfeed/convert.h"
#include "mailfeed/mime.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 1 << 20)
		return 0;
	char err[256];
	struct mf_message *m = mime_parse_ex((const char *)data, size, 4096, err, sizeof err);
	if (m)
		convert_message(m);
	if (m) {
		/* the properties every corpus is held to (mime_props.h): valid
		 * UTF-8 always; no boundary line of the message's own structure
		 * in the text */
		if (props_check((const char *)data, size, m) & PROP_BAD_UTF8)
			abort();
		struct strlist bounds = {0};
		props_boundaries((const char *)data, size, &bounds);
		/* header-like lines may be content; boundary lines never are */
		int raw = props_raw_lines(m->text, &bounds, 0);
		strlist_free(&bounds);
		if (raw)
			abort();
		struct buf wire;
		buf_init(&wire);
		message_encode(m, &wire);
		struct mf_message *back = message_decode(wire.data, wire.len);
		if (!back)
			abort(); /* what the worker writes, the daemon must read */
		/* and read it as it was written */
		json_t *a = message_to_json(m, 1), *b = message_to_json(back, 1);
		if (!json_equal(a, b))
			abort();
		json_decref(a);
		json_decref(b);
		message_free(back);
		buf_free(&wire);
		message_free(m);
	}
	return 0;
}
