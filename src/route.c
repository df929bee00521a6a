/* route.c — the routing rules of a mapping: parsing, and finding a
 * reference in a mail's subject or text (route.h). */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mailfeed/route.h"
#include "mailfeed/util.h"

#define REFERENCE_MAX 128 /* longer matches are not references */

/* An API name: letters, digits and underscores, starting with a letter. */
static int api_name(const char *s, size_t n)
{
	if (n == 0 || n > 80 || !isalpha((unsigned char)s[0]))
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && s[i] != '_')
			return 0;
	return 1;
}

int route_parse(const char *spec, struct route *r, char *err, size_t errlen)
{
	memset(r, 0, sizeof *r);
	while (isspace((unsigned char)*spec))
		spec++;
	if (strcasecmp(spec, "sender-account") == 0) {
		r->kind = ROUTE_SENDER_ACCOUNT;
		return 0;
	}
	if (strncasecmp(spec, "reference:", 10) != 0) {
		snprintf(err, errlen,
			 "must be reference:REGEX -> OBJECT.FIELD or sender-account");
		return -1;
	}
	const char *re = spec + 10;
	const char *arrow = strstr(re, "->");
	for (const char *a = arrow; a; a = strstr(a + 2, "->"))
		arrow = a; /* the last arrow: the regex may hold one */
	if (!arrow) {
		snprintf(err, errlen, "needs -> OBJECT.FIELD after the regex");
		return -1;
	}
	size_t rl = (size_t)(arrow - re);
	while (rl > 0 && isspace((unsigned char)re[rl - 1]))
		rl--;
	const char *target = arrow + 2;
	while (isspace((unsigned char)*target))
		target++;
	size_t tl = strlen(target);
	while (tl > 0 && isspace((unsigned char)target[tl - 1]))
		tl--;
	const char *dot = memchr(target, '.', tl);
	if (rl == 0) {
		snprintf(err, errlen, "the regex is empty");
		return -1;
	}
	if (!dot || !api_name(target, (size_t)(dot - target)) ||
	    !api_name(dot + 1, tl - (size_t)(dot + 1 - target))) {
		snprintf(err, errlen, "the target must be OBJECT.FIELD, e.g. Opportunity.Reference__c");
		return -1;
	}
	char *pat = xstrndup(re, rl);
	int rc = regcomp(&r->re, pat, REG_EXTENDED);
	free(pat);
	if (rc != 0) {
		char m[128];
		regerror(rc, &r->re, m, sizeof m);
		snprintf(err, errlen, "the regex does not compile: %s", m);
		return -1;
	}
	r->kind = ROUTE_REFERENCE;
	r->object = xstrndup(target, (size_t)(dot - target));
	r->field = xstrndup(dot + 1, tl - (size_t)(dot + 1 - target));
	return 0;
}

void route_free(struct route *r)
{
	if (r->kind == ROUTE_REFERENCE && r->object)
		regfree(&r->re);
	free(r->object);
	free(r->field);
	memset(r, 0, sizeof *r);
}

static char *match_in(const regex_t *re, const char *s)
{
	regmatch_t m[2];
	if (!s || regexec(re, s, 2, m, 0) != 0)
		return NULL;
	int g = m[1].rm_so >= 0 ? 1 : 0;
	size_t n = (size_t)(m[g].rm_eo - m[g].rm_so);
	if (n == 0 || n > REFERENCE_MAX)
		return NULL;
	return xstrndup(s + m[g].rm_so, n);
}

char *route_reference(const struct route *r, const char *subject, const char *text)
{
	if (r->kind != ROUTE_REFERENCE)
		return NULL;
	char *v = match_in(&r->re, subject);
	return v ? v : match_in(&r->re, text);
}
