/* mime.h — one raw RFC 5322 message into a struct mf_message.
 *
 * Runs inside the parse worker (see worker.h).  GMime splits the MIME tree
 * and recovers from broken structure; decodes transfer encodings, charsets
 * (to UTF-8, recording every guess and every recovery in m->warnings),
 * RFC 2047 headers and RFC 2231 parameters, picks the text part, lists
 * attachments and gathers the classification facts (facts.c).  The text a
 * feed shows is made afterwards by convert_message (convert.h). */
#ifndef MAILFEED_MIME_H
#define MAILFEED_MIME_H

#include <stddef.h>

#include "mailfeed/message.h"

/* Deepest multipart / message nesting followed. */
#define MIME_MAX_DEPTH 50
/* Attachments listed per message. */
#define MIME_MAX_ATTACHMENTS 50

/* The top-level header block as the tolerant splitter reads it. */
struct mime_header {
	char *name;
	char *value; /* unfolded, raw bytes */
};

struct mime_headers {
	struct mime_header *v;
	size_t n;
	size_t body; /* offset of the body in the raw message */
};

/* First value of a header, trimmed, or NULL. */
const char *mime_header_get(const struct mime_headers *h, const char *name);

/* Initialises the parser library (GMime) and warms it up with a sample
 * message.  Call before a sandbox forbids opening files; mime_parse calls it
 * too.  Idempotent and thread-safe. */
void mime_init(void);
/* Length of a leading mbox "From " line (with its line end) in raw, 0 when
 * there is none.  mime_parse skips it. */
size_t mime_mbox_from_len(const char *raw, size_t len);

/* Parses raw.  Attachment bytes above max_attachment (0 = no limit) are not
 * kept (the attachment is still listed).  NULL with a message in err when
 * the message cannot be parsed at all. */
struct mf_message *mime_parse_ex(const char *raw, size_t len, size_t max_attachment, char *err,
				 size_t errlen);
/* mime_parse_ex with no attachment size limit. */
struct mf_message *mime_parse(const char *raw, size_t len, char *err, size_t errlen);

/* Helpers exposed for tests and for other header users.  All return owned
 * UTF-8 strings (never NULL unless said). */

/* RFC 2047 decoding of an unstructured header value; raw 8-bit bytes that
 * are not UTF-8 are read as windows-1252. */
char *mime_decode_header(const char *raw);
/* Converts len bytes in charset cs (may be NULL) to UTF-8 following the
 * rule: valid UTF-8 stays as is (when cs is missing or us-ascii), else the
 * label, else windows-1252.  A note is appended to warn (may be NULL) when
 * a fallback was taken. */
char *mime_to_utf8(const char *in, size_t len, const char *cs, struct buf *warn);
/* Joins format=flowed text (RFC 3676); delsp removes the space before the
 * soft break. */
char *mime_unflow(const char *text, int delsp);
/* Filename made safe: basename only, no control characters, no / or \,
 * at most 200 bytes; NULL when nothing usable is left. */
char *mime_safe_filename(const char *name);
/* Decodes an RFC 2231 parameter `name` from a Content-Type/-Disposition
 * header value (handles name*=, name*0*=, name*1= ... and charset'lang'').
 * NULL when absent. */
char *mime_param_2231(const char *header_value, const char *name);

#endif
