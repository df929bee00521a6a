/* jwt.c — builds and signs the RS256 JWT of the OAuth 2.0 JWT bearer grant.
 *
 * The key is read once at backend start; each token request signs a fresh
 * assertion with a short expiry, since Salesforce refuses long-lived ones. */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "mailfeed/config.h"
#include "mailfeed/jwt.h"
#include "mailfeed/secret.h"
#include "mailfeed/util.h"

struct jwt_key {
	EVP_PKEY *pkey;
};

static void jwt_openssl_error(char *err, size_t errlen, const char *what)
{
	unsigned long e = ERR_get_error();
	char msg[200] = "";
	if (e)
		ERR_error_string_n(e, msg, sizeof(msg));
	ERR_clear_error();
	snprintf(err, errlen, "%s%s%s", what, msg[0] ? ": " : "", msg);
}

struct jwt_key *jwt_key_from_pem(const char *pem, size_t len, char *err, size_t errlen)
{
	if (len > 64 * 1024) {
		snprintf(err, errlen, "private key file is too large to be a PEM RSA key");
		return NULL;
	}
	BIO *bio = BIO_new_mem_buf(pem, (int)len);
	if (!bio) {
		jwt_openssl_error(err, errlen, "cannot read the private key");
		return NULL;
	}
	EVP_PKEY *pkey = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
	BIO_free(bio);
	if (!pkey) {
		jwt_openssl_error(
		    err, errlen,
		    "cannot parse the private key (expected an unencrypted PEM RSA key)");
		return NULL;
	}
	if (EVP_PKEY_base_id(pkey) != EVP_PKEY_RSA) {
		EVP_PKEY_free(pkey);
		snprintf(err, errlen, "the private key is not an RSA key (RS256 needs RSA)");
		return NULL;
	}
	struct jwt_key *k = xcalloc(1, sizeof(*k));
	k->pkey = pkey;
	return k;
}

struct jwt_key *jwt_key_load(const char *path, char *err, size_t errlen)
{
	char *pem = NULL;
	char e[256];
	if (secret_read(path, NULL, &pem, e, sizeof(e)) != 0) {
		snprintf(err, errlen, "private_key_file %s: %s", path, e);
		return NULL;
	}
	struct jwt_key *k = jwt_key_from_pem(pem, strlen(pem), e, sizeof(e));
	if (!k)
		snprintf(err, errlen, "private_key_file %s: %s", path, e);
	OPENSSL_cleanse(pem, strlen(pem));
	free(pem);
	return k;
}

void jwt_key_free(struct jwt_key *k)
{
	if (!k)
		return;
	EVP_PKEY_free(k->pkey);
	free(k);
}

char *jwt_base64url(const unsigned char *in, size_t n) { return base64url_encode(in, n); }

char *jwt_sign_rs256(struct jwt_key *k, const char *claims_json, char *err, size_t errlen)
{
	static const char header[] = "{\"alg\":\"RS256\",\"typ\":\"JWT\"}";
	char *h = jwt_base64url((const unsigned char *)header, strlen(header));
	char *c = jwt_base64url((const unsigned char *)claims_json, strlen(claims_json));
	char *input = xasprintf("%s.%s", h, c);
	free(h);
	free(c);

	char *result = NULL;
	unsigned char *sig = NULL;
	size_t siglen = 0;
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	if (!md || EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, k->pkey) != 1 ||
	    EVP_DigestSign(md, NULL, &siglen, (const unsigned char *)input, strlen(input)) != 1) {
		jwt_openssl_error(err, errlen, "cannot sign the JWT");
		goto out;
	}
	sig = xmalloc(siglen);
	if (EVP_DigestSign(md, sig, &siglen, (const unsigned char *)input, strlen(input)) != 1) {
		jwt_openssl_error(err, errlen, "cannot sign the JWT");
		goto out;
	}
	char *s = jwt_base64url(sig, siglen);
	result = xasprintf("%s.%s", input, s);
	free(s);
out:
	EVP_MD_CTX_free(md);
	free(sig);
	free(input);
	return result;
}

char *jwt_bearer_assertion(struct jwt_key *k, const char *client_id, const char *username,
			   const char *audience, time_t now, long lifetime, char *err,
			   size_t errlen)
{
	json_t *claims = json_pack("{s:s, s:s, s:s, s:I}", "iss", client_id, "sub", username, "aud",
				   audience, "exp", (json_int_t)(now + lifetime));
	if (!claims) {
		snprintf(err, errlen,
			 "cannot build JWT claims (client_id, username and "
			 "login_url must be valid UTF-8)");
		return NULL;
	}
	char *text = json_dumps(claims, JSON_COMPACT);
	json_decref(claims);
	if (!text) {
		snprintf(err, errlen, "cannot encode JWT claims");
		return NULL;
	}
	char *jwt = jwt_sign_rs256(k, text, err, errlen);
	free(text);
	return jwt;
}
