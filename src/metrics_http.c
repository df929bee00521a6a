/* metrics_http.c — the [gateway] metrics_listen endpoint: a tiny HTTP/1.0
 * server for a Prometheus scraper on the same host.
 *
 * It has no authentication, so it binds loopback addresses only.  One
 * thread serves one request per connection, one connection at a time: a
 * scraper asks every few seconds, and a client that dawdles is cut off
 * after READ_TIMEOUT_MS.  The thread has its own SQLite connection (store
 * discipline: one per thread) and sleeps in poll() on the listening socket
 * and an eventfd, which metrics_server_stop() uses to end it at once. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "mailfeed/log.h"
#include "mailfeed/metrics.h"

#define MAX_REQUEST 8192
#define READ_TIMEOUT_MS 5000
#define WRITE_TIMEOUT_MS 5000

struct metrics_server {
	pthread_t thread;
	int listen_fd;
	int stop_fd;
	int port;
	char *state_path;
	struct store *st;
};

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
		if ((ntohl(in4->sin_addr.s_addr) >> 24) != 127)
			goto not_loopback;
		in4->sin_family = AF_INET;
		in4->sin_port = htons((uint16_t)port);
		*sslen = sizeof *in4;
		return 0;
	}
	if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
		if (!IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr))
			goto not_loopback;
		in6->sin6_family = AF_INET6;
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

int metrics_listen_check(const char *addr, char *err, size_t errlen)
{
	struct sockaddr_storage ss;
	socklen_t sslen;
	return listen_parse(addr, &ss, &sslen, err, errlen);
}

/* Waits until fd is ready for events, the server is stopped or the
 * deadline passes.  1 ready, 0 timeout or stop, -1 error. */
static int wait_fd(struct metrics_server *ms, int fd, short events, double deadline)
{
	for (;;) {
		long left = (long)((deadline - now_monotonic()) * 1000);
		struct pollfd p[2] = {{.fd = fd, .events = events},
				      {.fd = ms->stop_fd, .events = POLLIN}};
		if (left <= 0)
			return 0;
		int r = poll(p, 2, (int)left);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -1;
		if (p[1].revents)
			return 0;
		if (p[0].revents)
			return 1;
	}
}

/* Reads the request head (up to the blank line).  Returns its length, 0 on
 * timeout, stop or early close, -1 when it is larger than MAX_REQUEST. */
static ssize_t request_read(struct metrics_server *ms, int fd, char *req)
{
	double deadline = now_monotonic() + READ_TIMEOUT_MS / 1000.0;
	size_t len = 0;
	while (len < MAX_REQUEST) {
		if (wait_fd(ms, fd, POLLIN, deadline) <= 0)
			return 0;
		ssize_t n = recv(fd, req + len, MAX_REQUEST - len, 0);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n <= 0)
			return 0;
		len += (size_t)n;
		req[len] = '\0';
		if (strstr(req, "\r\n\r\n") || strstr(req, "\n\n"))
			return (ssize_t)len;
	}
	return -1;
}

static void send_all(struct metrics_server *ms, int fd, const char *p, size_t len)
{
	double deadline = now_monotonic() + WRITE_TIMEOUT_MS / 1000.0;
	while (len > 0) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN) {
			if (wait_fd(ms, fd, POLLOUT, deadline) <= 0)
				return;
			continue;
		}
		if (n <= 0)
			return;
		p += n;
		len -= (size_t)n;
	}
}

/* After the answer, reads what the client still sends (bounded) so that
 * closing with unread input does not reset the connection before the
 * client has read the answer. */
static void linger_drain(struct metrics_server *ms, int fd)
{
	double deadline = now_monotonic() + 1.0;
	char sink[4096];
	size_t total = 0;
	shutdown(fd, SHUT_WR);
	while (total < 65536 && wait_fd(ms, fd, POLLIN, deadline) > 0) {
		ssize_t n = recv(fd, sink, sizeof sink, 0);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n <= 0)
			return;
		total += (size_t)n;
	}
}

static void respond(struct metrics_server *ms, int fd, const char *status, const char *type,
		    const char *body, size_t len)
{
	struct buf b;
	buf_init(&b);
	buf_printf(&b,
		   "HTTP/1.0 %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
		   "Connection: close\r\n\r\n",
		   status, type, len);
	buf_append(&b, body, len);
	send_all(ms, fd, b.data, b.len);
	buf_free(&b);
}

static void respond_text(struct metrics_server *ms, int fd, const char *status, const char *text)
{
	respond(ms, fd, status, "text/plain; charset=utf-8", text, strlen(text));
}

static void serve_metrics(struct metrics_server *ms, int fd)
{
	char err[512];
	struct buf b;
	if (!ms->st) {
		ms->st = store_open(ms->state_path, err, sizeof err);
		if (!ms->st) {
			log_error("metrics.error error=\"%s\"", err);
			respond_text(ms, fd, "503 Service Unavailable",
				     "state database unavailable; see the mailfeed log\n");
			return;
		}
	}
	buf_init(&b);
	metrics_render(ms->st, NULL, &b);
	respond(ms, fd, "200 OK", "text/plain; version=0.0.4; charset=utf-8", b.data ? b.data : "",
		b.len);
	buf_free(&b);
}

static void serve_connection(struct metrics_server *ms, int fd)
{
	char *req = xmalloc(MAX_REQUEST + 1);
	ssize_t n = request_read(ms, fd, req);
	char method[8], path[64];

	if (n < 0) {
		respond_text(ms, fd, "400 Bad Request", "request too large\n");
	} else if (n == 0) {
		/* timeout, stop, or the peer went away: nothing to answer */
	} else if (sscanf(req, "%7s %63s HTTP/%*d.%*d", method, path) != 2) {
		respond_text(ms, fd, "400 Bad Request", "malformed request line\n");
	} else if (strcmp(path, "/metrics") != 0 && strncmp(path, "/metrics?", 9) != 0) {
		respond_text(ms, fd, "404 Not Found", "only /metrics is served here\n");
	} else if (strcmp(method, "GET") != 0) {
		respond_text(ms, fd, "405 Method Not Allowed", "use GET\n");
	} else {
		serve_metrics(ms, fd);
	}
	free(req);
}

static void *server_main(void *arg)
{
	struct metrics_server *ms = arg;
	char err[512];

	ms->st = store_open(ms->state_path, err, sizeof err);
	if (!ms->st)
		log_warn("metrics.error error=\"%s\" note=\"will retry on each scrape\"", err);
	for (;;) {
		struct pollfd p[2] = {{.fd = ms->listen_fd, .events = POLLIN},
				      {.fd = ms->stop_fd, .events = POLLIN}};
		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			log_error("metrics.error error=\"poll: %s\"", strerror(errno));
			break;
		}
		if (p[1].revents)
			break;
		if (!(p[0].revents & POLLIN))
			continue;
		int fd = accept4(ms->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
				log_warn("metrics.error error=\"accept: %s\"", strerror(errno));
			continue;
		}
		serve_connection(ms, fd);
		linger_drain(ms, fd);
		close(fd);
	}
	store_close(ms->st);
	ms->st = NULL;
	return NULL;
}

struct metrics_server *metrics_server_start(const char *addr, const char *state_path, char *err,
					    size_t errlen)
{
	struct sockaddr_storage ss;
	socklen_t sslen = 0;
	struct metrics_server *ms;
	char why[400];
	int one = 1;

	if (listen_parse(addr, &ss, &sslen, why, sizeof why) < 0) {
		snprintf(err, errlen, "metrics_listen %s: %s", addr, why);
		return NULL;
	}
	ms = xcalloc(1, sizeof *ms);
	ms->stop_fd = -1;
	ms->listen_fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (ms->listen_fd < 0) {
		snprintf(err, errlen, "metrics_listen %s: cannot create a socket: %s", addr,
			 strerror(errno));
		goto fail;
	}
	setsockopt(ms->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (bind(ms->listen_fd, (struct sockaddr *)&ss, sslen) < 0 ||
	    listen(ms->listen_fd, 16) < 0) {
		snprintf(err, errlen,
			 "metrics_listen %s: cannot listen: %s (is another process using the "
			 "port?)",
			 addr, strerror(errno));
		goto fail;
	}
	sslen = sizeof ss;
	if (getsockname(ms->listen_fd, (struct sockaddr *)&ss, &sslen) == 0)
		ms->port = ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
							 : ((struct sockaddr_in6 *)&ss)->sin6_port);
	ms->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (ms->stop_fd < 0) {
		snprintf(err, errlen, "metrics_listen %s: eventfd: %s", addr, strerror(errno));
		goto fail;
	}
	ms->state_path = xstrdup(state_path);
	if (pthread_create(&ms->thread, NULL, server_main, ms) != 0) {
		snprintf(err, errlen, "metrics_listen %s: cannot start its thread", addr);
		goto fail;
	}
	log_info("metrics.listening address=%s port=%d", addr, ms->port);
	return ms;
fail:
	if (ms->listen_fd >= 0)
		close(ms->listen_fd);
	if (ms->stop_fd >= 0)
		close(ms->stop_fd);
	free(ms->state_path);
	free(ms);
	return NULL;
}

int metrics_server_port(const struct metrics_server *ms) { return ms->port; }

void metrics_server_stop(struct metrics_server *ms)
{
	uint64_t one = 1;
	if (!ms)
		return;
	if (write(ms->stop_fd, &one, sizeof one) < 0)
		log_warn("metrics.error error=\"cannot wake the listener: %s\"", strerror(errno));
	pthread_join(ms->thread, NULL);
	close(ms->listen_fd);
	close(ms->stop_fd);
	free(ms->state_path);
	free(ms);
}
