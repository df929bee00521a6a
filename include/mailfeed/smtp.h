/* smtp.h — sending mail through the [smtp] relay with libcurl.
 *
 * One client keeps its connections open, so consecutive messages reuse
 * them: one for smtp_send, up to SMTP_GROUP_MAX for smtp_send_group.
 * smtp:// requires STARTTLS unless the host is loopback; smtps:// is TLS
 * from the start; certificates are verified unless the config says
 * tls_verify = no. */
#ifndef MAILFEED_SMTP_H
#define MAILFEED_SMTP_H

#include <stddef.h>
#include <time.h>

#include "mailfeed/config.h"

enum smtp_result {
	SMTP_SENT = 0,	    /* the relay answered 250 to the data */
	SMTP_TEMPORARY = 1, /* not accepted (4xx, no connection): try again later */
	SMTP_PERMANENT = 2, /* refused for good (5xx) for this recipient */
	SMTP_UNKNOWN = 3,   /* the connection broke after the data was sent: maybe sent */
};

struct smtp_client;

/* Reads the password file; no network yet.  NULL with err on failure. */
struct smtp_client *smtp_new(const struct mf_smtp *cfg, char *err, size_t errlen);
void smtp_free(struct smtp_client *c);
/* Connects, greets, starts TLS and logs in as the config says, then hangs
 * up without sending (check-config --online).  0, or -1 with the relay's
 * answer or the network error in err. */
int smtp_check(struct smtp_client *c, char *err, size_t errlen);

/* Sends one message (data: CRLF lines, headers and body) to one recipient.
 * Returns an enum smtp_result; err holds the relay's answer when not sent. */
int smtp_send(struct smtp_client *c, const char *from_addr, const char *to, const char *data,
	      size_t len, char *err, size_t errlen);

/* One message of smtp_send_group. */
struct smtp_message {
	const char *to;
	const char *data; /* CRLF lines, headers and body */
	size_t len;
	int held;      /* set: it reached the point just before its last bytes */
	int go;	       /* set by before_end: finish it */
	int result;    /* enum smtp_result, when the call returns */
	char err[512]; /* the relay's answer when not sent */
};

#define SMTP_GROUP_MAX 8

/* Sends up to SMTP_GROUP_MAX messages at once, each over its own
 * connection (kept open for the next call) in its own thread.  Every transfer is held just
 * before its last bytes and the end-of-data mark, which is what lets the
 * relay take a message, until all the others are held too or have failed;
 * then before_end(arg, held, m) is called once with the held messages and
 * sets ->go on each that may be finished.  The others are stopped there,
 * so the relay discards them (SMTP_TEMPORARY).  A message that was never
 * held, or not let go, was not delivered. */
void smtp_send_group(struct smtp_client *c, const char *from_addr, struct smtp_message **msgs,
		     size_t n, void (*before_end)(void *arg, struct smtp_message **held, size_t m),
		     void *arg);

/* The bare address of a From value ("Name <a@b>" or "a@b"), owned, or NULL
 * when it holds none that is printable ASCII without specials. */
char *smtp_address_of(const char *from);

/* Composing mailfeed's outgoing mail (digests, notifications, notices).
 * Values from mail or the feed are untrusted: these never let CR/LF or
 * 8-bit bytes into a header. */
struct buf;
/* s on one line: controls (CR/LF included) and runs of spaces become one
 * space.  Owned. */
char *smtp_header_text(const char *s);
/* "Name: value\r\n": non-ASCII as RFC 2047 UTF-8 encoded-words, long
 * values folded. */
void smtp_put_header(struct buf *b, const char *name, const char *value);
/* An address header from "Display Name <addr>" or "addr"; the display name
 * is cut at 200 bytes, an unusable address is left out. */
void smtp_put_address(struct buf *b, const char *name, const char *value);
/* "Date: ...\r\n" in RFC 5322 form, UTC. */
void smtp_put_date(struct buf *b, time_t t);
/* The headers every mail of mailfeed carries: Auto-Submitted (given
 * value), X-Auto-Response-Suppress: All, List-Id: <mailfeed.DOMAIN> and
 * the loop marker X-Mailfeed-Loop: yes. */
void smtp_put_robot_headers(struct buf *b, const struct mf_config *cfg, const char *auto_submitted);
/* text (UTF-8, \n line ends) as base64 of its CRLF form, 76-column lines. */
void smtp_put_base64(struct buf *b, const char *text);
/* A fresh Message-ID without <>, at the reply address's domain. Owned. */
char *smtp_new_message_id(const struct mf_config *cfg);

#endif
