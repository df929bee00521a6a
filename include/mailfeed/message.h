/* message.h — what mailfeed makes of one email.
 *
 * Produced by the MIME layer inside the sandboxed parse worker (mime.c,
 * worker.c), carried to the daemon in its wire form (message_encode /
 * message_decode), and consumed by classification, threading and the
 * outbox; `mailfeed inspect --json` prints its JSON form.  All strings are
 * UTF-8, owned by the struct. */
#ifndef MAILFEED_MESSAGE_H
#define MAILFEED_MESSAGE_H

#include <jansson.h>
#include <stddef.h>
#include <time.h>

#include "mailfeed/util.h"

struct mf_attachment {
	char *filename;       /* safe: no path, no control characters */
	char *content_type;
	size_t size;
	char sha256[65];
	unsigned char *data;  /* may be NULL when only listed */
	int is_inline;        /* Content-Disposition inline / has Content-ID */
};

struct mf_message {
	char *subject;        /* decoded */
	char *subject_norm;   /* Re:/Fwd:/[Tag] prefixes stripped (thread_subject_normalise) */
	char *from_name;
	char *from_email;     /* lower-cased */
	char *reply_to;
	char *message_id;     /* without <> */
	char *in_reply_to;    /* first id, without <> */
	struct strlist references; /* oldest first, without <> */
	struct strlist to, cc;     /* addresses */
	struct strlist recipients_hint; /* Delivered-To, X-Original-To (addresses) */
	time_t date;          /* Date header; 0 when missing or unparseable */
	char *part;           /* chosen part: "text/plain", "text/html" or "none" */
	char *full_text;      /* the chosen part as UTF-8 text, before cleaning */
	char *forwarded;      /* attached messages shown as forwarded blocks; the
			       * parser's output, joined to full_text and text by
			       * convert_message (then NULL); not in the wire form */
	char *text;           /* the new text: quotes and signature removed */
	char *removed;        /* what cleaning removed ("" when nothing) */
	struct strlist hashtags; /* [Tag] subject prefixes and #tags of text, deduplicated */
	/* Facts for classification (config-independent). NULL/0 = absent. */
	char *auto_reason;    /* auto-reply / out-of-office, and why */
	char *bounce_reason;  /* bounce / DSN, and why */
	int bulk;             /* Precedence: bulk/junk, or similar marketing marker */
	char *list_id;        /* List-Id value */
	int own;              /* carries mailfeed's own loop marker */
	char *auth_results;   /* raw Authentication-Results, for dkim/dmarc checks */
	char *warnings;       /* decoding fallbacks taken, for inspect; may be NULL */
	struct mf_attachment *attachments;
	size_t n_attachments;
};

struct mf_message *message_new(void);
void message_free(struct mf_message *m);

/* with_data = 1 includes attachment bytes (base64 "data").  The object has
 * at least: subject, from {name,email}, message_id, in_reply_to, references,
 * to, cc, date (ISO or null), part, full_text, text, removed, hashtags,
 * auto_reason, bounce_reason, bulk, list_id, own, attachments.
 * Callers add "classification". Returns a new reference. */
/* s as a JSON string, or JSON null when s is NULL.  Never fails: bytes of
 * invalid UTF-8 above 0x7f become '?', so that one bad field never drops a
 * key from an object. */
json_t *json_str_or_null(const char *s);
json_t *message_to_json(const struct mf_message *m, int with_data);
/* The JSON form without attachment data as compact text, the same as
 * json_dumps(message_to_json(m, 0), JSON_COMPACT) gives, written directly
 * (the parsed form stored with every message: no tree of JSON values is
 * built and walked for it).  Owned. */
char *message_json_text(const struct mf_message *m);
/* The parsed form the state keeps with every message (message_parsed):
 * message_json_text without "text", the clean text, which nothing reads
 * back from there.  With content_sha256 (a message queued: its text is in
 * its outbox item), full_text gives way to "content_sha256", the hash that
 * duplicates are compared by (messages_content_hash); without (a message
 * skipped), full_text stays.  Either way "removed" stays: what cleaning
 * took away is never lost. */
char *message_stored_json(const struct mf_message *m, const char *content_sha256);
/* Appends s as JSON text, byte for byte as json_dumps writes
 * json_str_or_null(s): NULL as null, escapes as jansson writes them, bytes
 * above 0x7f written as '?' when s is not valid UTF-8. */
void json_put_str(struct buf *b, const char *s);
/* Appends "key": inside an object being written (a comma first unless
 * the object was just opened); key is written as it is (a plain name). */
void json_put_key(struct buf *b, const char *key);

/* Appends the wire form of m (attachment bytes included) to out. */
void message_encode(const struct mf_message *m, struct buf *out);
/* The message in the n bytes at p, or NULL when they are not exactly one
 * wire form as message_encode writes it: a length beyond the frame, a
 * string that is not UTF-8 or holds NUL, a flag other than 0/1, a negative
 * date, a digest that is not 64 characters, bytes left over. */
struct mf_message *message_decode(const char *p, size_t n);

#endif
