/* feed_chatter.c — the Salesforce Chatter backend (Connect REST API).
 *
 * Authentication is the OAuth 2.0 JWT bearer grant: an RS256 assertion naming
 * the integration user (or, with post_as = author, the sender's Salesforce
 * user found by SOQL) is exchanged for an access token, cached per username
 * and minted again when a data call answers 401 INVALID_SESSION_ID.
 *
 * An item becomes a feed element (post) or a comment whose body is a list of
 * message segments: one Paragraph per email paragraph, Link segments for
 * URLs, Hashtag segments for the item's tags and, with mentions = yes, a
 * "To:" paragraph of Mention segments for the recipients that are active
 * users (found by Email with SOQL, cached).  Posts and comments carry only
 * what a person wrote: Chatter has no hidden fields on feed items, so an
 * earlier attempt whose answer was lost is recognised by what the service
 * shows (sf_find_earlier): an element of the same actor with the same text,
 * created since the item was queued, whose id no other item holds.
 *
 * Bodies over the 10,000-character limit become a post plus continuation
 * comments headed "(continued, part N of M)"; when an item needs
 * continuations, the parts already at the service are looked up first, so a
 * retry after a half-done delivery adds only what is missing.
 *
 * Items are delivered by up to [feed] concurrency threads, each with its own
 * http_client (so each keeps its own connections); comments on one post
 * always go through the same thread, in the order given. */
#include <ctype.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <jansson.h>

#include "mailfeed/config.h"
#include "mailfeed/feed.h"
#include "mailfeed/feed_http.h"
#include "mailfeed/http.h"
#include "mailfeed/jwt.h"
#include "mailfeed/log.h"
#include "mailfeed/mention.h"
#include "mailfeed/recipients.h"
#include "mailfeed/route.h"
#include "mailfeed/utf8.h"

#define SF_BODY_BUDGET 9000 /* characters per element; the API allows 10,000 */
#define SF_MAX_PARTS 20	    /* continuation limit: 180,000 characters */
#define SF_MIN_FIRST 500    /* characters of text the first part keeps at least */
#define SF_JWT_LIFETIME 180
#define SF_AUTH_BACKOFF 1800 /* token endpoint refused us: the admin must act */
#define SF_DAILY_LIMIT_BACKOFF 3600
#define SF_NEGATIVE_TTL 3600 /* how long "no usable user for this email" is believed */
#define SF_USER_TTL 86400    /* how long a user found by email is believed */
#define SF_MAX_MENTIONS 25   /* per element */
#define SF_MENTION_CHARS 128 /* budget per mention: "@" and the user's name */
#define SF_READ_PAGES 10
#define SF_FIND_PAGES 50   /* pages of 100 searched for an earlier attempt */
#define SF_CLOCK_SLACK 600 /* the service's clock may be this far behind ours */
#define SF_TOKEN_MAX 4096

/* An access token for one Salesforce username. */
struct sf_session {
	char *username;
	char *token;
	char *instance;
	char *user_id; /* from the token answer's identity URL; NULL if none */
};

struct chatter {
	const struct mf_feed *f;
	const struct mf_config *cfg; /* the mappings' routes */
	char *token_url;
	char *audience;
	char *cfg_instance;
	struct jwt_key *key;
	pthread_mutex_t mu;	  /* sessions */
	pthread_mutex_t login_mu; /* one token request at a time */
	struct sf_session *sessions;
	size_t n_sessions;
	struct feed_user_cache *users; /* by email: Id and Username */
	struct feed_http_pool pool;
};

/* ---- small helpers ---- */

static char *sf_strip_slash(const char *url)
{
	size_t n = strlen(url);
	while (n > 0 && url[n - 1] == '/')
		n--;
	return xstrndup(url, n);
}

/* The JWT audience for a login URL: Salesforce wants the production or
 * sandbox login host even when the token is asked from a My Domain URL;
 * any other host (an Experience Cloud site) is its own audience. */
static char *sf_audience(const char *url)
{
	const char *p = strstr(url, "://");
	const char *host = p ? p + 3 : url;
	size_t hl = strcspn(host, "/:?");
	char *h = xstrndup(host, hl);
	str_lower(h);
	char *aud;
	if (strcmp(h, "test.salesforce.com") == 0 ||
	    str_ends_with_ci(h, ".sandbox.my.salesforce.com"))
		aud = xstrdup("https://test.salesforce.com");
	else if (strcmp(h, "login.salesforce.com") == 0 ||
		 str_ends_with_ci(h, ".my.salesforce.com"))
		aud = xstrdup("https://login.salesforce.com");
	else
		aud = xstrndup(url, (size_t)(host - url) + strcspn(host, "/?"));
	free(h);
	return aud;
}

static time_t sf_parse_time(const char *s)
{
	struct tm tm;
	memset(&tm, 0, sizeof(tm));
	if (!s || !strptime(s, "%Y-%m-%dT%H:%M:%S", &tm))
		return 0;
	return timegm(&tm);
}

static const char *sf_str(json_t *o, const char *k)
{
	return json_string_value(json_object_get(o, k));
}

/* "CODE: message" from Chatter's error array, or "HTTP nnn". */
static void sf_error_text(const struct http_request *r, char *out, size_t outlen, char *code,
			  size_t codelen)
{
	if (code)
		code[0] = '\0';
	if (r->curl_failed) {
		snprintf(out, outlen, "network: %s", r->error);
		return;
	}
	json_t *j = json_loadb(r->response.data, r->response.len, 0, NULL);
	json_t *e = json_is_array(j) ? json_array_get(j, 0) : j;
	const char *c = json_is_object(e) ? sf_str(e, "errorCode") : NULL;
	const char *m = json_is_object(e) ? sf_str(e, "message") : NULL;
	if (!c && json_is_object(e)) {
		c = sf_str(e, "error");
		m = sf_str(e, "error_description");
	}
	if (c) {
		snprintf(out, outlen, "%.100s: %.300s", c, m ? m : "");
		if (code)
			snprintf(code, codelen, "%s", c);
	} else {
		snprintf(out, outlen, "HTTP %ld from Chatter", r->status);
	}
	for (char *p = out; *p; p++)
		if (*p == '\r' || *p == '\n')
			*p = ' ';
	json_decref(j);
}

/* ---- authentication ---- */

/* The user id at the end of the token answer's identity URL
 * (".../id/ORGID/USERID"), or NULL when it does not look like one. */
static char *sf_identity_user(const char *url)
{
	const char *slash = url ? strrchr(url, '/') : NULL;
	if (!slash)
		return NULL;
	size_t n = strlen(slash + 1);
	if (n != 15 && n != 18)
		return NULL;
	for (const char *p = slash + 1; *p; p++)
		if (!isalnum((unsigned char)*p))
			return NULL;
	return xstrdup(slash + 1);
}

static struct sf_session *sf_session_find(struct chatter *ch, const char *username)
{
	for (size_t i = 0; i < ch->n_sessions; i++)
		if (strcmp(ch->sessions[i].username, username) == 0)
			return &ch->sessions[i];
	return NULL;
}

/* The user id behind username's session, or NULL (owned). */
static char *sf_session_user(struct chatter *ch, const char *username)
{
	pthread_mutex_lock(&ch->mu);
	struct sf_session *s = sf_session_find(ch, username);
	char *id = s && s->user_id ? xstrdup(s->user_id) : NULL;
	pthread_mutex_unlock(&ch->mu);
	return id;
}

/* Keeps the token of username: only an https instance is believed, else
 * the configured one. */
static void sf_session_put(struct chatter *ch, const char *username, const char *tok,
			   const char *inst, const char *identity)
{
	pthread_mutex_lock(&ch->mu);
	struct sf_session *s = sf_session_find(ch, username);
	if (!s) {
		ch->sessions = xrealloc(ch->sessions, (ch->n_sessions + 1) * sizeof(*ch->sessions));
		s = &ch->sessions[ch->n_sessions++];
		memset(s, 0, sizeof(*s));
		s->username = xstrdup(username);
	}
	free(s->token);
	free(s->instance);
	free(s->user_id);
	s->token = xstrdup(tok);
	s->user_id = sf_identity_user(identity);
	s->instance = inst && strncmp(inst, "https://", 8) == 0 && !strpbrk(inst, "\r\n ")
			  ? sf_strip_slash(inst)
			  : xstrdup(ch->cfg_instance);
	pthread_mutex_unlock(&ch->mu);
}

/* res from a token request that failed (ulog: username as logged). */
static void sf_login_failed(const struct http_request *r, const char *username, const char *ulog,
			    struct feed_result *res, int *denied)
{
	char msg[400];
	sf_error_text(r, msg, sizeof(msg), NULL, 0);
	if (feed_http_status(r->status, r->curl_failed) == FEED_RETRY) {
		feed_http_set_error(res, FEED_RETRY, "chatter auth: %s", msg);
		res->retry_after = http_retry_after(r);
		return;
	}
	/* invalid_grant and friends: a configuration problem; retried slowly
	 * so that items survive until the admin fixes the app or the user */
	*denied = 1;
	feed_http_set_error(res, FEED_RETRY,
			    "chatter auth refused for %.100s: %s (check client_id, the "
			    "certificate of private_key_file, login_url and that the user "
			    "is pre-authorized for the app)",
			    username, msg);
	res->retry_after = SF_AUTH_BACKOFF;
	log_error("chatter.auth_refused user=%s status=%ld", ulog, r->status);
}

/* Asks the token endpoint for a token for username.  0, or -1 with res set
 * (denied = 1 when the endpoint refused this user rather than failed). */
static int sf_login(struct chatter *ch, struct http_client *hc, const char *username,
		    struct feed_result *res, int *denied)
{
	char err[256];
	*denied = 0;
	char *jwt = jwt_bearer_assertion(ch->key, ch->f->client_id, username, ch->audience,
					 time(NULL), SF_JWT_LIFETIME, err, sizeof(err));
	if (!jwt) {
		feed_http_set_error(res, FEED_PERMANENT, "chatter auth: %s", err);
		return -1;
	}
	char *body = xasprintf("grant_type=urn%%3Aietf%%3Aparams%%3Aoauth%%3Agrant-type%%3Ajwt-"
			       "bearer&assertion=%s",
			       jwt);
	free(jwt);
	struct http_request r;
	http_request_init(&r, "POST", ch->token_url);
	http_request_header(&r, "Content-Type", "application/x-www-form-urlencoded");
	http_request_header(&r, "Accept", "application/json");
	r.body = body;
	r.body_len = strlen(body);
	r.body_owned = 1;
	http_perform_one(hc, &r);

	char ulog[200];
	log_quote(username, ulog, sizeof(ulog));
	int rc = -1;
	if (r.status == 200) {
		json_t *j = json_loadb(r.response.data, r.response.len, 0, NULL);
		const char *tok = sf_str(j, "access_token");
		if (tok && strlen(tok) < SF_TOKEN_MAX && !strpbrk(tok, "\r\n")) {
			sf_session_put(ch, username, tok, sf_str(j, "instance_url"),
				       sf_str(j, "id"));
			log_info("chatter.auth user=%s", ulog);
			rc = 0;
		} else {
			feed_http_set_error(res, FEED_RETRY,
					    "chatter auth: token endpoint answered 200 "
					    "without an access_token");
		}
		json_decref(j);
	} else {
		sf_login_failed(&r, username, ulog, res, denied);
	}
	http_request_clear(&r);
	return rc;
}

/* Copies the current token and instance for username (logging in if none). */
static int sf_session_get(struct chatter *ch, struct http_client *hc, const char *username,
			  char **token, char **instance, struct feed_result *res, int *denied)
{
	*denied = 0;
	pthread_mutex_lock(&ch->mu);
	struct sf_session *s = sf_session_find(ch, username);
	if (s && s->token) {
		*token = xstrdup(s->token);
		*instance = xstrdup(s->instance);
		pthread_mutex_unlock(&ch->mu);
		return 0;
	}
	pthread_mutex_unlock(&ch->mu);
	/* threads starting together share one login instead of racing */
	pthread_mutex_lock(&ch->login_mu);
	pthread_mutex_lock(&ch->mu);
	s = sf_session_find(ch, username);
	int have = s && s->token;
	pthread_mutex_unlock(&ch->mu);
	int rc = have ? 0 : sf_login(ch, hc, username, res, denied);
	pthread_mutex_unlock(&ch->login_mu);
	if (rc != 0)
		return -1;
	return sf_session_get(ch, hc, username, token, instance, res, denied);
}

/* Forgets a token that the service called invalid (unless another thread
 * already replaced it). */
static void sf_session_drop(struct chatter *ch, const char *username, const char *token)
{
	pthread_mutex_lock(&ch->mu);
	struct sf_session *s = sf_session_find(ch, username);
	if (s && s->token && strcmp(s->token, token) == 0) {
		free(s->token);
		s->token = NULL;
	}
	pthread_mutex_unlock(&ch->mu);
}

/* A data call as username: path is relative to /services/data/vNN.N (or a
 * full path starting with /services/).  Authorization is added here; on 401
 * the token is renewed once and the call repeated.  Returns 0 when an answer
 * came back (check r->status), -1 with res set when no token could be had. */
static int sf_call(struct chatter *ch, struct http_client *hc, const char *username,
		   struct http_request *r, const char *path, struct feed_result *res)
{
	for (int attempt = 0; attempt < 2; attempt++) {
		char *token = NULL, *instance = NULL;
		int denied;
		if (sf_session_get(ch, hc, username, &token, &instance, res, &denied) != 0)
			return -1;
		char *url =
		    strncmp(path, "/services/", 10) == 0
			? xasprintf("%s%s", instance, path)
			: xasprintf("%s/services/data/v%s%s", instance, ch->f->api_version, path);
		r->url = url;
		size_t nh = r->headers.n;
		http_request_header(r, "Authorization", "Bearer ");
		free(r->headers.v[nh]);
		r->headers.v[nh] = xasprintf("Authorization: Bearer %s", token);
		http_perform_one(hc, r);
		/* drop the Authorization line again: a repeat adds a fresh one */
		free(r->headers.v[nh]);
		r->headers.v[nh] = NULL;
		r->headers.n = nh;
		r->url = NULL;
		free(url);
		free(instance);
		if (r->status != 401 || attempt == 1) {
			free(token);
			return 0;
		}
		log_info("chatter.session_expired status=401");
		sf_session_drop(ch, username, token);
		free(token);
	}
	return 0;
}

/* Turns a failed data call into res. */
static void sf_fail(struct feed_result *res, const struct http_request *r, const char *what)
{
	char msg[400], code[128];
	sf_error_text(r, msg, sizeof(msg), code, sizeof(code));
	enum feed_status st = feed_http_status(r->status, r->curl_failed);
	if (r->status == 401)
		st = FEED_RETRY; /* token trouble even after a fresh login */
	if (r->status == 403 && strcmp(code, "REQUEST_LIMIT_EXCEEDED") == 0)
		st = FEED_RETRY;
	if (r->status == 200 || r->status == 201) {
		st = FEED_RETRY;
		snprintf(msg, sizeof(msg), "unexpected answer from Chatter (no id)");
	}
	feed_http_set_error(res, st, "%s: %s", what, msg);
	if (st == FEED_RETRY) {
		res->retry_after = http_retry_after(r);
		if (!res->retry_after && strcmp(code, "REQUEST_LIMIT_EXCEEDED") == 0)
			res->retry_after = SF_DAILY_LIMIT_BACKOFF;
	}
}

/* ---- users by email (post_as = author, mentions) ---- */

/* SOQL string literal body: quotes and backslashes escaped, controls dropped. */
static void sf_soql_quote(struct buf *b, const char *s)
{
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '\'' || *p == '\\')
			buf_putc(b, '\\');
		if (*p < 0x20 || *p == 0x7f)
			continue;
		buf_putc(b, (char)*p);
	}
}

/* The /query path of the SOQL text before + quoted value + after. */
static char *sf_query_path(const char *before, const char *value, const char *after)
{
	struct buf q;
	buf_init(&q);
	buf_puts(&q, before);
	sf_soql_quote(&q, value);
	buf_puts(&q, after);
	char *esc = http_escape(q.data);
	char *path = xasprintf("/query?q=%s", esc);
	free(esc);
	buf_free(&q);
	return path;
}

/* A record id as the API gives it: 15 or 18 letters and digits. */
static int sf_id_ok(const char *id)
{
	size_t n = id ? strlen(id) : 0;
	if (n != 15 && n != 18)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)id[i]))
			return 0;
	return 1;
}

/* Finds the one active user whose field ("Email" or "Name") is email, from
 * the cache or with SOQL; several matches count as none.  1 found (*id and *username set, owned;
 * *denied = 1 when that user may not be acted as), 0 none, -1 transient failure (res set). */
static int sf_user_query(struct chatter *ch, struct http_client *hc, const char *field,
			 const char *email, char **id, char **username, int *denied,
			 struct feed_result *res)
{
	*denied = 0;
	time_t now = time(NULL);
	/* names and addresses share the cache: a name is kept as "name:NAME" */
	char *ckey = strcmp(field, "Email") == 0 ? xstrdup(email) : xasprintf("name:%s", email);
	int known = feed_user_cache_get(ch->users, ckey, now, id, username, denied);
	if (known >= 0) {
		free(ckey);
		return known;
	}

	char *pre = xasprintf("SELECT Id, Username FROM User WHERE %s = '", field);
	char *path = sf_query_path(pre, email, "' AND IsActive = true");
	free(pre);

	struct http_request r;
	http_request_init(&r, "GET", NULL);
	http_request_header(&r, "Accept", "application/json");
	int rc = sf_call(ch, hc, ch->f->username, &r, path, res);
	free(path);
	if (rc != 0) {
		http_request_clear(&r);
		free(ckey);
		return -1;
	}
	char elog[200];
	log_quote(email, elog, sizeof(elog));
	int found = 0;
	if (r.status == 200) {
		json_t *j = json_loadb(r.response.data, r.response.len, 0, NULL);
		json_t *recs = json_object_get(j, "records");
		json_t *rec = json_array_size(recs) == 1 ? json_array_get(recs, 0) : NULL;
		const char *uid = sf_str(rec, "Id"), *u = sf_str(rec, "Username");
		if (sf_id_ok(uid) && u && *u && strlen(u) < 256) {
			*id = xstrdup(uid);
			*username = xstrdup(u);
			found = 1;
		} else if (json_array_size(recs) > 1) {
			log_warn("chatter.user_ambiguous email=%s users=%zu", elog,
				 json_array_size(recs));
		}
		json_decref(j);
	} else if (feed_http_status(r.status, r.curl_failed) == FEED_RETRY || r.status == 401) {
		sf_fail(res, &r, "chatter user lookup");
		http_request_clear(&r);
		free(ckey);
		return -1;
	} else {
		char msg[400], mlog[420];
		sf_error_text(&r, msg, sizeof(msg), NULL, 0);
		log_warn("chatter.user_lookup_failed email=%s status=%ld error=%s", elog, r.status,
			 log_quote(msg, mlog, sizeof(mlog)));
	}
	http_request_clear(&r);
	feed_user_cache_put(ch->users, ckey, now, found ? *id : NULL, found ? *username : NULL);
	free(ckey);
	return found;
}

/* The active user whose Email is email (see sf_user_query). */
static int sf_user_lookup(struct chatter *ch, struct http_client *hc, const char *email, char **id,
			  char **username, int *denied, struct feed_result *res)
{
	return sf_user_query(ch, hc, "Email", email, id, username, denied, res);
}

/* post_as = author: the Salesforce username to act as for email.  1 found
 * (*username set), 0 none (post as the integration user), -1 transient
 * failure (res set). */
static int sf_author_lookup(struct chatter *ch, struct http_client *hc, const char *email,
			    char **username, struct feed_result *res)
{
	char *id = NULL;
	int denied = 0;
	int f = sf_user_lookup(ch, hc, email, &id, username, &denied, res);
	free(id);
	if (f == 1 && denied) {
		free(*username);
		*username = NULL;
		f = 0;
	}
	return f;
}

/* The author's token was refused: post as the integration user for a while
 * (the user may still be mentioned). */
static void sf_author_deny(struct chatter *ch, const char *email)
{
	feed_user_cache_restrict(ch->users, email, time(NULL));
}

/* mentions = yes: the user ids of the item's recipients, each once, in the
 * order of the addresses; addresses without a user are left out.  0, or -1
 * when a look-up failed for now (res set). */
static int sf_mentions(struct chatter *ch, struct http_client *hc, const struct feed_item *it,
		       struct strlist *ids, struct feed_result *res)
{
	for (size_t i = 0; it->recipients && i < it->recipients->n; i++) {
		char *id = NULL, *username = NULL;
		int denied;
		int f = sf_user_lookup(ch, hc, it->recipients->v[i], &id, &username, &denied, res);
		if (f < 0)
			return -1;
		int seen = 0;
		for (size_t k = 0; f == 1 && k < ids->n && !seen; k++)
			seen = strcmp(ids->v[k], id) == 0;
		if (f == 1 && !seen && ids->n < RECIPIENTS_MAX)
			strlist_add(ids, id);
		free(id);
		free(username);
	}
	return 0;
}

/* ---- message segments ---- */

static void seg_text(json_t *segs, const char *s, size_t n)
{
	if (n == 0)
		return;
	json_array_append_new(segs, json_pack("{s:s, s:s%}", "type", "Text", "text", s, n));
}

static void seg_markup(json_t *segs, const char *kind, const char *markup)
{
	json_array_append_new(segs, json_pack("{s:s, s:s}", "type", kind, "markupType", markup));
}

static size_t sf_url_len(const char *p)
{
	size_t n = 0;
	while (p[n] && !isspace((unsigned char)p[n]) && p[n] != '<' && p[n] != '>' && p[n] != '"')
		n++;
	while (n > 0 && strchr(".,;:!?)]'", p[n - 1]))
		n--;
	return n;
}

/* One paragraph of text: Text segments with Link segments for URLs. */
static void seg_paragraph(json_t *segs, const char *s, size_t n)
{
	seg_markup(segs, "MarkupBegin", "Paragraph");
	size_t start = 0;
	for (size_t i = 0; i < n; i++) {
		int is_url = (n - i > 8 && strncasecmp(s + i, "https://", 8) == 0) ||
			     (n - i > 7 && strncasecmp(s + i, "http://", 7) == 0);
		if (!is_url || (i > 0 && !isspace((unsigned char)s[i - 1]) && s[i - 1] != '(' &&
				s[i - 1] != '<'))
			continue;
		size_t ul = sf_url_len(s + i);
		if (i + ul > n)
			ul = n - i;
		if (ul <= 8)
			continue;
		seg_text(segs, s + start, i - start);
		char *u = xstrndup(s + i, ul);
		json_array_append_new(segs, json_pack("{s:s, s:s}", "type", "Link", "url", u));
		free(u);
		i += ul - 1;
		start = i + 1;
	}
	seg_text(segs, s + start, n - start);
	seg_markup(segs, "MarkupEnd", "Paragraph");
}

/* Paragraphs of text, split on blank lines. */
static void seg_paragraphs(json_t *segs, const char *s)
{
	const char *p = s;
	while (*p) {
		while (*p == '\n' || *p == '\r')
			p++;
		if (!*p)
			break;
		const char *end = strstr(p, "\n\n");
		size_t n = end ? (size_t)(end - p) : strlen(p);
		size_t k = n;
		while (k > 0 && (p[k - 1] == ' ' || p[k - 1] == '\r' || p[k - 1] == '\t'))
			k--;
		if (k > 0)
			seg_paragraph(segs, p, k);
		p += n;
	}
}

static void seg_plain_paragraph(json_t *segs, const char *text)
{
	seg_markup(segs, "MarkupBegin", "Paragraph");
	seg_text(segs, text, strlen(text));
	seg_markup(segs, "MarkupEnd", "Paragraph");
}

/* A hashtag as Chatter takes it: no '#', no ']' and no whitespace. */
static char *sf_tag(const char *t)
{
	while (*t == '#')
		t++;
	struct buf b;
	buf_init(&b);
	for (const char *p = t; *p && b.len < 100; p++)
		if (*p != ']' && !isspace((unsigned char)*p) && (unsigned char)*p >= 0x20)
			buf_putc(&b, *p);
	return buf_steal(&b);
}

static void sf_size_text(long long n, char *out, size_t outlen)
{
	if (n >= 1024 * 1024)
		snprintf(out, outlen, "%.1f MB", (double)n / (1024.0 * 1024.0));
	else if (n >= 1024)
		snprintf(out, outlen, "%.0f KB", (double)n / 1024.0);
	else
		snprintf(out, outlen, "%lld bytes", n);
}

static char *sf_safe_filename(const char *name)
{
	struct buf b;
	buf_init(&b);
	for (const unsigned char *p = (const unsigned char *)(name && *name ? name : "attachment");
	     *p && b.len < 200; p++)
		buf_putc(&b, (*p < 0x20 || *p == '"' || *p == '\\' || *p == '/' || *p == 0x7f)
				 ? '_'
				 : (char)*p);
	return buf_steal(&b);
}

/* ---- reading feeds ---- */

/* ---- recognising an earlier attempt ---- */

/* Text as compared: without white space, since how the service separates
 * paragraphs and segments in an element's text is not ours to choose. */
static void sf_norm_put(struct buf *b, const char *s)
{
	for (; s && *s; s++)
		if (!isspace((unsigned char)*s))
			buf_putc(b, *s);
}

/* The text an element built from segs shows, as compared; a Mention (whose
 * name only the service knows) is the byte SF_ANY, which stands for any run
 * of characters. */
#define SF_ANY '\x01'
static char *sf_segments_norm(json_t *segs)
{
	struct buf b;
	buf_init(&b);
	size_t i;
	json_t *sg;
	json_array_foreach(segs, i, sg)
	{
		const char *type = sf_str(sg, "type");
		if (!type)
			continue;
		if (strcmp(type, "Text") == 0) {
			sf_norm_put(&b, sf_str(sg, "text"));
		} else if (strcmp(type, "Link") == 0) {
			sf_norm_put(&b, sf_str(sg, "url"));
		} else if (strcmp(type, "Hashtag") == 0) {
			buf_putc(&b, '#');
			sf_norm_put(&b, sf_str(sg, "tag"));
		} else if (strcmp(type, "Mention") == 0) {
			buf_putc(&b, SF_ANY);
		}
	}
	return buf_steal(&b);
}

/* Does t match pattern p, in which SF_ANY stands for any run of characters? */
static int sf_glob(const char *p, const char *t)
{
	const char *star = NULL, *mark = NULL;
	while (*t) {
		if (*p == SF_ANY) {
			star = ++p;
			mark = t;
		} else if (*p && *p == *t) {
			p++;
			t++;
		} else if (star) {
			p = star;
			t = ++mark;
		} else {
			return 0;
		}
	}
	while (*p == SF_ANY)
		p++;
	return *p == '\0';
}

static const char *sf_body_text(json_t *el)
{
	json_t *body = json_object_get(el, "body");
	const char *t = sf_str(body, "text");
	if (!t)
		t = sf_str(json_object_get(el, "header"), "text");
	return t;
}

/* What an earlier attempt at an item may have left at the service. */
#define SF_WANT_MAX 4
struct sf_want {
	char *text[SF_WANT_MAX];  /* normalised bodies (sf_segments_norm) */
	char *actor[SF_WANT_MAX]; /* the user each was posted as; NULL: unknown */
	size_t n;
	time_t since; /* nothing older is looked at */
};

/* Adds the body an attempt posted as actor (may be NULL) may have left. */
static void sf_want_add(struct sf_want *w, json_t *body, const char *actor)
{
	char *t =
	    sf_segments_norm(json_object_get(json_object_get(body, "body"), "messageSegments"));
	if (w->n < SF_WANT_MAX) {
		w->actor[w->n] = actor ? xstrdup(actor) : NULL;
		w->text[w->n++] = t;
	} else {
		free(t);
	}
}

static void sf_want_clear(struct sf_want *w)
{
	for (size_t i = 0; i < w->n; i++) {
		free(w->text[i]);
		free(w->actor[i]);
	}
	memset(w, 0, sizeof(*w));
}

/* Is el (a feed element, or a comment when comment is set) one that want
 * describes, and not already the answer of another item? */
static int sf_is_earlier(json_t *el, int comment, const struct sf_want *w,
			 const struct feed_item *it)
{
	const char *eid = sf_str(el, "id");
	if (!eid || !*eid)
		return 0;
	const char *aid = sf_str(json_object_get(el, comment ? "user" : "actor"), "id");
	struct buf b;
	buf_init(&b);
	sf_norm_put(&b, sf_body_text(el));
	char *t = buf_steal(&b);
	int match = 0;
	for (size_t i = 0; i < w->n && !match; i++)
		/* 15- and 18-character forms of one id share the first 15 */
		match = (!w->actor[i] || (aid && strncmp(aid, w->actor[i], 15) == 0)) &&
			sf_glob(w->text[i], t);
	free(t);
	if (match && it->remote_known && it->remote_known(it->remote_known_arg, eid))
		match = 0;
	return match;
}

/* Looks for an element that an earlier attempt described by want created:
 * in the group's feed when parent is NULL, else in the comments of parent,
 * newest first, page after page until the elements are older than
 * want->since.  1 found (*id set), 0 not found, -1 cannot tell now (res). */
static int sf_find_earlier(struct chatter *ch, struct http_client *hc, const char *username,
			   const char *group, const char *parent, const struct sf_want *w,
			   const struct feed_item *it, char **id, struct feed_result *res)
{
	*id = NULL;
	char *ge = http_escape(parent ? parent : group);
	char *path = parent ? xasprintf("/chatter/feed-elements/%s/capabilities/comments/items"
					"?pageSize=100",
					ge)
			    : xasprintf("/chatter/feeds/record/%s/feed-elements?pageSize=100"
					"&sort=CreatedDateDesc&recentCommentCount=0",
					ge);
	free(ge);
	int found = 0;
	for (int page = 0; path && !found && page < SF_FIND_PAGES; page++) {
		struct http_request r;
		http_request_init(&r, "GET", NULL);
		http_request_header(&r, "Accept", "application/json");
		int rc = sf_call(ch, hc, username, &r, path, res);
		free(path);
		path = NULL;
		if (rc == 0 && r.status != 200) {
			sf_fail(res, &r, "chatter read");
			res->status = FEED_RETRY;
			rc = -1;
		}
		if (rc != 0) {
			http_request_clear(&r);
			return -1;
		}
		json_t *j = json_loadb(r.response.data, r.response.len, 0, NULL);
		http_request_clear(&r);
		json_t *arr = json_object_get(j, parent ? "items" : "elements");
		size_t i;
		json_t *el;
		int older = 0;
		json_array_foreach(arr, i, el)
		{
			time_t cr = sf_parse_time(sf_str(el, "createdDate"));
			if (cr && cr < w->since) {
				older = 1;
				continue;
			}
			if (sf_is_earlier(el, parent != NULL, w, it)) {
				*id = xstrdup(sf_str(el, "id"));
				found = 1;
				break;
			}
		}
		const char *next = sf_str(j, "nextPageUrl");
		/* only a path on the same service is followed */
		if (!found && !older && next && strncmp(next, "/services/data/", 15) == 0 &&
		    !strpbrk(next, "\r\n "))
			path = xstrdup(next);
		json_decref(j);
	}
	free(path);
	return found;
}

/* ---- delivery ---- */

/* The file id in an upload note ("ID USERNAME") when username uploaded it:
 * a file is private to its owner until attached, so only the same user can
 * attach it.  Owned, or NULL. */
static char *sf_kept_file(const char *note, const char *username)
{
	const char *sp = note ? strchr(note, ' ') : NULL;
	if (!sp || sp == note || strcmp(sp + 1, username) != 0)
		return NULL;
	return xstrndup(note, (size_t)(sp - note));
}

/* Whether attachment a (named name) goes up as the count-th file of at most
 * max; else a note for it joins notes.  The same answer on every attempt. */
static int sf_file_goes(const struct chatter *ch, const struct feed_attachment *a, const char *name,
			size_t *count, size_t max, struct strlist *notes)
{
	const char *why = (long long)a->size > ch->f->max_file_size ? "too large"
			  : *count >= max			    ? "too many files"
								    : NULL;
	if (!why) {
		(*count)++;
		return 1;
	}
	char size[32];
	sf_size_text((long long)a->size, size, sizeof(size));
	char *note = xasprintf("[attachment %s (%s) not uploaded: %s]", name, size, why);
	strlist_add(notes, note);
	free(note);
	return 0;
}

/* How many files an element of it may carry. */
static size_t sf_max_upload(const struct chatter *ch, const struct feed_item *it)
{
	if (it->kind == FEED_POST)
		return (size_t)(ch->f->max_files > 10 ? 10 : ch->f->max_files);
	return ch->f->max_files > 0 ? 1 : 0;
}

/* The notes sf_upload gives for it, without uploading anything. */
static void sf_file_notes(const struct chatter *ch, const struct feed_item *it,
			  struct strlist *notes)
{
	size_t count = 0, max = sf_max_upload(ch, it);
	for (size_t i = 0; i < it->n_attachments; i++) {
		char *name = sf_safe_filename(it->attachments[i].filename);
		sf_file_goes(ch, &it->attachments[i], name, &count, max, notes);
		free(name);
	}
}

/* Uploads the attachments that fit the limits (or reuses what an earlier
 * attempt uploaded); notes for the others go into notes.  Fills file_ids.
 * 0, or -1 with res set. */
static int sf_upload(struct chatter *ch, struct http_client *hc, const char *username,
		     const struct feed_item *it, size_t max_upload, struct strlist *file_ids,
		     struct strlist *notes, struct feed_result *res)
{
	size_t n = it->n_attachments;
	struct http_request *rs = xcalloc(n ? n : 1, sizeof(*rs));
	struct http_part(*parts)[2] = xcalloc(n ? n : 1, sizeof(*parts));
	char **jsons = xcalloc(n ? n : 1, sizeof(char *));
	char **names = xcalloc(n ? n : 1, sizeof(char *));
	char **kept = xcalloc(n ? n : 1, sizeof(char *));
	size_t uploaded = 0;
	int rc = 0;
	for (size_t i = 0; i < n; i++) {
		const struct feed_attachment *a = &it->attachments[i];
		names[i] = sf_safe_filename(a->filename);
		if (!sf_file_goes(ch, a, names[i], &uploaded, max_upload, notes))
			continue;
		kept[i] = sf_kept_file(a->remote, username);
		if (kept[i])
			continue;
		json_t *fj = json_pack("{s:s}", "title", names[i]);
		jsons[i] = json_dumps(fj, JSON_COMPACT);
		json_decref(fj);
		parts[i][0] = (struct http_part){"json", NULL, "application/json; charset=UTF-8",
						 jsons[i], strlen(jsons[i])};
		parts[i][1] = (struct http_part){"fileData", names[i],
						 a->content_type ? a->content_type
								 : "application/octet-stream",
						 a->data, a->size};
		http_request_init(&rs[i], "POST", NULL);
		http_request_header(&rs[i], "Accept", "application/json");
		rs[i].parts = parts[i];
		rs[i].n_parts = 2;
	}
	/* one at a time through sf_call so that a 401 renews the token */
	for (size_t i = 0; i < n && rc == 0; i++) {
		if (kept[i])
			strlist_add(file_ids, kept[i]);
		if (!rs[i].parts)
			continue;
		if (sf_call(ch, hc, username, &rs[i], "/connect/files/users/me", res) != 0) {
			rc = -1;
			break;
		}
		json_t *j = rs[i].status == 201 || rs[i].status == 200
				? json_loadb(rs[i].response.data, rs[i].response.len, 0, NULL)
				: NULL;
		const char *fid = sf_str(j, "id");
		if (fid && *fid && strlen(fid) < 64 && !strchr(fid, ' ')) {
			strlist_add(file_ids, fid);
			if (it->uploaded) {
				char *note = xasprintf("%s %s", fid, username);
				it->uploaded(it->uploaded_arg, &it->attachments[i], note);
				free(note);
			}
		} else {
			sf_fail(res, &rs[i], "chatter file upload");
			rc = -1;
		}
		json_decref(j);
	}
	for (size_t i = 0; i < n; i++) {
		if (rs[i].parts || rs[i].method)
			http_request_clear(&rs[i]);
		free(jsons[i]);
		free(names[i]);
		free(kept[i]);
	}
	free(rs);
	free(parts);
	free(jsons);
	free(names);
	free(kept);
	return rc;
}

/* POSTs one element; 0 with *id set, or -1 with res set. */
static int sf_post(struct chatter *ch, struct http_client *hc, const char *username,
		   const char *path, json_t *body, char **id, struct feed_result *res,
		   const char *what)
{
	struct http_request r;
	http_request_init(&r, "POST", NULL);
	http_request_header(&r, "Accept", "application/json");
	http_request_json(&r, json_dumps(body, JSON_COMPACT));
	int rc = sf_call(ch, hc, username, &r, path, res);
	if (rc == 0) {
		json_t *j = r.status == 201 || r.status == 200
				? json_loadb(r.response.data, r.response.len, 0, NULL)
				: NULL;
		const char *eid = sf_str(j, "id");
		if (eid && strlen(eid) < 64) {
			*id = xstrdup(eid);
		} else {
			sf_fail(res, &r, what);
			rc = -1;
		}
		json_decref(j);
	}
	http_request_clear(&r);
	return rc;
}

/* ---- mentions in the text ---- */

/* Mentions found in an item's text: the span as written ("@Ann Lee") and
 * the user's id. */
struct sf_inline {
	struct strlist spans, ids;
};

static void sf_inline_free(struct sf_inline *m)
{
	strlist_free(&m->spans);
	strlist_free(&m->ids);
}

/* Looks up every "@First Last" and "@address" of text: one that names
 * exactly one active user becomes a mention, the rest stays text.  At most
 * budget mentions.  0, or -1 when a look-up failed for now (res set). */
static int sf_inline_find(struct chatter *ch, struct http_client *hc, const char *text,
			  size_t budget, struct sf_inline *m, struct feed_result *res)
{
	const char *end = text + strlen(text);
	for (const char *p = text; p < end && m->spans.n < budget; p++) {
		size_t len[2];
		int is_address;
		size_t n = mention_at(text, p) ? mention_forms(p, end, len, &is_address) : 0;
		for (size_t k = 0; k < n; k++) {
			char *span = xstrndup(p, len[k]);
			int seen = 0;
			for (size_t i = 0; i < m->spans.n && !seen; i++)
				seen = strcmp(m->spans.v[i], span) == 0;
			char *id = NULL, *username = NULL;
			int denied = 0;
			int f = seen ? 1
				     : sf_user_query(ch, hc, is_address ? "Email" : "Name",
						     span + 1, &id, &username, &denied, res);
			if (f == 1 && !seen) {
				strlist_add(&m->spans, span);
				strlist_add(&m->ids, id);
			}
			free(id);
			free(username);
			free(span);
			if (f < 0)
				return -1;
			if (f == 1) {
				p += len[k] - 1;
				break;
			}
		}
	}
	return 0;
}

/* Turns the spans of m in the Text segments of segs into Mention segments;
 * with m NULL, every possible mention becomes one without an id (what an
 * earlier attempt may have made of it, for sf_segments_norm). */
static json_t *sf_inline_apply(json_t *segs, const struct sf_inline *m)
{
	json_t *out = json_array();
	size_t i;
	json_t *sg;
	json_array_foreach(segs, i, sg)
	{
		const char *type = sf_str(sg, "type");
		const char *t = sf_str(sg, "text");
		if (!type || strcmp(type, "Text") != 0 || !t || !strchr(t, '@')) {
			json_array_append(out, sg);
			continue;
		}
		const char *end = t + strlen(t), *from = t;
		for (const char *p = t; p < end; p++) {
			size_t len[2];
			int is_address;
			size_t n = mention_at(t, p) ? mention_forms(p, end, len, &is_address) : 0;
			const char *id = NULL;
			size_t hit = 0;
			for (size_t k = 0; k < n && !hit; k++) {
				if (!m) {
					hit = len[k];
					id = "";
				}
				for (size_t x = 0; m && x < m->spans.n && !hit; x++)
					if (strlen(m->spans.v[x]) == len[k] &&
					    strncmp(m->spans.v[x], p, len[k]) == 0) {
						hit = len[k];
						id = m->ids.v[x];
					}
			}
			if (!hit)
				continue;
			seg_text(out, from, (size_t)(p - from));
			json_array_append_new(out,
					      json_pack("{s:s, s:s}", "type", "Mention", "id", id));
			p += hit - 1;
			from = p + 1;
		}
		seg_text(out, from, (size_t)(end - from));
	}
	json_decref(segs);
	return out;
}

/* Applies sf_inline_apply to the segments of an element's body. */
static void sf_body_inline(json_t *body, const struct sf_inline *m)
{
	json_t *b = json_object_get(body, "body");
	json_t *segs = json_incref(json_object_get(b, "messageSegments"));
	json_object_set_new(b, "messageSegments", sf_inline_apply(segs, m));
}

/* The body of an item's first (or only) element: From line, subject, the
 * first part of the text, attachment notes, mentions (may be NULL) and
 * hashtags.  Sets *path (owned) to where it is posted. */
static json_t *sf_first_body(const struct feed_item *it, const char *from, const char *text,
			     const struct strlist *notes, const struct strlist *mentions,
			     const struct strlist *file_ids, char **path)
{
	json_t *segs = json_array();
	if (from)
		seg_plain_paragraph(segs, from);
	if (it->kind == FEED_POST && it->subject && *it->subject) {
		seg_markup(segs, "MarkupBegin", "Paragraph");
		seg_markup(segs, "MarkupBegin", "Bold");
		seg_text(segs, it->subject, strlen(it->subject));
		seg_markup(segs, "MarkupEnd", "Bold");
		seg_markup(segs, "MarkupEnd", "Paragraph");
	}
	seg_paragraphs(segs, text);
	for (size_t i = 0; i < notes->n; i++)
		seg_plain_paragraph(segs, notes->v[i]);
	if (mentions && mentions->n) {
		seg_markup(segs, "MarkupBegin", "Paragraph");
		seg_text(segs, "To: ", 4);
		for (size_t i = 0; i < mentions->n; i++) {
			if (i)
				seg_text(segs, ", ", 2);
			json_array_append_new(
			    segs, json_pack("{s:s, s:s}", "type", "Mention", "id", mentions->v[i]));
		}
		seg_markup(segs, "MarkupEnd", "Paragraph");
	}
	int any_tag = 0;
	for (size_t i = 0; it->hashtags && i < it->hashtags->n; i++) {
		char *t = sf_tag(it->hashtags->v[i]);
		if (*t) {
			if (!any_tag)
				seg_markup(segs, "MarkupBegin", "Paragraph");
			else
				seg_text(segs, " ", 1);
			json_array_append_new(segs,
					      json_pack("{s:s, s:s}", "type", "Hashtag", "tag", t));
			any_tag = 1;
		}
		free(t);
	}
	if (any_tag)
		seg_markup(segs, "MarkupEnd", "Paragraph");

	json_t *body = json_pack("{s:{s:o}}", "body", "messageSegments", segs);
	if (it->kind == FEED_POST) {
		json_object_set_new(body, "feedElementType", json_string("FeedItem"));
		json_object_set_new(body, "subjectId", json_string(it->group));
		if (file_ids->n) {
			json_t *items = json_array();
			for (size_t i = 0; i < file_ids->n; i++)
				json_array_append_new(items,
						      json_pack("{s:s}", "id", file_ids->v[i]));
			json_object_set_new(body, "capabilities",
					    json_pack("{s:{s:o}}", "files", "items", items));
		}
		*path = xstrdup("/chatter/feed-elements");
	} else {
		if (file_ids->n)
			json_object_set_new(
			    body, "capabilities",
			    json_pack("{s:{s:s}}", "content", "contentDocumentId", file_ids->v[0]));
		char *pe = http_escape(it->parent_remote_id);
		*path = xasprintf("/chatter/feed-elements/%s/capabilities/comments/items", pe);
		free(pe);
	}
	return body;
}

/* "From NAME <address>" for an item the integration user posts, or NULL. */
static char *sf_from_line(const struct chatter *ch, const struct feed_item *it)
{
	const char *nm = it->author_name && *it->author_name ? it->author_name : NULL;
	const char *em = it->author_email && *it->author_email ? it->author_email : NULL;
	const char *unv =
	    ch->f->post_as == POST_AS_AUTHOR && !it->author_verified ? " (unverified)" : "";
	if (nm && em)
		return xasprintf("From %s <%s>%s", nm, em, unv);
	if (nm || em)
		return xasprintf("From %s%s", nm ? nm : em, unv);
	return NULL;
}

/* Characters the first part's fixed pieces take (From line, subject,
 * attachment notes, hashtags, mentions). */
static size_t sf_fixed(const struct chatter *ch, const struct feed_item *it, const char *from)
{
	size_t fixed = (from ? utf8_count(from, strlen(from)) : 0) + 20;
	if (it->kind == FEED_POST && it->subject)
		fixed += utf8_count(it->subject, strlen(it->subject));
	for (size_t i = 0; it->hashtags && i < it->hashtags->n; i++)
		fixed += strlen(it->hashtags->v[i]) + 2;
	fixed += it->n_attachments * 300;
	if (ch->f->mentions && it->recipients)
		fixed += 8 + it->recipients->n * SF_MENTION_CHARS;
	return fixed;
}

/* The item's text in parts, as feed_http_deliver_parts splits it. */
static void sf_item_parts(const struct chatter *ch, const struct feed_item *it, const char *from,
			  struct strlist *parts)
{
	feed_http_split(it->text, SF_BODY_BUDGET, sf_fixed(ch, it, from), SF_MIN_FIRST, parts);
}

/* Adds to w the first elements an attempt at it may have posted as actor
 * (from: with that From line): with and without the mentions. */
static void sf_want_first(const struct chatter *ch, const struct feed_item *it, const char *from,
			  const char *actor, struct sf_want *w)
{
	struct strlist parts = {0}, notes = {0}, none = {0}, some = {0};
	sf_item_parts(ch, it, from, &parts);
	sf_file_notes(ch, it, &notes);
	char *path = NULL;
	json_t *b = sf_first_body(it, from, parts.v[0], &notes, NULL, &none, &path);
	if (ch->f->mentions)
		sf_body_inline(b, NULL);
	sf_want_add(w, b, actor);
	json_decref(b);
	free(path);
	if (ch->f->mentions && it->recipients && it->recipients->n) {
		strlist_add(&some, "");
		path = NULL;
		b = sf_first_body(it, from, parts.v[0], &notes, &some, &none, &path);
		sf_body_inline(b, NULL);
		sf_want_add(w, b, actor);
		json_decref(b);
		free(path);
	}
	strlist_free(&parts);
	strlist_free(&notes);
	strlist_free(&some);
}

/* The body of continuation part i (from 1) of n. */
static json_t *sf_continuation_body(size_t i, size_t n, const char *text)
{
	json_t *segs = json_array();
	char *head = xasprintf("(continued, part %zu of %zu)", i + 1, n);
	seg_plain_paragraph(segs, head);
	free(head);
	seg_paragraphs(segs, text);
	return json_pack("{s:{s:o}}", "body", "messageSegments", segs);
}

/* Sets *actor to the user id username posts as (NULL when the service did
 * not say), logging in if needed.  0, or -1 with res set. */
static int sf_actor(struct chatter *ch, struct http_client *hc, const char *username, char **actor,
		    struct feed_result *res)
{
	char *tok = NULL, *inst = NULL;
	int denied = 0;
	*actor = NULL;
	if (sf_session_get(ch, hc, username, &tok, &inst, res, &denied) != 0)
		return -1;
	free(tok);
	free(inst);
	*actor = sf_session_user(ch, username);
	return 0;
}

/* ---- routing a new thread to a record ---- */

/* The one record a SOQL query finds, by the value of its column `column`
 * (cached like users).  1 found (*id set, owned), 0 none or several, -1 the
 * look-up failed for now (res set). */
static int sf_soql_one(struct chatter *ch, struct http_client *hc, const char *before,
		       const char *value, const char *after, const char *column, char **id,
		       struct feed_result *res)
{
	*id = NULL;
	time_t now = time(NULL);
	char *path = sf_query_path(before, value, after);
	char *ckey = xasprintf("soql:%s", path);
	char *name = NULL;
	int denied = 0;
	int known = feed_user_cache_get(ch->users, ckey, now, id, &name, &denied);
	free(name);
	if (known >= 0) {
		free(path);
		free(ckey);
		return known;
	}
	struct http_request r;
	http_request_init(&r, "GET", NULL);
	http_request_header(&r, "Accept", "application/json");
	int rc = sf_call(ch, hc, ch->f->username, &r, path, res);
	free(path);
	if (rc == 0 && r.status != 200) {
		sf_fail(res, &r, "chatter record lookup");
		if (feed_http_status(r.status, r.curl_failed) != FEED_RETRY && r.status != 401) {
			/* a query the org refuses (no such object or field): no
			 * record, and the admin reads why in the log */
			char e[300];
			log_warn("chatter.route_lookup_failed error=%s",
				 log_quote(res->error, e, sizeof(e)));
			memset(res, 0, sizeof(*res));
			feed_user_cache_put(ch->users, ckey, now, NULL, NULL);
			rc = 1;
		} else {
			res->status = FEED_RETRY;
			rc = -1;
		}
	}
	if (rc != 0) {
		http_request_clear(&r);
		free(ckey);
		return rc > 0 ? 0 : -1;
	}
	json_t *j = json_loadb(r.response.data, r.response.len, 0, NULL);
	http_request_clear(&r);
	json_t *recs = json_object_get(j, "records");
	const char *v = json_array_size(recs) == 1 ? sf_str(json_array_get(recs, 0), column) : NULL;
	int found = sf_id_ok(v);
	if (found)
		*id = xstrdup(v);
	feed_user_cache_put(ch->users, ckey, now, found ? v : NULL, found ? "record" : NULL);
	json_decref(j);
	free(ckey);
	return found;
}

/* The Account of a Contact (or converted Lead) with address email. */
static int sf_account_of(struct chatter *ch, struct http_client *hc, const char *email, char **id,
			 struct feed_result *res)
{
	int f = sf_soql_one(ch, hc, "SELECT AccountId FROM Contact WHERE Email = '", email,
			    "' AND AccountId != null LIMIT 2", "AccountId", id, res);
	if (f != 0)
		return f;
	return sf_soql_one(ch, hc, "SELECT ConvertedAccountId FROM Lead WHERE Email = '", email,
			   "' AND IsConverted = true LIMIT 2", "ConvertedAccountId", id, res);
}

/* The record a new thread goes to by the routes of its mapping, tried in
 * order: 1 (*target set, owned; why says which rule found it), 0 the
 * mapping's group, -1 a look-up failed for now (res set). */
static int sf_route(struct chatter *ch, struct http_client *hc, const struct feed_item *it,
		    char **target, char *why, size_t whylen, struct feed_result *res)
{
	*target = NULL;
	const struct mf_mailbox *mb = NULL;
	for (size_t i = 0; ch->cfg && i < ch->cfg->n_mailboxes && !mb; i++)
		if (ch->cfg->mailboxes[i].routes.n && ch->cfg->mailboxes[i].group &&
		    strcmp(ch->cfg->mailboxes[i].group, it->group) == 0)
			mb = &ch->cfg->mailboxes[i];
	if (!mb || it->kind != FEED_POST)
		return 0;
	int f = 0;
	for (size_t i = 0; i < mb->routes.n && f == 0; i++) {
		struct route r;
		char err[200];
		if (route_parse(mb->routes.v[i], &r, err, sizeof err) < 0)
			continue; /* refused when the configuration was read */
		if (r.kind == ROUTE_REFERENCE) {
			char *ref = route_reference(&r, it->subject, it->text);
			if (ref) {
				char *pre =
				    xasprintf("SELECT Id FROM %s WHERE %s = '", r.object, r.field);
				f = sf_soql_one(ch, hc, pre, ref, "' LIMIT 2", "Id", target, res);
				free(pre);
				if (f == 1)
					snprintf(why, whylen, "reference %.100s as %s.%s", ref,
						 r.object, r.field);
				free(ref);
			}
		} else {
			/* the sender, else the people written to, in order */
			if (it->author_email && *it->author_email) {
				f = sf_account_of(ch, hc, it->author_email, target, res);
				if (f == 1)
					snprintf(why, whylen, "account of %.200s",
						 it->author_email);
			}
			for (size_t k = 0; f == 0 && it->recipients && k < it->recipients->n; k++) {
				f = sf_account_of(ch, hc, it->recipients->v[k], target, res);
				if (f == 1)
					snprintf(why, whylen, "account of %.200s",
						 it->recipients->v[k]);
			}
		}
		route_free(&r);
	}
	return f;
}

/* post_as = author: acts as the item's sender when the mail server vouched
 * for them and they are a user who may be acted as.  1 (*username set),
 * 0 (post as the integration user), -1 transient failure (res set). */
static int sf_as_author(struct chatter *ch, struct http_client *hc, const struct feed_item *it,
			char **username, struct feed_result *res)
{
	*username = NULL;
	if (ch->f->post_as != POST_AS_AUTHOR || !it->author_verified || !it->author_email ||
	    !*it->author_email)
		return 0;
	char *au = NULL;
	int f = sf_author_lookup(ch, hc, it->author_email, &au, res);
	if (f != 1)
		return f;
	char *tok = NULL, *inst = NULL;
	int denied = 0;
	struct feed_result tmp;
	memset(&tmp, 0, sizeof(tmp));
	int rc = 0;
	if (sf_session_get(ch, hc, au, &tok, &inst, &tmp, &denied) == 0) {
		*username = au;
		au = NULL;
		rc = 1;
	} else if (denied) {
		sf_author_deny(ch, it->author_email);
	} else {
		*res = tmp;
		rc = -1;
	}
	free(tok);
	free(inst);
	free(au);
	return rc;
}

/* One item on its way (the hooks of feed_http_deliver_parts). */
struct sf_job {
	struct chatter *ch;
	struct http_client *hc;
	const struct feed_item *it;
	const char *username; /* who posts */
	char *from;	      /* the From line when the integration user posts */
	char *actor;	      /* username's user id */
	struct strlist file_ids, notes, mention_ids;
	struct sf_inline inl;
	int posted; /* the first part was sent (and refused) */
};

static int sf_hook_begin(void *hook, size_t n, struct feed_result *res)
{
	struct sf_job *j = hook;
	return sf_actor(j->ch, j->hc, j->username, &j->actor, res);
}

/* Part 0 is found by the elements an attempt may have made, a continuation
 * by its body, both as actor. */
static int sf_hook_find(void *hook, size_t i, size_t n, const char *text, const char *thread,
			char **id, struct feed_result *res)
{
	struct sf_job *j = hook;
	struct sf_want w = {.since = j->it->created - SF_CLOCK_SLACK};
	if (i == 0) {
		sf_want_first(j->ch, j->it, j->from, j->actor, &w);
	} else {
		json_t *like = sf_continuation_body(i, n, text);
		if (j->ch->f->mentions)
			sf_body_inline(like, NULL);
		sf_want_add(&w, like, j->actor);
		json_decref(like);
	}
	int f =
	    sf_find_earlier(j->ch, j->hc, j->username, j->it->group, thread, &w, j->it, id, res);
	sf_want_clear(&w);
	return f;
}

/* The mentions are looked up before any upload: a failed look-up is
 * retried, and must not leave files behind.  The retry posts without
 * mentions, with the files already uploaded. */
static int sf_hook_first(void *hook, const char *text, int retry, char **id,
			 struct feed_result *res)
{
	struct sf_job *j = hook;
	struct chatter *ch = j->ch;
	const struct feed_item *it = j->it;
	if (!retry) {
		if (ch->f->mentions && sf_mentions(ch, j->hc, it, &j->mention_ids, res) != 0)
			return -1;
		/* "@First Last" and "@address" in the text; a Chatter element
		 * takes at most 25 mentions in all */
		size_t left =
		    j->mention_ids.n < SF_MAX_MENTIONS ? SF_MAX_MENTIONS - j->mention_ids.n : 0;
		if (ch->f->mentions &&
		    sf_inline_find(ch, j->hc, it->text ? it->text : "", left, &j->inl, res) != 0)
			return -1;
		if (sf_upload(ch, j->hc, j->username, it, sf_max_upload(ch, it), &j->file_ids,
			      &j->notes, res) != 0)
			return -1;
	}
	char *path = NULL;
	json_t *body = sf_first_body(it, j->from, text, &j->notes, retry ? NULL : &j->mention_ids,
				     &j->file_ids, &path);
	if (j->inl.spans.n)
		sf_body_inline(body, &j->inl);
	j->posted = 1;
	int rc = sf_post(ch, j->hc, j->username, path, body, id, res,
			 it->kind == FEED_POST ? "chatter post" : "chatter comment");
	json_decref(body);
	free(path);
	return rc;
}

/* Nothing was created: a mention the service does not take must not cost
 * the post. */
static int sf_hook_fallback(void *hook, const struct feed_result *res)
{
	struct sf_job *j = hook;
	if (!j->posted || res->status != FEED_PERMANENT || (!j->mention_ids.n && !j->inl.spans.n))
		return 0;
	char e[300];
	log_warn("chatter.mentions_refused outbox_id=%lld mentions=%zu error=%s",
		 (long long)j->it->id, j->mention_ids.n, log_quote(res->error, e, sizeof(e)));
	strlist_free(&j->mention_ids);
	sf_inline_free(&j->inl);
	return 1;
}

/* Continuations: comments on the post (or on the comment's post). */
static int sf_hook_next(void *hook, size_t i, size_t n, const char *text, const char *thread,
			struct feed_result *res)
{
	struct sf_job *j = hook;
	json_t *body = sf_continuation_body(i, n, text);
	if (j->inl.spans.n)
		sf_body_inline(body, &j->inl);
	char *pe = http_escape(thread), *have = NULL;
	char *path = xasprintf("/chatter/feed-elements/%s/capabilities/comments/items", pe);
	int rc = sf_post(j->ch, j->hc, j->username, path, body, &have, res,
			 "chatter continuation comment");
	free(pe);
	free(path);
	free(have);
	json_decref(body);
	return rc;
}

static void chatter_deliver_one(void *ctx, struct http_client *hc, const struct feed_item *item,
				struct feed_result *res)
{
	struct chatter *ch = ctx;
	/* a new thread may belong on a record's feed (the mapping's routes) */
	char *record = NULL, why[300] = "";
	if (sf_route(ch, hc, item, &record, why, sizeof why, res) < 0)
		return;
	struct feed_item routed = *item;
	if (record) {
		routed.group = record;
		log_info("chatter.routed outbox_id=%lld record=%s by=%s", (long long)item->id,
			 record, LOG_Q(why));
	}
	const struct feed_item *it = &routed;
	char *author = NULL;
	int as_author = sf_as_author(ch, hc, it, &author, res);
	if (as_author < 0) {
		free(record);
		return;
	}
	struct sf_job j = {.ch = ch,
			   .hc = hc,
			   .it = it,
			   .username = as_author ? author : ch->f->username,
			   .from = as_author ? NULL : sf_from_line(ch, it)};
	struct feed_parts p = {.service = "Chatter",
			       .unit = "characters",
			       .text = it->text,
			       .budget = SF_BODY_BUDGET,
			       .fixed = sf_fixed(ch, it, j.from),
			       .min_first = SF_MIN_FIRST,
			       .max_parts = SF_MAX_PARTS,
			       .hook = &j,
			       .begin = sf_hook_begin,
			       .find_part = sf_hook_find,
			       .first = sf_hook_first,
			       .fallback = sf_hook_fallback,
			       .next = sf_hook_next};
	size_t n = 0;
	if (feed_http_deliver_parts(&p, it, res, &n) == 0)
		log_info("chatter.delivered outbox_id=%lld kind=%s remote_id=%s parts=%zu "
			 "files=%zu mentions=%zu as_author=%d",
			 (long long)it->id, it->kind == FEED_POST ? "post" : "comment",
			 res->remote_id, n, j.file_ids.n, j.mention_ids.n + j.inl.spans.n,
			 as_author);
	sf_inline_free(&j.inl);
	free(record);
	free(author);
	free(j.actor);
	free(j.from);
	strlist_free(&j.file_ids);
	strlist_free(&j.notes);
	strlist_free(&j.mention_ids);
}

/* ---- backend interface ---- */

static void chatter_close(void *ctx)
{
	struct chatter *ch = ctx;
	if (!ch)
		return;
	feed_http_pool_close(&ch->pool);
	for (size_t i = 0; i < ch->n_sessions; i++) {
		free(ch->sessions[i].username);
		free(ch->sessions[i].token);
		free(ch->sessions[i].instance);
		free(ch->sessions[i].user_id);
	}
	free(ch->sessions);
	feed_user_cache_free(ch->users);
	jwt_key_free(ch->key);
	pthread_mutex_destroy(&ch->mu);
	pthread_mutex_destroy(&ch->login_mu);
	free(ch->token_url);
	free(ch->audience);
	free(ch->cfg_instance);
	free(ch);
}

static int chatter_open(const struct mf_config *cfg, struct store *st, void **ctx, char *err,
			size_t errlen)
{
	const struct mf_feed *f = &cfg->feed;
	*ctx = NULL;
	if (!f->client_id || !f->username || !f->private_key_file || !f->instance_url ||
	    !f->login_url || !f->api_version) {
		snprintf(err, errlen,
			 "[feed] backend = chatter needs client_id, username, "
			 "private_key_file and instance_url");
		return -1;
	}
	struct chatter *ch = xcalloc(1, sizeof(*ch));
	pthread_mutex_init(&ch->mu, NULL);
	pthread_mutex_init(&ch->login_mu, NULL);
	ch->users = feed_user_cache_new(SF_USER_TTL, SF_NEGATIVE_TTL);
	ch->f = f;
	ch->cfg = cfg;
	ch->key = jwt_key_load(f->private_key_file, err, errlen);
	if (!ch->key) {
		chatter_close(ch);
		return -1;
	}
	char *login = sf_strip_slash(f->login_url);
	ch->token_url = xasprintf("%s/services/oauth2/token", login);
	free(login);
	ch->audience = sf_audience(f->login_url);
	ch->cfg_instance = sf_strip_slash(f->instance_url);
	if (feed_http_pool_open(&ch->pool, f, 2, err, errlen) != 0) {
		chatter_close(ch);
		return -1;
	}
	*ctx = ch;
	return 0;
}

static void chatter_deliver(void *ctx, const struct feed_item *items, size_t n,
			    struct feed_result *results)
{
	struct chatter *ch = ctx;
	feed_http_deliver(&ch->pool, "chatter", chatter_deliver_one, ch, items, n, results);
}

static int chatter_reconcile(void *ctx, const struct feed_item *orig, char **remote_id)
{
	struct chatter *ch = ctx;
	struct http_client *hc = ch->pool.clients[0];
	struct feed_result res;
	memset(&res, 0, sizeof(res));
	char *record = NULL, why[300];
	if (sf_route(ch, hc, orig, &record, why, sizeof why, &res) < 0) {
		log_warn("chatter.reconcile_failed outbox_id=%lld error=%s", (long long)orig->id,
			 LOG_Q(res.error));
		return -1;
	}
	struct feed_item routed = *orig;
	if (record)
		routed.group = record;
	const struct feed_item *item = &routed;
	struct sf_want w = {.since = item->created - SF_CLOCK_SLACK};
	/* as the integration user, with the From line */
	char *actor = NULL;
	if (sf_actor(ch, hc, ch->f->username, &actor, &res) != 0) {
		log_warn("chatter.reconcile_failed outbox_id=%lld error=%s", (long long)item->id,
			 LOG_Q(res.error));
		free(record);
		return -1;
	}
	char *from = sf_from_line(ch, item);
	sf_want_first(ch, item, from, actor, &w);
	free(from);
	free(actor);
	/* or as the sender, when they could have been acted as */
	if (ch->f->post_as == POST_AS_AUTHOR && item->author_verified && item->author_email &&
	    *item->author_email) {
		char *id = NULL, *username = NULL;
		int denied = 0;
		if (sf_user_lookup(ch, hc, item->author_email, &id, &username, &denied, &res) == 1)
			sf_want_first(ch, item, NULL, id, &w);
		free(id);
		free(username);
	}
	int f = sf_find_earlier(ch, hc, ch->f->username, item->group,
				item->kind == FEED_COMMENT ? item->parent_remote_id : NULL, &w,
				item, remote_id, &res);
	sf_want_clear(&w);
	free(record);
	if (f < 0)
		log_warn("chatter.reconcile_failed outbox_id=%lld error=%s", (long long)item->id,
			 LOG_Q(res.error));
	return f;
}

/* Text as read back: the "mailfeed:KEY" paragraph that earlier versions
 * added to every element dropped. */
static char *sf_entry_text(const char *t)
{
	if (!t)
		return xstrdup("");
	char *s = xstrdup(t);
	char *m = strstr(s, FEED_MARKER_PREFIX);
	char *last = NULL;
	while (m) {
		last = m;
		m = strstr(m + 1, FEED_MARKER_PREFIX);
	}
	if (last && !strchr(last, ' ') && !strchr(last, '\n')) {
		*last = '\0';
		str_trim(s);
	}
	return s;
}

/* One file summary of an element or comment as a file of e: its title
 * (or name), contentSize, and a link to its page at the instance. */
static void sf_entry_file(struct feed_entry *e, json_t *f, const char *instance)
{
	const char *id = sf_str(f, "id");
	const char *title = sf_str(f, "title");
	json_t *sz = json_object_get(f, "contentSize");
	if (!id || e->n_files >= 32)
		return;
	if (!title)
		title = sf_str(f, "name");
	int ok = strlen(id) <= 18;
	for (const char *p = id; *p && ok; p++)
		ok = (*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'z') ||
		     (*p >= 'A' && *p <= 'Z');
	char *url = ok ? xasprintf("%s/%s", instance, id) : NULL;
	feed_entry_add_file(e, title, json_is_integer(sz) ? (long long)json_integer_value(sz) : -1,
			    url);
	free(url);
}

static void sf_entry_add(struct feed_entry **v, size_t *n, json_t *el, const char *group,
			 const char *parent, const char *instance, json_t *who)
{
	const char *id = sf_str(el, "id");
	if (!id)
		return;
	*v = xrealloc(*v, (*n + 1) * sizeof(**v));
	struct feed_entry *e = &(*v)[(*n)++];
	memset(e, 0, sizeof(*e));
	e->remote_id = xstrdup(id);
	e->parent_remote_id = parent ? xstrdup(parent) : NULL;
	e->group = xstrdup(group);
	const char *name = sf_str(who, "displayName");
	if (!name)
		name = sf_str(who, "name");
	e->author_name = name ? xstrdup(name) : NULL;
	e->text = sf_entry_text(sf_body_text(el));
	e->url = xasprintf("%s/%s", instance, parent ? parent : id);
	e->created = sf_parse_time(sf_str(el, "createdDate"));
	/* a post's files, or the one file of a comment */
	json_t *caps = json_object_get(el, "capabilities");
	size_t i;
	json_t *f;
	json_array_foreach(json_object_get(json_object_get(caps, "files"), "items"), i, f)
	    sf_entry_file(e, f, instance);
	json_t *content = json_object_get(caps, "content");
	if (json_is_object(content))
		sf_entry_file(e, content, instance);
}

static int sf_entry_cmp(const void *a, const void *b)
{
	const struct feed_entry *x = a, *y = b;
	return x->created < y->created ? -1 : x->created > y->created;
}

/* Appends the entries of one Feed Element Page created after since (posts
 * and their embedded comments) and returns the next page's path, or NULL
 * when the page reached older elements or was the last. */
char *feed_chatter_parse_page(const char *json, size_t len, const char *group, time_t since,
			      const char *instance, struct feed_entry **entries, size_t *n)
{
	json_t *j = json_loadb(json, len, 0, NULL);
	size_t i;
	json_t *el;
	int older = 0;
	json_array_foreach(json_object_get(j, "elements"), i, el)
	{
		const char *pid = sf_str(el, "id");
		time_t mod = sf_parse_time(sf_str(el, "modifiedDate"));
		time_t cr = sf_parse_time(sf_str(el, "createdDate"));
		if (mod && mod <= since && cr <= since) {
			older = 1;
			continue;
		}
		if (!pid)
			continue;
		if (cr > since)
			sf_entry_add(entries, n, el, group, NULL, instance,
				     json_object_get(el, "actor"));
		json_t *page = json_object_get(
		    json_object_get(json_object_get(el, "capabilities"), "comments"), "page");
		size_t k;
		json_t *c;
		json_array_foreach(json_object_get(page, "items"), k, c)
		{
			if (sf_parse_time(sf_str(c, "createdDate")) > since)
				sf_entry_add(entries, n, c, group, pid, instance,
					     json_object_get(c, "user"));
		}
	}
	const char *next = sf_str(j, "nextPageUrl");
	char *path = NULL;
	if (!older && next && strncmp(next, "/services/", 10) == 0 && strlen(next) < 2048 &&
	    !strpbrk(next, "\r\n "))
		path = xstrdup(next);
	json_decref(j);
	return path;
}

/* GET path as the integration user: 0 with the 200 answer in *r (the
 * caller clears it), or -1 with err ("what: ...") and *r cleared. */
static int sf_get(struct chatter *ch, struct http_client *hc, const char *path, const char *what,
		  struct http_request *r, char *err, size_t errlen)
{
	struct feed_result res;
	memset(&res, 0, sizeof(res));
	http_request_init(r, "GET", NULL);
	http_request_header(r, "Accept", "application/json");
	if (sf_call(ch, hc, ch->f->username, r, path, &res) != 0 || r->status != 200) {
		if (res.error[0] == '\0')
			sf_fail(&res, r, what);
		snprintf(err, errlen, "%s", res.error);
		http_request_clear(r);
		feed_result_clear(&res);
		return -1;
	}
	feed_result_clear(&res);
	return 0;
}

static int chatter_read_group(void *ctx, const char *group, time_t since,
			      struct feed_entry **entries, size_t *n, char *err, size_t errlen)
{
	struct chatter *ch = ctx;
	struct http_client *hc = ch->pool.clients[0];
	*entries = NULL;
	*n = 0;
	char *ge = http_escape(group);
	char *path = xasprintf("/chatter/feeds/record/%s/feed-elements?pageSize=100"
			       "&sort=LastModifiedDateDesc&recentCommentCount=25",
			       ge);
	free(ge);
	int rc = 0;
	char *instance = NULL;
	for (int page = 0; page < SF_READ_PAGES && path; page++) {
		struct http_request r;
		if (sf_get(ch, hc, path, "chatter read", &r, err, errlen) < 0) {
			rc = -1;
			break;
		}
		free(path);
		path = NULL;
		if (!instance) {
			pthread_mutex_lock(&ch->mu);
			struct sf_session *s = sf_session_find(ch, ch->f->username);
			instance = xstrdup(s && s->instance ? s->instance : ch->cfg_instance);
			pthread_mutex_unlock(&ch->mu);
		}
		path = feed_chatter_parse_page(r.response.data, r.response.len, group, since,
					       instance, entries, n);
		http_request_clear(&r);
	}
	free(path);
	free(instance);
	if (rc != 0) {
		feed_entries_free(*entries, *n);
		*entries = NULL;
		*n = 0;
		return -1;
	}
	if (*n > 1)
		qsort(*entries, *n, sizeof(**entries), sf_entry_cmp);
	return 0;
}

/* ---- group members (digest subscribers = feed) ---- */

#define SF_MEMBER_PAGES 100 /* 2,000 records a page: 200,000 members */

/* CollaborationGroupMember.NotificationFrequency: P every post, D daily
 * digest, W weekly digest, N never. */
static int sf_member_frequency(const char *code, enum frequency *f)
{
	if (!code || strlen(code) != 1)
		return -1;
	switch (code[0]) {
	case 'P':
		*f = FREQ_EACH;
		return 0;
	case 'D':
		*f = FREQ_DAILY;
		return 0;
	case 'W':
		*f = FREQ_WEEKLY;
		return 0;
	case 'N':
		*f = FREQ_NEVER;
		return 0;
	}
	return -1;
}

int feed_chatter_parse_members(const char *json, size_t len, struct feed_member **members,
			       size_t *n, char **next)
{
	json_t *j = json_loadb(json, len, 0, NULL);
	json_t *recs = json_object_get(j, "records");
	json_t *done = json_object_get(j, "done");
	size_t i;
	json_t *rec;

	*next = NULL;
	if (!json_is_array(recs) || !json_is_boolean(done)) {
		json_decref(j);
		return -1;
	}
	if (!json_is_true(done)) {
		/* more pages: without the locator the list would be cut short,
		 * and members on later pages taken as gone */
		const char *url = sf_str(j, "nextRecordsUrl");
		if (!url || strncmp(url, "/services/data/", 15) != 0 || strlen(url) > 2048 ||
		    strpbrk(url, "\r\n \t")) {
			json_decref(j);
			return -1;
		}
		*next = xstrdup(url);
	}
	json_array_foreach(recs, i, rec)
	{
		json_t *m = json_object_get(rec, "Member");
		const char *email = json_is_object(m) ? sf_str(m, "Email") : NULL;
		const char *name = json_is_object(m) ? sf_str(m, "Name") : NULL;
		enum frequency f;
		if (!email_address_valid(email) ||
		    sf_member_frequency(sf_str(rec, "NotificationFrequency"), &f) < 0)
			continue;
		*members = xrealloc(*members, (*n + 1) * sizeof(**members));
		struct feed_member *fm = &(*members)[(*n)++];
		fm->email = xstrdup(email);
		str_lower(fm->email);
		fm->name = name && strlen(name) < 256 ? xstrdup(name) : NULL;
		fm->frequency = f;
	}
	json_decref(j);
	return 0;
}

static int chatter_read_members(void *ctx, const char *group, struct feed_member **members,
				size_t *n, char *err, size_t errlen)
{
	struct chatter *ch = ctx;
	struct http_client *hc = ch->pool.clients[0];
	int rc = 0;

	*members = NULL;
	*n = 0;
	char *path =
	    sf_query_path("SELECT MemberId, Member.Email, Member.Name, NotificationFrequency"
			  " FROM CollaborationGroupMember WHERE CollaborationGroupId = '",
			  group, "'");
	for (int page = 0; path; page++) {
		struct http_request r;
		if (page == SF_MEMBER_PAGES) {
			snprintf(err, errlen,
				 "chatter members: more than %d pages of members; list not "
				 "complete",
				 SF_MEMBER_PAGES);
			rc = -1;
			break;
		}
		if (sf_get(ch, hc, path, "chatter members", &r, err, errlen) < 0) {
			rc = -1;
			break;
		}
		free(path);
		path = NULL;
		if (feed_chatter_parse_members(r.response.data, r.response.len, members, n, &path) <
		    0) {
			snprintf(err, errlen,
				 "chatter members: the answer to the membership query is not a "
				 "complete query result");
			rc = -1;
		}
		http_request_clear(&r);
		if (rc)
			break;
	}
	free(path);
	if (rc != 0) {
		feed_members_free(*members, *n);
		*members = NULL;
		*n = 0;
	}
	return rc;
}

/* ---- check-config --online ---- */

static int chatter_check_login(void *ctx, char *msg, size_t msglen)
{
	struct chatter *ch = ctx;
	struct feed_result res;
	char *token = NULL, *instance = NULL;
	int denied;

	memset(&res, 0, sizeof(res));
	if (sf_session_get(ch, ch->pool.clients[0], ch->f->username, &token, &instance, &res,
			   &denied) != 0) {
		snprintf(msg, msglen, "%s", res.error);
		feed_result_clear(&res);
		return -1;
	}
	snprintf(msg, msglen, "logged in as %s at %s", ch->f->username, instance);
	free(token);
	free(instance);
	feed_result_clear(&res);
	return 0;
}

/* GET path as the integration user: the HTTP status (*j the parsed JSON
 * answer when 200, else NULL), or -1 when the service could not be asked
 * (msg says why). */
static int sf_get_json(struct chatter *ch, const char *path, const char *what, json_t **j,
		       char *msg, size_t msglen)
{
	struct feed_result res;
	struct http_request r;
	memset(&res, 0, sizeof(res));
	*j = NULL;
	http_request_init(&r, "GET", NULL);
	http_request_header(&r, "Accept", "application/json");
	int rc = sf_call(ch, ch->pool.clients[0], ch->f->username, &r, path, &res);
	if (rc != 0 || (r.status != 200 && r.status != 404)) {
		if (res.error[0] == '\0')
			sf_fail(&res, &r, what);
		snprintf(msg, msglen, "%s", res.error);
		rc = -1;
	} else {
		rc = (int)r.status;
		if (rc == 200)
			*j = json_loadb(r.response.data, r.response.len, 0, NULL);
	}
	http_request_clear(&r);
	feed_result_clear(&res);
	return rc;
}

/* The describe of object (GET /sobjects/OBJECT/describe): the answer, or
 * NULL with what is wrong in msg. */
static json_t *sf_describe(struct chatter *ch, const char *object, char *msg, size_t msglen)
{
	json_t *j = NULL;
	if (!object || !route_api_name(object, strlen(object))) {
		snprintf(msg, msglen, "\"%.80s\" is not an object name", object ? object : "");
		return NULL;
	}
	char *path = xasprintf("/sobjects/%s/describe", object);
	int st = sf_get_json(ch, path, "chatter describe", &j, msg, msglen);
	free(path);
	if (st == 404)
		snprintf(msg, msglen, "no object %s in the org (or %s may not see it)", object,
			 ch->f->username);
	else if (st == 200 && (!json_is_object(j) || !sf_str(j, "name") ||
			       !json_is_array(json_object_get(j, "fields"))))
		snprintf(msg, msglen, "describe %s: the answer is not an object description",
			 object);
	else if (st == 200)
		return j;
	json_decref(j);
	return NULL;
}

/* Whether the describe desc lists field (readable by the integration user:
 * fields it may not read are left out of a describe). */
static int sf_has_field(json_t *desc, const char *field)
{
	size_t i;
	json_t *f;
	json_array_foreach(json_object_get(desc, "fields"), i, f)
	{
		const char *name = sf_str(f, "name");
		if (name && strcasecmp(name, field) == 0)
			return 1;
	}
	return 0;
}

/* The object whose ids start with prefix, by the global describe (GET
 * /sobjects/): its name (owned), or NULL with msg. */
static char *sf_object_of_prefix(struct chatter *ch, const char *prefix, char *msg, size_t msglen)
{
	json_t *j = NULL;
	char *name = NULL;
	int st = sf_get_json(ch, "/sobjects/", "chatter describe", &j, msg, msglen);
	if (st < 0)
		return NULL;
	size_t i;
	json_t *o;
	json_array_foreach(json_object_get(j, "sobjects"), i, o)
	{
		const char *kp = sf_str(o, "keyPrefix"), *n = sf_str(o, "name");
		if (kp && strcmp(kp, prefix) == 0 && n && route_api_name(n, strlen(n))) {
			name = xstrdup(n);
			break;
		}
	}
	if (!name && st == 200 && json_is_array(json_object_get(j, "sobjects")))
		snprintf(msg, msglen, "no object of the org has the key prefix %s", prefix);
	else if (!name)
		snprintf(msg, msglen, "describe: the answer is not a list of objects");
	json_decref(j);
	return name;
}

/* A record (not a group) as a mapping's target: the object of its key
 * prefix, that object's feed, and the record itself. */
static int sf_check_record(struct chatter *ch, const char *id, char *msg, size_t msglen)
{
	char prefix[4];
	memcpy(prefix, id, 3);
	prefix[3] = '\0';
	char *object = sf_object_of_prefix(ch, prefix, msg, msglen);
	if (!object)
		return -1;
	int rc = -1;
	json_t *desc = sf_describe(ch, object, msg, msglen), *rec = NULL;
	if (!desc)
		goto out;
	if (!json_is_true(json_object_get(desc, "feedEnabled"))) {
		snprintf(msg, msglen,
			 "%s records have no feed: turn on feed tracking for %s (Setup, Feed "
			 "Tracking)",
			 object, object);
		goto out;
	}
	char *path = xasprintf("/sobjects/%s/%s", object, id);
	int st = sf_get_json(ch, path, "chatter record", &rec, msg, msglen);
	free(path);
	if (st == 404) {
		snprintf(msg, msglen, "no %s with id %s (deleted, or %s may not see it)", object,
			 id, ch->f->username);
	} else if (st == 200 && !json_is_object(rec)) {
		snprintf(msg, msglen, "chatter record: the answer is not a record");
	} else if (st == 200) {
		const char *name = sf_str(rec, "Name");
		char qn[120] = "";
		if (name && utf8_valid(name, strlen(name)))
			snprintf(qn, sizeof qn, " \"%.100s\"", name);
		snprintf(msg, msglen, "%s%s (feed enabled)", object, qn);
		rc = 0;
	}
out:
	json_decref(rec);
	json_decref(desc);
	free(object);
	return rc;
}

/* One object of a route: it exists, its field is readable, and (feed) its
 * records have feeds.  0, or -1 with msg. */
static int sf_check_object(struct chatter *ch, const char *object, const char *field, int feed,
			   char *msg, size_t msglen)
{
	json_t *desc = sf_describe(ch, object, msg, msglen);
	int rc = -1;
	if (!desc)
		return -1;
	if (field && !sf_has_field(desc, field))
		snprintf(msg, msglen, "%s has no field %s that %s may read", object, field,
			 ch->f->username);
	else if (feed && !json_is_true(json_object_get(desc, "feedEnabled")))
		snprintf(msg, msglen,
			 "%s records have no feed: turn on feed tracking for %s (Setup, Feed "
			 "Tracking)",
			 object, object);
	else
		rc = 0;
	json_decref(desc);
	return rc;
}

static int chatter_check_route(void *ctx, const char *spec, char *msg, size_t msglen)
{
	struct chatter *ch = ctx;
	struct route r;
	char err[200];
	if (route_parse(spec, &r, err, sizeof err) < 0) {
		snprintf(msg, msglen, "%s", err);
		return -1;
	}
	int rc;
	if (r.kind == ROUTE_REFERENCE) {
		rc = sf_check_object(ch, r.object, r.field, 1, msg, msglen);
		if (rc == 0)
			snprintf(msg, msglen, "%s is feed-enabled, %s.%s readable", r.object,
				 r.object, r.field);
	} else {
		rc = sf_check_object(ch, "Contact", "AccountId", 0, msg, msglen);
		if (rc == 0)
			rc = sf_check_object(ch, "Lead", "ConvertedAccountId", 0, msg, msglen);
		if (rc == 0)
			rc = sf_check_object(ch, "Account", NULL, 1, msg, msglen);
		if (rc == 0)
			snprintf(msg, msglen,
				 "Contact.AccountId and Lead.ConvertedAccountId readable, Account "
				 "is feed-enabled");
	}
	route_free(&r);
	return rc;
}

/* A group (0F9...): GET /chatter/groups/{id}; it must not be archived, and
 * a private one needs the integration user as a member.  Any other record:
 * the object of its key prefix must have feeds, and the record must exist. */
static int chatter_check_group(void *ctx, const char *group, char *msg, size_t msglen)
{
	struct chatter *ch = ctx;
	struct http_request r;

	if (!sf_id_ok(group)) {
		snprintf(msg, msglen, "%s is not a Salesforce id (15 or 18 letters and digits)",
			 group);
		return -1;
	}
	if (strncmp(group, "0F9", 3) != 0)
		return sf_check_record(ch, group, msg, msglen);
	char *path = xasprintf("/chatter/groups/%s", group);
	int rc = sf_get(ch, ch->pool.clients[0], path, "chatter group", &r, msg, msglen);
	free(path);
	if (rc < 0)
		return -1;
	json_t *j = json_loadb(r.response.data, r.response.len, 0, NULL);
	const char *name = sf_str(j, "name"), *role = sf_str(j, "myRole");
	const char *vis = sf_str(j, "visibility");
	json_t *archived = json_object_get(j, "isArchived");
	int member = role && strncmp(role, "NotAMember", 10) != 0;
	rc = -1;
	if (!json_is_object(j) || !name)
		snprintf(msg, msglen, "chatter group: the answer is not a group");
	else if (json_is_true(archived))
		snprintf(msg, msglen, "group \"%.100s\" is archived: Chatter refuses new posts",
			 name);
	else if (!member && !(vis && strcmp(vis, "PublicAccess") == 0))
		snprintf(msg, msglen,
			 "%s is not a member of the private group \"%.100s\": add it to the "
			 "group",
			 ch->f->username, name);
	else {
		snprintf(msg, msglen, "\"%.100s\"%s", name,
			 member ? "" : " (public; the integration user is not a member)");
		rc = 0;
	}
	json_decref(j);
	http_request_clear(&r);
	return rc;
}

const struct feed_backend_ops feed_chatter_ops = {
    .name = "chatter",
    .open = chatter_open,
    .deliver = chatter_deliver,
    .reconcile = chatter_reconcile,
    .read_group = chatter_read_group,
    .read_members = chatter_read_members,
    .close = chatter_close,
    .check_login = chatter_check_login,
    .check_group = chatter_check_group,
    .check_route = chatter_check_route,
};
