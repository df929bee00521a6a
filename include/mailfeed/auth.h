/* auth.h — is the sender of a mail who its From header says?
 *
 * mailfeed acts as a person (posts as them with post_as = author, adds
 * their replies as comments, obeys their email commands) only when the
 * receiving mail server vouched for the From domain: the topmost
 * Authentication-Results header (RFC 8601) whose authserv-id is
 * [gateway] trusted_authserv says dmarc=pass, or dkim=pass with a signing
 * domain aligned with the From domain, or spf=pass with an aligned
 * envelope sender (RFC 7489 relaxed alignment).  Comments and quoted
 * strings in the header never count as results. */
#ifndef MAILFEED_AUTH_H
#define MAILFEED_AUTH_H

#include <stddef.h>

#define AUTH_MAX_RESULTS 32
#define AUTH_VALUE_MAX 256

/* One resinfo of an Authentication-Results header.  Values lower-cased;
 * "" when the property is absent. */
struct auth_result {
	char method[32];		    /* dkim, spf, dmarc, … (without a version) */
	char result[32];		    /* pass, fail, none, … */
	char header_d[AUTH_VALUE_MAX];	    /* dkim header.d */
	char header_i[AUTH_VALUE_MAX];	    /* dkim header.i */
	char header_from[AUTH_VALUE_MAX];   /* dmarc header.from */
	char smtp_mailfrom[AUTH_VALUE_MAX]; /* spf smtp.mailfrom */
};

/* A parsed header: authserv-id and its well-formed results (a malformed
 * resinfo is left out, so it can never pass). */
struct auth_header {
	char authserv_id[AUTH_VALUE_MAX];
	struct auth_result results[AUTH_MAX_RESULTS];
	size_t n;
};

/* Parses one Authentication-Results field value (unfolded or folded).
 * 0, or -1 when not even the authserv-id can be read. */
int auth_header_parse(const char *value, struct auth_header *out);

/* The organisational domain of domain (lower-cased, no trailing dot) into
 * out: its last two labels, or three when the last two are a well-known
 * two-level public suffix such as co.uk or com.au.  mailfeed carries no
 * public suffix list, so registrations under other multi-label suffixes
 * count as one organisation (stricter, never looser, for common ones). */
void auth_org_domain(const char *domain, char *out, size_t outlen);

/* RFC 7489 relaxed alignment: same organisational domain. */
int auth_aligned(const char *a, const char *b);

struct auth_verdict {
	int verified;  /* 1: the From address may act as that person */
	char why[300]; /* how it was verified, or why not (for logs, inspect) */
};

/* Judges the raw message (its header block is read, bounded) sent From
 * from_email against authserv (NULL or "" = not configured: never
 * verified). */
void auth_verify(const char *authserv, const char *raw, size_t len, const char *from_email,
		 struct auth_verdict *v);

#endif
