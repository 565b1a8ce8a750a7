/* gnbd-tsan-private.h: happens-before marks for ThreadSanitizer where data
 * crosses threads through GLib (never installed).
 *
 * GLib's GMutex, GCond, main-context queues, GTask and GCancellable sync
 * with futexes and atomics that ThreadSanitizer does not see (GLib is not
 * built with it), so it would report every handoff through them as a race.
 * gnbd's own locks are pthread mutexes, which it sees; where gnbd hands data
 * to another thread through GLib (a source attached to a context, a task
 * returned, a cancel handler that ran), GNBD_HANDOFF marks the release
 * and GNBD_TAKEOVER the acquire, on the same address.  Both are nothing
 * without -fsanitize=thread.
 */
#pragma once

#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
#define GNBD_HANDOFF(p) __tsan_release ((void *) (p))
#define GNBD_TAKEOVER(p) __tsan_acquire ((void *) (p))
#else
#define GNBD_HANDOFF(p) ((void) (p))
#define GNBD_TAKEOVER(p) ((void) (p))
#endif
