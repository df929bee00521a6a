/* route.h — routing rules of a mapping ([mailbox] route = ...): which
 * record's feed (Chatter) a new thread goes to instead of the mapping's
 * group.  Parsing and the text side only; the look-ups at the service are
 * the backend's.
 *
 *   route = reference:REGEX -> OBJECT.FIELD
 *       the first match of REGEX (POSIX extended; its first group when it
 *       has one) in the subject, else in the text, is looked up as
 *       OBJECT.FIELD = 'match'; exactly one record → its feed.
 *   route = sender-account
 *       the sender's address (else the first To/Cc address that is not the
 *       gateway's) → a Contact with that Email → its Account's feed (or a
 *       converted Lead's account).
 *
 * Rules are tried in order; none that finds exactly one record leaves the
 * thread in the mapping's group.  A thread, once routed, stays there: its
 * comments go under its post. */
#ifndef MAILFEED_ROUTE_H
#define MAILFEED_ROUTE_H

#include <regex.h>
#include <stddef.h>

enum route_kind { ROUTE_REFERENCE, ROUTE_SENDER_ACCOUNT };

struct route {
	enum route_kind kind;
	regex_t re;   /* ROUTE_REFERENCE */
	char *object; /* ROUTE_REFERENCE: e.g. Opportunity */
	char *field;  /* ROUTE_REFERENCE: e.g. Reference__c */
};

/* Parses one rule.  0, or -1 with a message in err. */
int route_parse(const char *spec, struct route *r, char *err, size_t errlen);
void route_free(struct route *r);

/* The reference r finds in subject, then in text (owned), or NULL. */
char *route_reference(const struct route *r, const char *subject, const char *text);

#endif
