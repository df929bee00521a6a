/* smtp.h — sending mail through the [smtp] relay with libcurl (the
 * transport; what goes into a mail is compose.h's).
 *
 * One client keeps its connections open, so consecutive messages reuse
 * them: one for smtp_send, up to SMTP_GROUP_MAX for smtp_send_group.
 * smtp:// requires STARTTLS unless the host is loopback; smtps:// is TLS
 * from the start; certificates are verified unless the config says
 * tls_verify = no. */
#ifndef MAILFEED_SMTP_H
#define MAILFEED_SMTP_H

#include "mailfeed/config.h"
#include <stddef.h>

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

/* Sends one message (data: CRLF lines, headers and body) to one recipient;
 * err holds the relay's answer when not sent. */
enum smtp_result smtp_send(struct smtp_client *c, const char *from_addr, const char *to,
			   const char *data, size_t len, char *err, size_t errlen);

/* One message of smtp_send_group. */
struct smtp_message {
	const char *to;
	const char *data; /* CRLF lines, headers and body */
	size_t len;
	int held;		 /* set: it reached the point just before its last bytes */
	int go;			 /* set by before_end: finish it */
	enum smtp_result result; /* when the call returns */
	char err[512];		 /* the relay's answer when not sent */
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

#endif
