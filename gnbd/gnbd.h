/* gnbd.h: the one header of gnbd, the GObject/GIO NBD client library.
 *
 * Include only this file; the single headers refuse direct inclusion.
 * pkg-config gnbd-1.0; namespace Gnbd 1.0 for introspection.
 */
#pragma once

#define __GNBD_INSIDE__

#include <gio/gio.h>

#include <gnbd/gnbd-version-macros.h>
#include <gnbd/gnbd-error.h>
#include <gnbd/gnbd-types.h>
#include <gnbd/gnbd-enum-types.h>
#include <gnbd/gnbd-client.h>
#include <gnbd/gnbd-copy.h>

#undef __GNBD_INSIDE__
