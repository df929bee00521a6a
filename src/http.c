/* http.c — HTTP requests for the feed backends over libcurl's multi interface.
 *
 * The client owns one multi handle for its whole life, so the connection
 * cache (keep-alive, TLS sessions) survives between batches.  Each request
 * gets a fresh easy handle; at most max_concurrency run at once and the rest
 * wait in line so their timeouts start only when they really start.
 * Nothing here logs a body or a header value that might carry a secret. */
#include <ctype.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <curl/curl.h>

#include "mailfeed/http.h"
#include "mailfeed/log.h"

#ifndef MAILFEED_VERSION
#define MAILFEED_VERSION "0"
#endif

struct http_client {
	CURLM *multi;
	struct http_options opt;
	char *ca_file;
};

/* Per transfer state while it runs. */
struct http_xfer {
	struct http_request *req;
	CURL *easy;
	struct curl_slist *hdrs;
	curl_mime *mime;
	size_t sent;	    /* body bytes handed to libcurl */
	int resend_refused; /* libcurl wanted to send the body a second time */
	char errbuf[CURL_ERROR_SIZE];
};

static pthread_once_t http_once = PTHREAD_ONCE_INIT;
static int http_global_rc;

static void http_global_init(void)
{
	http_global_rc = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : -1;
}

struct http_client *http_client_new(const struct http_options *o, char *err, size_t errlen)
{
	pthread_once(&http_once, http_global_init);
	if (http_global_rc != 0) {
		snprintf(err, errlen, "cannot initialise libcurl");
		return NULL;
	}
	struct http_client *c = xcalloc(1, sizeof(*c));
	c->opt = *o;
	if (c->opt.connect_timeout <= 0)
		c->opt.connect_timeout = 10;
	if (c->opt.timeout <= 0)
		c->opt.timeout = 30;
	if (c->opt.max_concurrency <= 0)
		c->opt.max_concurrency = 4;
	if (o->ca_file) {
		c->ca_file = xstrdup(o->ca_file);
		c->opt.ca_file = c->ca_file;
	}
	c->multi = curl_multi_init();
	if (!c->multi) {
		snprintf(err, errlen, "cannot create a libcurl multi handle");
		free(c->ca_file);
		free(c);
		return NULL;
	}
	curl_multi_setopt(c->multi, CURLMOPT_MAXCONNECTS, (long)c->opt.max_concurrency * 2);
	if (!c->opt.tls_verify)
		log_warn("http.tls_verify_off msg=\"TLS certificates of the feed service are NOT "
			 "verified (tls_verify = no); anyone on the path can read and change "
			 "the traffic\"");
	return c;
}

void http_client_free(struct http_client *c)
{
	if (!c)
		return;
	curl_multi_cleanup(c->multi);
	free(c->ca_file);
	free(c);
}

void http_request_init(struct http_request *r, const char *method, const char *url)
{
	memset(r, 0, sizeof(*r));
	r->method = method;
	r->url = url;
	buf_init(&r->response);
}

void http_request_header(struct http_request *r, const char *name, const char *value)
{
	struct buf b;
	buf_init(&b);
	buf_printf(&b, "%s: ", name);
	for (const char *p = value; *p; p++)
		if (*p != '\r' && *p != '\n')
			buf_putc(&b, *p);
	strlist_add(&r->headers, b.data);
	buf_free(&b);
}

void http_request_json(struct http_request *r, char *json)
{
	if (r->body_owned)
		free((char *)r->body);
	r->body = json;
	r->body_len = strlen(json);
	r->body_owned = 1;
	http_request_header(r, "Content-Type", "application/json");
}

void http_request_reset_response(struct http_request *r)
{
	r->status = 0;
	r->curl_failed = 0;
	r->truncated = 0;
	r->error[0] = '\0';
	buf_reset(&r->response);
	free(r->content_type);
	free(r->retry_after);
	free(r->ratelimit_reset);
	r->content_type = r->retry_after = r->ratelimit_reset = NULL;
	r->elapsed = 0;
}

void http_request_clear(struct http_request *r)
{
	http_request_reset_response(r);
	buf_free(&r->response);
	strlist_free(&r->headers);
	if (r->body_owned)
		free((char *)r->body);
	memset(r, 0, sizeof(*r));
}

static size_t http_on_body(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	struct http_request *r = userdata;
	size_t n = size * nmemb;
	if (r->response.len + n > HTTP_MAX_RESPONSE) {
		r->truncated = 1;
		return 0; /* aborts the transfer: the answer is not one we can use */
	}
	buf_append(&r->response, ptr, n);
	return n;
}

/* Copies a header value (trimmed, bounded) when the line's name matches. */
static int http_header_match(const char *line, size_t len, const char *name, char **out)
{
	size_t nl = strlen(name);
	if (len <= nl || strncasecmp(line, name, nl) != 0 || line[nl] != ':')
		return 0;
	const char *v = line + nl + 1;
	const char *end = line + len;
	while (v < end && (*v == ' ' || *v == '\t'))
		v++;
	while (end > v && isspace((unsigned char)end[-1]))
		end--;
	if (end - v > 200)
		end = v + 200;
	free(*out);
	*out = xstrndup(v, (size_t)(end - v));
	return 1;
}

static size_t http_on_header(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	struct http_request *r = userdata;
	size_t n = size * nmemb;
	if (n >= 5 && strncmp(ptr, "HTTP/", 5) == 0) {
		/* a new response (after 100 Continue or similar): forget the old headers */
		free(r->content_type);
		free(r->retry_after);
		free(r->ratelimit_reset);
		r->content_type = r->retry_after = r->ratelimit_reset = NULL;
		return n;
	}
	if (!http_header_match(ptr, n, "Content-Type", &r->content_type) &&
	    !http_header_match(ptr, n, "Retry-After", &r->retry_after))
		http_header_match(ptr, n, "X-RateLimit-Reset", &r->ratelimit_reset);
	return n;
}

/* A body goes to libcurl through a read callback rather than as POSTFIELDS:
 * when a reused connection closes before any answer, libcurl sends the
 * request again by itself, and a POST that the server had already carried
 * out would then create a second post.  Sending again needs a rewind, which
 * http_on_seek refuses: the request fails instead, and the caller, who can
 * look the item up at the service, decides. */
static size_t http_on_read(char *buf, size_t size, size_t nitems, void *userdata)
{
	struct http_xfer *x = userdata;
	size_t n = size * nitems, left = x->req->body_len - x->sent;
	if (n > left)
		n = left;
	memcpy(buf, x->req->body + x->sent, n);
	x->sent += n;
	return n;
}

static int http_on_seek(void *userdata, curl_off_t offset, int origin)
{
	struct http_xfer *x = userdata;
	if (origin == SEEK_SET && offset == 0 && x->sent == 0)
		return CURL_SEEKFUNC_OK;
	x->resend_refused = 1;
	return CURL_SEEKFUNC_CANTSEEK;
}

static void http_xfer_setup(struct http_client *c, struct http_xfer *x)
{
	struct http_request *r = x->req;
	CURL *e = curl_easy_init();
	x->easy = e;
	if (!e)
		return;
	curl_easy_setopt(e, CURLOPT_URL, r->url);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT, c->opt.connect_timeout);
	curl_easy_setopt(e, CURLOPT_TIMEOUT, c->opt.timeout);
	curl_easy_setopt(e, CURLOPT_USERAGENT, "mailfeed/" MAILFEED_VERSION);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->errbuf);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, http_on_body);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
	curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, http_on_header);
	curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
	curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
	curl_easy_setopt(e, CURLOPT_PRIVATE, x);
	if (c->opt.ca_file)
		curl_easy_setopt(e, CURLOPT_CAINFO, c->opt.ca_file);
	if (!c->opt.tls_verify) {
		curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
		curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
	}
	/* no "Expect: 100-continue" round trip on uploads */
	x->hdrs = curl_slist_append(x->hdrs, "Expect:");
	for (size_t i = 0; i < r->headers.n; i++)
		x->hdrs = curl_slist_append(x->hdrs, r->headers.v[i]);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, x->hdrs);

	if (r->n_parts) {
		x->mime = curl_mime_init(e);
		for (size_t i = 0; i < r->n_parts; i++) {
			const struct http_part *p = &r->parts[i];
			curl_mimepart *mp = curl_mime_addpart(x->mime);
			curl_mime_name(mp, p->name);
			curl_mime_data(mp, p->data, p->len);
			if (p->filename)
				curl_mime_filename(mp, p->filename);
			if (p->content_type)
				curl_mime_type(mp, p->content_type);
		}
		curl_easy_setopt(e, CURLOPT_MIMEPOST, x->mime);
	} else if (r->body) {
		curl_easy_setopt(e, CURLOPT_POST, 1L);
		curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body_len);
		curl_easy_setopt(e, CURLOPT_READFUNCTION, http_on_read);
		curl_easy_setopt(e, CURLOPT_READDATA, x);
		curl_easy_setopt(e, CURLOPT_SEEKFUNCTION, http_on_seek);
		curl_easy_setopt(e, CURLOPT_SEEKDATA, x);
	}
	if (strcmp(r->method, "GET") == 0 && !r->body && !r->n_parts)
		curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
	else if (strcmp(r->method, "POST") != 0)
		curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, r->method);
	else if (!r->body && !r->n_parts) {
		curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, 0L);
		curl_easy_setopt(e, CURLOPT_POSTFIELDS, "");
	}
}

static void http_xfer_finish(struct http_xfer *x, CURLcode rc)
{
	struct http_request *r = x->req;
	buf_append(&r->response, "", 0); /* always a string, even when empty */
	if (x->easy) {
		curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &r->status);
		curl_easy_getinfo(x->easy, CURLINFO_TOTAL_TIME, &r->elapsed);
	}
	if (rc != CURLE_OK) {
		if (r->truncated) {
			snprintf(r->error, sizeof(r->error), "answer larger than %u bytes",
				 HTTP_MAX_RESPONSE);
		} else {
			r->curl_failed = 1;
			if (x->resend_refused)
				snprintf(r->error, sizeof(r->error),
					 "connection closed before the answer (the request may "
					 "have been carried out)");
			else
				snprintf(r->error, sizeof(r->error), "%s",
					 x->errbuf[0] ? x->errbuf : curl_easy_strerror(rc));
			/* a cut-off answer is not an answer */
			r->status = 0;
		}
	}
	/* the URL's path may hold ids but no secrets; the query may, so cut it */
	const char *q = strchr(r->url, '?');
	int ulen = q ? (int)(q - r->url) : (int)strlen(r->url);
	if (r->curl_failed)
		log_info("http.fail method=%s url=%.*s error=%s elapsed=%.3f", r->method, ulen,
			 r->url, LOG_Q(r->error), r->elapsed);
	else
		log_debug("http.done method=%s url=%.*s status=%ld bytes=%zu elapsed=%.3f",
			  r->method, ulen, r->url, r->status, r->response.len, r->elapsed);
	curl_slist_free_all(x->hdrs);
	curl_mime_free(x->mime);
	x->hdrs = NULL;
	x->mime = NULL;
}

void http_perform(struct http_client *c, struct http_request **reqs, size_t n)
{
	if (n == 0)
		return;
	struct http_xfer *xs = xcalloc(n, sizeof(*xs));
	size_t next = 0, running = 0, done = 0;

	while (done < n) {
		while (next < n && running < (size_t)c->opt.max_concurrency) {
			struct http_xfer *x = &xs[next++];
			x->req = reqs[next - 1];
			http_request_reset_response(x->req);
			http_xfer_setup(c, x);
			if (!x->easy || curl_multi_add_handle(c->multi, x->easy) != CURLM_OK) {
				http_xfer_finish(x, CURLE_OUT_OF_MEMORY);
				if (x->easy)
					curl_easy_cleanup(x->easy);
				x->easy = NULL;
				done++;
				continue;
			}
			running++;
		}
		if (running == 0)
			continue;
		int still = 0;
		curl_multi_perform(c->multi, &still);
		CURLMsg *m;
		int left;
		while ((m = curl_multi_info_read(c->multi, &left))) {
			if (m->msg != CURLMSG_DONE)
				continue;
			struct http_xfer *x = NULL;
			curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&x);
			CURLcode rc = m->data.result;
			curl_multi_remove_handle(c->multi, m->easy_handle);
			http_xfer_finish(x, rc);
			curl_easy_cleanup(x->easy);
			x->easy = NULL;
			running--;
			done++;
		}
		if (running > 0 && still > 0)
			curl_multi_poll(c->multi, NULL, 0, 1000, NULL);
	}
	free(xs);
}

void http_perform_one(struct http_client *c, struct http_request *r) { http_perform(c, &r, 1); }

enum http_class http_classify(long status, int curl_failed)
{
	if (curl_failed || status == 0)
		return HTTP_CLASS_TRANSIENT;
	if (status >= 200 && status < 300)
		return HTTP_CLASS_OK;
	if (status == 408 || status == 425 || status == 429 || status >= 500)
		return HTTP_CLASS_TRANSIENT;
	return HTTP_CLASS_REFUSED;
}

static long http_parse_seconds(const char *s)
{
	if (!s || !*s)
		return -1;
	char *end;
	long v = strtol(s, &end, 10);
	if (end == s)
		return -1;
	while (*end == ' ')
		end++;
	if (*end)
		return -1;
	return v < 0 ? 0 : v;
}

long http_retry_after(const struct http_request *r)
{
	long v = -1;
	if (r->retry_after) {
		v = http_parse_seconds(r->retry_after);
		if (v < 0) {
			time_t when = curl_getdate(r->retry_after, NULL);
			if (when != (time_t)-1) {
				time_t now = time(NULL);
				v = when > now ? (long)(when - now) : 0;
			}
		}
	}
	if (v < 0 && r->ratelimit_reset)
		v = http_parse_seconds(r->ratelimit_reset);
	if (v < 0)
		return 0;
	return v > 86400 ? 86400 : v;
}

char *http_escape(const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	struct buf b;
	buf_init(&b);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (isalnum(*p) || *p == '-' || *p == '.' || *p == '_' || *p == '~') {
			buf_putc(&b, (char)*p);
		} else {
			buf_putc(&b, '%');
			buf_putc(&b, hex[*p >> 4]);
			buf_putc(&b, hex[*p & 15]);
		}
	}
	return buf_steal(&b);
}
