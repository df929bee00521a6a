/* smtp.c — mail out through the [smtp] relay (digests, notifications,
 * notices) with libcurl's SMTP client: the transport only (compose.c
 * writes the mails).  A client keeps its connections open between messages:
 * one easy handle for single messages, and a few more for groups sent side
 * by side (digests), one thread each, every transfer held before its
 * end-of-data mark until the caller has recorded the group.  (libcurl's
 * SMTP client waits for the answer to the end of the data in a blocking
 * loop, even under its multi interface; one thread per transfer lets every
 * held message go at once.)
 * TLS is required for every relay that is not on loopback; the relay's
 * answer decides whether a failure is temporary (4xx, network) or
 * permanent (5xx). */
#include <curl/curl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mailfeed/log.h"
#include "mailfeed/loopback.h"
#include "mailfeed/secret.h"
#include "mailfeed/smtp.h"
#include "mailfeed/util.h"

struct smtp_client {
	CURL *curl;		    /* smtp_send */
	CURL *pool[SMTP_GROUP_MAX]; /* smtp_send_group; open between groups */
	char *url;
	char *username;
	char *password;
	char *ca_file;
	long use_ssl, timeout;
	int tls_verify;
	char curl_err[CURL_ERROR_SIZE];
};

struct upload {
	const char *data;
	size_t len, pos;
};

static pthread_once_t smtp_once = PTHREAD_ONCE_INIT;
static int smtp_global_rc;

static void smtp_global_init(void)
{
	smtp_global_rc = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : -1;
}

static size_t upload_read(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	struct upload *u = userdata;
	size_t room = size * nmemb, left = u->len - u->pos;
	size_t n = left < room ? left : room;
	memcpy(ptr, u->data + u->pos, n);
	u->pos += n;
	return n;
}

/* Loopback relays (tests, a local MTA) may go without STARTTLS. */
static int url_is_loopback(const char *url)
{
	CURLU *u = curl_url();
	char *host = NULL;
	int loop = 0;
	if (u && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
	    curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK) {
		loop = host_loopback_only(host);
	}
	curl_free(host);
	curl_url_cleanup(u);
	return loop;
}

/* An easy handle with the relay's URL, TLS and login settings. */
static CURL *handle_new(const struct smtp_client *c)
{
	CURL *h = curl_easy_init();
	if (!h)
		return NULL;
	curl_easy_setopt(h, CURLOPT_URL, c->url);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "smtp,smtps");
	curl_easy_setopt(h, CURLOPT_USE_SSL, c->use_ssl);
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, c->tls_verify ? 1L : 0L);
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, c->tls_verify ? 2L : 0L);
	if (c->ca_file)
		curl_easy_setopt(h, CURLOPT_CAINFO, c->ca_file);
	if (c->username)
		curl_easy_setopt(h, CURLOPT_USERNAME, c->username);
	if (c->password)
		curl_easy_setopt(h, CURLOPT_PASSWORD, c->password);
	curl_easy_setopt(h, CURLOPT_TIMEOUT, c->timeout);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, c->timeout < 30 ? c->timeout : 30L);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
	return h;
}

struct smtp_client *smtp_new(const struct mf_smtp *cfg, char *err, size_t errlen)
{
	struct smtp_client *c;

	if (!cfg->present || !cfg->url) {
		snprintf(err, errlen,
			 "no [smtp] section with url in the config; mail cannot be sent");
		return NULL;
	}
	if (strncasecmp(cfg->url, "smtp://", 7) != 0 && strncasecmp(cfg->url, "smtps://", 8) != 0) {
		snprintf(err, errlen, "[smtp] url must start with smtp:// or smtps://");
		return NULL;
	}
	pthread_once(&smtp_once, smtp_global_init);
	if (smtp_global_rc < 0) {
		snprintf(err, errlen, "libcurl could not be initialised");
		return NULL;
	}
	c = xcalloc(1, sizeof *c);
	if (cfg->password_file &&
	    secret_read(cfg->password_file, NULL, &c->password, err, errlen) < 0) {
		free(c);
		return NULL;
	}
	c->url = xstrdup(cfg->url);
	c->username = cfg->username ? xstrdup(cfg->username) : NULL;
	c->ca_file = cfg->ca_file ? xstrdup(cfg->ca_file) : NULL;
	c->use_ssl = strncasecmp(cfg->url, "smtps://", 8) == 0 || !url_is_loopback(cfg->url)
			 ? CURLUSESSL_ALL
			 : CURLUSESSL_TRY;
	c->timeout = cfg->timeout;
	c->tls_verify = cfg->tls_verify;
	c->curl = handle_new(c);
	if (!c->curl) {
		snprintf(err, errlen, "libcurl could not create a handle");
		smtp_free(c);
		return NULL;
	}
	curl_easy_setopt(c->curl, CURLOPT_READFUNCTION, upload_read);
	curl_easy_setopt(c->curl, CURLOPT_ERRORBUFFER, c->curl_err);
	if (!cfg->tls_verify)
		log_warn("smtp.tls_verify_off url=%s warning=\"certificates are not checked\"",
			 cfg->url);
	return c;
}

void smtp_free(struct smtp_client *c)
{
	if (!c)
		return;
	if (c->curl)
		curl_easy_cleanup(c->curl);
	for (int i = 0; i < SMTP_GROUP_MAX; i++)
		if (c->pool[i])
			curl_easy_cleanup(c->pool[i]);
	free(c->url);
	free(c->username);
	free(c->ca_file);
	if (c->password) {
		memset(c->password, 0, strlen(c->password));
		free(c->password);
	}
	free(c);
}

int smtp_check(struct smtp_client *c, char *err, size_t errlen)
{
	char cerr[CURL_ERROR_SIZE] = "";
	long code = 0;
	CURL *h = handle_new(c);

	if (!h) {
		snprintf(err, errlen, "libcurl could not create a handle");
		return -1;
	}
	/* libcurl's SMTP connect phase is greeting, EHLO, STARTTLS and AUTH */
	curl_easy_setopt(h, CURLOPT_UPLOAD, 0L);
	curl_easy_setopt(h, CURLOPT_CONNECT_ONLY, 1L);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, cerr);
	CURLcode rc = curl_easy_perform(h);
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
	curl_easy_cleanup(h);
	if (rc == CURLE_OK)
		return 0;
	snprintf(err, errlen, "%s%s%s (smtp %ld)", curl_easy_strerror(rc), cerr[0] ? ": " : "",
		 cerr, code);
	return -1;
}

static int has_crlf(const char *s) { return strpbrk(s, "\r\n") != NULL; }

/* The relay's answer as an enum smtp_result, err filled when not sent.
 * data_out: every byte of the message was handed to libcurl. */
static enum smtp_result classify(CURLcode rc, long code, int data_out, const char *curl_err,
				 char *err, size_t errlen)
{
	if (rc == CURLE_OK)
		return SMTP_SENT;
	snprintf(err, errlen, "%s%s%s (smtp %ld)", curl_easy_strerror(rc), curl_err[0] ? ": " : "",
		 curl_err, code);
	if (code >= 500 && code < 600)
		return SMTP_PERMANENT;
	if (code >= 400 && code < 500)
		return SMTP_TEMPORARY;
	/* 354 was the last answer: the data went out and the final reply was
	 * lost, so the relay may have taken the message. */
	if (code == 354 || data_out)
		return SMTP_UNKNOWN;
	return SMTP_TEMPORARY;
}

static int address_usable(const char *from_addr, const char *to)
{
	return from_addr && to && *to && !has_crlf(from_addr) && !has_crlf(to) &&
	       !strpbrk(to, "<> ");
}

enum smtp_result smtp_send(struct smtp_client *c, const char *from_addr, const char *to,
			   const char *data, size_t len, char *err, size_t errlen)
{
	struct upload u = {data, len, 0};
	struct curl_slist *rcpt = NULL;
	char *from_arg, *to_arg;
	long code = 0;
	CURLcode rc;

	if (!address_usable(from_addr, to)) {
		snprintf(err, errlen, "recipient address is not usable");
		return SMTP_PERMANENT;
	}
	from_arg = xasprintf("<%s>", from_addr);
	to_arg = xasprintf("<%s>", to);
	rcpt = curl_slist_append(rcpt, to_arg);
	c->curl_err[0] = 0;
	curl_easy_setopt(c->curl, CURLOPT_MAIL_FROM, from_arg);
	curl_easy_setopt(c->curl, CURLOPT_MAIL_RCPT, rcpt);
	curl_easy_setopt(c->curl, CURLOPT_READDATA, &u);
	curl_easy_setopt(c->curl, CURLOPT_INFILESIZE_LARGE, (curl_off_t)len);
	rc = curl_easy_perform(c->curl);
	curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &code);
	curl_easy_setopt(c->curl, CURLOPT_MAIL_RCPT, NULL);
	curl_easy_setopt(c->curl, CURLOPT_READDATA, NULL);
	curl_slist_free_all(rcpt);
	free(from_arg);
	free(to_arg);
	return classify(rc, code, u.pos == len && len > 0, c->curl_err, err, errlen);
}

/* A group in flight: its transfers wait for one another here. */
struct group {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	size_t moving; /* transfers neither held nor over */
	int released;  /* before_end has decided */
};

/* One transfer of smtp_send_group, run by its own thread. */
struct group_upload {
	struct group *grp;
	struct smtp_message *m;
	CURL *h;
	const char *from_arg;
	size_t pos;
	char curl_err[CURL_ERROR_SIZE];
};

static void group_stopped_moving(struct group *grp)
{
	pthread_mutex_lock(&grp->mu);
	grp->moving--;
	pthread_cond_broadcast(&grp->cv);
	pthread_mutex_unlock(&grp->mu);
}

/* Hands out the message, but before its last bytes (after which libcurl
 * writes the end-of-data mark, and the relay takes the message) waits
 * until the whole group is recorded. */
static size_t group_read(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	struct group_upload *u = userdata;
	struct group *grp = u->grp;
	size_t room = size * nmemb, left = u->m->len - u->pos;
	size_t n = left < room ? left : room;
	if (n > 0 && n == left && !u->m->held) {
		pthread_mutex_lock(&grp->mu);
		u->m->held = 1;
		grp->moving--;
		pthread_cond_broadcast(&grp->cv);
		while (!grp->released)
			pthread_cond_wait(&grp->cv, &grp->mu);
		pthread_mutex_unlock(&grp->mu);
		if (!u->m->go)
			return CURL_READFUNC_ABORT; /* the connection closes mid-data */
	}
	memcpy(ptr, u->m->data + u->pos, n);
	u->pos += n;
	return n;
}

static void *group_transfer(void *arg)
{
	struct group_upload *u = arg;
	struct smtp_message *m = u->m;
	struct curl_slist *rcpt;
	char *to_arg = xasprintf("<%s>", m->to);
	long code = 0;
	CURLcode rc;

	rcpt = curl_slist_append(NULL, to_arg);
	curl_easy_setopt(u->h, CURLOPT_MAIL_FROM, u->from_arg);
	curl_easy_setopt(u->h, CURLOPT_MAIL_RCPT, rcpt);
	curl_easy_setopt(u->h, CURLOPT_READFUNCTION, group_read);
	curl_easy_setopt(u->h, CURLOPT_READDATA, u);
	curl_easy_setopt(u->h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)m->len);
	curl_easy_setopt(u->h, CURLOPT_ERRORBUFFER, u->curl_err);
	rc = curl_easy_perform(u->h);
	curl_easy_getinfo(u->h, CURLINFO_RESPONSE_CODE, &code);
	curl_easy_setopt(u->h, CURLOPT_MAIL_RCPT, NULL);
	curl_easy_setopt(u->h, CURLOPT_READDATA, NULL);
	curl_easy_setopt(u->h, CURLOPT_ERRORBUFFER, NULL);
	curl_slist_free_all(rcpt);
	free(to_arg);
	if (!m->held)
		group_stopped_moving(u->grp); /* failed before its end */
	if (rc == CURLE_OK) {
		m->result = SMTP_SENT;
	} else if (!(m->held && m->go)) {
		/* the end of the data never left: nothing was delivered */
		m->result = classify(rc, code, 0, u->curl_err, m->err, sizeof m->err);
		if (m->result != SMTP_PERMANENT)
			m->result = SMTP_TEMPORARY;
		if (m->held)
			snprintf(m->err, sizeof m->err,
				 "not sent: stopped before the end of the data");
	} else {
		m->result = classify(rc, code, 1, u->curl_err, m->err, sizeof m->err);
	}
	return NULL;
}

void smtp_send_group(struct smtp_client *c, const char *from_addr, struct smtp_message **msgs,
		     size_t n, void (*before_end)(void *arg, struct smtp_message **held, size_t m),
		     void *arg)
{
	struct group grp = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
	struct group_upload u[SMTP_GROUP_MAX];
	struct smtp_message *held[SMTP_GROUP_MAX];
	pthread_t th[SMTP_GROUP_MAX];
	int started[SMTP_GROUP_MAX] = {0};
	char *from_arg = xasprintf("<%s>", from_addr ? from_addr : "");
	size_t nheld = 0;

	if (n > SMTP_GROUP_MAX)
		n = SMTP_GROUP_MAX;
	memset(u, 0, sizeof u);
	pthread_mutex_lock(&grp.mu);
	for (size_t i = 0; i < n; i++) {
		struct smtp_message *m = msgs[i];
		m->held = m->go = 0;
		m->err[0] = 0;
		m->result = SMTP_TEMPORARY;
		if (!address_usable(from_addr, m->to)) {
			snprintf(m->err, sizeof m->err, "recipient address is not usable");
			m->result = SMTP_PERMANENT;
			continue;
		}
		if (!c->pool[i])
			c->pool[i] = handle_new(c);
		u[i] = (struct group_upload){
		    .grp = &grp, .m = m, .h = c->pool[i], .from_arg = from_arg};
		grp.moving++;
		started[i] = c->pool[i] && pthread_create(&th[i], NULL, group_transfer, &u[i]) == 0;
		if (!started[i]) {
			grp.moving--;
			snprintf(m->err, sizeof m->err, "cannot start a transfer");
		}
	}
	/* every transfer held before its end, or over: one decision for all */
	while (grp.moving > 0)
		pthread_cond_wait(&grp.cv, &grp.mu);
	for (size_t i = 0; i < n; i++)
		if (started[i] && msgs[i]->held)
			held[nheld++] = msgs[i];
	pthread_mutex_unlock(&grp.mu);
	if (nheld)
		before_end(arg, held, nheld);
	pthread_mutex_lock(&grp.mu);
	grp.released = 1;
	pthread_cond_broadcast(&grp.cv);
	pthread_mutex_unlock(&grp.mu);
	for (size_t i = 0; i < n; i++)
		if (started[i])
			pthread_join(th[i], NULL);
	pthread_cond_destroy(&grp.cv);
	pthread_mutex_destroy(&grp.mu);
	free(from_arg);
}
