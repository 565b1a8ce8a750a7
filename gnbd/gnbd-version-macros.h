/* gnbd-version-macros.h: the symbol decorations of the public API.
 *
 * Owns GNBD_AVAILABLE_IN_* (every public symbol carries one): the library is
 * built with -fvisibility=hidden (meson's gnu_symbol_visibility), so only
 * what these macros mark is exported.  1.0 is the first API: everything is
 * GNBD_AVAILABLE_IN_ALL until a later version adds GNBD_AVAILABLE_IN_1_2.
 */
#pragma once

#if !defined(__GNBD_INSIDE__) && !defined(GNBD_COMPILATION)
#error "Only <gnbd/gnbd.h> can be included directly."
#endif

#include <glib.h>

#ifndef _GNBD_EXTERN
#define _GNBD_EXTERN __attribute__((visibility ("default"))) extern
#endif

#define GNBD_AVAILABLE_IN_ALL _GNBD_EXTERN
