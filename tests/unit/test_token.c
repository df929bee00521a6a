/* test_token.c — reply and unsubscribe tokens as a replying user meets
 * them: the address fits in a local part, survives case folding, names the
 * right post and person, and refuses tampering, other secrets and age. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "mailfeed/token.h"

static const unsigned char secret[32] = "0123456789abcdef0123456789abcdef";
static const unsigned char other_secret[32] = "fedcba9876543210fedcba9876543210";

struct fixture {
	char dir[64];
	char path[128];
	struct store *st;
	struct mf_config cfg;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof *f);
	char err[256];
	strcpy(f->dir, "/tmp/mf-token-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->path, sizeof f->path, "%s/state.db", f->dir);
	f->st = store_open(f->path, err, sizeof err);
	assert_non_null(f->st);
	f->cfg.gateway.reply_address = "feed@example.org";
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	char p[160];
	store_close(f->st);
	unlink(f->path);
	snprintf(p, sizeof p, "%s-wal", f->path);
	unlink(p);
	snprintf(p, sizeof p, "%s-shm", f->path);
	unlink(p);
	rmdir(f->dir);
	free(f);
	return 0;
}

static void test_round_trip(void **state)
{
	struct fixture *f = *state;
	time_t now = 1795000000;
	struct token_info ti;
	char *tok = token_issue(f->st, secret, sizeof secret, TOKEN_REPLY, "0F9000000000001",
				"0D5000000000042", "Alice@Example.ORG", now + 86400 * 60);
	assert_non_null(tok);
	for (const char *p = tok; *p; p++)
		assert_true((*p >= 'a' && *p <= 'z') || (*p >= '2' && *p <= '7'));

	char *addr = token_address(&f->cfg, tok);
	assert_non_null(addr);
	assert_true(strncmp(addr, "feed+", 5) == 0);
	assert_true(strchr(addr, '@') - addr <= TOKEN_LOCAL_MAX);

	/* An MTA that upper-cases the local part does not break it. */
	char upper[128], found[80];
	snprintf(upper, sizeof upper, "%s", addr);
	for (char *p = upper; *p; p++)
		if (*p >= 'a' && *p <= 'z')
			*p = (char)(*p - 32);
	assert_int_equal(token_from_address(&f->cfg, upper, found, sizeof found), 1);

	assert_int_equal(token_verify(f->st, secret, sizeof secret, found, now, &ti), TOKEN_OK);
	assert_int_equal(ti.kind, TOKEN_REPLY);
	assert_string_equal(ti.grp, "0F9000000000001");
	assert_string_equal(ti.remote_id, "0D5000000000042");
	assert_string_equal(ti.email, "alice@example.org");
	token_info_clear(&ti);
	free(addr);
	free(tok);
}

static void test_refusals(void **state)
{
	struct fixture *f = *state;
	time_t now = 1795000000;
	struct token_info ti;
	char *tok = token_issue(f->st, secret, sizeof secret, TOKEN_REPLY, "g1", "post-1",
				"bob@example.org", now + 86400);
	assert_non_null(tok);

	/* another gateway's secret */
	assert_int_equal(token_verify(f->st, other_secret, sizeof other_secret, tok, now, &ti),
			 TOKEN_FORGED);
	assert_null(ti.email);
	/* any changed character */
	for (size_t i = 0; tok[i]; i++) {
		char *t = strdup(tok);
		t[i] = t[i] == 'a' ? 'b' : 'a';
		assert_int_not_equal(token_verify(f->st, secret, sizeof secret, t, now, &ti),
				     TOKEN_OK);
		token_info_clear(&ti);
		free(t);
	}
	/* cut short, garbage, empty */
	tok[strlen(tok) - 1] = 0;
	assert_int_equal(token_verify(f->st, secret, sizeof secret, tok, now, &ti), TOKEN_FORGED);
	assert_int_equal(token_verify(f->st, secret, sizeof secret, "", now, &ti), TOKEN_FORGED);
	assert_int_equal(token_verify(f->st, secret, sizeof secret, "zz!!", now, &ti),
			 TOKEN_FORGED);
	free(tok);

	/* expired: valid through the day of expiry, refused after it */
	tok = token_issue(f->st, secret, sizeof secret, TOKEN_REPLY, "g1", "post-1",
			  "bob@example.org", now);
	assert_int_equal(token_verify(f->st, secret, sizeof secret, tok, now, &ti), TOKEN_OK);
	token_info_clear(&ti);
	assert_int_equal(token_verify(f->st, secret, sizeof secret, tok, now + 2 * 86400, &ti),
			 TOKEN_EXPIRED);
	assert_string_equal(ti.email, "bob@example.org");
	token_info_clear(&ti);
	free(tok);
}

static void test_unsubscribe_and_people(void **state)
{
	struct fixture *f = *state;
	time_t now = 1795000000;
	struct token_info ti;
	char *a = token_issue(f->st, secret, sizeof secret, TOKEN_UNSUBSCRIBE, NULL, NULL,
			      "carol@example.org", now + 86400);
	char *b = token_issue(f->st, secret, sizeof secret, TOKEN_UNSUBSCRIBE, NULL, NULL,
			      "dave@example.org", now + 86400);
	assert_string_not_equal(a, b);
	assert_int_equal(token_verify(f->st, secret, sizeof secret, a, now, &ti), TOKEN_OK);
	assert_int_equal(ti.kind, TOKEN_UNSUBSCRIBE);
	assert_null(ti.remote_id);
	assert_string_equal(ti.email, "carol@example.org");
	token_info_clear(&ti);
	free(a);
	free(b);
}

static void test_address_matching(void **state)
{
	struct fixture *f = *state;
	char out[80];
	assert_int_equal(token_from_address(&f->cfg, "feed+abc@example.org", out, sizeof out), 1);
	assert_string_equal(out, "abc");
	assert_int_equal(token_from_address(&f->cfg, "<FEED+abc@Example.Org>", out, sizeof out),
			 1);
	assert_int_equal(token_from_address(&f->cfg, "feed@example.org", out, sizeof out), 0);
	assert_int_equal(token_from_address(&f->cfg, "feedx+abc@example.org", out, sizeof out), 0);
	assert_int_equal(token_from_address(&f->cfg, "feed+abc@example.org.evil", out, sizeof out),
			 0);
	assert_int_equal(token_from_address(&f->cfg, "other+abc@example.org", out, sizeof out), 0);

	/* a reply address that leaves too little room is refused, not cut */
	struct mf_config long_cfg = {0};
	long_cfg.gateway.reply_address =
	    "a-very-long-local-part-for-the-feed-gateway-of-this-org@example.org";
	assert_null(token_address(&long_cfg, "abcdefghijklmnopqrstuvwxyz234567"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_refusals, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_unsubscribe_and_people, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_address_matching, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
