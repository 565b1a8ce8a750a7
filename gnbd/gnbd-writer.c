/* gnbd-writer.c: the writer task (work in progress). */
