/* fuzz_token.c — reply tokens and reply addresses from untrusted mail:
 * decoding arbitrary text never crashes, a token the store never issued
 * is always refused, and header values built from arbitrary feed text
 * carry no line break other than folding and stay within line limits. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mailfeed/compose.h"
#include "mailfeed/token.h"
#include "mailfeed/util.h"

static struct store *st;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const unsigned char secret[32] = "fuzz-secret-fuzz-secret-fuzz-sec";
	struct mf_config cfg = {0};
	struct token_raw raw;
	struct token_info ti;
	char tok[80], err[256];

	if (size > 4096)
		return 0;
	if (!st && !(st = store_open(":memory:", err, sizeof err)))
		abort();
	cfg.gateway.reply_address = "feed@example.org";
	char *in = xstrndup((const char *)data, size);

	token_decode(in, &raw);
	if (token_verify(st, secret, sizeof secret, in, 0, &ti) != TOKEN_FORGED)
		abort();
	if (ti.email || ti.grp)
		abort();
	if (token_from_address(&cfg, in, tok, sizeof tok) &&
	    (strlen(tok) > TOKEN_LOCAL_MAX || strchr(tok, '@')))
		abort();

	struct buf b;
	buf_init(&b);
	compose_put_header(&b, "Subject", in);
	compose_put_address(&b, "To", in);
	for (size_t i = 0, col = 0; i < b.len; i++, col++) {
		if (b.data[i] == '\n' || b.data[i] == '\r') {
			if (b.data[i] != '\r' || i + 1 >= b.len || b.data[i + 1] != '\n')
				abort();
			i++;
			/* a line break is either folding or the end of a header */
			if (i + 1 < b.len && b.data[i + 1] != ' ' && b.data[i + 1] != 'T')
				abort();
			col = 0;
			continue;
		}
		if (col > 998 || (unsigned char)b.data[i] >= 0x80)
			abort();
	}
	buf_free(&b);
	free(in);
	return 0;
}
