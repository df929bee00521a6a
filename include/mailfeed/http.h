/* http.h — a small HTTP client over libcurl's multi interface, shared by the
 * feed backends that talk to a web service (chatter, mattermost, webhook).
 *
 * One http_client keeps one multi handle and its connection cache, so
 * keep-alive connections are reused across http_perform() calls.  Requests
 * are plain structs the caller fills; http_perform() runs a batch of them
 * concurrently (at most max_concurrency at once) and fills each response.
 *
 * Bodies and Authorization headers are never logged. */
#ifndef MAILFEED_HTTP_H
#define MAILFEED_HTTP_H

#include <stddef.h>

#include "mailfeed/util.h"

#define HTTP_MAX_RESPONSE (8u * 1024 * 1024) /* bigger answers are cut and flagged */

struct http_options {
	const char *ca_file;  /* NULL = system trust store */
	int tls_verify;	      /* 0 only when configured so; logged as a warning */
	long connect_timeout; /* seconds, 0 = 10 */
	long timeout;	      /* seconds for the whole request, 0 = 30 */
	int max_concurrency;  /* 0 = 4 */
};

/* One part of a multipart/form-data body (file uploads).  Borrowed. */
struct http_part {
	const char *name;	  /* form field name */
	const char *filename;	  /* non-NULL makes it a file part */
	const char *content_type; /* may be NULL */
	const void *data;
	size_t len;
};

struct http_request {
	/* filled by the caller; all borrowed except body when body_owned */
	const char *method; /* "GET", "POST", ... */
	const char *url;
	struct strlist headers; /* "Name: value" lines; owned by the request */
	const char *body;	/* NULL = none */
	size_t body_len;
	int body_owned;		       /* 1: http_request_clear() frees body */
	const struct http_part *parts; /* multipart body instead of body */
	size_t n_parts;

	/* filled by http_perform() */
	long status;	       /* 0 when no HTTP answer came back */
	int curl_failed;       /* network error, timeout, TLS failure */
	int truncated;	       /* body cut at HTTP_MAX_RESPONSE */
	char error[256];       /* curl's error text when curl_failed */
	struct buf response;   /* answer body, NUL-terminated after http_perform() */
	char *content_type;    /* owned; NULL when absent */
	char *retry_after;     /* owned raw header value; NULL when absent */
	char *ratelimit_reset; /* owned X-RateLimit-Reset value; NULL when absent */
	double elapsed;	       /* seconds */
};

/* Returns a client, or NULL with a message in err. Free with http_client_free(). */
struct http_client *http_client_new(const struct http_options *o, char *err, size_t errlen);
void http_client_free(struct http_client *c);

/* Initialises r (zeroes it) with a method and a url (both borrowed). */
void http_request_init(struct http_request *r, const char *method, const char *url);
/* Adds a "Name: value" header; CR and LF in value are dropped. */
void http_request_header(struct http_request *r, const char *name, const char *value);
/* Sets a JSON body taking ownership of the string json (free()d later). */
void http_request_json(struct http_request *r, char *json);
/* Frees what the request owns (headers, owned body, response) and zeroes it. */
void http_request_clear(struct http_request *r);
/* Resets only the response fields so that the same request can be sent again. */
void http_request_reset_response(struct http_request *r);

/* Runs the n requests concurrently and waits for all of them. */
void http_perform(struct http_client *c, struct http_request **reqs, size_t n);
/* Convenience for one request. */
void http_perform_one(struct http_client *c, struct http_request *r);

/* What an answer means at the HTTP level (feed_http_status maps it to a
 * feed_status). */
enum http_class {
	HTTP_CLASS_OK,	      /* 2xx */
	HTTP_CLASS_TRANSIENT, /* network error, timeout, 408, 425, 429, 5xx */
	HTTP_CLASS_REFUSED,   /* other 4xx (401 included: callers that can
			       * re-authenticate check it first) */
};
enum http_class http_classify(long status, int curl_failed);
/* Seconds the service asked to wait (Retry-After as seconds or HTTP-date,
 * else X-RateLimit-Reset), 0 when none; capped at one day. */
long http_retry_after(const struct http_request *r);

/* Percent-encodes s for a URL query or form value. Caller frees. */
char *http_escape(const char *s);

#endif
