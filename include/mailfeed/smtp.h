/* smtp.h — sending mail through the [smtp] relay with libcurl.
 *
 * One client keeps one curl easy handle, so consecutive messages reuse the
 * connection.  smtp:// requires STARTTLS unless the host is loopback;
 * smtps:// is TLS from the start; certificates are verified unless the
 * config says tls_verify = no. */
#ifndef MAILFEED_SMTP_H
#define MAILFEED_SMTP_H

#include <stddef.h>

#include "mailfeed/config.h"

enum smtp_result {
	SMTP_SENT = 0,      /* the relay answered 250 to the data */
	SMTP_TEMPORARY = 1, /* not accepted (4xx, no connection): try again later */
	SMTP_PERMANENT = 2, /* refused for good (5xx) for this recipient */
	SMTP_UNKNOWN = 3,   /* the connection broke after the data was sent: maybe sent */
};

struct smtp_client;

/* Reads the password file; no network yet.  NULL with err on failure. */
struct smtp_client *smtp_new(const struct mf_smtp *cfg, char *err, size_t errlen);
void smtp_free(struct smtp_client *c);

/* Sends one message (data: CRLF lines, headers and body) to one recipient.
 * Returns an enum smtp_result; err holds the relay's answer when not sent. */
int smtp_send(struct smtp_client *c, const char *from_addr, const char *to, const char *data,
	      size_t len, char *err, size_t errlen);

/* The bare address of a From value ("Name <a@b>" or "a@b"), owned, or NULL
 * when it holds none that is printable ASCII without specials. */
char *smtp_address_of(const char *from);

#endif
