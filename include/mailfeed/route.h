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

#include <jansson.h>
#include <regex.h>
#include <stddef.h>

#include "mailfeed/util.h"

enum route_kind { ROUTE_REFERENCE, ROUTE_SENDER_ACCOUNT };

struct route {
	enum route_kind kind;
	regex_t re;   /* ROUTE_REFERENCE */
	char *object; /* ROUTE_REFERENCE: e.g. Opportunity */
	char *field;  /* ROUTE_REFERENCE: e.g. Reference__c */
};

/* Is s[0..n) an API name (an object or field): letters, digits and
 * underscores, starting with a letter, at most 80? */
int route_api_name(const char *s, size_t n);

/* Parses one rule.  0, or -1 with a message in err. */
int route_parse(const char *spec, struct route *r, char *err, size_t errlen);
void route_free(struct route *r);

/* The reference r finds in subject, then in text (owned), or NULL. */
char *route_reference(const struct route *r, const char *subject, const char *text);

/* Why a new thread would go where it goes, told without asking the service
 * (inspect, preview): the first rule of specs (the mapping's route lines,
 * in order) that has something to look up in this mail.  A reference rule
 * applies when its regex matches the subject or the text; sender-account
 * when there is a sender (else a recipient) address.  What the look-up
 * then finds is only known when the thread is posted; a rule whose look-up
 * finds nothing hands over to the next one, then to the group. */
struct route_why {
	int rule;	  /* index in specs, -1: none applies */
	const char *kind; /* "reference", "sender-account", "none", "thread" */
	char value[256];  /* the reference, or the address looked up */
	char object[96];  /* reference: OBJECT; sender-account: "Contact" */
	char field[96];	  /* reference: FIELD; sender-account: "AccountId" */
	char text[512];	  /* one line for people, without "route: " */
};
void route_explain(const struct strlist *specs, const char *subject, const char *text,
		   const char *sender, const struct strlist *recipients, struct route_why *w);
/* A comment goes where its thread's post is: kind "thread". */
void route_explain_comment(struct route_why *w);
/* w as a JSON object: rule (the spec or null), kind, value, object, field, text. */
json_t *route_why_json(const struct route_why *w, const struct strlist *specs);

#endif
