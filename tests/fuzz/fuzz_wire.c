/* fuzz_wire.c — the daemon's reader of the parse worker's answers on
 * arbitrary bytes.  The worker parses hostile mail and may be subverted, so
 * whatever it sends must be refused or read safely; what is read must say
 * the same when written again. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mailfeed/message.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct mf_message *m = message_decode((const char *)data, size);
	if (!m)
		return 0;
	struct buf again;
	buf_init(&again);
	message_encode(m, &again);
	if (again.len != size || memcmp(again.data, data, size) != 0)
		abort();
	buf_free(&again);
	message_free(m);
	return 0;
}
