/* feed_mattermost.c — the Mattermost backend (API v4).
 *
 * Posts are made with a personal access token (token_file) as its user;
 * the sender is named in a "From NAME <email>" line.  A comment is a reply
 * (root_id = the post).  With mentions = yes, the recipients that are active
 * users (GET /users/email/{email}, cached) are named as "@username" on a
 * "To:" line, which the server turns into mentions.  Hashtags are "#tag"
 * words on a last line, where the server picks them up.  Every post carries
 * props {"mailfeed_key": KEY} — custom props are kept by the server and
 * invisible to readers — so that reconcile can find it among the channel's
 * recent posts.
 *
 * Messages over the 16,383-rune limit become a post plus continuation
 * replies (props "KEY#N"); a retry after a half-done delivery first looks
 * up which parts exist.  Items are delivered by up to [feed] concurrency
 * threads, each with its own http_client; replies to one post stay in order
 * on one thread. */
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
#include "mailfeed/log.h"
#include "mailfeed/mention.h"
#include "mailfeed/recipients.h"
#include "mailfeed/secret.h"
#include "mailfeed/utf8.h"

#define MM_BUDGET 16000 /* runes per post; the server allows 16,383 */
#define MM_MAX_PARTS 12
#define MM_MIN_FIRST 1000 /* runes of text the first part keeps at least */
#define MM_MAX_FILES 5	  /* documented file_ids limit per post */
#define MM_AUTH_BACKOFF 1800
#define MM_KEY_PROP "mailfeed_key"
#define MM_NEGATIVE_TTL 3600 /* how long "no user with this email" is believed */
#define MM_USER_TTL 86400    /* how long a user found by email is believed */
#define MM_USERNAME_MAX 64
#define MM_MENTION_RUNES (MM_USERNAME_MAX + 2) /* " @" and a username */

struct mm_user {
	char *id;
	char *name;
	char *email;
};

struct mattermost {
	const struct mf_feed *f;
	/* the mappings' allow_* keys */
	const struct mf_config *cfg;
	char *base; /* url without trailing slash */
	char *auth; /* "Authorization: Bearer ..." */
	pthread_mutex_t mu;
	struct mm_user *users;
	size_t n_users;
	struct feed_user_cache *emails; /* mentions: id and username by email */
	struct feed_http_pool pool;
};

static const char *mm_str(json_t *o, const char *k)
{
	return json_string_value(json_object_get(o, k));
}

/* Makes res from a failed call: "id: message" of the AppError, or the
 * status with a short plain-text body (the rate limiter's "limit exceeded"). */
static void mm_fail(struct feed_result *res, const struct http_request *r, const char *what)
{
	if (r->curl_failed) {
		feed_http_set_error(res, FEED_RETRY, "%s: network: %s", what, r->error);
		return;
	}
	enum feed_status st = feed_http_status(r->status, 0);
	json_t *j = json_loadb(r->response.data, r->response.len, 0, NULL);
	const char *id = mm_str(j, "id"), *msg = mm_str(j, "message");
	if (id)
		feed_http_set_error(res, st, "%s: HTTP %ld %.100s: %.300s", what, r->status, id,
				    msg ? msg : "");
	else if (r->content_type && strncasecmp(r->content_type, "text/plain", 10) == 0 &&
		 r->response.len < 200)
		feed_http_set_error(res, st, "%s: HTTP %ld %.*s", what, r->status,
				    (int)r->response.len, r->response.data);
	else
		feed_http_set_error(res, st, "%s: HTTP %ld from Mattermost", what, r->status);
	json_decref(j);
	if (r->status == 401) {
		/* the token is wrong or revoked: the admin must act, and the items
		 * wait for that instead of being dropped */
		res->status = FEED_RETRY;
		res->retry_after = MM_AUTH_BACKOFF;
		log_error("mattermost.auth_failed status=401 msg=\"the personal access token in "
			  "token_file was refused\"");
	} else if (st == FEED_RETRY) {
		res->retry_after = http_retry_after(r);
	}
	if (r->status == 200 || r->status == 201)
		feed_http_set_error(res, FEED_RETRY, "%s: unexpected answer (no id)", what);
}

static void mm_request(struct mattermost *mm, struct http_request *r, const char *method,
		       const char *url)
{
	http_request_init(r, method, url);
	strlist_add(&r->headers, mm->auth);
	http_request_header(r, "Accept", "application/json");
}

/* GET base + path + the escaped segment, answered into *r (the caller
 * clears it). */
static void mm_get(struct mattermost *mm, struct http_client *hc, struct http_request *r,
		   const char *path, const char *segment)
{
	char *se = http_escape(segment);
	char *url = xasprintf("%s%s%s", mm->base, path, se);
	free(se);
	mm_request(mm, r, "GET", url);
	http_perform_one(hc, r);
	free(url);
}

/* Length of a plain URL at p (what the server's autolinker makes a link
 * of, up to a character that could start Markdown), or 0. */
static size_t mm_url_len(const char *p)
{
	if (strncasecmp(p, "https://", 8) != 0 && strncasecmp(p, "http://", 7) != 0 &&
	    strncasecmp(p, "mailto:", 7) != 0)
		return 0;
	return strcspn(p, " \t\r\n<>[]()`\"'|\\*");
}

/* Length of a Markdown image "![alt](http…)" at p on one line, or 0. */
static size_t mm_image_len(const char *p)
{
	if (p[0] != '!' || p[1] != '[')
		return 0;
	const char *close = p + 2 + strcspn(p + 2, "]\n");
	if (*close != ']' || close[1] != '(' || !mm_url_len(close + 2))
		return 0;
	const char *end = close + 2 + strcspn(close + 2, ")\n");
	return *end == ')' ? (size_t)(end - p) + 1 : 0;
}

/* A message as its readers see it, for digests: the backslash escapes of
 * feed_mattermost_escape (or a person's) and the zero-width space of a
 * neutralised @channel dropped. */
static char *mm_unescape(const char *msg)
{
	struct buf b;
	buf_init(&b);
	for (const char *p = msg ? msg : ""; *p; p++) {
		if (*p == '\\' && p[1] && ispunct((unsigned char)p[1]))
			p++;
		else if (*p == '@' && strncmp(p + 1, "\xe2\x80\x8b", 3) == 0) {
			buf_putc(&b, '@');
			p += 3;
			continue;
		}
		buf_putc(&b, *p);
	}
	return buf_steal(&b);
}

char *feed_mattermost_escape(const char *text, int allow_mentions, int allow_images)
{
	static const char *const everyone[] = {"channel", "all", "here"};
	struct buf b;
	buf_init(&b);
	int line_start = 1;
	for (const char *p = text ? text : ""; *p;) {
		unsigned char c = (unsigned char)*p;
		size_t n;
		if (line_start && (c == ' ' || c == '\t')) {
			buf_putc(&b, (char)c);
			p++;
			continue;
		}
		if ((n = mm_url_len(p)) > 0 || (allow_images && (n = mm_image_len(p)) > 0)) {
			buf_append(&b, p, n);
			p += n;
			line_start = 0;
			continue;
		}
		if (c == '@' && !allow_mentions) {
			int hit = 0;
			for (size_t i = 0; i < 3 && !hit; i++) {
				size_t l = strlen(everyone[i]);
				if (strncasecmp(p + 1, everyone[i], l) == 0 &&
				    !isalnum((unsigned char)p[1 + l]) && p[1 + l] != '_' &&
				    p[1 + l] != '-')
					hit = 1;
			}
			buf_putc(&b, '@');
			if (hit)
				buf_puts(&b, "\xe2\x80\x8b"); /* U+200B */
			p++;
			line_start = 0;
			continue;
		}
		if (c == '\n') {
			buf_putc(&b, '\n');
			p++;
			line_start = 1;
			continue;
		}
		int esc = strchr("\\`*_[]<>~|$!", c) != NULL && c != 0;
		if (line_start) {
			/* block syntax: headings, quotes, lists, rules, tables */
			if (strchr("#>-+=", c) && c != 0)
				esc = 1;
			else if (isdigit(c)) {
				size_t d = strspn(p, "0123456789");
				if (p[d] == '.' || p[d] == ')') {
					buf_append(&b, p, d);
					buf_putc(&b, '\\');
					buf_putc(&b, p[d]);
					p += d + 1;
					line_start = 0;
					continue;
				}
			}
		}
		if (esc)
			buf_putc(&b, '\\');
		buf_putc(&b, (char)c);
		p++;
		line_start = 0;
	}
	return buf_steal(&b);
}

/* A tag as the server's hashtag rule takes it: letters, digits, '-', '_',
 * '.', starting with a letter and ending with a letter or digit.  Empty
 * when nothing usable is left. */
static char *mm_tag(const char *t)
{
	struct buf b;
	buf_init(&b);
	for (const unsigned char *p = (const unsigned char *)t; *p && b.len < 64; p++)
		if (*p >= 0x80 || isalnum(*p) || *p == '-' || *p == '_' || *p == '.')
			if (b.len > 0 || *p >= 0x80 || isalpha(*p))
				buf_putc(&b, (char)*p);
	while (b.len > 0 &&
	       (b.data[b.len - 1] == '-' || b.data[b.len - 1] == '_' || b.data[b.len - 1] == '.'))
		b.data[--b.len] = '\0';
	return buf_steal(&b);
}

static char *mm_safe_filename(const char *name)
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

static void mm_size_text(size_t n, char *out, size_t outlen)
{
	if (n >= 1024 * 1024)
		snprintf(out, outlen, "%.1f MB", (double)n / (1024.0 * 1024.0));
	else if (n >= 1024)
		snprintf(out, outlen, "%.0f KB", (double)n / 1024.0);
	else
		snprintf(out, outlen, "%zu bytes", n);
}

/* GET /channels/{id}/posts?since=ms.  Returns the parsed PostList, or NULL
 * with res set. */
static json_t *mm_channel_posts(struct mattermost *mm, struct http_client *hc, const char *channel,
				long long since_ms, struct feed_result *res)
{
	char *ce = http_escape(channel);
	char *url = xasprintf("%s/api/v4/channels/%s/posts?since=%lld", mm->base, ce, since_ms);
	free(ce);
	struct http_request r;
	mm_request(mm, &r, "GET", url);
	http_perform_one(hc, &r);
	json_t *j = NULL;
	if (r.status == 200)
		j = json_loadb(r.response.data, r.response.len, 0, NULL);
	if (!json_is_object(j)) {
		json_decref(j);
		j = NULL;
		mm_fail(res, &r, "mattermost read");
		if (res->status == FEED_OK)
			res->status = FEED_RETRY;
	}
	http_request_clear(&r);
	free(url);
	return j;
}

/* Id of the post in list whose mailfeed_key prop is key, or NULL. */
static const char *mm_find_key(json_t *list, const char *key)
{
	const char *id;
	json_t *p;
	json_object_foreach(json_object_get(list, "posts"), id, p)
	{
		const char *k = mm_str(json_object_get(p, "props"), MM_KEY_PROP);
		json_t *del = json_object_get(p, "delete_at");
		if (k && strcmp(k, key) == 0 && json_integer_value(del) == 0)
			return mm_str(p, "id") ? mm_str(p, "id") : id;
	}
	return NULL;
}

static long long mm_lookback_ms(struct mattermost *mm)
{
	long back = mm->f->dead_after > 0 ? mm->f->dead_after + 86400 : 3 * 86400;
	return ((long long)time(NULL) - back) * 1000;
}

/* An id as the server makes them: 26 letters and digits (a few more or
 * less are let through). */
static int mm_id_ok(const char *s, size_t n)
{
	if (n < 1 || n > 64)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]))
			return 0;
	return 1;
}

/* The file id in an upload note ("ID CHANNEL") when it was uploaded to
 * channel: a file can only be attached to a post of the channel it went to.
 * Owned, or NULL. */
static char *mm_kept_file(const char *note, const char *channel)
{
	const char *sp = note ? strchr(note, ' ') : NULL;
	if (!sp || !mm_id_ok(note, (size_t)(sp - note)) || strcmp(sp + 1, channel) != 0)
		return NULL;
	return xstrndup(note, (size_t)(sp - note));
}

/* The uploads of one item: per attachment its request (parts set when it
 * is sent), the name it is sent under and the file id kept from an earlier
 * attempt. */
struct mm_uploads {
	size_t n, sent;
	struct http_request *rs, **ptrs;
	struct http_part (*parts)[2];
	char **names, **kept;
	char *url;
};

/* Decides for each attachment: a note (too large, too many), a file kept
 * from an earlier attempt (unless fresh), or a request to send. */
static void mm_upload_plan(struct mattermost *mm, const struct feed_item *it, size_t max_up,
			   int fresh, struct mm_uploads *u, struct strlist *notes, size_t *reused)
{
	size_t n = it->n_attachments, up = 0;
	u->n = n;
	u->sent = 0;
	u->rs = xcalloc(n ? n : 1, sizeof(*u->rs));
	u->ptrs = xcalloc(n ? n : 1, sizeof(*u->ptrs));
	u->parts = xcalloc(n ? n : 1, sizeof(*u->parts));
	u->names = xcalloc(n ? n : 1, sizeof(*u->names));
	u->kept = xcalloc(n ? n : 1, sizeof(*u->kept));
	u->url = xasprintf("%s/api/v4/files", mm->base);
	for (size_t i = 0; i < n; i++) {
		const struct feed_attachment *a = &it->attachments[i];
		u->names[i] = mm_safe_filename(a->filename);
		char size[32];
		mm_size_text(a->size, size, sizeof(size));
		const char *why = (long long)a->size > mm->f->max_file_size ? "too large"
				  : up >= max_up			    ? "too many files"
									    : NULL;
		if (why) {
			char *shown = feed_mattermost_escape(u->names[i], 0, 0);
			char *note =
			    xasprintf("[attachment %s (%s) not uploaded: %s]", shown, size, why);
			free(shown);
			strlist_add(notes, note);
			free(note);
			continue;
		}
		up++;
		u->kept[i] = fresh ? NULL : mm_kept_file(a->remote, it->group);
		if (u->kept[i]) {
			(*reused)++;
			continue;
		}
		u->parts[i][0] =
		    (struct http_part){"channel_id", NULL, NULL, it->group, strlen(it->group)};
		u->parts[i][1] = (struct http_part){"files", u->names[i],
						    a->content_type ? a->content_type
								    : "application/octet-stream",
						    a->data, a->size};
		mm_request(mm, &u->rs[i], "POST", u->url);
		u->rs[i].parts = u->parts[i];
		u->rs[i].n_parts = 2;
		u->ptrs[u->sent++] = &u->rs[i];
	}
}

/* Fills file_ids in the order of the attachments.  Every upload that went
 * through is noted, also when another failed: the next attempt reuses it.
 * 0, or -1 with res. */
static int mm_upload_results(const struct feed_item *it, const struct mm_uploads *u,
			     struct strlist *file_ids, struct feed_result *res)
{
	int rc = 0;
	for (size_t i = 0; i < u->n; i++) {
		const struct http_request *r = &u->rs[i];
		if (u->kept[i]) {
			strlist_add(file_ids, u->kept[i]);
			continue;
		}
		if (!r->parts)
			continue;
		json_t *j = r->status == 201
				? json_loadb(r->response.data, r->response.len, 0, NULL)
				: NULL;
		const char *fid = mm_str(json_array_get(json_object_get(j, "file_infos"), 0), "id");
		if (fid && mm_id_ok(fid, strlen(fid))) {
			strlist_add(file_ids, fid);
			if (it->uploaded) {
				char *note = xasprintf("%s %s", fid, it->group);
				it->uploaded(it->uploaded_arg, &it->attachments[i], note);
				free(note);
			}
		} else if (rc == 0) {
			mm_fail(res, r, "mattermost file upload");
			rc = -1;
		}
		json_decref(j);
	}
	return rc;
}

static void mm_uploads_free(struct mm_uploads *u)
{
	for (size_t i = 0; i < u->sent; i++)
		http_request_clear(u->ptrs[i]);
	for (size_t i = 0; i < u->n; i++) {
		free(u->names[i]);
		free(u->kept[i]);
	}
	free(u->url);
	free(u->rs);
	free(u->ptrs);
	free(u->parts);
	free(u->names);
	free(u->kept);
}

/* Uploads attachments within limits, or reuses the files an earlier
 * attempt uploaded (unless fresh); notes for the others.  Fills file_ids
 * in the order of the attachments and sets *reused to the number of files
 * reused.  0 or -1. */
static int mm_upload(struct mattermost *mm, struct http_client *hc, const struct feed_item *it,
		     size_t max_up, int fresh, struct strlist *file_ids, struct strlist *notes,
		     size_t *reused, struct feed_result *res)
{
	struct mm_uploads u;
	*reused = 0;
	mm_upload_plan(mm, it, max_up, fresh, &u, notes, reused);
	http_perform(hc, u.ptrs, u.sent);
	int rc = mm_upload_results(it, &u, file_ids, res);
	mm_uploads_free(&u);
	return rc;
}

/* POST /posts; 0 with *id, or -1 with res (and *status, when not NULL, the
 * HTTP status of a refusal in the server's error shape, else 0). */
static int mm_post(struct mattermost *mm, struct http_client *hc, const char *channel,
		   const char *root, const char *message, const struct strlist *file_ids,
		   const char *key, char **id, struct feed_result *res, long *status)
{
	if (status)
		*status = 0;
	json_t *body = json_pack("{s:s, s:s, s:s, s:{s:s}}", "channel_id", channel, "message",
				 message, "root_id", root ? root : "", "props", MM_KEY_PROP, key);
	if (!body) {
		feed_http_set_error(res, FEED_PERMANENT, "text is not valid UTF-8");
		return -1;
	}
	if (file_ids && file_ids->n) {
		json_t *a = json_array();
		for (size_t i = 0; i < file_ids->n; i++)
			json_array_append_new(a, json_string(file_ids->v[i]));
		json_object_set_new(body, "file_ids", a);
	}
	char *url = xasprintf("%s/api/v4/posts?set_online=false", mm->base);
	struct http_request r;
	mm_request(mm, &r, "POST", url);
	http_request_json(&r, json_dumps(body, JSON_COMPACT));
	json_decref(body);
	http_perform_one(hc, &r);
	int rc = -1;
	json_t *j = r.status == 201 ? json_loadb(r.response.data, r.response.len, 0, NULL) : NULL;
	const char *pid = mm_str(j, "id");
	if (pid && strlen(pid) < 64) {
		*id = xstrdup(pid);
		rc = 0;
	} else {
		mm_fail(res, &r, root ? "mattermost reply" : "mattermost post");
		json_t *e =
		    r.curl_failed ? NULL : json_loadb(r.response.data, r.response.len, 0, NULL);
		if (status && mm_str(e, "id"))
			*status = r.status;
		json_decref(e);
	}
	json_decref(j);
	http_request_clear(&r);
	free(url);
	return rc;
}

/* A username as the server makes them: a-z, 0-9, '.', '-', '_', starting
 * with a letter (22 at most today; older servers allowed 64).  Anything
 * else is not written into a message. */
static int mm_username_ok(const char *u)
{
	size_t n = u ? strlen(u) : 0;
	if (n < 1 || n > MM_USERNAME_MAX || !islower((unsigned char)u[0]))
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!islower((unsigned char)u[i]) && !isdigit((unsigned char)u[i]) &&
		    !strchr(".-_", u[i]))
			return 0;
	return 1;
}

/* The username of the active user with email, from the cache or
 * GET /users/email/{email}.  1 found (*username set, owned), 0 none,
 * -1 transient failure (res set). */
static int mm_user_by_email(struct mattermost *mm, struct http_client *hc, const char *email,
			    char **username, struct feed_result *res)
{
	time_t now = time(NULL);
	char *id = NULL;
	int known = feed_user_cache_get(mm->emails, email, now, &id, username, NULL);
	free(id);
	id = NULL;
	if (known >= 0)
		return known;

	struct http_request r;
	mm_get(mm, hc, &r, "/api/v4/users/email/", email);
	char elog[200];
	log_quote(email, elog, sizeof(elog));
	int rc = 0;
	if (r.status == 200) {
		json_t *j = json_loadb(r.response.data, r.response.len, 0, NULL);
		const char *u = mm_str(j, "username"), *uid = mm_str(j, "id");
		/* a deactivated account is still found, with delete_at set */
		if (json_integer_value(json_object_get(j, "delete_at")) == 0 && uid &&
		    mm_username_ok(u)) {
			*username = xstrdup(u);
			id = xstrdup(uid);
			rc = 1;
		}
		json_decref(j);
	} else if (r.status != 404 && (r.curl_failed || r.status == 401 ||
				       feed_http_status(r.status, 0) == FEED_RETRY)) {
		mm_fail(res, &r, "mattermost user lookup");
		http_request_clear(&r);
		return -1;
	} else if (r.status != 404) {
		/* 403: the server's privacy settings hide emails from this token */
		struct feed_result why;
		memset(&why, 0, sizeof(why));
		mm_fail(&why, &r, "mattermost user lookup");
		char wlog[600];
		log_warn("mattermost.user_lookup_failed email=%s status=%ld error=%s", elog,
			 r.status, log_quote(why.error, wlog, sizeof(wlog)));
	}
	http_request_clear(&r);
	feed_user_cache_put(mm->emails, email, now, id, *username);
	free(id);
	return rc;
}

/* mentions = yes: "To: @a @b" for the item's recipients that are users, or
 * an empty buffer.  0, or -1 when a look-up failed for now (res set). */
static int mm_mentions(struct mattermost *mm, struct http_client *hc, const struct feed_item *it,
		       struct buf *line, struct feed_result *res)
{
	struct strlist names = {0};
	for (size_t i = 0; it->recipients && i < it->recipients->n; i++) {
		char *u = NULL;
		int f = mm_user_by_email(mm, hc, it->recipients->v[i], &u, res);
		if (f < 0) {
			strlist_free(&names);
			return -1;
		}
		if (f == 1 && !strlist_has_ci(&names, u) && names.n < RECIPIENTS_MAX)
			strlist_add(&names, u);
		free(u);
	}
	for (size_t i = 0; i < names.n; i++)
		buf_printf(line, "%s@%s", i ? " " : "To: ", names.v[i]);
	strlist_free(&names);
	return 0;
}

/* The active user whose full name ("First Last", or the nickname) is name,
 * found with POST /users/search and cached like addresses; several users
 * of that name count as none.  1 found (*username set), 0 none, -1 a
 * transient failure (res set). */
static int mm_user_by_name(struct mattermost *mm, struct http_client *hc, const char *name,
			   char **username, struct feed_result *res)
{
	time_t now = time(NULL);
	char *key = xasprintf("name:%s", name), *id = NULL;
	int known = feed_user_cache_get(mm->emails, key, now, &id, username, NULL);
	free(id);
	id = NULL;
	if (known >= 0) {
		free(key);
		return known;
	}
	char *url = xasprintf("%s/api/v4/users/search", mm->base);
	struct http_request r;
	mm_request(mm, &r, "POST", url);
	json_t *q = json_pack("{s:s, s:b, s:i}", "term", name, "allow_inactive", 0, "limit", 20);
	http_request_json(&r, json_dumps(q, JSON_COMPACT));
	json_decref(q);
	http_perform_one(hc, &r);
	free(url);
	int rc = 0;
	if (r.status == 200) {
		json_t *j = json_loadb(r.response.data, r.response.len, 0, NULL);
		size_t i, hits = 0;
		json_t *u;
		const char *found = NULL, *found_id = NULL;
		json_array_foreach(j, i, u)
		{
			char *full = xasprintf(
			    "%s %s", mm_str(u, "first_name") ? mm_str(u, "first_name") : "",
			    mm_str(u, "last_name") ? mm_str(u, "last_name") : "");
			const char *nick = mm_str(u, "nickname");
			if (json_integer_value(json_object_get(u, "delete_at")) == 0 &&
			    (strcasecmp(full, name) == 0 ||
			     (nick && strcasecmp(nick, name) == 0)) &&
			    mm_username_ok(mm_str(u, "username"))) {
				hits++;
				found = mm_str(u, "username");
				found_id = mm_str(u, "id");
			}
			free(full);
		}
		if (hits == 1 && found_id) {
			*username = xstrdup(found);
			id = xstrdup(found_id);
			rc = 1;
		}
		json_decref(j);
	} else if (r.curl_failed || r.status == 401 ||
		   feed_http_status(r.status, 0) == FEED_RETRY) {
		mm_fail(res, &r, "mattermost user search");
		http_request_clear(&r);
		free(key);
		return -1;
	}
	http_request_clear(&r);
	feed_user_cache_put(mm->emails, key, now, id, *username);
	free(id);
	free(key);
	return rc;
}

/* The post's text, escaped (feed_mattermost_escape), with each "@First
 * Last" and "@address" that names exactly one active user written as
 * "@username" (mention.h); the rest stays text as written.  Owned, or NULL
 * when a look-up failed for now (res set). */
static char *mm_body(struct mattermost *mm, struct http_client *hc, const char *text,
		     int allow_mentions, int allow_images, struct feed_result *res)
{
	text = text ? text : "";
	const char *end = text + strlen(text), *from = text;
	struct buf b;
	buf_init(&b);
	for (const char *p = text; p < end; p++) {
		size_t len[2];
		int is_address;
		size_t n = mention_at(text, p) ? mention_forms(p, end, len, &is_address) : 0;
		for (size_t k = 0; k < n; k++) {
			char *who = xstrndup(p + 1, len[k] - 1), *u = NULL;
			int f = is_address ? mm_user_by_email(mm, hc, who, &u, res)
					   : mm_user_by_name(mm, hc, who, &u, res);
			free(who);
			if (f < 0) {
				buf_free(&b);
				return NULL;
			}
			if (f == 1) {
				char *plain = xstrndup(from, (size_t)(p - from));
				char *esc =
				    feed_mattermost_escape(plain, allow_mentions, allow_images);
				buf_printf(&b, "%s@%s", esc, u);
				free(esc);
				free(plain);
				free(u);
				p += len[k] - 1;
				from = p + 1;
				break;
			}
		}
	}
	char *esc = feed_mattermost_escape(from, allow_mentions, allow_images);
	buf_puts(&b, esc);
	free(esc);
	return buf_steal(&b);
}

/* The text of an item's first (or only) post. Owned. */
static char *mm_first_message(const struct buf *head, const char *text, const struct strlist *notes,
			      const struct buf *mentions, const struct buf *tail)
{
	struct buf msg;
	buf_init(&msg);
	buf_append(&msg, head->data ? head->data : "", head->len);
	buf_puts(&msg, text);
	for (size_t i = 0; i < notes->n; i++)
		buf_printf(&msg, "\n\n%s", notes->v[i]);
	if (mentions->len)
		buf_printf(&msg, "\n\n%s", mentions->data);
	if (tail->len)
		buf_printf(&msg, "\n\n%s", tail->data);
	return buf_steal(&msg);
}

/* What the mappings of a channel allow ([mailbox] allow_channel_mentions,
 * allow_remote_images): any mapping to it that says yes. */
static void mm_allowed(const struct mattermost *mm, const char *channel, int *mentions, int *images)
{
	*mentions = *images = 0;
	for (size_t i = 0; mm->cfg && channel && i < mm->cfg->n_mailboxes; i++) {
		const struct mf_mailbox *mb = &mm->cfg->mailboxes[i];
		if (mb->group && strcmp(mb->group, channel) == 0) {
			*mentions |= mb->allow_channel_mentions;
			*images |= mb->allow_remote_images;
		}
	}
}

/* One item on its way (the hooks of feed_http_deliver_parts). */
struct mm_job {
	struct mattermost *mm;
	struct http_client *hc;
	const struct feed_item *it;
	struct buf head, tail, mentions; /* the first part's fixed pieces */
	struct strlist file_ids, notes;
	size_t reused; /* files of an earlier attempt attached again */
	long status;   /* HTTP status of the first post's refusal */
	json_t *known; /* the channel's recent posts, once asked */
};

/* Every part carries its key (the item's, "KEY#2", ...) as a prop. */
static int mm_hook_find(void *hook, size_t i, size_t n, const char *text, const char *thread,
			char **id, struct feed_result *res)
{
	struct mm_job *j = hook;
	if (!j->known &&
	    !(j->known = mm_channel_posts(j->mm, j->hc, j->it->group, mm_lookback_ms(j->mm), res)))
		return -1;
	char *k = i ? xasprintf("%s#%zu", j->it->key, i + 1) : xstrdup(j->it->key);
	const char *have = mm_find_key(j->known, k);
	free(k);
	*id = have ? xstrdup(have) : NULL;
	return have ? 1 : 0;
}

/* Mentions are looked up before any upload (a failed look-up is retried);
 * the retry uploads the files anew. */
static int mm_hook_first(void *hook, const char *text, int retry, char **id,
			 struct feed_result *res)
{
	struct mm_job *j = hook;
	struct mattermost *mm = j->mm;
	const struct feed_item *it = j->it;
	size_t max_up = mm->f->max_files < MM_MAX_FILES ? (size_t)mm->f->max_files : MM_MAX_FILES;
	if (!retry && mm->f->mentions && mm_mentions(mm, j->hc, it, &j->mentions, res) != 0)
		return -1;
	if (mm_upload(mm, j->hc, it, max_up, retry, &j->file_ids, &j->notes, &j->reused, res) != 0)
		return -1;
	char *msg = mm_first_message(&j->head, text, &j->notes, &j->mentions, &j->tail);
	const char *root = it->kind == FEED_COMMENT ? it->parent_remote_id : NULL;
	int rc = mm_post(mm, j->hc, it->group, root, msg, &j->file_ids, it->key, id, res,
			 retry ? NULL : &j->status);
	free(msg);
	return rc;
}

/* The server drops files not attached within a while: the files of an
 * earlier attempt are uploaded anew. */
static int mm_hook_fallback(void *hook, const struct feed_result *res)
{
	struct mm_job *j = hook;
	if (!j->reused || j->status != 400)
		return 0;
	char e[300];
	log_warn("mattermost.files_refused outbox_id=%lld files=%zu error=%s", (long long)j->it->id,
		 j->reused, log_quote(res->error, e, sizeof(e)));
	strlist_free(&j->file_ids);
	strlist_free(&j->notes);
	return 1;
}

static int mm_hook_next(void *hook, size_t i, size_t n, const char *text, const char *thread,
			struct feed_result *res)
{
	struct mm_job *j = hook;
	char *k = xasprintf("%s#%zu", j->it->key, i + 1), *pid = NULL;
	char *msg = xasprintf("(continued, part %zu of %zu)\n\n%s", i + 1, n, text);
	int rc = mm_post(j->mm, j->hc, j->it->group, thread, msg, NULL, k, &pid, res, NULL);
	free(msg);
	free(pid);
	free(k);
	return rc;
}

/* The first part's head (bold subject, From line) and tail (hashtags), as
 * the sender wrote them, Markdown and all. */
static void mm_head_tail(const struct feed_item *it, int allow_mentions, struct buf *head,
			 struct buf *tail)
{
	char *nm = it->author_name && *it->author_name
		       ? feed_mattermost_escape(it->author_name, 0, 0)
		       : NULL;
	/* a plain address stays an address (an autolink between < >) */
	const char *addr_chars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
				 "0123456789.-_+%@";
	char *em = !it->author_email || !*it->author_email ? NULL
		   : strspn(it->author_email, addr_chars) == strlen(it->author_email)
		       ? xstrdup(it->author_email)
		       : feed_mattermost_escape(it->author_email, 0, 0);
	if (it->kind == FEED_POST && it->subject && *it->subject) {
		char *subject = feed_mattermost_escape(it->subject, allow_mentions, 0);
		buf_printf(head, "**%s**\n\n", subject);
		free(subject);
	}
	if (nm && em)
		buf_printf(head, "From %s <%s>\n\n", nm, em);
	else if (nm || em)
		buf_printf(head, "From %s\n\n", nm ? nm : em);
	free(nm);
	free(em);
	for (size_t i = 0; it->hashtags && i < it->hashtags->n; i++) {
		char *t = mm_tag(it->hashtags->v[i]);
		if (strlen(t) >= 2)
			buf_printf(tail, "%s#%s", tail->len ? " " : "", t);
		free(t);
	}
}

static void mm_deliver_one(void *ctx, struct http_client *hc, const struct feed_item *it,
			   struct feed_result *res)
{
	struct mattermost *mm = ctx;
	int allow_mentions, allow_images;
	mm_allowed(mm, it->group, &allow_mentions, &allow_images);
	/* with mentions, "@First Last" and "@address" written in the text too */
	char *body = mm->f->mentions
			 ? mm_body(mm, hc, it->text, allow_mentions, allow_images, res)
			 : feed_mattermost_escape(it->text, allow_mentions, allow_images);
	if (!body)
		return;
	struct mm_job j = {.mm = mm, .hc = hc, .it = it};
	buf_init(&j.head);
	buf_init(&j.tail);
	buf_init(&j.mentions);
	mm_head_tail(it, allow_mentions, &j.head, &j.tail);
	size_t fixed = utf8_count(j.head.data ? j.head.data : "", j.head.len) + j.tail.len +
		       it->n_attachments * 300 + 16;
	if (mm->f->mentions && it->recipients)
		fixed += 8 + it->recipients->n * MM_MENTION_RUNES;
	struct feed_parts p = {.service = "Mattermost",
			       .unit = "runes",
			       .text = body,
			       .budget = MM_BUDGET,
			       .fixed = fixed,
			       .min_first = MM_MIN_FIRST,
			       .cut_late = 1,
			       .max_parts = MM_MAX_PARTS,
			       .hook = &j,
			       .find_part = mm_hook_find,
			       .first = mm_hook_first,
			       .fallback = mm_hook_fallback,
			       .next = mm_hook_next};
	size_t n = 0;
	if (feed_http_deliver_parts(&p, it, res, &n) == 0)
		log_info("mattermost.delivered outbox_id=%lld kind=%s remote_id=%s parts=%zu "
			 "files=%zu",
			 (long long)it->id, it->kind == FEED_POST ? "post" : "comment",
			 res->remote_id, n, j.file_ids.n);
	free(body);
	json_decref(j.known);
	buf_free(&j.head);
	buf_free(&j.tail);
	buf_free(&j.mentions);
	strlist_free(&j.file_ids);
	strlist_free(&j.notes);
}

static void mm_close(void *ctx)
{
	struct mattermost *mm = ctx;
	if (!mm)
		return;
	feed_http_pool_close(&mm->pool);
	for (size_t i = 0; i < mm->n_users; i++) {
		free(mm->users[i].id);
		free(mm->users[i].name);
		free(mm->users[i].email);
	}
	free(mm->users);
	feed_user_cache_free(mm->emails);
	pthread_mutex_destroy(&mm->mu);
	if (mm->auth)
		explicit_bzero(mm->auth, strlen(mm->auth));
	free(mm->auth);
	free(mm->base);
	free(mm);
}

static int mm_open(const struct mf_config *cfg, struct store *st, void **ctx, char *err,
		   size_t errlen)
{
	const struct mf_feed *f = &cfg->feed;
	*ctx = NULL;
	if (!f->url || !f->token_file) {
		snprintf(err, errlen, "[feed] backend = mattermost needs url and token_file");
		return -1;
	}
	char *token = NULL;
	char e[256];
	if (secret_read(f->token_file, NULL, &token, e, sizeof(e)) != 0) {
		snprintf(err, errlen, "token_file %s: %s", f->token_file, e);
		return -1;
	}
	if (!*token || strpbrk(token, "\r\n \t")) {
		snprintf(err, errlen, "token_file %s: expected one personal access token",
			 f->token_file);
		free(token);
		return -1;
	}
	struct mattermost *mm = xcalloc(1, sizeof(*mm));
	pthread_mutex_init(&mm->mu, NULL);
	mm->emails = feed_user_cache_new(MM_USER_TTL, MM_NEGATIVE_TTL);
	mm->f = f;
	mm->cfg = cfg;
	mm->auth = xasprintf("Authorization: Bearer %s", token);
	explicit_bzero(token, strlen(token));
	free(token);
	size_t n = strlen(f->url);
	while (n > 0 && f->url[n - 1] == '/')
		n--;
	mm->base = xstrndup(f->url, n);
	if (feed_http_pool_open(&mm->pool, f, MM_MAX_FILES, err, errlen) != 0) {
		mm_close(mm);
		return -1;
	}
	*ctx = mm;
	return 0;
}

static void mm_deliver(void *ctx, const struct feed_item *items, size_t n,
		       struct feed_result *results)
{
	struct mattermost *mm = ctx;
	feed_http_deliver(&mm->pool, "mattermost", mm_deliver_one, mm, items, n, results);
}

static int mm_reconcile(void *ctx, const struct feed_item *item, char **remote_id)
{
	struct mattermost *mm = ctx;
	struct feed_result res;
	memset(&res, 0, sizeof(res));
	*remote_id = NULL;
	json_t *list =
	    mm_channel_posts(mm, mm->pool.clients[0], item->group, mm_lookback_ms(mm), &res);
	if (!list) {
		log_warn("mattermost.reconcile_failed outbox_id=%lld error=%s", (long long)item->id,
			 LOG_Q(res.error));
		return -1;
	}
	const char *id = mm_find_key(list, item->key);
	if (id)
		*remote_id = xstrdup(id);
	json_decref(list);
	return id ? 1 : 0;
}

/* Name and email of a user id, from the cache or GET /users/{id}. */
static void mm_user(struct mattermost *mm, struct http_client *hc, const char *uid, char **name,
		    char **email)
{
	*name = *email = NULL;
	for (size_t i = 0; i < mm->n_users; i++)
		if (strcmp(mm->users[i].id, uid) == 0) {
			*name = mm->users[i].name ? xstrdup(mm->users[i].name) : NULL;
			*email = mm->users[i].email ? xstrdup(mm->users[i].email) : NULL;
			return;
		}
	struct http_request r;
	mm_get(mm, hc, &r, "/api/v4/users/", uid);
	json_t *j = r.status == 200 ? json_loadb(r.response.data, r.response.len, 0, NULL) : NULL;
	const char *fn = mm_str(j, "first_name"), *ln = mm_str(j, "last_name");
	const char *un = mm_str(j, "username"), *em = mm_str(j, "email");
	if (fn && *fn)
		*name = ln && *ln ? xasprintf("%s %s", fn, ln) : xstrdup(fn);
	else if (un)
		*name = xstrdup(un);
	if (em && *em)
		*email = xstrdup(em);
	if (r.status == 200 || r.status == 404) {
		mm->users = xrealloc(mm->users, (mm->n_users + 1) * sizeof(*mm->users));
		struct mm_user *u = &mm->users[mm->n_users++];
		u->id = xstrdup(uid);
		u->name = *name ? xstrdup(*name) : NULL;
		u->email = *email ? xstrdup(*email) : NULL;
	}
	json_decref(j);
	http_request_clear(&r);
}

static int mm_entry_cmp(const void *a, const void *b)
{
	const struct feed_entry *x = a, *y = b;
	return x->created < y->created ? -1 : x->created > y->created;
}

struct mm_who {
	struct mattermost *mm;
	struct http_client *hc;
};

static void mm_who_fill(void *arg, const char *uid, struct feed_entry *e)
{
	struct mm_who *w = arg;
	mm_user(w->mm, w->hc, uid, &e->author_name, &e->author_email);
}

/* Appends the posts of a PostList created after since in channel group;
 * who (may be NULL) fills in each author from a user id. */
/* A post's files for the digest: name and size from metadata.files, and
 * the ids of file_ids that metadata leaves out (name unknown); each links
 * to the file at the server (a reader logged in there can open it). */
static void mm_entry_files(struct feed_entry *e, json_t *p, const char *base)
{
	json_t *infos = json_object_get(json_object_get(p, "metadata"), "files");
	json_t *ids = json_object_get(p, "file_ids");
	size_t i, k;
	json_t *f, *g;
	json_array_foreach(infos, i, f)
	{
		const char *fid = mm_str(f, "id");
		if (e->n_files >= 32)
			break;
		char *url = NULL;
		if (fid && mm_id_ok(fid, strlen(fid)))
			url = xasprintf("%s/api/v4/files/%s?download=1", base, fid);
		json_t *sz = json_object_get(f, "size");
		feed_entry_add_file(e, mm_str(f, "name"),
				    json_is_integer(sz) ? (long long)json_integer_value(sz) : -1,
				    url);
		free(url);
	}
	json_array_foreach(ids, i, g)
	{
		const char *fid = json_string_value(g);
		int listed = 0;
		if (!fid || !mm_id_ok(fid, strlen(fid)) || e->n_files >= 32)
			continue;
		json_array_foreach(infos, k, f)
		{
			const char *have = mm_str(f, "id");
			if (have && !strcmp(have, fid))
				listed = 1;
		}
		if (listed)
			continue;
		char *url = xasprintf("%s/api/v4/files/%s?download=1", base, fid);
		feed_entry_add_file(e, "file", -1, url);
		free(url);
	}
}

void feed_mattermost_parse_posts(const char *json, size_t len, const char *group, time_t since,
				 const char *base,
				 void (*who)(void *arg, const char *uid, struct feed_entry *e),
				 void *arg, struct feed_entry **entries, size_t *n)
{
	json_t *list = json_loadb(json, len, 0, NULL);
	const char *id;
	json_t *p;
	json_object_foreach(json_object_get(list, "posts"), id, p)
	{
		long long cr = json_integer_value(json_object_get(p, "create_at"));
		const char *type = mm_str(p, "type");
		const char *uid = mm_str(p, "user_id");
		const char *chan = mm_str(p, "channel_id");
		if (cr / 1000 <= since || json_integer_value(json_object_get(p, "delete_at")) ||
		    (type && *type) || (chan && strcmp(chan, group) != 0) || strlen(id) > 64)
			continue;
		*entries = xrealloc(*entries, (*n + 1) * sizeof(**entries));
		struct feed_entry *e = &(*entries)[(*n)++];
		memset(e, 0, sizeof(*e));
		e->remote_id = xstrdup(id);
		const char *root = mm_str(p, "root_id");
		e->parent_remote_id = root && *root ? xstrdup(root) : NULL;
		e->group = xstrdup(group);
		if (uid && who)
			who(arg, uid, e);
		e->text = mm_unescape(mm_str(p, "message"));
		char *ie = http_escape(id);
		e->url = xasprintf("%s/_redirect/pl/%s", base, ie);
		free(ie);
		e->created = (time_t)(cr / 1000);
		mm_entry_files(e, p, base);
	}
	json_decref(list);
}

static int mm_read_group(void *ctx, const char *group, time_t since, struct feed_entry **entries,
			 size_t *n, char *err, size_t errlen)
{
	struct mattermost *mm = ctx;
	struct http_client *hc = mm->pool.clients[0];
	struct feed_result res;
	memset(&res, 0, sizeof(res));
	*entries = NULL;
	*n = 0;
	json_t *list = mm_channel_posts(mm, hc, group, (long long)since * 1000, &res);
	if (!list) {
		snprintf(err, errlen, "%s", res.error);
		return -1;
	}
	char *text = json_dumps(list, JSON_COMPACT);
	struct mm_who who = {mm, hc};
	feed_mattermost_parse_posts(text, strlen(text), group, since, mm->base, mm_who_fill, &who,
				    entries, n);
	free(text);
	json_decref(list);
	if (*n > 1)
		qsort(*entries, *n, sizeof(**entries), mm_entry_cmp);
	return 0;
}

/* ---- check-config --online ---- */

/* GET base + path + segment; 0 with the 200 answer parsed into *j, or -1
 * with what went wrong in msg. */
static int mm_check_get(struct mattermost *mm, const char *path, const char *segment,
			const char *what, json_t **j, char *msg, size_t msglen)
{
	struct http_request r;
	struct feed_result res;

	*j = NULL;
	mm_get(mm, mm->pool.clients[0], &r, path, segment);
	if (r.status == 200)
		*j = json_loadb(r.response.data, r.response.len, 0, NULL);
	if (!json_is_object(*j)) {
		memset(&res, 0, sizeof(res));
		mm_fail(&res, &r, what);
		snprintf(msg, msglen, "%s", res.error);
		feed_result_clear(&res);
		json_decref(*j);
		*j = NULL;
	}
	http_request_clear(&r);
	return *j ? 0 : -1;
}

static int mm_check_login(void *ctx, char *msg, size_t msglen)
{
	struct mattermost *mm = ctx;
	json_t *j;
	if (mm_check_get(mm, "/api/v4/users/", "me", "mattermost login", &j, msg, msglen) < 0)
		return -1;
	const char *name = mm_str(j, "username");
	snprintf(msg, msglen, "logged in as %.64s at %s", name ? name : "?", mm->base);
	json_decref(j);
	return 0;
}

/* The channel exists, is not archived, and the token's user is a member
 * (posting needs create_post there, which membership gives). */
static int mm_check_group(void *ctx, const char *group, char *msg, size_t msglen)
{
	struct mattermost *mm = ctx;
	json_t *ch, *me;
	char path[128];

	if (!mm_id_ok(group, strlen(group))) {
		snprintf(msg, msglen, "%s is not a Mattermost channel id (letters and digits)",
			 group);
		return -1;
	}
	if (mm_check_get(mm, "/api/v4/channels/", group, "mattermost channel", &ch, msg, msglen) <
	    0)
		return -1;
	const char *name = mm_str(ch, "display_name");
	if (!name || !*name)
		name = mm_str(ch, "name");
	char shown[128];
	snprintf(shown, sizeof shown, "%.100s", name ? name : group);
	json_t *del = json_object_get(ch, "delete_at");
	int archived = json_is_integer(del) && json_integer_value(del) != 0;
	json_decref(ch);
	if (archived) {
		snprintf(msg, msglen, "channel \"%s\" is archived: Mattermost refuses new posts",
			 shown);
		return -1;
	}
	snprintf(path, sizeof path, "/api/v4/channels/%s/members/", group);
	if (mm_check_get(mm, path, "me", "mattermost membership", &me, msg, msglen) < 0) {
		char why[256];
		snprintf(why, sizeof why, "%s", msg);
		snprintf(msg, msglen,
			 "the token's user is not a member of channel \"%s\": add it to the "
			 "channel (%s)",
			 shown, why);
		return -1;
	}
	json_decref(me);
	snprintf(msg, msglen, "\"%s\"", shown);
	return 0;
}

const struct feed_backend_ops feed_mattermost_ops = {
    .name = "mattermost",
    .open = mm_open,
    .deliver = mm_deliver,
    .reconcile = mm_reconcile,
    .read_group = mm_read_group,
    .close = mm_close,
    .check_login = mm_check_login,
    .check_group = mm_check_group,
};
