/* log.c — stderr logging, one event per line: "level=info msg...".
 * journald adds the time; when stderr is a terminal we add it ourselves. */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "mailfeed/log.h"

static enum log_level min_level = LOG_LVL_INFO;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

void log_set_level(enum log_level level) { min_level = level; }

int log_level_parse(const char *s, enum log_level *out)
{
	static const char *const names[] = {"debug", "info", "warn", "error"};
	for (int i = 0; i < 4; i++)
		if (strcmp(s, names[i]) == 0) {
			*out = (enum log_level)i;
			return 0;
		}
	return -1;
}

static void vlog(enum log_level lvl, const char *fmt, va_list ap)
{
	static const char *const names[] = {"debug", "info", "warn", "error"};
	char line[4096];
	int n;
	if (lvl < min_level)
		return;
	n = snprintf(line, sizeof line, "level=%s ", names[lvl]);
	if (isatty(STDERR_FILENO)) {
		char ts[32];
		time_t t = time(NULL);
		struct tm tm;
		gmtime_r(&t, &tm);
		strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", &tm);
		n = snprintf(line, sizeof line, "ts=%s level=%s ", ts, names[lvl]);
	}
	vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
	/* one event per line, whatever the message held */
	for (char *p = line; *p; p++)
		if (*p == '\n' || *p == '\r')
			*p = ' ';
	pthread_mutex_lock(&log_lock);
	fprintf(stderr, "%s\n", line);
	fflush(stderr);
	pthread_mutex_unlock(&log_lock);
}

#define DEFINE_LOG(fn, lvl)                                                                        \
	void fn(const char *fmt, ...)                                                              \
	{                                                                                          \
		va_list ap;                                                                        \
		va_start(ap, fmt);                                                                 \
		vlog(lvl, fmt, ap);                                                                \
		va_end(ap);                                                                        \
	}
DEFINE_LOG(log_debug, LOG_LVL_DEBUG)
DEFINE_LOG(log_info, LOG_LVL_INFO)
DEFINE_LOG(log_warn, LOG_LVL_WARN)
DEFINE_LOG(log_error, LOG_LVL_ERROR)

const char *log_quote(const char *s, char *buf, size_t buflen)
{
	size_t o = 0;
	int need_quotes = 0;
	if (!s)
		s = "";
	if (buflen < 4) {
		if (buflen)
			buf[0] = 0;
		return buf;
	}
	if (!*s)
		need_quotes = 1;
	for (const char *p = s; *p; p++)
		if (*p == ' ' || *p == '"' || *p == '=' || (unsigned char)*p < 0x20)
			need_quotes = 1;
	if (need_quotes)
		buf[o++] = '"';
	for (const unsigned char *p = (const unsigned char *)s; *p && o + 5 < buflen; p++) {
		if (*p == '"' || *p == '\\') {
			buf[o++] = '\\';
			buf[o++] = (char)*p;
		} else if (*p < 0x20 || *p == 0x7f) {
			o += (size_t)snprintf(buf + o, buflen - o, "\\x%02x", *p);
		} else {
			buf[o++] = (char)*p;
		}
	}
	if (need_quotes)
		buf[o++] = '"';
	buf[o] = 0;
	return buf;
}
