/* worker_frame.h — the framing shared by the parse worker's supervisor
 * (worker.c) and its child (worker_child.c); not for other modules.
 *
 * Both directions carry frames: a 64-bit length in host order, then that
 * many bytes.  A struct inbox holds bytes read from the socket and not used
 * yet; frames are taken from data + off.  It is read in large chunks, so
 * that one read usually brings a whole frame or several. */
#ifndef MAILFEED_WORKER_FRAME_H
#define MAILFEED_WORKER_FRAME_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Read at least this much at a time. */
#define READ_CHUNK (128 * 1024)
/* Buffers kept between messages are given back above this size. */
#define KEEP_BUFFER (1024 * 1024)

/* The child's exit status when it cannot confine itself: it parses
 * nothing, and the message it was given is not to blame. */
#define WORKER_EXIT_NO_SANDBOX 4

struct inbox {
	char *data;
	size_t off, len, cap;
};

/* Room for `room` bytes after the held ones: 0, or -1 without memory. */
int inbox_reserve(struct inbox *in, size_t room);
/* Reads what the socket has, in one call: the bytes read, 0 at EOF, -1
 * with errno (EAGAIN when nothing is there yet), -2 without memory. */
ssize_t inbox_fill(struct inbox *in, int fd, int flags);
/* Length of the next frame once its 8 bytes are there (1), else 0. */
int inbox_frame_len(const struct inbox *in, uint64_t *n);
/* The next frame of n bytes when all of it is there, else NULL. */
char *inbox_frame(struct inbox *in, uint64_t n);
/* Drops the frame of n bytes just used. */
void inbox_consume(struct inbox *in, uint64_t n);

#endif
