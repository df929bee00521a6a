/* parse_limits.h — what a message may cost the parser, checked by the
 * daemon before the message is handed to the parse worker.
 *
 * libetpan's time grows with the square of the MIME nesting, so a crafted
 * mail of a few MB can hold the worker for minutes.  The check reads the
 * message once, in time linear in its size, and finds every Content-Type
 * field the way the parser reads one — case-insensitive name, white space
 * and comments before the colon and around the '/', folded lines — so that
 * "multipart (x)/mixed" or a type folded over two lines counts as what it
 * is. */
#ifndef MAILFEED_PARSE_LIMITS_H
#define MAILFEED_PARSE_LIMITS_H

#include <stddef.h>

/* Deepest nesting of multipart and message parts (the walk reads the first
 * MIME_MAX_DEPTH levels; deeper mail is refused here). */
#define PARSE_MAX_DEPTH 200
/* Containers (multipart or message Content-Types) in one message. */
#define PARSE_MAX_CONTAINERS 1000
/* Parts (boundary delimiter lines) in one message. */
#define PARSE_MAX_PARTS 10000

/* What parse_limits_check found. */
struct parse_cost {
	size_t depth;	   /* deepest nesting, as the boundaries show it */
	size_t containers; /* multipart and message Content-Type fields */
	size_t parts;	   /* boundary delimiter lines */
};

/* 0 when raw (len bytes) is within the limits above and max_bytes (0: no
 * byte limit); else -1 with the reason ("unparseable: ...") in reason.
 * cost, when not NULL, gets the figures. */
int parse_limits_check(const char *raw, size_t len, size_t max_bytes, struct parse_cost *cost,
		       char *reason, size_t reasonlen);

#endif
