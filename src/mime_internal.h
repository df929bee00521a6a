/* mime_internal.h — what the MIME files (mime.c, mime_header.c,
 * mime_decode.c) share with each other and with no one else. */
#ifndef MAILFEED_MIME_INTERNAL_H
#define MAILFEED_MIME_INTERNAL_H

#include <stddef.h>
#include <sys/types.h>
#include <time.h>

#include "mailfeed/mime.h"
#include "mailfeed/util.h"

/* ---- mime_decode.c ---- */

/* Appends a note to warn ("; " between notes); the same note twice is
 * kept once.  warn may be NULL. */
void mime_warn(struct buf *warn, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Text lines end with LF only; a lone CR is a line break. In place. */
void mime_crlf_to_lf(char *s);
/* File name extension for a content type ("bin" when unknown). */
const char *mime_ext_for(const char *type);
/* Base64: bytes outside the alphabet are skipped; out has room for
 * n / 4 * 3 + 2 bytes.  Returns the bytes written. */
size_t mime_base64_decode(const char *in, size_t n, unsigned char *out);
/* What quoted-printable content held: "=XY" escapes, soft line breaks and
 * '=' signs that are neither (kept as written). */
struct mime_qp_stats {
	size_t escapes, soft, bare;
};
/* Quoted-printable; out has room for 2 * n + 1 bytes.  Returns the bytes
 * written. */
size_t mime_qp_decode(const char *in, size_t n, char *out, struct mime_qp_stats *st);

/* ---- mime_header.c ---- */

struct mime_param {
	const char *name;
	const char *value;
};

/* Value of a hex digit, -1 when c is none. */
int mime_hexval(int c);
/* mime_decode_header, with charset fallbacks noted in warn (may be NULL). */
char *mime_decode_header_warn(const char *raw, struct buf *warn);
/* A parameter from name/value pairs, RFC 2231 continuations and charsets
 * undone; NULL when absent. */
char *mime_param_decode(const struct mime_param *pv, size_t n, const char *name);
/* The header block of raw into h (free with mime_headers_free).  Raw
 * 8-bit bytes that are not UTF-8 are read in the charset the message
 * declares for its text, else in one guessed from the bytes; noted in warn
 * (may be NULL). */
void mime_headers_parse(const char *raw, size_t len, struct mime_headers *h, struct buf *warn);
void mime_headers_free(struct mime_headers *h);
/* One mailbox into a display name and a lower-cased address (NULL each
 * when absent). */
void mime_mailbox_parse(const char *v, char **name, char **addr);
/* Addresses of a list into out; the first display name into *first_name
 * when want_names. */
void mime_address_list(const char *v, struct strlist *out, int want_names, char **first_name);
/* Message ids of v (without <>), at most max, into out. */
void mime_id_list(const char *v, struct strlist *out, size_t max);
/* The first message id of v, or NULL. */
char *mime_first_id(const char *v);
/* A Date header as a time, 0 when missing or unparseable. */
time_t mime_date_parse(const char *v);

#endif
