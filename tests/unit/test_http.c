/* test_http.c — the HTTP client: status classification, Retry-After parsing,
 * escaping, and real requests against a tiny loopback server thread. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <curl/curl.h>

#include "mailfeed/feed_http.h"
#include "mailfeed/http.h"

static void test_classify(void **state)
{
	(void)state;
	assert_int_equal(http_classify(200, 0), HTTP_CLASS_OK);
	assert_int_equal(http_classify(201, 0), HTTP_CLASS_OK);
	assert_int_equal(http_classify(0, 1), HTTP_CLASS_TRANSIENT);
	assert_int_equal(http_classify(408, 0), HTTP_CLASS_TRANSIENT);
	assert_int_equal(http_classify(429, 0), HTTP_CLASS_TRANSIENT);
	assert_int_equal(http_classify(500, 0), HTTP_CLASS_TRANSIENT);
	assert_int_equal(http_classify(503, 0), HTTP_CLASS_TRANSIENT);
	assert_int_equal(http_classify(400, 0), HTTP_CLASS_REFUSED);
	assert_int_equal(http_classify(401, 0), HTTP_CLASS_REFUSED);
	assert_int_equal(http_classify(404, 0), HTTP_CLASS_REFUSED);
	/* as a delivery result */
	assert_int_equal(feed_http_status(201, 0), FEED_OK);
	assert_int_equal(feed_http_status(0, 1), FEED_RETRY);
	assert_int_equal(feed_http_status(503, 0), FEED_RETRY);
	assert_int_equal(feed_http_status(404, 0), FEED_PERMANENT);
}

static void test_retry_after(void **state)
{
	(void)state;
	struct http_request r;
	http_request_init(&r, "GET", "http://127.0.0.1/");
	assert_int_equal(http_retry_after(&r), 0);
	r.retry_after = strdup("7");
	assert_int_equal(http_retry_after(&r), 7);
	free(r.retry_after);
	r.retry_after = strdup("99999999");
	assert_int_equal(http_retry_after(&r), 86400);
	free(r.retry_after);
	/* an HTTP-date 120 s from now */
	char date[64];
	time_t t = time(NULL) + 120;
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
	r.retry_after = strdup(date);
	long v = http_retry_after(&r);
	assert_true(v >= 118 && v <= 120);
	free(r.retry_after);
	r.retry_after = strdup("garbage");
	r.ratelimit_reset = strdup("3");
	assert_int_equal(http_retry_after(&r), 3);
	http_request_clear(&r);
}

static void test_escape(void **state)
{
	(void)state;
	char *e = http_escape("a b&c=d/é'");
	assert_string_equal(e, "a%20b%26c%3Dd%2F%C3%A9%27");
	free(e);
	e = http_escape("");
	assert_string_equal(e, "");
	free(e);
}

static void test_header_strips_crlf(void **state)
{
	(void)state;
	struct http_request r;
	http_request_init(&r, "GET", "http://127.0.0.1/");
	http_request_header(&r, "X-Test", "a\r\nInjected: yes");
	assert_int_equal(r.headers.n, 1);
	assert_string_equal(r.headers.v[0], "X-Test: aInjected: yes");
	http_request_clear(&r);
}

/* Loopback server: answers each connection with the canned response,
 * after recording the request it got. */
struct srv {
	int fd;
	int port;
	int conns;
	const char *answer;
	char last_request[8192];
};

static void *srv_main(void *arg)
{
	struct srv *s = arg;
	for (int i = 0; i < s->conns; i++) {
		int c = accept(s->fd, NULL, NULL);
		if (c < 0)
			break;
		size_t got = 0;
		for (;;) {
			ssize_t k =
			    read(c, s->last_request + got, sizeof(s->last_request) - 1 - got);
			if (k <= 0)
				break;
			got += (size_t)k;
			s->last_request[got] = 0;
			char *end = strstr(s->last_request, "\r\n\r\n");
			if (!end)
				continue;
			char *cl = strcasestr(s->last_request, "Content-Length:");
			size_t want = cl ? (size_t)atol(cl + 15) : 0;
			if (got >= (size_t)(end + 4 - s->last_request) + want)
				break;
		}
		if (write(c, s->answer, strlen(s->answer)) < 0)
			break;
		close(c);
	}
	return NULL;
}

static void srv_start(struct srv *s, pthread_t *th)
{
	s->fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	assert_int_equal(bind(s->fd, (struct sockaddr *)&a, sizeof(a)), 0);
	socklen_t al = sizeof(a);
	getsockname(s->fd, (struct sockaddr *)&a, &al);
	s->port = ntohs(a.sin_port);
	listen(s->fd, 16);
	pthread_create(th, NULL, srv_main, s);
}

static void test_perform_post(void **state)
{
	(void)state;
	struct srv s = {.conns = 1,
			.answer =
			    "HTTP/1.1 429 Too Many Requests\r\nContent-Type: text/plain\r\n"
			    "Retry-After: 5\r\nContent-Length: 14\r\nConnection: close\r\n\r\n"
			    "limit exceeded"};
	pthread_t th;
	srv_start(&s, &th);
	char err[256];
	struct http_options o = {.tls_verify = 1, .timeout = 5};
	struct http_client *c = http_client_new(&o, err, sizeof(err));
	assert_non_null(c);
	char url[64];
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/api/v4/posts", s.port);
	struct http_request r;
	http_request_init(&r, "POST", url);
	http_request_header(&r, "Authorization", "Bearer secret");
	http_request_json(&r, strdup("{\"a\":1}"));
	http_perform_one(c, &r);
	pthread_join(th, NULL);
	close(s.fd);
	assert_int_equal(r.status, 429);
	assert_int_equal(r.curl_failed, 0);
	assert_string_equal(r.response.data, "limit exceeded");
	assert_string_equal(r.content_type, "text/plain");
	assert_int_equal(http_retry_after(&r), 5);
	assert_int_equal(http_classify(r.status, r.curl_failed), HTTP_CLASS_TRANSIENT);
	assert_non_null(strstr(s.last_request, "POST /api/v4/posts HTTP/1.1"));
	assert_non_null(strstr(s.last_request, "User-Agent: mailfeed/"));
	assert_non_null(strstr(s.last_request, "Content-Type: application/json"));
	assert_non_null(strstr(s.last_request, "\r\n\r\n{\"a\":1}"));
	http_request_clear(&r);
	http_client_free(c);
}

static void test_perform_many_and_refused(void **state)
{
	(void)state;
	struct srv s = {.conns = 5,
			.answer = "HTTP/1.1 201 Created\r\nContent-Length: 2\r\n"
				  "Connection: close\r\n\r\nok"};
	pthread_t th;
	srv_start(&s, &th);
	char err[256];
	struct http_options o = {.tls_verify = 1, .timeout = 5, .max_concurrency = 2};
	struct http_client *c = http_client_new(&o, err, sizeof(err));
	char url[64];
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/x", s.port);
	struct http_request rs[5];
	struct http_request *p[5];
	for (int i = 0; i < 5; i++) {
		http_request_init(&rs[i], "GET", url);
		p[i] = &rs[i];
	}
	http_perform(c, p, 5);
	pthread_join(th, NULL);
	close(s.fd);
	for (int i = 0; i < 5; i++) {
		assert_int_equal(rs[i].status, 201);
		assert_string_equal(rs[i].response.data, "ok");
	}
	/* the port is closed now: a network failure, to be retried */
	http_perform_one(c, &rs[0]);
	assert_int_equal(rs[0].curl_failed, 1);
	assert_true(rs[0].error[0] != '\0');
	assert_int_equal(http_classify(rs[0].status, rs[0].curl_failed), HTTP_CLASS_TRANSIENT);
	for (int i = 0; i < 5; i++)
		http_request_clear(&rs[i]);
	http_client_free(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_classify),	 cmocka_unit_test(test_retry_after),
	    cmocka_unit_test(test_escape),	 cmocka_unit_test(test_header_strips_crlf),
	    cmocka_unit_test(test_perform_post), cmocka_unit_test(test_perform_many_and_refused),
	};
	int rc = cmocka_run_group_tests(tests, NULL, NULL);
	curl_global_cleanup();
	return rc;
}
