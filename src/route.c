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

int route_api_name(const char *s, size_t n)
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
	if (!dot || !route_api_name(target, (size_t)(dot - target)) ||
	    !route_api_name(dot + 1, tl - (size_t)(dot + 1 - target))) {
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

void route_explain(const struct strlist *specs, const char *subject, const char *text,
		   const char *sender, const struct strlist *recipients, struct route_why *w)
{
	memset(w, 0, sizeof *w);
	w->rule = -1;
	w->kind = "none";
	for (size_t i = 0; specs && i < specs->n && w->rule < 0; i++) {
		struct route r;
		char err[200];
		if (route_parse(specs->v[i], &r, err, sizeof err) < 0)
			continue; /* refused when the configuration was read */
		if (r.kind == ROUTE_REFERENCE) {
			char *ref = route_reference(&r, subject, text);
			if (ref) {
				w->rule = (int)i;
				w->kind = "reference";
				snprintf(w->value, sizeof w->value, "%s", ref);
				snprintf(w->object, sizeof w->object, "%s", r.object);
				snprintf(w->field, sizeof w->field, "%s", r.field);
				snprintf(w->text, sizeof w->text,
					 "reference %s \u2192 %s.%s (looked up when posted)",
					 w->value, r.object, r.field);
				free(ref);
			}
		} else {
			const char *addr = sender && *sender		 ? sender
					   : recipients && recipients->n ? recipients->v[0]
									 : NULL;
			if (addr) {
				w->rule = (int)i;
				w->kind = "sender-account";
				snprintf(w->value, sizeof w->value, "%s", addr);
				snprintf(w->object, sizeof w->object, "Contact");
				snprintf(w->field, sizeof w->field, "AccountId");
				snprintf(w->text, sizeof w->text,
					 "sender-account %s \u2192 Contact \u2192 Account (or a "
					 "converted Lead's; looked up when posted)",
					 w->value);
			}
		}
		route_free(&r);
	}
	if (w->rule < 0)
		snprintf(w->text, sizeof w->text, "none matched \u2192 group");
}

void route_explain_comment(struct route_why *w)
{
	memset(w, 0, sizeof *w);
	w->rule = -1;
	w->kind = "thread";
	snprintf(w->text, sizeof w->text,
		 "thread \u2192 a comment under its post, on the feed the post went to");
}

/* A JSON string, or null for what is not whole UTF-8 (a cut address). */
static json_t *json_text(const char *s)
{
	return s && *s && utf8_valid(s, strlen(s)) ? json_string(s) : json_null();
}

json_t *route_why_json(const struct route_why *w, const struct strlist *specs)
{
	json_t *o = json_object();
	json_object_set_new(o, "rule",
			    w->rule >= 0 && specs && (size_t)w->rule < specs->n
				? json_text(specs->v[w->rule])
				: json_null());
	json_object_set_new(o, "kind", json_string(w->kind));
	json_object_set_new(o, "value", json_text(w->value));
	json_object_set_new(o, "object", json_text(w->object));
	json_object_set_new(o, "field", json_text(w->field));
	json_object_set_new(o, "text", json_text(w->text));
	return o;
}
