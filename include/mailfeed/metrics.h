/* metrics.h — Prometheus text-format metrics, for node_exporter's textfile
 * collector ([gateway] metrics_file) or a loopback HTTP listener
 * ([gateway] metrics_listen). */
#ifndef MAILFEED_METRICS_H
#define MAILFEED_METRICS_H

#include "mailfeed/config.h"
#include "mailfeed/store.h"
#include "mailfeed/util.h"

/* Renders the current metrics into b. */
void metrics_render(struct store *st, const struct mf_config *cfg, struct buf *b);
/* Writes metrics_file atomically when configured. */
void metrics_write(struct store *st, const struct mf_config *cfg);

#endif
