/* test_metrics.c — the metrics_listen HTTP endpoint, seen from a scraper:
 * a plain socket speaks HTTP/1.0 to a server on a free loopback port and
 * checks the status line, headers and Prometheus text-format body. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cmocka.h>

#include "mailfeed/cluster.h"
#include "mailfeed/metrics.h"
#include "mailfeed/store.h"

struct fixture {
	char dir[64];
	char state[128];
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof *f);
	snprintf(f->dir, sizeof f->dir, "/tmp/mf-metrics-XXXXXX");
	if (!mkdtemp(f->dir)) {
		free(f);
		return -1;
	}
	snprintf(f->state, sizeof f->state, "%s/state.db", f->dir);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	const char *suffix[] = {"", "-wal", "-shm", "-journal"};
	char p[160];
	for (size_t i = 0; i < 4; i++) {
		snprintf(p, sizeof p, "%s%s", f->state, suffix[i]);
		unlink(p);
	}
	rmdir(f->dir);
	free(f);
	return 0;
}

static int connect_to(int family, int port)
{
	struct sockaddr_storage ss = {0};
	socklen_t len;
	struct timeval tv = {.tv_sec = 10};
	int fd = socket(family, SOCK_STREAM, 0);
	assert_true(fd >= 0);
	if (family == AF_INET) {
		struct sockaddr_in *a = (struct sockaddr_in *)&ss;
		a->sin_family = AF_INET;
		a->sin_port = htons((uint16_t)port);
		a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		len = sizeof *a;
	} else {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
		a->sin6_family = AF_INET6;
		a->sin6_port = htons((uint16_t)port);
		a->sin6_addr = in6addr_loopback;
		len = sizeof *a;
	}
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	assert_int_equal(connect(fd, (struct sockaddr *)&ss, len), 0);
	return fd;
}

/* Reads until the server closes; the whole response, NUL-terminated. */
static char *read_all(int fd)
{
	size_t cap = 4096, len = 0;
	char *out = malloc(cap);
	ssize_t n;
	while ((n = recv(fd, out + len, cap - len - 1, 0)) > 0) {
		len += (size_t)n;
		if (cap - len < 2)
			out = realloc(out, cap *= 2);
	}
	out[len] = '\0';
	return out;
}

static char *exchange(int family, int port, const char *request, size_t reqlen)
{
	int fd = connect_to(family, port);
	assert_int_equal(send(fd, request, reqlen, MSG_NOSIGNAL), (ssize_t)reqlen);
	char *resp = read_all(fd);
	close(fd);
	return resp;
}

/* Does resp answer with status (e.g. "200 OK\r\n", "404 ") in HTTP/1.0 or 1.1? */
static int status_is(const char *resp, const char *status)
{
	return resp && (strncmp(resp, "HTTP/1.0 ", 9) == 0 || strncmp(resp, "HTTP/1.1 ", 9) == 0) &&
	       strncmp(resp + 9, status, strlen(status)) == 0;
}

static char *get(int port, const char *request)
{
	return exchange(AF_INET, port, request, strlen(request));
}

/* Every line of a text-format exposition is a comment or "name{labels} number". */
static void assert_text_format(const char *body)
{
	char *copy = strdup(body), *save = NULL;
	int samples = 0;
	for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		if (line[0] == '#') {
			assert_true(strncmp(line, "# HELP mailfeed_", 16) == 0 ||
				    strncmp(line, "# TYPE mailfeed_", 16) == 0);
			continue;
		}
		char *sp = strrchr(line, ' '), *end;
		assert_non_null(sp);
		strtod(sp + 1, &end);
		assert_true(end > sp + 1 && *end == '\0');
		assert_true(strncmp(line, "mailfeed_", 9) == 0);
		samples++;
	}
	assert_true(samples > 0);
	free(copy);
}

static void test_refuses_non_loopback(void **state)
{
	struct fixture *f = *state;
	const char *bad[] = {
	    "0.0.0.0:9464", "192.0.2.7:9464", "[::]:9464",  "[2001:db8::1]:80", "example.org:9464",
	    "9464",	    "::1:9464",	      "127.0.0.1:", "127.0.0.1:70000",	"[::1]9464"};
	char err[512];
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		err[0] = '\0';
		assert_null(metrics_server_start(bad[i], f->state, err, sizeof err));
		assert_non_null(strstr(err, bad[i]));
	}
	assert_null(metrics_server_start("10.1.2.3:9464", f->state, err, sizeof err));
	assert_non_null(strstr(err, "not a loopback address"));
}

static void test_serves_metrics(void **state)
{
	struct fixture *f = *state;
	char err[512];
	int changed = 0;
	struct store *st = store_open(f->state, err, sizeof err);
	assert_non_null(st);
	assert_int_equal(store_folder_select(st, "fundraising", "staff", "INBOX", 7, &changed), 0);
	assert_int_equal(store_folder_error(st, "fundraising", "connection refused"), 0);

	struct metrics_server *ms = metrics_server_start("127.0.0.1:0", f->state, err, sizeof err);
	assert_non_null(ms);
	int port = metrics_server_port(ms);
	assert_true(port > 0 && port < 65536);

	char *resp = get(port, "GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n");
	assert_true(status_is(resp, "200 OK\r\n"));
	assert_non_null(strstr(resp, "\r\nContent-Type: text/plain; version=0.0.4"));
	char *body = strstr(resp, "\r\n\r\n");
	assert_non_null(body);
	body += 4;
	char *cl = strstr(resp, "Content-Length: ");
	assert_non_null(cl);
	assert_int_equal(strtoul(cl + 16, NULL, 10), strlen(body));
	assert_text_format(body);
	assert_non_null(strstr(body, "# TYPE mailfeed_outbox_items gauge\n"));
	assert_non_null(strstr(body, "mailfeed_mailbox_error{mailbox=\"fundraising\"} 1\n"));
	assert_non_null(strstr(body, "mailfeed_state_database_up 1\n"));
	assert_null(strstr(body, "mailfeed_instances{state=\"live\"} 1")); /* none joined */
	free(resp);

	/* an instance joins the state: it is counted live */
	struct cluster *member = cluster_open(store_db(st), "t", 30000, err, sizeof err);
	assert_non_null(member);
	resp = get(port, "GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n");
	assert_non_null(strstr(resp, "mailfeed_instances{state=\"live\"} 1\n"));
	assert_non_null(strstr(resp, "mailfeed_instances{state=\"silent\"} 0\n"));
	free(resp);
	cluster_close(member);

	/* the numbers are read at each scrape, not at start */
	assert_int_equal(store_folder_ok(st, "fundraising"), 0);
	resp = get(port, "GET /metrics?x=1 HTTP/1.1\nHost: localhost\n\n");
	assert_true(status_is(resp, "200 OK\r\n"));
	assert_non_null(strstr(resp, "mailfeed_mailbox_error{mailbox=\"fundraising\"} 0\n"));
	free(resp);

	metrics_server_stop(ms);
	store_close(st);
}

static void test_other_requests(void **state)
{
	struct fixture *f = *state;
	char err[512];
	struct metrics_server *ms = metrics_server_start("localhost:0", f->state, err, sizeof err);
	assert_non_null(ms);
	int port = metrics_server_port(ms);

	char *resp = get(port, "GET / HTTP/1.0\r\n\r\n");
	assert_true(status_is(resp, "404 "));
	assert_null(strstr(resp, "mailfeed_"));
	free(resp);

	resp = get(port, "POST /metrics HTTP/1.0\r\nContent-Length: 0\r\n\r\n");
	assert_true(status_is(resp, "405 "));
	free(resp);

	/* a request that is not HTTP: refused, or the connection closed */
	resp = get(port, "garbage\r\n\r\n");
	assert_true(!resp || !*resp || status_is(resp, "400 "));
	free(resp);

	/* a header flood is cut off, not buffered without end */
	size_t big = 20000;
	char *req = malloc(big);
	memset(req, 'a', big);
	memcpy(req, "GET /metrics HTTP/1.0\r\nX: ", 26);
	resp = exchange(AF_INET, port, req, big);
	assert_true(!resp || !*resp || status_is(resp, "400 ") || status_is(resp, "413 ") ||
		    status_is(resp, "431 "));
	free(resp);
	free(req);

	/* still serving after all that */
	resp = get(port, "GET /metrics HTTP/1.0\r\n\r\n");
	assert_true(status_is(resp, "200 OK\r\n"));
	free(resp);
	metrics_server_stop(ms);
}

static void test_ipv6_loopback(void **state)
{
	struct fixture *f = *state;
	char err[512];
	int probe = socket(AF_INET6, SOCK_STREAM, 0);
	struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
	int have_v6 = probe >= 0 && bind(probe, (struct sockaddr *)&a, sizeof a) == 0;
	if (probe >= 0)
		close(probe);
	if (!have_v6)
		skip();
	struct metrics_server *ms = metrics_server_start("[::1]:0", f->state, err, sizeof err);
	assert_non_null(ms);
	const char *req = "GET /metrics HTTP/1.0\r\n\r\n";
	char *resp = exchange(AF_INET6, metrics_server_port(ms), req, strlen(req));
	assert_true(status_is(resp, "200 OK\r\n"));
	free(resp);
	metrics_server_stop(ms);
}

/* A client that connects and says nothing is dropped after the read
 * timeout, and does not keep stop from returning promptly. */
static void test_silent_client(void **state)
{
	struct fixture *f = *state;
	char err[512], c;
	struct metrics_server *ms = metrics_server_start("127.0.0.1:0", f->state, err, sizeof err);
	assert_non_null(ms);
	int fd = connect_to(AF_INET, metrics_server_port(ms));
	double t0 = now_monotonic();
	assert_int_equal(recv(fd, &c, 1, 0), 0);
	double waited = now_monotonic() - t0;
	assert_true(waited > 4.0 && waited < 8.0);
	close(fd);

	fd = connect_to(AF_INET, metrics_server_port(ms));
	usleep(100000);
	t0 = now_monotonic();
	metrics_server_stop(ms);
	assert_true(now_monotonic() - t0 < 1.0);
	assert_int_equal(recv(fd, &c, 1, 0), 0);
	close(fd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_refuses_non_loopback, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_serves_metrics, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_other_requests, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_ipv6_loopback, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_silent_client, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
