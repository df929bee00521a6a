/* test_unsubscribe_http.c — the one-click unsubscribe of the loopback
 * listener: POST ends a subscription once and answers the same again, GET
 * only shows a button, expired, forged and reply tokens change nothing. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "mailfeed/metrics.h"
#include "mailfeed/store.h"
#include "mailfeed/token.h"

static const unsigned char secret[32] = "0123456789abcdef0123456789abcdef";
static const unsigned char other[32] = "fedcba9876543210fedcba9876543210";

struct fixture {
	char dir[64];
	char state[128];
	struct store *st;
	struct metrics_server *ms;
	int port;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof *f);
	char err[512];
	snprintf(f->dir, sizeof f->dir, "/tmp/mf-unsub-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->state, sizeof f->state, "%s/state.db", f->dir);
	f->st = store_open(f->state, err, sizeof err);
	assert_non_null(f->st);
	assert_int_equal(db_exec(store_db(f->st),
				 "INSERT INTO subscribers(email, groups, frequency, since)"
				 " VALUES('bob@example.org','team','daily',1),"
				 "('carol@example.org','team','weekly',1)"),
			 0);
	f->ms = metrics_server_start_unsubscribe("127.0.0.1:0", f->state, secret, sizeof secret,
						 err, sizeof err);
	assert_non_null(f->ms);
	f->port = metrics_server_port(f->ms);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	const char *suffix[] = {"", "-wal", "-shm", "-journal"};
	char p[160];
	metrics_server_stop(f->ms);
	store_close(f->st);
	for (size_t i = 0; i < 4; i++) {
		snprintf(p, sizeof p, "%s%s", f->state, suffix[i]);
		unlink(p);
	}
	rmdir(f->dir);
	free(f);
	return 0;
}

/* One exchange; the whole response (owned). */
static char *exchange(int port, const char *req)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	struct timeval tv = {.tv_sec = 10};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(fd >= 0);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
	assert_int_equal(write(fd, req, strlen(req)), (ssize_t)strlen(req));
	size_t cap = 8192, len = 0;
	char *buf = malloc(cap);
	ssize_t n;
	while ((n = read(fd, buf + len, cap - len - 1)) > 0) {
		len += (size_t)n;
		if (len + 1 == cap)
			buf = realloc(buf, cap *= 2);
	}
	buf[len] = 0;
	close(fd);
	return buf;
}

static int request(struct fixture *f, const char *method, const char *token, char **body)
{
	char req[1024];
	const char *form = "List-Unsubscribe=One-Click";
	if (strcmp(method, "POST") == 0)
		snprintf(req, sizeof req,
			 "POST /unsubscribe/%s HTTP/1.0\r\nHost: localhost\r\n"
			 "Content-Type: application/x-www-form-urlencoded\r\n"
			 "Content-Length: %zu\r\n\r\n%s",
			 token, strlen(form), form);
	else
		snprintf(req, sizeof req, "%s /unsubscribe/%s HTTP/1.0\r\nHost: localhost\r\n\r\n",
			 method, token);
	char *resp = exchange(f->port, req);
	int status = 0;
	sscanf(resp, "HTTP/1.%*d %d", &status);
	if (body) {
		char *b = strstr(resp, "\r\n\r\n");
		*body = strdup(b ? b + 4 : "");
	}
	free(resp);
	return status;
}

static char *frequency(struct fixture *f, const char *email)
{
	struct db_stmt *s;
	char *out = NULL;
	assert_non_null(
	    (s = db_prepare(store_db(f->st), "SELECT frequency FROM subscribers WHERE email=?")));
	db_bind_text(s, 1, email, -1);
	if (db_step(s) == DB_ROW)
		out = strdup(db_column_text(s, 0));
	db_finalize(s);
	return out;
}

static void assert_frequency(struct fixture *f, const char *email, const char *want)
{
	char *got = frequency(f, email);
	assert_non_null(got);
	assert_string_equal(got, want);
	free(got);
}

static void test_post_unsubscribes_once(void **state)
{
	struct fixture *f = *state;
	time_t now = time(NULL);
	char *tok = token_issue(f->st, secret, sizeof secret, TOKEN_UNSUBSCRIBE, NULL, NULL,
				"bob@example.org", now + 86400 * 30);
	char *page, *first, *again;
	assert_non_null(tok);

	/* GET and HEAD: a page with a button, the subscription unchanged */
	assert_int_equal(request(f, "GET", tok, &page), 200);
	assert_non_null(strstr(page, "<form method=\"post\" action=\"\">"));
	assert_non_null(strstr(page, "name=\"List-Unsubscribe\" value=\"One-Click\""));
	free(page);
	assert_int_equal(request(f, "HEAD", tok, NULL), 405);
	assert_frequency(f, "bob@example.org", "daily");

	assert_int_equal(request(f, "POST", tok, &first), 200);
	assert_non_null(strstr(first, "Unsubscribed"));
	assert_frequency(f, "bob@example.org", "never");
	assert_frequency(f, "carol@example.org", "weekly");
	assert_int_equal(request(f, "POST", tok, &again), 200);
	assert_string_equal(first, again);
	assert_frequency(f, "bob@example.org", "never");
	free(first);
	free(again);
	free(tok);
}

static void test_bad_tokens_change_nothing(void **state)
{
	struct fixture *f = *state;
	time_t now = time(NULL);
	char *body;
	/* expired two days ago: 410 Gone, for POST and GET */
	char *old = token_issue(f->st, secret, sizeof secret, TOKEN_UNSUBSCRIBE, NULL, NULL,
				"carol@example.org", now - 2 * 86400);
	/* signed with another secret */
	char *forged = token_issue(f->st, other, sizeof other, TOKEN_UNSUBSCRIBE, NULL, NULL,
				   "carol@example.org", now + 86400);
	/* a reply token is no unsubscribe token */
	char *reply = token_issue(f->st, secret, sizeof secret, TOKEN_REPLY, "g1", "p1",
				  "carol@example.org", now + 86400);
	assert_true(old && forged && reply);

	assert_int_equal(request(f, "POST", old, &body), 410);
	assert_non_null(strstr(body, "expired"));
	free(body);
	assert_int_equal(request(f, "GET", old, NULL), 410);
	const char *bad[] = {forged, reply, "", "zzzz", "../metrics", "a%2f..%2fb"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		assert_int_equal(request(f, "POST", bad[i], NULL), 404);
		assert_int_equal(request(f, "GET", bad[i], NULL), 404);
	}
	assert_frequency(f, "carol@example.org", "weekly");
	assert_frequency(f, "bob@example.org", "daily");
	free(old);
	free(forged);
	free(reply);
}

/* Without a secret (no [digest] public_url) there is no /unsubscribe/. */
static void test_off_without_secret(void **state)
{
	struct fixture *f = *state;
	char err[512];
	char *tok = token_issue(f->st, secret, sizeof secret, TOKEN_UNSUBSCRIBE, NULL, NULL,
				"bob@example.org", time(NULL) + 86400);
	struct metrics_server *plain =
	    metrics_server_start("127.0.0.1:0", f->state, err, sizeof err);
	assert_non_null(plain);
	int port = f->port;
	f->port = metrics_server_port(plain);
	assert_int_equal(request(f, "POST", tok, NULL), 404);
	f->port = port;
	metrics_server_stop(plain);
	assert_frequency(f, "bob@example.org", "daily");
	free(tok);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_post_unsubscribes_once, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bad_tokens_change_nothing, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_off_without_secret, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
