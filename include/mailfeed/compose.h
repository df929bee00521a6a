/* compose.h — writing mailfeed's outgoing mail (digests, notifications,
 * notices): headers, encoded words, base64 bodies, Message-IDs.
 * Values from mail or the feed are untrusted: these never let CR/LF or
 * 8-bit bytes into a header.  No network; smtp.h sends the result. */
#ifndef MAILFEED_COMPOSE_H
#define MAILFEED_COMPOSE_H

#include <time.h>

#include "mailfeed/config.h"

struct buf;

/* The bare address of a From value ("Name <a@b>" or "a@b"), owned, or NULL
 * when it holds none that is printable ASCII without specials (what an
 * SMTP command and a header can carry unencoded). */
char *compose_address_of(const char *from);

/* s on one line: controls (CR/LF included) and runs of spaces become one
 * space, bidi controls are neutralised.  Owned. */
char *compose_header_text(const char *s);
/* "Name: value\r\n": non-ASCII as RFC 2047 UTF-8 encoded-words, long
 * values folded. */
void compose_put_header(struct buf *b, const char *name, const char *value);
/* An address header from "Display Name <addr>" or "addr"; the display name
 * is cut at 200 bytes, an unusable address is left out. */
void compose_put_address(struct buf *b, const char *name, const char *value);
/* "Date: ...\r\n" in RFC 5322 form, UTC. */
void compose_put_date(struct buf *b, time_t t);
/* The headers every mail of mailfeed carries: Auto-Submitted (given
 * value), X-Auto-Response-Suppress: All, List-Id: <mailfeed.DOMAIN> and
 * the loop marker X-Mailfeed-Loop: yes. */
void compose_put_robot_headers(struct buf *b, const struct mf_config *cfg,
			       const char *auto_submitted);
/* text (UTF-8, \n line ends) as base64 of its CRLF form, 76-column lines. */
void compose_put_base64(struct buf *b, const char *text);
/* A fresh Message-ID without <>, at the reply address's domain. Owned. */
char *compose_new_message_id(const struct mf_config *cfg);

#endif
