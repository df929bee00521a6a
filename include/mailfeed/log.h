/* log.h — one event per line on stderr, key=value fields, for journald.
 *
 * Messages are printf-style; callers pass already key=value formatted text,
 * e.g. log_info("imap.connected account=%s host=%s", a, h).  Values that come
 * from mail or the network must go through log_quote() first. */
#ifndef MAILFEED_LOG_H
#define MAILFEED_LOG_H

#include <stddef.h>

enum log_level { LOG_LVL_DEBUG, LOG_LVL_INFO, LOG_LVL_WARN, LOG_LVL_ERROR };

void log_set_level(enum log_level level);
int log_level_parse(const char *s, enum log_level *out);
void log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Writes s into buf as a log-safe value: quoted when it holds spaces or
 * quotes, control characters escaped, cut at buflen.  Returns buf. */
const char *log_quote(const char *s, char *buf, size_t buflen);

#endif
