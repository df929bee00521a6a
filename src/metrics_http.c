/* metrics_http.c — the [gateway] metrics_listen endpoint, served by
 * libmicrohttpd: GET /metrics for a Prometheus scraper on the same host and
 * GET /healthz (200 or 503 with the reason, from health.c), and, when
 * [digest] public_url is set, the one-click unsubscribe of RFC 8058:
 * POST /unsubscribe/TOKEN ends the subscription the token names, GET shows
 * a page with a button that POSTs (a link scanner's GET changes nothing).
 *
 * It has no authentication, so it binds loopback addresses only and
 * answers only requests whose Host header names a loopback address or
 * "localhost" (a page in a browser cannot reach it through DNS
 * rebinding).  One internal polling thread serves up to MAX_CONNECTIONS
 * connections at once, each cut off after CONNECTION_TIMEOUT_S idle
 * seconds, with request line and headers bounded by MAX_REQUEST bytes.
 * That thread has its own SQLite connection (store discipline: one per
 * thread). */
#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "mailfeed/health.h"
#include "mailfeed/log.h"
#include "mailfeed/loopback.h"
#include "mailfeed/metrics.h"
#include "mailfeed/subscribers.h"
#include "mailfeed/token.h"

/* The memory pool of one connection: request line and headers must fit. */
#define MAX_REQUEST 16384
#define CONNECTION_TIMEOUT_S 5
#define MAX_CONNECTIONS 32

struct metrics_server {
	struct MHD_Daemon *mhd;
	int port;
	char *state_path;
	struct store *st;      /* used by the server's thread only */
	unsigned char *secret; /* token secret; NULL: no /unsubscribe/ */
	size_t secretlen;
};

/* The connection state of a request whose body is read before it is
 * answered (POST /unsubscribe/); others are answered at once. */
static char body_pending;

#define UNSUB_PREFIX "/unsubscribe/"

/* Fills ss from "127.0.0.1:9464", "[::1]:9464" or "localhost:9464" and
 * refuses anything that is not a loopback address.  Port 0 = any free.
 * Messages in err say what is wrong with addr without repeating it. */
static int listen_parse(const char *addr, struct sockaddr_storage *ss, socklen_t *sslen, char *err,
			size_t errlen)
{
	char host[64];
	const char *port_s;
	size_t hlen;
	char *end;
	long port;

	if (addr[0] == '[') {
		const char *rb = strchr(addr, ']');
		if (!rb || rb[1] != ':') {
			snprintf(err, errlen, "write an IPv6 address as [::1]:PORT");
			return -1;
		}
		hlen = (size_t)(rb - addr - 1);
		port_s = rb + 2;
	} else {
		const char *colon = strrchr(addr, ':');
		if (!colon || memchr(addr, ':', (size_t)(colon - addr))) {
			snprintf(err, errlen,
				 "must be HOST:PORT, e.g. 127.0.0.1:9464 or [::1]:9464");
			return -1;
		}
		hlen = (size_t)(colon - addr);
		port_s = colon + 1;
	}
	if (hlen == 0 || hlen >= sizeof host) {
		snprintf(err, errlen, "the host part is missing or too long");
		return -1;
	}
	memcpy(host, addr[0] == '[' ? addr + 1 : addr, hlen);
	host[hlen] = '\0';
	errno = 0;
	port = strtol(port_s, &end, 10);
	if (!*port_s || *end || errno || port < 0 || port > 65535) {
		snprintf(err, errlen, "the port must be a number 1-65535");
		return -1;
	}
	memset(ss, 0, sizeof *ss);
	if (strcmp(host, "localhost") == 0)
		snprintf(host, sizeof host, "127.0.0.1");
	struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
	if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
		in4->sin_family = AF_INET;
		if (!sockaddr_is_loopback((struct sockaddr *)in4))
			goto not_loopback;
		in4->sin_port = htons((uint16_t)port);
		*sslen = sizeof *in4;
		return 0;
	}
	if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
		in6->sin6_family = AF_INET6;
		if (!sockaddr_is_loopback((struct sockaddr *)in6))
			goto not_loopback;
		in6->sin6_port = htons((uint16_t)port);
		*sslen = sizeof *in6;
		return 0;
	}
	snprintf(err, errlen, "\"%s\" is not an IP address; use 127.0.0.1 or [::1]", host);
	return -1;
not_loopback:
	snprintf(err, errlen,
		 "is not a loopback address: the metrics endpoint has no authentication, so it "
		 "only listens on 127.0.0.0/8 or [::1] (put a proxy in front of it, or use "
		 "metrics_file, to publish the numbers further)");
	return -1;
}

/* The Host header names this listener by a loopback address or
 * "localhost" (with our port, if one is given), or is absent (HTTP/1.0).
 * A browser led to the port by a name the attacker resolves to 127.0.0.1
 * (DNS rebinding) sends that name and is refused; names are not resolved
 * here, since resolving them is exactly what the attacker controls. */
static int host_allowed(const struct metrics_server *ms, const char *host)
{
	char name[128];
	const char *port = NULL;
	size_t n;
	struct in_addr a4;
	struct in6_addr a6;
	if (!host)
		return 1;
	if (host[0] == '[') {
		const char *rb = strchr(host, ']');
		if (!rb)
			return 0;
		n = (size_t)(rb - host - 1);
		if (n >= sizeof name)
			return 0;
		memcpy(name, host + 1, n);
		name[n] = '\0';
		if (rb[1] == ':')
			port = rb + 2;
		else if (rb[1])
			return 0;
	} else {
		const char *colon = strchr(host, ':');
		n = colon ? (size_t)(colon - host) : strlen(host);
		if (n >= sizeof name)
			return 0;
		memcpy(name, host, n);
		name[n] = '\0';
		if (colon)
			port = colon + 1;
	}
	if (port) {
		char *end;
		long p = strtol(port, &end, 10);
		if (!*port || *end || p != ms->port)
			return 0;
	}
	if (strcasecmp(name, "localhost") == 0)
		return 1;
	if (inet_pton(AF_INET, name, &a4) == 1)
		return (ntohl(a4.s_addr) >> 24) == 127;
	if (inet_pton(AF_INET6, name, &a6) == 1)
		return IN6_IS_ADDR_LOOPBACK(&a6);
	return 0;
}

static enum MHD_Result respond(struct MHD_Connection *c, unsigned status, const char *type,
			       const char *body, size_t len)
{
	struct MHD_Response *r =
	    MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
	if (!r)
		return MHD_NO;
	MHD_add_response_header(r, "Content-Type", type);
	MHD_add_response_header(r, "Cache-Control", "no-store");
	enum MHD_Result ret = MHD_queue_response(c, status, r);
	MHD_destroy_response(r);
	return ret;
}

static enum MHD_Result respond_text(struct MHD_Connection *c, unsigned status, const char *text)
{
	return respond(c, status, "text/plain; charset=utf-8", text, strlen(text));
}

static int store_ready(struct metrics_server *ms);

static enum MHD_Result serve_metrics(struct metrics_server *ms, struct MHD_Connection *c)
{
	struct buf b;
	if (!store_ready(ms))
		return respond_text(c, MHD_HTTP_SERVICE_UNAVAILABLE,
				    "state database unavailable; see the mailfeed log\n");
	buf_init(&b);
	metrics_render(ms->st, NULL, &b);
	enum MHD_Result ret = respond(c, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8",
				      b.data ? b.data : "", b.len);
	buf_free(&b);
	return ret;
}

static enum MHD_Result serve_health(struct MHD_Connection *c)
{
	struct buf b;
	buf_init(&b);
	buf_puts(&b, "");
	int ok = health_report(&b);
	struct buf out;
	buf_init(&out);
	buf_printf(&out, "%s\n%s", ok ? "ok" : "unhealthy", b.data ? b.data : "");
	enum MHD_Result ret = respond(c, ok ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE,
				      "text/plain; charset=utf-8", out.data, out.len);
	buf_free(&b);
	buf_free(&out);
	return ret;
}

static int store_ready(struct metrics_server *ms)
{
	char err[512];
	if (!ms->st) {
		ms->st = store_open(ms->state_path, err, sizeof err);
		if (!ms->st)
			log_error("metrics.error error=%s", LOG_Q(err));
	}
	return ms->st != NULL;
}

static enum MHD_Result respond_page(struct MHD_Connection *c, unsigned status, const char *title,
				    const char *text, int form)
{
	struct buf b;
	buf_init(&b);
	buf_printf(&b,
		   "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
		   "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
		   "<meta name=\"robots\" content=\"noindex\"><title>%s</title></head>\n"
		   "<body style=\"font-family:sans-serif;max-width:32em;margin:2em auto;"
		   "padding:0 1em\">\n<h1 style=\"font-size:1.3em\">%s</h1>\n<p>%s</p>\n",
		   title, title, text);
	if (form)
		/* action="" posts back to the address the browser shows, whatever
		 * path the reverse proxy publishes this under */
		buf_puts(&b, "<form method=\"post\" action=\"\">"
			     "<input type=\"hidden\" name=\"List-Unsubscribe\" value=\"One-Click\">"
			     "<button type=\"submit\" style=\"font-size:1em;padding:.5em 1em\">"
			     "Unsubscribe</button></form>\n");
	buf_puts(&b, "</body></html>\n");
	struct MHD_Response *r =
	    MHD_create_response_from_buffer(b.len, b.data, MHD_RESPMEM_MUST_COPY);
	buf_free(&b);
	if (!r)
		return MHD_NO;
	MHD_add_response_header(r, "Content-Type", "text/html; charset=utf-8");
	MHD_add_response_header(r, "Cache-Control", "no-store");
	MHD_add_response_header(r, "Referrer-Policy", "no-referrer");
	MHD_add_response_header(r, "X-Robots-Tag", "noindex");
	MHD_add_response_header(
	    r, "Content-Security-Policy",
	    "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'");
	enum MHD_Result ret = MHD_queue_response(c, status, r);
	MHD_destroy_response(r);
	return ret;
}

/* GET shows the confirmation page, POST unsubscribes: the token must be an
 * unsubscribe token with a right MAC and not expired.  A second POST finds
 * the subscription already ended and answers the same. */
static enum MHD_Result serve_unsubscribe(struct metrics_server *ms, struct MHD_Connection *c,
					 const char *token, int post)
{
	struct token_info ti;
	char q[300];
	if (!store_ready(ms))
		return respond_page(c, MHD_HTTP_SERVICE_UNAVAILABLE, "Try again later",
				    "The service cannot answer right now.", 0);
	enum token_status ts =
	    token_verify(ms->st, ms->secret, ms->secretlen, token, time(NULL), &ti);
	if (ts == TOKEN_OK && ti.kind != TOKEN_UNSUBSCRIBE)
		ts = TOKEN_FORGED;
	if (ts == TOKEN_FORGED) {
		token_info_clear(&ti);
		return respond_page(c, MHD_HTTP_NOT_FOUND, "Unknown link",
				    "This unsubscribe link is not valid. Use the link in a recent "
				    "digest, or reply \"unsubscribe\" to it.",
				    0);
	}
	if (ts == TOKEN_EXPIRED) {
		token_info_clear(&ti);
		return respond_page(c, MHD_HTTP_GONE, "Link expired",
				    "This unsubscribe link has expired. Use the link in a recent "
				    "digest, or reply \"unsubscribe\" to it.",
				    0);
	}
	if (!post) {
		token_info_clear(&ti);
		return respond_page(c, MHD_HTTP_OK, "Unsubscribe?",
				    "Press the button to receive no more digests or notifications "
				    "from this feed.",
				    1);
	}
	int rc = -1;
	if (store_begin(ms->st) == 0) {
		rc = subscribers_set_frequency(ms->st, ti.email, "never", "web");
		if (rc < 0 || store_commit(ms->st) < 0) {
			store_rollback(ms->st);
			rc = -1;
		}
	}
	if (rc < 0) {
		log_error("unsubscribe.error email=%s error=\"state database\"",
			  log_quote(ti.email, q, sizeof q));
		token_info_clear(&ti);
		return respond_page(c, MHD_HTTP_SERVICE_UNAVAILABLE, "Try again later",
				    "The service cannot answer right now.", 0);
	}
	log_info("unsubscribe.web email=%s changed=%d", log_quote(ti.email, q, sizeof q), rc);
	token_info_clear(&ti);
	return respond_page(c, MHD_HTTP_OK, "Unsubscribed",
			    "You will receive no more digests or notifications from this feed.", 0);
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url,
			      const char *method, const char *version, const char *upload_data,
			      size_t *upload_data_size, void **con_cls)
{
	struct metrics_server *ms = cls;
	(void)version;
	(void)upload_data;
	int unsub = ms->secret && strncmp(url, UNSUB_PREFIX, strlen(UNSUB_PREFIX)) == 0;
	int post = strcmp(method, "POST") == 0;
	if (*con_cls == NULL) {
		if (unsub && post &&
		    host_allowed(ms, MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Host"))) {
			/* its body (List-Unsubscribe=One-Click) is read, and
			 * ignored, before the answer */
			*con_cls = &body_pending;
			return MHD_YES;
		}
		*con_cls = ms; /* answered at once: nothing else takes a body */
	} else if (*upload_data_size) {
		*upload_data_size = 0; /* a body: dropped */
		return MHD_YES;
	}
	if (!host_allowed(ms, MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Host")))
		return respond_text(c, MHD_HTTP_FORBIDDEN,
				    "this endpoint answers only to a loopback Host\n");
	if (unsub) {
		if (!post && strcmp(method, "GET") != 0)
			return respond_text(c, MHD_HTTP_METHOD_NOT_ALLOWED, "use GET or POST\n");
		return serve_unsubscribe(ms, c, url + strlen(UNSUB_PREFIX), post);
	}
	int metrics = strcmp(url, "/metrics") == 0;
	int health = strcmp(url, "/healthz") == 0;
	if (!metrics && !health)
		return respond_text(c, MHD_HTTP_NOT_FOUND,
				    "only /metrics and /healthz are served here\n");
	if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
		return respond_text(c, MHD_HTTP_METHOD_NOT_ALLOWED, "use GET\n");
	return metrics ? serve_metrics(ms, c) : serve_health(c);
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
	char line[512];
	(void)cls;
	vsnprintf(line, sizeof line, fmt, ap);
	line[strcspn(line, "\n")] = '\0';
	log_debug("metrics.http note=%s", LOG_Q(line));
}

struct metrics_server *metrics_server_start(const char *addr, const char *state_path, char *err,
					    size_t errlen)
{
	return metrics_server_start_unsubscribe(addr, state_path, NULL, 0, err, errlen);
}

struct metrics_server *metrics_server_start_unsubscribe(const char *addr, const char *state_path,
							const unsigned char *secret,
							size_t secretlen, char *err, size_t errlen)
{
	struct sockaddr_storage ss;
	socklen_t sslen = 0;
	struct metrics_server *ms;
	char why[400];
	int one = 1, fd;

	if (listen_parse(addr, &ss, &sslen, why, sizeof why) < 0) {
		snprintf(err, errlen, "metrics_listen %s: %s", addr, why);
		return NULL;
	}
	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(err, errlen, "metrics_listen %s: cannot create a socket: %s", addr,
			 strerror(errno));
		return NULL;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (bind(fd, (struct sockaddr *)&ss, sslen) < 0 || listen(fd, 16) < 0) {
		snprintf(err, errlen,
			 "metrics_listen %s: cannot listen: %s (is another process using the "
			 "port?)",
			 addr, strerror(errno));
		close(fd);
		return NULL;
	}
	ms = xcalloc(1, sizeof *ms);
	sslen = sizeof ss;
	if (getsockname(fd, (struct sockaddr *)&ss, &sslen) == 0)
		ms->port = ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
							 : ((struct sockaddr_in6 *)&ss)->sin6_port);
	ms->state_path = xstrdup(state_path);
	if (secret && secretlen) {
		ms->secret = xmalloc(secretlen);
		memcpy(ms->secret, secret, secretlen);
		ms->secretlen = secretlen;
	}
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | MHD_USE_ERROR_LOG;
	if (ss.ss_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	/* one polling thread serves many connections at once; each has a
	 * short deadline and a small memory pool that bounds its request */
	ms->mhd = MHD_start_daemon(flags, 0, NULL, NULL, handle, ms, MHD_OPTION_LISTEN_SOCKET, fd,
				   MHD_OPTION_CONNECTION_LIMIT, (unsigned)MAX_CONNECTIONS,
				   MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)CONNECTION_TIMEOUT_S,
				   MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)MAX_REQUEST,
				   MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL, MHD_OPTION_END);
	if (!ms->mhd) {
		snprintf(err, errlen, "metrics_listen %s: cannot start the HTTP server", addr);
		close(fd);
		free(ms->state_path);
		free(ms->secret);
		free(ms);
		return NULL;
	}
	log_info("metrics.listening address=%s port=%d", addr, ms->port);
	return ms;
}

int metrics_server_port(const struct metrics_server *ms) { return ms->port; }

void metrics_server_stop(struct metrics_server *ms)
{
	if (!ms)
		return;
	/* returns once its thread is gone; closes the listening socket */
	MHD_stop_daemon(ms->mhd);
	store_close(ms->st);
	free(ms->state_path);
	if (ms->secret)
		OPENSSL_cleanse(ms->secret, ms->secretlen);
	free(ms->secret);
	free(ms);
}
