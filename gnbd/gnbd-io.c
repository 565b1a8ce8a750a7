/* gnbd-io.c: the I/O thread (work in progress). */
