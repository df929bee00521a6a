/* tz.h — local time in a named zone without TZ, tzset or localtime_r.
 *
 * The zone is read from its zoneinfo file (TZif, RFC 8536, versions 1-4)
 * into a private struct, so any number of threads can convert times in
 * different zones at once: nothing global is read or written.  Instants
 * after the file's last transition follow its POSIX TZ footer rule.
 * Calendar arithmetic is proleptic Gregorian on day numbers (days since
 * 1970-01-01). */
#ifndef MAILFEED_TZ_H
#define MAILFEED_TZ_H

#include <time.h>

#define TZ_DIR "/usr/share/zoneinfo"

struct tz;

/* Loads zone ("Europe/Berlin", "UTC") from TZ_DIR.  "UTC", NULL and "" need
 * no file.  Returns NULL when the name is not a safe zone name or the file
 * is missing or malformed. */
struct tz *tz_load(const char *zone);
/* Parses a TZif image (for tests and tz_load). */
struct tz *tz_parse(const unsigned char *data, size_t len);
void tz_free(struct tz *z);

/* Seconds east of UTC at instant t. */
long tz_offset(const struct tz *z, time_t t);
/* Local broken-down time at t: tm_year (since 1900), tm_mon (0-11),
 * tm_mday, tm_hour, tm_min, tm_sec, tm_wday, tm_yday, tm_isdst and
 * tm_gmtoff; tm_zone is NULL. */
void tz_localtime(const struct tz *z, time_t t, struct tm *out);
/* The instant of local year-month(1-12)-mday hour:00.  When that hour
 * happens twice, the first; when it does not exist (a gap), the end of
 * the gap. */
time_t tz_moment(const struct tz *z, int year, int month, int mday, int hour);

/* Day number of year-month(1-12)-mday, and back. */
long tz_days_from_civil(long year, int month, int mday);
void tz_civil_from_days(long days, long *year, int *month, int *mday);
/* 0 = Sunday. */
int tz_weekday(long days);
/* ISO 8601 week-numbering year and week (1-53) of a day. */
void tz_iso_week(long days, long *iso_year, int *week);

#endif
