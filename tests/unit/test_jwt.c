/* test_jwt.c — JWT bearer assertions: base64url, RS256 signatures checked
 * with OpenSSL against the public half of a key made for the test, claims,
 * and key loading errors a user would meet. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include "mailfeed/jwt.h"

static EVP_PKEY *test_key;
static char *test_pem;

static int setup(void **state)
{
	(void)state;
	test_key = EVP_RSA_gen(2048);
	assert_non_null(test_key);
	BIO *b = BIO_new(BIO_s_mem());
	PEM_write_bio_PrivateKey(b, test_key, NULL, NULL, 0, NULL, NULL);
	char *p;
	long n = BIO_get_mem_data(b, &p);
	test_pem = strndup(p, (size_t)n);
	BIO_free(b);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	EVP_PKEY_free(test_key);
	free(test_pem);
	return 0;
}

/* Decodes unpadded base64url; returns malloc'd bytes, *n set; NULL if invalid. */
static unsigned char *b64url_decode(const char *s, size_t len, size_t *n)
{
	char *std = malloc(len + 4);
	size_t i;
	for (i = 0; i < len; i++) {
		char c = s[i];
		if (c == '=' || c == '+' || c == '/')
			return free(std), NULL;
		std[i] = c == '-' ? '+' : c == '_' ? '/' : c;
	}
	while (i % 4)
		std[i++] = '=';
	unsigned char *out = malloc(i);
	int k = EVP_DecodeBlock(out, (unsigned char *)std, (int)i);
	free(std);
	if (k < 0)
		return free(out), NULL;
	size_t pad = (4 - len % 4) % 4;
	*n = (size_t)k - pad;
	return out;
}

static void test_base64url(void **state)
{
	(void)state;
	struct {
		const char *in, *out;
	} v[] = {{"", ""},	     {"f", "Zg"},	   {"fo", "Zm8"},	  {"foo", "Zm9v"},
		 {"foob", "Zm9vYg"}, {"fooba", "Zm9vYmE"}, {"foobar", "Zm9vYmFy"}};
	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		char *e = jwt_base64url((const unsigned char *)v[i].in, strlen(v[i].in));
		assert_string_equal(e, v[i].out);
		free(e);
	}
	const unsigned char bin[] = {0xfb, 0xff, 0xbf};
	char *e = jwt_base64url(bin, 3);
	assert_string_equal(e, "-_-_");
	free(e);
}

static void test_assertion_verifies(void **state)
{
	(void)state;
	char err[256] = "";
	struct jwt_key *k = jwt_key_from_pem(test_pem, strlen(test_pem), err, sizeof(err));
	assert_non_null(k);
	time_t now = 1770109527;
	char *jwt =
	    jwt_bearer_assertion(k, "3MVG9client", "alice@acme.example",
				 "https://login.salesforce.com", now, 180, err, sizeof(err));
	assert_non_null(jwt);
	char *dot1 = strchr(jwt, '.');
	assert_non_null(dot1);
	char *dot2 = strchr(dot1 + 1, '.');
	assert_non_null(dot2);
	assert_null(strchr(dot2 + 1, '.'));

	size_t n;
	unsigned char *hdr = b64url_decode(jwt, (size_t)(dot1 - jwt), &n);
	assert_non_null(hdr);
	json_t *h = json_loadb((char *)hdr, n, 0, NULL);
	assert_non_null(h);
	assert_string_equal(json_string_value(json_object_get(h, "alg")), "RS256");
	json_decref(h);
	free(hdr);

	unsigned char *cl = b64url_decode(dot1 + 1, (size_t)(dot2 - dot1 - 1), &n);
	json_t *c = json_loadb((char *)cl, n, 0, NULL);
	assert_non_null(c);
	assert_string_equal(json_string_value(json_object_get(c, "iss")), "3MVG9client");
	assert_string_equal(json_string_value(json_object_get(c, "sub")), "alice@acme.example");
	assert_string_equal(json_string_value(json_object_get(c, "aud")),
			    "https://login.salesforce.com");
	assert_int_equal(json_integer_value(json_object_get(c, "exp")), now + 180);
	json_decref(c);
	free(cl);

	unsigned char *sig = b64url_decode(dot2 + 1, strlen(dot2 + 1), &n);
	assert_non_null(sig);
	assert_int_equal(n, 256);
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	assert_int_equal(EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, test_key), 1);
	size_t signed_len = (size_t)(dot2 - jwt);
	assert_int_equal(EVP_DigestVerify(md, sig, n, (unsigned char *)jwt, signed_len), 1);
	/* a changed claim must not verify */
	jwt[signed_len - 2] ^= 1;
	EVP_MD_CTX_free(md);
	md = EVP_MD_CTX_new();
	EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, test_key);
	assert_int_not_equal(EVP_DigestVerify(md, sig, n, (unsigned char *)jwt, signed_len), 1);
	EVP_MD_CTX_free(md);
	free(sig);
	free(jwt);
	jwt_key_free(k);
}

static void test_claims_escaped(void **state)
{
	(void)state;
	char err[256];
	struct jwt_key *k = jwt_key_from_pem(test_pem, strlen(test_pem), err, sizeof(err));
	char *jwt = jwt_bearer_assertion(k, "id\"x", "a\\b", "https://test.salesforce.com", 0, 120,
					 err, sizeof(err));
	assert_non_null(jwt);
	char *dot1 = strchr(jwt, '.');
	char *dot2 = strchr(dot1 + 1, '.');
	size_t n;
	unsigned char *cl = b64url_decode(dot1 + 1, (size_t)(dot2 - dot1 - 1), &n);
	json_t *c = json_loadb((char *)cl, n, 0, NULL);
	assert_non_null(c);
	assert_string_equal(json_string_value(json_object_get(c, "iss")), "id\"x");
	assert_string_equal(json_string_value(json_object_get(c, "sub")), "a\\b");
	json_decref(c);
	free(cl);
	free(jwt);
	jwt_key_free(k);
}

static void test_bad_keys(void **state)
{
	(void)state;
	char err[256] = "";
	assert_null(jwt_key_from_pem("not a key", 9, err, sizeof(err)));
	assert_non_null(strstr(err, "PEM RSA key"));

	EVP_PKEY *ec = EVP_EC_gen("P-256");
	BIO *b = BIO_new(BIO_s_mem());
	PEM_write_bio_PrivateKey(b, ec, NULL, NULL, 0, NULL, NULL);
	char *p;
	long n = BIO_get_mem_data(b, &p);
	err[0] = 0;
	assert_null(jwt_key_from_pem(p, (size_t)n, err, sizeof(err)));
	assert_non_null(strstr(err, "not an RSA key"));
	BIO_free(b);
	EVP_PKEY_free(ec);

	/* file loading: missing, then world-readable, then fine */
	char dir[] = "/tmp/test_jwt_XXXXXX";
	assert_non_null(mkdtemp(dir));
	char path[64];
	snprintf(path, sizeof(path), "%s/key.pem", dir);
	err[0] = 0;
	assert_null(jwt_key_load(path, err, sizeof(err)));
	assert_non_null(strstr(err, path));
	FILE *f = fopen(path, "w");
	fputs(test_pem, f);
	fclose(f);
	chmod(path, 0644);
	err[0] = 0;
	assert_null(jwt_key_load(path, err, sizeof(err)));
	assert_true(err[0] != 0);
	chmod(path, 0600);
	struct jwt_key *k = jwt_key_load(path, err, sizeof(err));
	assert_non_null(k);
	jwt_key_free(k);
	unlink(path);
	rmdir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_base64url),
	    cmocka_unit_test(test_assertion_verifies),
	    cmocka_unit_test(test_claims_escaped),
	    cmocka_unit_test(test_bad_keys),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
